//! Wire types shared by the Trellis server, SDK and CLI: Consul-compatible requests and responses.

mod canonical;
pub mod config_entry;
pub mod duration;
pub mod fields;
pub mod intention;
pub mod intention_entry;
mod meta;
pub mod registration;
pub mod response;
pub mod session;
pub mod txn;
pub mod watch;

pub use config_entry::ConfigEntry;
pub use duration::{format_go_duration, parse_go_duration};
pub use meta::Meta;
pub use registration::{
    CheckDefinition, CheckKind, CheckStatus, HttpCheck, ServiceRegistration, TaggedAddress, Weights,
};
pub use response::{
    AgentService, CatalogService, HealthCheck, HealthEntry, KvPair, NodeInfo, ServiceInfo,
};
pub use session::{ServiceCheck, Session, SessionBehavior};
pub use txn::{KvOp, KvVerb};
pub use watch::{WatchEvent, WatchInstance};

/// Why a request body could not be turned into a registration or check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("{0}")]
    Field(String),
}

impl InvalidInput {
    pub fn new(reason: impl Into<String>) -> Self {
        Self::Field(reason.into())
    }
}
