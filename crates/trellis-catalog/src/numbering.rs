//! How a shared store numbered a commit: etcd gives each transaction a revision and each key
//! its create and modify revisions, and among servers sharing it every index the catalog shows
//! is one of them (see `index.rs`). The leader applies a batch at one tentative index, commits
//! it, and takes etcd's numbers with [`crate::Catalog::renumber`]; a replica reads them off the
//! keys with [`Indexed::set_indexes`].

/// A key's create and modify revisions: its record's `CreateIndex` and `ModifyIndex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    pub create: u64,
    pub modify: u64,
}

/// The numbers a store gave one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    /// The commit's revision (its last transaction's, for a batch etcd took in several): the
    /// global index after it, and the index of everything derived the batch moved.
    pub index: u64,
    /// For each mutation committed, in order: the revisions of the key it put (`None` for a
    /// delete).
    pub records: Vec<Option<Revisions>>,
}

/// A record with a `CreateIndex` and a `ModifyIndex`.
pub trait Indexed {
    fn set_indexes(&mut self, revisions: Revisions);
}

/// An index the batch numbered `tentative` moved takes the commit's `index`.
pub(crate) fn renumber(slot: &mut u64, tentative: u64, index: u64) {
    if *slot == tentative {
        *slot = index;
    }
}
