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

/// One product of the inventory service: how many are in stock, and how many of those are
/// reserved by orders prepared but not yet committed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub product: String,
    pub stock: i64,
    pub reserved: i64,
}
