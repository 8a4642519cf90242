//! One change to durable state, with its record: what a store commits and what a replica
//! applies. Its own module so that the effects of a batch stay free of the records' types.

use crate::kv::KvEntry;
use crate::record::{CheckRecord, InstanceRecord};
use trellis_types::{ConfigEntry, Session};

/// One change to durable state: a [`Write`](crate::Write) with the record it writes (or the delete). What a
/// store commits, and what a replica applies ([`crate::Catalog::replicate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    PutInstance(InstanceRecord),
    DeleteInstance(String),
    PutCheck(CheckRecord),
    /// A check and the instance it belonged to (none for a node check).
    DeleteCheck {
        id: String,
        owner: Option<String>,
    },
    PutKv(KvEntry),
    DeleteKv(String),
    PutSession(Session),
    DeleteSession(String),
    PutConfigEntry(ConfigEntry),
    /// A config entry by kind and name (names match without regard to case).
    DeleteConfigEntry {
        kind: String,
        name: String,
    },
}
