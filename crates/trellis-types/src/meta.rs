//! Service metadata: a small string map kept as a sorted vector. Instances carry a few pairs,
//! and a `BTreeMap` would allocate a whole B-tree node (over 500 bytes) for each instance.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Meta(Vec<(String, String)>);

impl Meta {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value; answers the one it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(pos) => Some(std::mem::replace(&mut self.0[pos].1, value)),
            Err(pos) => {
                self.0.insert(pos, (key, value));
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|pos| self.0[pos].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl FromIterator<(String, String)> for Meta {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut meta = Meta::new();
        for (k, v) in pairs {
            meta.insert(k, v);
        }
        meta.0.shrink_to_fit();
        meta
    }
}

impl From<BTreeMap<String, String>> for Meta {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Self(map.into_iter().collect())
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Meta::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut m: Meta = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]
        .into_iter()
        .collect();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.insert("a".into(), "9".into()), Some("1".into()));
        assert_eq!(m.get("a"), Some("9"));
        assert_eq!(m.get("zz"), None);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"a":"9","b":"2"}"#);
        assert_eq!(serde_json::from_str::<Meta>(&json).unwrap(), m);
    }
}
