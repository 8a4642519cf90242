//! Durable forms of instances and checks: what the store writes and restart reads back.

use serde::{Deserialize, Serialize};
use trellis_types::{CheckDefinition, CheckStatus, ServiceRegistration};

/// A registered instance (its registration without checks) and its indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceRecord {
    pub registration: ServiceRegistration,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A check definition with the status it had when last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRecord {
    pub definition: CheckDefinition,
    pub status: CheckStatus,
    pub output: String,
    pub create_index: u64,
    pub modify_index: u64,
}
