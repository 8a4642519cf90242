//! The KV store: entries (with their lock holders), the tombstones that keep prefix indexes
//! moving forward across deletes, and the store's own index.

use crate::effects::{Effects, Write};
use crate::error::CatalogError;
use crate::journal::Journal;
use crate::numbering::{Indexed, Revisions, renumber};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use trellis_types::Session;

/// Most delete tombstones kept; older ones fold into a floor index.
pub const MAX_KV_TOMBSTONES: usize = 65_536;

/// Longest KV key accepted.
pub const MAX_KEY_LEN: usize = 512;

/// A KV entry. `LockIndex` counts the times its lock was acquired; `Session` is the session
/// holding it, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "value_bytes")]
    pub value: Vec<u8>,
    pub flags: u64,
    /// Absent in records written before locks existed.
    #[serde(default)]
    pub lock_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl KvEntry {
    /// Whether two versions of a key have the same content (value, flags, lock and holder),
    /// whatever their indexes: writing what is there changes nothing and takes no index, as in
    /// Consul.
    pub(crate) fn same_content(&self, other: &KvEntry) -> bool {
        self.value == other.value
            && self.flags == other.flags
            && self.lock_index == other.lock_index
            && self.session == other.session
    }

    /// The entry without its value, as a transaction answers a write (the value is not copied).
    pub(crate) fn without_value(&self) -> KvEntry {
        KvEntry {
            key: self.key.clone(),
            value: Vec::new(),
            flags: self.flags,
            lock_index: self.lock_index,
            session: self.session.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
        }
    }
}

/// The durable state of the KV store as restore takes it: the entries, and the sessions, which
/// hold locks on them and are restored with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvSnapshot {
    pub entries: Vec<KvEntry>,
    pub sessions: Vec<Session>,
}

impl From<Vec<KvEntry>> for KvSnapshot {
    fn from(entries: Vec<KvEntry>) -> Self {
        Self {
            entries,
            sessions: Vec::new(),
        }
    }
}

/// Stores values as base64 text in the durable JSON form.
mod value_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Deleted keys and the index at which they were deleted: without them, deleting the entry with
/// the highest index under a prefix would move that prefix's index backwards, and its waiters
/// would never see the delete.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tombstones {
    by_key: BTreeMap<String, u64>,
    /// The same tombstones ordered by age, to drop the oldest cheaply.
    by_age: BTreeSet<(u64, String)>,
    /// Highest index among tombstones dropped to bound memory (and the restored top after a
    /// restart, as tombstones are not persisted). It counts under every prefix: a prefix may
    /// jump forward (a spurious wake-up) but never back.
    floor: u64,
}

impl Tombstones {
    pub(crate) fn insert(&mut self, key: String, index: u64) {
        self.remove(&key);
        self.by_age.insert((index, key.clone()));
        self.by_key.insert(key, index);
        if self.by_key.len() > MAX_KV_TOMBSTONES
            && let Some((oldest_index, oldest_key)) = self.by_age.pop_first()
        {
            // The floor keeps every prefix index at least as high as before the drop.
            self.by_key.remove(&oldest_key);
            self.floor = self.floor.max(oldest_index);
        }
    }

    pub(crate) fn raise_floor(&mut self, index: u64) {
        self.floor = self.floor.max(index);
    }

    /// Drops a key's tombstone; only for a put, whose entry has a higher index than the delete.
    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(index) = self.by_key.remove(key) {
            self.by_age.remove(&(index, key.to_owned()));
        }
    }

    /// Highest delete index under a prefix, at least the floor.
    pub(crate) fn max_under(&self, prefix: &str) -> u64 {
        self.by_key
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0)
            .max(self.floor)
    }
}

/// The KV store: live entries, tombstones of deleted keys, the keys each session holds, and the
/// index of its last change. What a write does is decided by `txn.rs` (every KV write is a
/// transaction of one or more operations); the store applies the outcome.
#[derive(Debug, Clone)]
pub(crate) struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    tombstones: Tombstones,
    /// Global index of the last put or delete anywhere in the store (1 while there was none).
    index: u64,
    /// The keys whose lock each session holds, so invalidating a session finds them at once.
    held: HashMap<String, BTreeSet<String>>,
    /// The entries a leader's batch changed, as they were (see `journal.rs`).
    pub(crate) journal: Journal<String, KvEntry>,
}

impl KvStore {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            tombstones: Tombstones::default(),
            index: 1,
            held: HashMap::new(),
            journal: Journal::default(),
        }
    }

    /// The store from its durable entries, with every index resuming at `top` (the highest index
    /// restored, at least every entry's `ModifyIndex`). Deletes before the restart left no
    /// tombstone, so the floor is raised to `top`: no prefix index can come back lower than it
    /// was, whichever deletes it had seen. A lock held by a session that `live` does not know
    /// (none is expected: a session and its locks are committed together) is dropped, so no key
    /// is ever held by a session that does not exist.
    pub(crate) fn restore(entries: Vec<KvEntry>, top: u64, live: impl Fn(&str) -> bool) -> Self {
        let mut store = Self::new();
        for mut entry in entries {
            if entry.session.as_deref().is_some_and(|s| !live(s)) {
                entry.session = None;
            }
            store.set_entry(entry);
        }
        store.index = top.max(1);
        store.tombstones.raise_floor(top);
        store
    }

    pub(crate) fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Takes a shared store's numbers for a batch numbered `tentative` (see
    /// `Catalog::renumber`): each entry `put` its key's revisions, each tombstone of a key
    /// `deleted` and the store's index the commit's `index`.
    pub(crate) fn renumber<'a>(
        &mut self,
        tentative: u64,
        index: u64,
        put: impl IntoIterator<Item = (&'a str, Revisions)>,
        deleted: impl IntoIterator<Item = &'a str>,
    ) {
        for (key, revisions) in put {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.set_indexes(revisions);
            }
        }
        for key in deleted {
            if self.tombstones.by_key.get(key) == Some(&tentative) {
                self.tombstones.insert(key.to_owned(), index);
            }
        }
        renumber(&mut self.tombstones.floor, tentative, index);
        renumber(&mut self.index, tentative, index);
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub(crate) fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// Index of the entries under a prefix (a key is a prefix of itself): the highest
    /// `ModifyIndex` of a live entry or delete index of a tombstone under it, at least the
    /// tombstone floor, never below 1. A put or delete under the prefix moves it forward and a
    /// change elsewhere does not; it never moves back, because a put replaces a tombstone only
    /// with a higher index, a delete replaces an entry with a tombstone at a higher index, and
    /// dropping a tombstone raises the floor to its index.
    pub(crate) fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self
            .range(prefix)
            .map(|e| e.modify_index)
            .max()
            .unwrap_or(0);
        live.max(self.tombstones.max_under(prefix)).max(1)
    }

    /// Index of the whole store: its last put or delete.
    pub(crate) fn store_index(&self) -> u64 {
        self.index
    }

    /// The keys `session` holds, in key order.
    pub(crate) fn held_by(&self, session: &str) -> Vec<String> {
        self.held
            .get(session)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies a decided change at `index`, a fresh global index: each key is written (`Some`,
    /// its entry already numbered `index`) or deleted (`None`, leaving a tombstone at `index` if
    /// it existed). The caller takes the index only when something changes.
    pub(crate) fn apply(
        &mut self,
        writes: impl IntoIterator<Item = (String, Option<KvEntry>)>,
        index: u64,
        fx: &mut Effects,
    ) {
        for (key, entry) in writes {
            if self.change(&key, entry, index) {
                fx.writes.insert(Write::Kv(key));
            }
        }
        self.index = index;
        fx.kv = true;
    }

    /// Applies one record of a leader's commit numbered `index`, as it is: the key's entry
    /// (`Some`) or its delete (`None`). Writes nothing. The store's index and a delete's
    /// tombstone take `index`, the commit's: the delete's own index is not in the record, and
    /// the commit's is never below any of the commit's (so they may run ahead of the leader's,
    /// never behind; equal when the leader numbers a batch as one change). A delete of a key the replica does not have leaves one too: the
    /// key came and went within the commit, which left the leader a tombstone.
    pub(crate) fn replicate(
        &mut self,
        key: &str,
        entry: Option<KvEntry>,
        index: u64,
        fx: &mut Effects,
    ) {
        match entry {
            Some(entry) => {
                self.change(key, Some(entry), index);
            }
            None => {
                self.remove_entry(key);
                self.tombstones.insert(key.to_owned(), index);
            }
        }
        self.index = self.index.max(index);
        fx.kv = true;
    }

    /// Writes (`Some`) or deletes (`None`, leaving a tombstone at `index`) one key; answers
    /// whether anything changed (deleting a missing key does not).
    fn change(&mut self, key: &str, entry: Option<KvEntry>, index: u64) -> bool {
        match entry {
            Some(entry) => {
                // The live entry's index is higher than the delete's and now speaks for the key.
                self.tombstones.remove(key);
                self.set_entry(entry);
                true
            }
            None => {
                let removed = self.remove_entry(key).is_some();
                if removed {
                    self.tombstones.insert(key.to_owned(), index);
                }
                removed
            }
        }
    }

    fn set_entry(&mut self, entry: KvEntry) {
        let key = entry.key.clone();
        self.journal.note(&key, || self.entries.get(&key).cloned());
        let holder = entry.session.clone();
        if let Some(old) = self.entries.insert(key.clone(), entry) {
            self.unhold(old.session.as_deref(), &key);
        }
        if let Some(session) = holder {
            self.held.entry(session).or_default().insert(key);
        }
    }

    fn remove_entry(&mut self, key: &str) -> Option<KvEntry> {
        let old = self.entries.remove(key)?;
        self.journal.note(key, || Some(old.clone()));
        self.unhold(old.session.as_deref(), key);
        Some(old)
    }

    fn unhold(&mut self, session: Option<&str>, key: &str) {
        if let Some(session) = session
            && let Some(keys) = self.held.get_mut(session)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.held.remove(session);
            }
        }
    }
}

/// Refuses a key Trellis does not store: empty, longer than [`MAX_KEY_LEN`] bytes, or with
/// control characters.
pub fn validate_key(key: &str) -> Result<(), CatalogError> {
    if key.is_empty() {
        return Err(CatalogError::Invalid("missing key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(CatalogError::Invalid(format!(
            "key longer than {MAX_KEY_LEN} bytes"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(CatalogError::Invalid(
            "key contains control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_tombstones_keep_prefix_indexes_from_going_back() {
        let mut t = Tombstones::default();
        for i in 0..=MAX_KV_TOMBSTONES as u64 {
            t.insert(format!("k/{i:06}"), 10 + i);
        }
        // The oldest tombstone ("k/000000" at 10) was dropped; its index lives on in the floor.
        assert_eq!(t.by_key.len(), MAX_KV_TOMBSTONES);
        assert!(!t.by_key.contains_key("k/000000"));
        assert_eq!(t.max_under("k/000000"), 10);
        assert_eq!(
            t.max_under("elsewhere/"),
            10,
            "the floor counts under every prefix"
        );
        assert_eq!(t.max_under("k/"), 10 + MAX_KV_TOMBSTONES as u64);
    }

    #[test]
    fn restore_raises_every_prefix_to_the_top() {
        let entry = KvEntry {
            key: "a".into(),
            value: vec![],
            flags: 0,
            lock_index: 0,
            session: None,
            create_index: 3,
            modify_index: 4,
        };
        let store = KvStore::restore(vec![entry], 9, |_| true);
        assert_eq!(store.store_index(), 9);
        assert_eq!(store.prefix_index("a"), 9);
        assert_eq!(store.prefix_index("deleted-before-the-restart/"), 9);
        assert_eq!(
            KvStore::restore(Vec::new(), 0, |_| true).prefix_index(""),
            1,
            "never 0"
        );
    }
}
