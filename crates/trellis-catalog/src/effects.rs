//! What a batch of commands changed: the effects it reports for publishing (which views
//! changed) and for durability (which records to write). Its own module so that the stores the
//! catalog is made of (KV, sessions) can record effects without depending on the commands.

use std::collections::BTreeSet;
use trellis_types::CheckStatus;

/// A record whose durable copy must be brought up to date: written if it still exists in the
/// catalog, deleted otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Write {
    Instance(String),
    /// A check, with the instance it belongs to (none for a node check): the store keeps a
    /// service's checks next to its instance.
    Check {
        id: String,
        owner: Option<String>,
    },
    Kv(String),
    Session(String),
    /// A config entry, by kind and lower-cased name (`config_entry::name_key`).
    ConfigEntry {
        kind: String,
        name: String,
    },
}

/// What a batch of commands changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Service keys ([`service_key`](trellis_types::registration::service_key)) whose views
    /// must be republished.
    pub services: BTreeSet<String>,
    /// The list of service names or their tags may have changed.
    pub services_list: bool,
    /// Some KV entry changed.
    pub kv: bool,
    /// A session was created or destroyed.
    pub sessions: bool,
    /// A config entry was written or deleted.
    pub config: bool,
    /// Records to persist.
    pub writes: BTreeSet<Write>,
    /// Check IDs whose active (HTTP, TCP, gRPC, script) probing must be started, restarted or
    /// stopped.
    pub checks: BTreeSet<String>,
    /// Checks whose status changed (or that were registered), in the order it happened: the
    /// history a dashboard shows.
    pub transitions: Vec<CheckTransition>,
}

/// A check's status changed from `from` (`None`: the check is new) to `to` at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTransition {
    pub check_id: String,
    pub name: String,
    pub service_id: Option<String>,
    pub service_name: Option<String>,
    pub from: Option<CheckStatus>,
    pub to: CheckStatus,
    pub output: String,
    pub index: u64,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.services_list
            && !self.kv
            && !self.sessions
            && !self.config
            && self.writes.is_empty()
            && self.checks.is_empty()
            && self.transitions.is_empty()
    }
}
