//! The string interner: service and operation names, attribute keys and event names are stored
//! once and referred to by a `u32` id, so millions of spans do not repeat them.
//!
//! Names are never forgotten (their cardinality is expected to be small); their bytes are counted
//! in the store's size once each.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    bytes: usize,
}

impl Interner {
    /// The id of `name`, interning it if new.
    pub(crate) fn intern(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 interned names");
        self.ids.insert(name.clone(), id);
        self.names.push(name.clone());
        // The string, its Arc header, and a slot in the map and in the vector.
        self.bytes += name.len() + 16 + 2 * std::mem::size_of::<Arc<str>>() + 8;
        id
    }

    /// The id of `name`, if interned.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of an id handed out by [`Interner::intern`].
    pub(crate) fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// The estimated heap bytes of all interned names.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
