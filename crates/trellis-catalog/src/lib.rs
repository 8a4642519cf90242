//! The pure registry state machine: services, checks, health aggregation, KV with CAS, and the
//! Consul index rules. No IO and no clock: callers pass `now` as a monotonic [`Duration`].

mod catalog;
mod check;
mod kv;
mod record;

pub use catalog::{
    Catalog, Command, Effects, InstanceView, Reply, ServiceView, TICK_BUDGET, Write,
};
pub use check::Check;
pub use kv::{KvEntry, MAX_KV_TOMBSTONES};
pub use record::{CheckRecord, InstanceRecord};

/// Probe timeout used when a check does not set one, as Consul does.
pub const DEFAULT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a command was refused. Messages are short and safe to show to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
