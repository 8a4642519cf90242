//! A leader's batch taking the numbers etcd gave its commit (see `numbering.rs`):
//! [`Catalog::begin_batch`] numbers every change of the batch with one tentative index, and
//! [`Catalog::renumber`] replaces it with etcd's once the commit is in, before anything of the
//! batch is published or answered.

use super::Catalog;
use crate::command::Reply;
use crate::effects::Effects;
use crate::mutation::Mutation;
use crate::numbering::{Numbering, Revisions, renumber};
use std::sync::Arc;

impl Catalog {
    /// Until [`Catalog::renumber`] (or [`Catalog::end_batch`]), every change takes the same
    /// index, the one answered: one above every index handed out so far, which among servers
    /// sharing etcd is the last revision this catalog knows. A batch is one etcd commit, so
    /// it gets one revision.
    pub fn begin_batch(&mut self) -> u64 {
        self.index.begin_batch()
    }

    /// Ends a batch without renumbering it (its commit failed: the catalog is reloaded).
    pub fn end_batch(&mut self) {
        self.index.end_batch();
    }

    /// Ends the batch numbered `tentative` and takes the numbers the store gave its commit of
    /// `committed`: each record put its key's revisions; every derived index the batch moved
    /// (the services list, each service, the KV store and its tombstones, sessions, config
    /// entries), the global index and the check transitions in `fx`, the commit's revision. A
    /// replica of the commit reads the same numbers off the keys, so every server shows the
    /// same indexes. The revision is never below `tentative`, so no index handed out before is
    /// reused.
    pub fn renumber(
        &mut self,
        tentative: u64,
        committed: &[Mutation],
        numbering: &Numbering,
        fx: &mut Effects,
    ) {
        self.index.end_batch();
        let index = numbering.index;
        let put = || {
            committed
                .iter()
                .zip(&numbering.records)
                .filter_map(|(mutation, revisions)| revisions.map(|r| (mutation, r)))
        };
        for (mutation, revisions) in put() {
            self.renumber_record(mutation, revisions);
        }
        self.kv.renumber(
            tentative,
            index,
            put().filter_map(|(mutation, r)| match mutation {
                Mutation::PutKv(entry) => Some((entry.key.as_str(), r)),
                _ => None,
            }),
            committed.iter().filter_map(|mutation| match mutation {
                Mutation::DeleteKv(key) => Some(key.as_str()),
                _ => None,
            }),
        );
        self.sessions.renumber(
            tentative,
            index,
            put().filter_map(|(mutation, r)| match mutation {
                Mutation::PutSession(session) => Some((session.id.as_str(), r)),
                _ => None,
            }),
        );
        self.config.renumber(
            tentative,
            index,
            put().filter_map(|(mutation, r)| match mutation {
                Mutation::PutConfigEntry(entry) => {
                    Some((entry.kind.as_str(), entry.name.as_str(), r))
                }
                _ => None,
            }),
        );
        renumber(&mut self.services_index, tentative, index);
        for name_index in self.name_index.values_mut() {
            renumber(name_index, tentative, index);
        }
        self.index.advance_to(index);
        for transition in &mut fx.transitions {
            if transition.index == tentative {
                transition.index = self
                    .checks
                    .get(&transition.check_id)
                    .map_or(index, |check| check.modify_index);
            }
        }
    }

    /// An instance or check `mutation` put takes its key's revisions (KV entries, sessions and
    /// config entries are their tables').
    fn renumber_record(&mut self, mutation: &Mutation, revisions: Revisions) {
        match mutation {
            Mutation::PutInstance(record) => {
                if let Some(instance) = self.instances.get_mut(&record.registration.id) {
                    let instance = Arc::make_mut(instance);
                    instance.create_index = revisions.create;
                    instance.modify_index = revisions.modify;
                }
            }
            Mutation::PutCheck(record) => {
                let id = record.definition.id.as_deref().unwrap_or_default();
                if let Some(check) = self.checks.get_mut(id) {
                    let check = Arc::make_mut(check);
                    check.create_index = revisions.create;
                    check.modify_index = revisions.modify;
                }
            }
            _ => {}
        }
    }

    /// An answer of the batch numbered `tentative`, renumbered as [`Catalog::renumber`] did
    /// the catalog: a record in it takes its numbers as the catalog now has them (the
    /// commit's revision if it is gone since).
    pub fn renumber_reply(&self, tentative: u64, reply: &mut Reply) {
        let index = self.index.get();
        match reply {
            Reply::Txn(outcome) => {
                for entry in &mut outcome.results {
                    if entry.modify_index == tentative || entry.create_index == tentative {
                        let now = self.kv.get(&entry.key);
                        entry.create_index = now.map_or(index, |e| e.create_index);
                        entry.modify_index = now.map_or(index, |e| e.modify_index);
                    }
                }
            }
            Reply::Session(Some(session)) if session.modify_index == tentative => {
                if let Some(now) = self.sessions.get(&session.id) {
                    *session = Arc::clone(now);
                }
            }
            Reply::Done | Reply::Bool(_) | Reply::Session(_) => {}
        }
    }
}
