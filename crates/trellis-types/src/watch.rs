//! The streaming watch (`GET /v1/trellis/watch/:service`): one event per change of a service's
//! routable instance set.

use crate::registration::{CheckStatus, Weights};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The full routable instance set of a service at `index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchEvent {
    pub index: u64,
    pub service: String,
    pub instances: Vec<WatchInstance>,
}

/// An instance that is passing or warning (critical instances are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WatchInstance {
    #[serde(rename = "ID")]
    pub id: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub weights: Weights,
    pub status: CheckStatus,
}
