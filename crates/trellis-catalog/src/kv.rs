//! Key/value entries and the tombstones that keep prefix indexes monotonic after deletes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most delete tombstones kept; older ones fold into a floor index.
pub const MAX_KV_TOMBSTONES: usize = 65_536;

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

/// Deleted keys and the index at which they were deleted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tombstones {
    by_key: BTreeMap<String, u64>,
    /// The same tombstones ordered by age, to drop the oldest cheaply.
    by_age: BTreeSet<(u64, String)>,
    /// Highest index among tombstones dropped to bound memory.
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

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(index) = self.by_key.remove(key) {
            self.by_age.remove(&(index, key.to_owned()));
        }
    }

    /// Highest delete index under a prefix.
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
