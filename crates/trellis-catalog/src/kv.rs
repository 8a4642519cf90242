//! The KV store: entries with Consul's CAS rules, the tombstones that keep prefix indexes moving
//! forward across deletes, and the store's own index.

use crate::command::{Effects, Write};
use crate::error::CatalogError;
use crate::index::GlobalIndex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most delete tombstones kept; older ones fold into a floor index.
pub const MAX_KV_TOMBSTONES: usize = 65_536;

/// Longest KV key accepted.
pub const MAX_KEY_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "value_bytes")]
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
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

/// The KV store: live entries, tombstones of deleted keys, and the index of its last change.
#[derive(Debug, Clone)]
pub(crate) struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    tombstones: Tombstones,
    /// Global index of the last put or delete anywhere in the store (1 while there was none).
    index: u64,
}

impl KvStore {
    pub(crate) fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
            tombstones: Tombstones::default(),
            index: 1,
        }
    }

    /// The store from its durable entries, with every index resuming at `top` (the highest index
    /// restored, at least every entry's `ModifyIndex`). Deletes before the restart left no
    /// tombstone, so the floor is raised to `top`: no prefix index can come back lower than it
    /// was, whichever deletes it had seen.
    pub(crate) fn restore(entries: Vec<KvEntry>, top: u64) -> Self {
        let mut store = Self::new();
        for entry in entries {
            store.entries.insert(entry.key.clone(), entry);
        }
        store.index = top.max(1);
        store.tombstones.raise_floor(top);
        store
    }

    pub(crate) fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
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

    /// Writes `key` unless the CAS fails (`Some(0)`: only if absent; `Some(i)`: only if its
    /// `ModifyIndex` is `i`). A failed CAS answers `false` and takes no index. A write takes a
    /// new global index as the entry's `ModifyIndex` and the store index; the entry keeps its
    /// `CreateIndex` if it existed.
    pub(crate) fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
        global: &mut GlobalIndex,
        fx: &mut Effects,
    ) -> Result<bool, CatalogError> {
        validate_key(&key)?;
        let existing = self.entries.get(&key);
        let allowed = match (cas, existing) {
            (None, _) => true,
            (Some(0), found) => found.is_none(),
            (Some(want), Some(found)) => found.modify_index == want,
            (Some(_), None) => false,
        };
        if !allowed {
            return Ok(false);
        }
        let create_index = existing.map(|e| e.create_index);
        let index = global.bump();
        self.index = index;
        // The live entry's index is higher than the delete's and now speaks for the key.
        self.tombstones.remove(&key);
        self.entries.insert(
            key.clone(),
            KvEntry {
                key: key.clone(),
                value,
                flags,
                create_index: create_index.unwrap_or(index),
                modify_index: index,
            },
        );
        fx.kv = true;
        fx.writes.insert(Write::Kv(key));
        Ok(true)
    }

    /// Deletes `key`, or every key under it with `recurse`. A failed CAS answers `false`;
    /// deleting nothing (a missing key, an empty prefix) answers `true`, as Consul does, and
    /// takes no index. Every key deleted leaves a tombstone at the delete's index, so the
    /// indexes of the prefixes above it move forward.
    pub(crate) fn delete(
        &mut self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
        global: &mut GlobalIndex,
        fx: &mut Effects,
    ) -> Result<bool, CatalogError> {
        let doomed: Vec<String> = if recurse {
            if cas.is_some() {
                return Err(CatalogError::Invalid(
                    "cas cannot be used with recurse".into(),
                ));
            }
            self.range(key).map(|e| e.key.clone()).collect()
        } else {
            match (self.entries.get(key), cas) {
                (Some(entry), Some(want)) if entry.modify_index != want => return Ok(false),
                (None, Some(_)) => return Ok(false),
                (Some(_), _) => vec![key.to_owned()],
                (None, None) => Vec::new(),
            }
        };
        if doomed.is_empty() {
            return Ok(true);
        }
        let index = global.bump();
        self.index = index;
        for key in doomed {
            self.entries.remove(&key);
            self.tombstones.insert(key.clone(), index);
            fx.writes.insert(Write::Kv(key));
        }
        fx.kv = true;
        Ok(true)
    }
}

fn validate_key(key: &str) -> Result<(), CatalogError> {
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
            create_index: 3,
            modify_index: 4,
        };
        let store = KvStore::restore(vec![entry], 9);
        assert_eq!(store.store_index(), 9);
        assert_eq!(store.prefix_index("a"), 9);
        assert_eq!(store.prefix_index("deleted-before-the-restart/"), 9);
        assert_eq!(
            KvStore::restore(Vec::new(), 0).prefix_index(""),
            1,
            "never 0"
        );
    }
}
