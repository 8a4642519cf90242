//! The wire model: exactly the JSON the services send, nothing more.

use serde::{Deserialize, Serialize};

/// A user of the users service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// An order of the orders service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub product: String,
    pub quantity: i64,
}
