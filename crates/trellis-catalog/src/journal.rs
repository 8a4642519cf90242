//! What a batch changed, as it was before: a leader sharing etcd journals each record the first
//! time its batch touches it, so that a batch whose commit failed can be taken back out of the
//! catalog ([`crate::Catalog::undo_batch`]) and nobody reads a write that may not be durable.

use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Each key's value before the batch (`None`: it did not exist), while journaling.
#[derive(Debug, Clone)]
pub(crate) struct Journal<K, V>(Option<BTreeMap<K, Option<V>>>);

impl<K, V> Default for Journal<K, V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: Ord, V> Journal<K, V> {
    /// Journals from now on (forgetting anything journaled before).
    pub(crate) fn start(&mut self) {
        self.0 = Some(BTreeMap::new());
    }

    /// Stops journaling: what was journaled, each key's value before the batch.
    pub(crate) fn take(&mut self) -> BTreeMap<K, Option<V>> {
        self.0.take().unwrap_or_default()
    }

    /// Notes `key`'s value before the batch, `before()`, unless it was noted already (it is
    /// about to change); nothing while not journaling.
    pub(crate) fn note<Q>(&mut self, key: &Q, before: impl FnOnce() -> Option<V>)
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(journal) = &mut self.0
            && !journal.contains_key(key)
        {
            journal.insert(key.to_owned(), before());
        }
    }
}
