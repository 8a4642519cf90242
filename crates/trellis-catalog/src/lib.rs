//! The pure registry state machine: services, checks, health aggregation, KV with CAS, and the
//! Consul index rules. No IO and no clock: callers pass `now` as a monotonic [`Duration`].
//!
//! [`Duration`]: std::time::Duration

mod catalog;
mod check;
mod command;
mod error;
mod index;
mod kv;
mod record;
mod tick;

pub use catalog::{Catalog, InstanceView, ServiceView};
pub use check::{Check, DEFAULT_CHECK_TIMEOUT};
pub use command::{Command, Effects, Reply, Write};
pub use error::CatalogError;
pub use kv::{KvEntry, MAX_KV_TOMBSTONES};
pub use record::{CheckRecord, InstanceRecord};
pub use tick::TICK_BUDGET;

#[cfg(test)]
mod tests;
