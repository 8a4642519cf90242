//! A leader's batch among servers sharing etcd (see `numbering.rs`): [`Catalog::begin_batch`]
//! numbers every change of the batch with one tentative index and journals what it changes;
//! [`Catalog::renumber`] replaces the number with etcd's once the commit is in, before anything
//! of the batch is published or answered; [`Catalog::undo_batch`] takes a batch whose commit
//! failed back out.

use super::Catalog;
use crate::command::Reply;
use crate::effects::Effects;
use crate::mutation::Mutation;
use crate::numbering::{Numbering, Revisions, renumber};
use std::sync::Arc;
use std::time::Duration;

impl Catalog {
    /// Until [`Catalog::renumber`] (or [`Catalog::end_batch`]), every change takes the same
    /// index, the one answered: one above every index handed out so far, which among servers
    /// sharing etcd is the last revision this catalog knows. A batch is one etcd commit, so
    /// it gets one revision.
    pub fn begin_batch(&mut self) -> u64 {
        if self.open_batch().is_none() {
            self.instances_journal.start();
            self.checks_journal.start();
            self.kv.journal.start();
            self.sessions.journal.start();
            self.config.journal.start();
        }
        self.index.begin_batch()
    }

    /// The open batch's number, if one is open.
    pub fn open_batch(&self) -> Option<u64> {
        self.index.open_batch()
    }

    /// Ends a batch as it is (it needed no commit).
    pub fn end_batch(&mut self) {
        self.index.end_batch();
        self.forget_journal();
    }

    fn forget_journal(&mut self) {
        self.instances_journal.take();
        self.checks_journal.take();
        self.kv.journal.take();
        self.sessions.journal.take();
        self.config.journal.take();
    }

    /// Takes the open batch back out: its commit failed, so it may never be durable, and no
    /// reader may see it. Every record it changed is put back as it was before, and every index
    /// it moved goes back to the index before the batch (at least what it was then: a reader
    /// sees at worst a spurious wake-up), so the catalog is what the store held after the last
    /// commit. In-memory leftovers are harmless: lock-delays its invalidations started, and
    /// names it brought, with no instance.
    pub fn undo_batch(&mut self, now: Duration) {
        let Some(tentative) = self.index.open_batch() else {
            return;
        };
        let mut undo = Vec::new();
        for (id, before) in self.instances_journal.take() {
            undo.push(match before {
                Some(record) => Mutation::PutInstance((*record).clone()),
                None => Mutation::DeleteInstance(id),
            });
        }
        for (id, before) in self.checks_journal.take() {
            let owner_now = self
                .checks
                .get(&id)
                .map(|check| check.service_id().map(str::to_owned));
            let owner_before = before
                .as_ref()
                .map(|check| check.service_id().map(str::to_owned));
            if let Some(owner) = owner_now
                && Some(&owner) != owner_before.as_ref()
            {
                undo.push(Mutation::DeleteCheck {
                    id: id.clone(),
                    owner,
                });
            }
            if let Some(check) = before {
                undo.push(Mutation::PutCheck(check.record()));
            }
        }
        for (key, before) in self.kv.journal.take() {
            undo.push(match before {
                Some(entry) => Mutation::PutKv(entry),
                None => Mutation::DeleteKv(key),
            });
        }
        for (id, before) in self.sessions.journal.take() {
            undo.push(match before {
                Some(session) => Mutation::PutSession((*session).clone()),
                None => Mutation::DeleteSession(id),
            });
        }
        for ((kind, name), before) in self.config.journal.take() {
            undo.push(match before {
                Some(entry) => Mutation::PutConfigEntry((*entry).clone()),
                None => Mutation::DeleteConfigEntry { kind, name },
            });
        }
        let before = self.index.undo_batch();
        // Nobody saw the batch: what putting the records back changes is not reported.
        let mut fx = Effects::default();
        self.put_in_place(before, undo, now, &mut fx);
        // The batch's own effects are gone: every name it may have touched is looked at.
        for name_index in self.name_index.values_mut() {
            renumber(name_index, tentative, before);
        }
        let back = Numbering {
            index: before,
            records: Vec::new(),
        };
        self.renumber(tentative, &[], &back, &mut fx);
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
        self.forget_journal();
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
        // Every name the batch touched is in `fx` (`touch_name` puts it there).
        for name in &fx.services {
            if let Some(name_index) = self.name_index.get_mut(name) {
                renumber(name_index, tentative, index);
            }
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
                if let Some(instance) = self.instances.get_mut(&record.registration.id)
                    && (instance.create_index, instance.modify_index)
                        != (revisions.create, revisions.modify)
                {
                    let instance = Arc::make_mut(instance);
                    instance.create_index = revisions.create;
                    instance.modify_index = revisions.modify;
                }
            }
            Mutation::PutCheck(record) => {
                let id = record.definition.id.as_deref().unwrap_or_default();
                if let Some(check) = self.checks.get_mut(id)
                    && (check.create_index, check.modify_index)
                        != (revisions.create, revisions.modify)
                {
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
