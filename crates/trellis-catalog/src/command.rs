//! The vocabulary of [`crate::Catalog::apply`]: commands, replies, and the effects a batch
//! reports for publishing (which views changed) and durability (which records to write).

use crate::txn::TxnOutcome;
use std::collections::BTreeSet;
use std::sync::Arc;
use trellis_types::{CheckDefinition, CheckStatus, KvOp, ServiceRegistration, Session};

/// A state change requested through the API (or by the server's own health checker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register {
        registration: ServiceRegistration,
        replace_existing_checks: bool,
    },
    Deregister {
        service_id: String,
    },
    RegisterCheck {
        check: CheckDefinition,
    },
    DeregisterCheck {
        check_id: String,
    },
    /// A TTL check update from the application (memory-only).
    UpdateTtl {
        check_id: String,
        status: CheckStatus,
        output: String,
    },
    /// A probe result of an HTTP or TCP check (memory-only, through hysteresis).
    ReportCheck {
        check_id: String,
        result: CheckStatus,
        output: String,
    },
    KvPut {
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
    /// `PUT /v1/kv/:key?acquire=<session>`: writes the value and takes the lock.
    KvLock {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// `PUT /v1/kv/:key?release=<session>`: writes the value and gives the lock up.
    KvUnlock {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// `PUT /v1/txn` with at least one write: all operations apply at one index, or none.
    Txn {
        ops: Vec<KvOp>,
    },
    /// A new session, its ID chosen by the caller and its indexes left for the catalog.
    SessionCreate {
        session: Session,
    },
    SessionDestroy {
        id: String,
    },
    /// Restarts a session's TTL (memory-only, as in Consul: a restart restarts every timer).
    SessionRenew {
        id: String,
    },
}

impl Command {
    /// Whether a successful command needs a durable write before it is acknowledged.
    pub fn is_durable(&self) -> bool {
        !matches!(
            self,
            Self::UpdateTtl { .. } | Self::ReportCheck { .. } | Self::SessionRenew { .. }
        )
    }
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// KV writes answer `true`/`false` (a failed CAS is `false`).
    Bool(bool),
    /// A renewed session, `None` if there is no such session.
    Session(Option<Arc<Session>>),
    /// A transaction's results, or why it failed (then nothing was applied).
    Txn(TxnOutcome),
}

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
    /// Records to persist.
    pub writes: BTreeSet<Write>,
    /// Check IDs whose active (HTTP/TCP) probing must be started, restarted or stopped.
    pub checks: BTreeSet<String>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.services_list
            && !self.kv
            && !self.sessions
            && self.writes.is_empty()
            && self.checks.is_empty()
    }
}
