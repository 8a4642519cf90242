//! The vocabulary of [`crate::Catalog::apply`]: the commands it takes and the replies it gives
//! (what a batch changed is in [`crate::effects`]).

use crate::txn::TxnOutcome;
use std::sync::Arc;
use trellis_types::{
    CheckDefinition, CheckStatus, ConfigEntry, KvOp, ServiceRegistration, Session,
};

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
    /// A TTL check's TTL ran out on the server that owns its expiry (servers sharing a store,
    /// see [`crate::Catalog::set_ttl_expiry`]): it turns critical unless it is already.
    ExpireTtl {
        check_id: String,
    },
    /// A probe result of an active check (HTTP, TCP, gRPC, script; memory-only, through
    /// hysteresis).
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
    /// A session's TTL ran out elsewhere (its etcd lease ended, among servers sharing a
    /// store): it is invalidated as when its TTL runs out here (locks released or deleted,
    /// lock-delay started). Nothing for a session that is gone already.
    SessionExpired {
        id: String,
    },
    /// `PUT /v1/config[?cas=]`: a decoded, validated entry (its indexes are the catalog's to
    /// set). Answers `Bool`.
    ConfigUpsert {
        entry: ConfigEntry,
        cas: Option<u64>,
    },
    /// `DELETE /v1/config/:kind/:name[?cas=]`. Answers `Bool`.
    ConfigDelete {
        kind: String,
        name: String,
        cas: Option<u64>,
    },
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// KV and config entry writes answer `true`/`false` (a failed CAS is `false`).
    Bool(bool),
    /// A renewed session, `None` if there is no such session.
    Session(Option<Arc<Session>>),
    /// A transaction's results, or why it failed (then nothing was applied).
    Txn(TxnOutcome),
}
