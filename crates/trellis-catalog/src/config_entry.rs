//! Config entries (`/v1/config`): entries keyed by kind and name (names match without regard to
//! case, as Consul indexes them), their create and modify indexes, the index of the whole table
//! and of each kind. What an entry may hold is decided where requests come in
//! (`trellis_types::config_entry`); this module applies upserts and deletes with Consul's rules.

use crate::effects::{Effects, Write};
use crate::journal::Journal;
use crate::numbering::{Indexed, Revisions, renumber};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use trellis_types::ConfigEntry;
use trellis_types::config_entry::name_key;

/// The config entries table.
#[derive(Debug, Clone)]
pub(crate) struct ConfigStore {
    /// By (kind, lower-cased name): a kind's entries in name order.
    entries: BTreeMap<(String, String), Arc<ConfigEntry>>,
    /// Index of the last upsert or delete of any entry (Consul's config-entries table index,
    /// which every config read answers).
    index: u64,
    /// Index of the last upsert or delete per kind, for the waiters of a kind's list. A kind
    /// missing here has not changed since the restore: any change takes an index above every
    /// index handed out before, so 0 is a safe "not since".
    kind_index: HashMap<String, u64>,
    /// The entries a leader's batch changed, as they were (see `journal.rs`).
    pub(crate) journal: Journal<(String, String), Arc<ConfigEntry>>,
}

/// The effect of a write, for the caller to number and record.
pub(crate) enum Change {
    /// Nothing to do; the answer is the value.
    Unchanged(bool),
    /// Write or delete (`None`) the entry at a new index.
    Apply(Option<ConfigEntry>),
}

impl ConfigStore {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            index: 1,
            kind_index: HashMap::new(),
            journal: Journal::default(),
        }
    }

    /// The table from its durable entries, its index resuming at `top`.
    pub(crate) fn restore(entries: Vec<ConfigEntry>, top: u64) -> Self {
        let mut store = Self::new();
        for entry in entries {
            store
                .entries
                .insert(key(&entry.kind, &entry.name), Arc::new(entry));
        }
        store.index = top.max(1);
        store
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn kind_index(&self, kind: &str) -> u64 {
        self.kind_index.get(kind).copied().unwrap_or(0)
    }

    pub(crate) fn get(&self, kind: &str, name: &str) -> Option<&Arc<ConfigEntry>> {
        self.entries.get(&key(kind, name))
    }

    /// Takes a shared store's numbers for a batch numbered `tentative` (see
    /// `Catalog::renumber`): each entry `put` (by kind and name) its key's revisions, the
    /// table's and the kinds' indexes the commit's `index`.
    pub(crate) fn renumber<'a>(
        &mut self,
        tentative: u64,
        index: u64,
        put: impl IntoIterator<Item = (&'a str, &'a str, Revisions)>,
    ) {
        for (kind, name, revisions) in put {
            if let Some(entry) = self.entries.get_mut(&key(kind, name))
                && (entry.create_index, entry.modify_index) != (revisions.create, revisions.modify)
            {
                Arc::make_mut(entry).set_indexes(revisions);
            }
        }
        renumber(&mut self.index, tentative, index);
        for kind_index in self.kind_index.values_mut() {
            renumber(kind_index, tentative, index);
        }
    }

    /// The entries of `kind` in name order, or of every kind (by kind, then name) for `None`.
    pub(crate) fn list<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<ConfigEntry>> + 'a {
        self.entries
            .iter()
            .filter(move |((k, _), _)| kind.is_none_or(|wanted| k == wanted))
            .map(|(_, entry)| entry)
    }

    /// What an upsert does, as Consul decides it: writing what is there changes nothing and
    /// answers `true` whatever `cas` says (Consul skips it before the CAS check); otherwise a
    /// `cas` of 0 writes only a new entry and any other only over that `ModifyIndex`.
    pub(crate) fn plan_upsert(&self, entry: ConfigEntry, cas: Option<u64>) -> Change {
        let existing = self.get(&entry.kind, &entry.name);
        if existing.is_some_and(|e| e.same_content(&entry)) {
            return Change::Unchanged(true);
        }
        let allowed = match (cas, existing) {
            (None, _) => true,
            (Some(0), existing) => existing.is_none(),
            (Some(_), None) => false,
            (Some(cas), Some(existing)) => existing.modify_index == cas,
        };
        if allowed {
            Change::Apply(Some(entry))
        } else {
            Change::Unchanged(false)
        }
    }

    /// What a delete does, as Consul decides it: deleting what is not there changes nothing and
    /// answers `true` (also with a `cas`); with a `cas` the entry goes only at that
    /// `ModifyIndex`.
    pub(crate) fn plan_delete(&self, kind: &str, name: &str, cas: Option<u64>) -> Change {
        match (self.get(kind, name), cas) {
            (None, _) => Change::Unchanged(true),
            (Some(existing), Some(cas)) if existing.modify_index != cas => Change::Unchanged(false),
            (Some(_), _) => Change::Apply(None),
        }
    }

    /// Writes an entry at `index` (a fresh global index): a new one is created at it, an
    /// existing one keeps its `CreateIndex`.
    pub(crate) fn put(&mut self, mut entry: ConfigEntry, index: u64, fx: &mut Effects) {
        let (kind, name) = key(&entry.kind, &entry.name);
        entry.create_index = self.get(&kind, &name).map_or(index, |e| e.create_index);
        entry.modify_index = index;
        self.insert(entry, index, fx);
        fx.writes.insert(Write::ConfigEntry { kind, name });
    }

    /// Deletes an entry at `index` (a fresh global index).
    /// Only for an entry that is there (see [`ConfigStore::plan_delete`]).
    pub(crate) fn delete(&mut self, kind: &str, name: &str, index: u64, fx: &mut Effects) {
        self.remove(kind, name, index, fx);
        let (kind, name) = key(kind, name);
        fx.writes.insert(Write::ConfigEntry { kind, name });
    }

    /// Puts an entry in place as it is (its indexes already set), as a change numbered `index`.
    /// Writes nothing: shared by [`ConfigStore::put`] and a replica.
    pub(crate) fn insert(&mut self, entry: ConfigEntry, index: u64, fx: &mut Effects) {
        self.touch(&entry.kind, index, fx);
        let key = key(&entry.kind, &entry.name);
        self.journal.note(&key, || self.entries.get(&key).cloned());
        self.entries.insert(key, Arc::new(entry));
    }

    /// Takes an entry out as a change numbered `index`. The table and the kind change even if
    /// the entry is not there: on a replica, it may have come and gone within one commit of the
    /// leader's. Writes nothing: shared by [`ConfigStore::delete`] and a replica.
    pub(crate) fn remove(&mut self, kind: &str, name: &str, index: u64, fx: &mut Effects) {
        let key = key(kind, name);
        self.journal.note(&key, || self.entries.get(&key).cloned());
        self.entries.remove(&key);
        self.touch(kind, index, fx);
    }

    /// The table and the kind change at `index`. Indexes only rise: a replica applies a
    /// commit's records in any order.
    fn touch(&mut self, kind: &str, index: u64, fx: &mut Effects) {
        self.index = self.index.max(index);
        let kind_index = self.kind_index.entry(kind.to_owned()).or_default();
        *kind_index = (*kind_index).max(index);
        fx.config = true;
    }
}

fn key(kind: &str, name: &str) -> (String, String) {
    (kind.to_owned(), name_key(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_types::config_entry::decode_config_entry;

    fn entry(name: &str, protocol: &str) -> ConfigEntry {
        decode_config_entry(json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}))
            .unwrap()
    }

    fn apply(store: &mut ConfigStore, change: Change, index: u64) -> bool {
        let mut fx = Effects::default();
        match change {
            Change::Unchanged(answer) => answer,
            Change::Apply(Some(e)) => {
                store.put(e, index, &mut fx);
                true
            }
            Change::Apply(None) => unreachable!("no deletes here"),
        }
    }

    #[test]
    fn cas_and_case_insensitive_names() {
        let mut s = ConfigStore::new();
        let plan = s.plan_upsert(entry("web", "http"), Some(0));
        assert!(apply(&mut s, plan, 5));
        let plan = s.plan_upsert(entry("WEB", "grpc"), Some(0));
        assert!(!apply(&mut s, plan, 6), "exists");
        let plan = s.plan_upsert(entry("web", "grpc"), Some(4));
        assert!(!apply(&mut s, plan, 6));
        let plan = s.plan_upsert(entry("Web", "grpc"), Some(5));
        assert!(apply(&mut s, plan, 6));
        let e = s.get("service-defaults", "WEB").unwrap();
        assert_eq!(
            (e.name.as_str(), e.create_index, e.modify_index),
            ("Web", 5, 6)
        );
        // The same content again: true, whatever the cas, and no change.
        assert!(matches!(
            s.plan_upsert(entry("Web", "grpc"), Some(0)),
            Change::Unchanged(true)
        ));
        assert!(matches!(
            s.plan_delete("service-defaults", "missing", Some(3)),
            Change::Unchanged(true)
        ));
        assert!(matches!(
            s.plan_delete("service-defaults", "web", Some(5)),
            Change::Unchanged(false)
        ));
        let mut fx = Effects::default();
        s.delete("service-defaults", "web", 7, &mut fx);
        assert!(fx.config && s.get("service-defaults", "web").is_none());
        assert_eq!((s.index(), s.kind_index("service-defaults")), (7, 7));
        assert_eq!(s.kind_index("proxy-defaults"), 0);
    }
}
