//! An in-memory store for `--dev`: same semantics as the durable one, nothing on disk.

use crate::{Mutation, Numbering, Snapshot, Store, StoreError, config_key};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use trellis_catalog::{CheckRecord, InstanceRecord, KvEntry, KvSnapshot};
use trellis_types::{ConfigEntry, Session};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    index: u64,
    instances: BTreeMap<String, InstanceRecord>,
    checks: BTreeMap<String, CheckRecord>,
    kv: BTreeMap<String, KvEntry>,
    sessions: BTreeMap<String, Session>,
    config_entries: BTreeMap<String, ConfigEntry>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let state = self.state.lock();
        Ok(Snapshot {
            index: state.index,
            instances: state.instances.values().cloned().collect(),
            checks: state.checks.values().cloned().collect(),
            kv: KvSnapshot {
                entries: state.kv.values().cloned().collect(),
                sessions: state.sessions.values().cloned().collect(),
            },
            config_entries: state.config_entries.values().cloned().collect(),
        })
    }

    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<Option<Numbering>, StoreError> {
        let mut state = self.state.lock();
        state.index = state.index.max(index);
        for mutation in mutations {
            match mutation {
                Mutation::PutInstance(r) => {
                    state.instances.insert(r.registration.id.clone(), r.clone());
                }
                Mutation::DeleteInstance(id) => {
                    state.instances.remove(id);
                }
                Mutation::PutCheck(r) => {
                    let id = r.definition.id.clone().unwrap_or_default();
                    state.checks.insert(id, r.clone());
                }
                Mutation::DeleteCheck { id, owner } => {
                    // Only the owner's copy: a check ID that moved lives on elsewhere.
                    if state
                        .checks
                        .get(id)
                        .is_some_and(|c| c.definition.service_id == *owner)
                    {
                        state.checks.remove(id);
                    }
                }
                Mutation::PutKv(e) => {
                    state.kv.insert(e.key.clone(), e.clone());
                }
                Mutation::DeleteKv(key) => {
                    state.kv.remove(key);
                }
                Mutation::PutSession(session) => {
                    state.sessions.insert(session.id.clone(), session.clone());
                }
                Mutation::DeleteSession(id) => {
                    state.sessions.remove(id);
                }
                Mutation::PutConfigEntry(entry) => {
                    let key = config_key(&entry.kind, &entry.name);
                    state.config_entries.insert(key, entry.clone());
                }
                Mutation::DeleteConfigEntry { kind, name } => {
                    state.config_entries.remove(&config_key(kind, name));
                }
            }
        }
        Ok(None)
    }
}
