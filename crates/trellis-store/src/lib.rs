//! Durable storage of the catalog: the [`Store`] trait, the embedded redb implementation, an
//! in-memory one for `--dev`, and the conformance suite every implementation must pass.

pub mod acl_log;
pub mod conformance;
pub mod decision_log;
mod memory;
pub mod records;
mod redb_store;

pub use acl_log::{AclLog, AclSnapshot, MemoryAclLog, RecordAclLog, RedbAclLog};
pub use decision_log::{
    DecisionLog, LogSnapshot, MemoryDecisionLog, RecordDecisionLog, RedbDecisionLog,
};
pub use memory::MemoryStore;
pub use records::{RecordLog, Records};
pub use redb_store::RedbStore;

use trellis_catalog::{CheckRecord, InstanceRecord, KvSnapshot};
pub use trellis_catalog::{Mutation, Numbering};
use trellis_types::ConfigEntry;

/// Everything a store holds, as read back at startup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Highest index committed.
    pub index: u64,
    pub instances: Vec<InstanceRecord>,
    pub checks: Vec<CheckRecord>,
    /// KV entries and the sessions (which hold locks on them): restored together.
    pub kv: KvSnapshot,
    /// Config entries (`/v1/config`), by kind, then lower-cased name.
    pub config_entries: Vec<ConfigEntry>,
}

/// The key a store keeps a config entry under: its kind, a NUL, its lower-cased name (Consul
/// indexes config entries so; kinds never contain control characters).
pub(crate) fn config_key(kind: &str, name: &str) -> String {
    format!("{kind}\0{}", trellis_types::config_entry::name_key(name))
}

#[derive(Debug, thiserror::Error)]
// Each message carries its cause's text and does not chain it, so `{:#}` says it once.
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(redb::Error),
    /// Another process (another server) holds the store's lock.
    #[error(
        "data directory {dir} is in use by another trellis server; stop it or choose another --data-dir"
    )]
    Locked { dir: String },
    #[error("corrupt record {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot encode record: {0}")]
    Encode(serde_json::Error),
    #[error("cannot open data directory {path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A store on other machines (etcd) that could not do what was asked; the text names it.
    #[error("{0}")]
    Remote(String),
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        Self::Engine(error)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        Self::Encode(error)
    }
}

/// Durable state behind the catalog. `commit` must make all its mutations durable atomically
/// (all or none survive a crash) before it returns; callers batch many requests into one
/// commit (group commit).
pub trait Store: Send + Sync {
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Makes `mutations` durable, numbered `index` by the catalog. A store that numbers
    /// commits itself (etcd: each commit's revision) answers its [`Numbering`], which the
    /// catalog takes ([`trellis_catalog::Catalog::renumber`]) and its [`Store::load`] gives
    /// back; one that keeps the catalog's numbers answers `None`.
    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<Option<Numbering>, StoreError>;
}
