//! One change to durable state, with its record: what a store commits and what a replica
//! applies, and how each record takes the indexes a store numbered it with. Its own module so
//! that the effects of a batch stay free of the records' types.

use crate::kv::KvEntry;
use crate::numbering::{Indexed, Revisions};
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

macro_rules! indexed {
    ($($record:ty),*) => {$(
        impl Indexed for $record {
            fn set_indexes(&mut self, revisions: Revisions) {
                self.create_index = revisions.create;
                self.modify_index = revisions.modify;
            }
        }
    )*};
}

indexed!(InstanceRecord, CheckRecord, KvEntry, Session, ConfigEntry);

impl Mutation {
    /// Whether this mutation puts a record (rather than deleting one).
    pub fn is_put(&self) -> bool {
        matches!(
            self,
            Mutation::PutInstance(_)
                | Mutation::PutCheck(_)
                | Mutation::PutKv(_)
                | Mutation::PutSession(_)
                | Mutation::PutConfigEntry(_)
        )
    }

    /// Numbers the record this mutation puts (a delete has none).
    pub fn set_indexes(&mut self, revisions: Revisions) {
        match self {
            Mutation::PutInstance(record) => record.set_indexes(revisions),
            Mutation::PutCheck(record) => record.set_indexes(revisions),
            Mutation::PutKv(entry) => entry.set_indexes(revisions),
            Mutation::PutSession(session) => session.set_indexes(revisions),
            Mutation::PutConfigEntry(entry) => entry.set_indexes(revisions),
            Mutation::DeleteInstance(_)
            | Mutation::DeleteCheck { .. }
            | Mutation::DeleteKv(_)
            | Mutation::DeleteSession(_)
            | Mutation::DeleteConfigEntry { .. } => {}
        }
    }
}
