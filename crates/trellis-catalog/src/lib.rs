//! The pure registry state machine: services, checks, health aggregation, KV with CAS, sessions
//! and locks, transactions, config entries, and the Consul index rules. No IO and no clock:
//! callers pass `now` as a monotonic [`Duration`].
//!
//! [`Duration`]: std::time::Duration

mod catalog;
mod check;
mod command;
mod config_entry;
mod effects;
mod error;
mod index;
mod journal;
mod kv;
mod mutation;
mod numbering;
mod record;
mod session;
mod tick;
mod txn;

pub use catalog::{Catalog, InstanceView, ServiceSummary, ServiceView};
pub use check::{Check, DEFAULT_CHECK_TIMEOUT, DEFAULT_SCRIPT_TIMEOUT};
pub use command::{Command, Reply};
pub use effects::{CheckTransition, Effects, Write};
pub use error::CatalogError;
pub use kv::{KvEntry, KvSnapshot, MAX_KEY_LEN, MAX_KV_TOMBSTONES, validate_key};
pub use mutation::Mutation;
pub use numbering::{Indexed, Numbering, Revisions};
pub use record::{CheckRecord, InstanceRecord};
pub use session::{
    MAX_LOCK_DELAY, MAX_SESSIONS, SESSION_TTL_MAX, SESSION_TTL_MIN, SESSION_TTL_MULTIPLIER,
    session_ttl,
};
pub use tick::{Deadlines, TICK_BUDGET};
pub use txn::TxnOutcome;

#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod tests;
