//! The global index (Consul's Raft index): the one counter every change is numbered by, and the
//! rules every index the catalog hands out follows.
//!
//! Every index the catalog shows — the global index, the services-list index, each service
//! name's index, the KV store index, each KV prefix index, the config entries index, and every
//! record's `CreateIndex` and `ModifyIndex` — is a value this counter had when the change was
//! made. Hence:
//!
//! - **Never 0.** The counter starts at 1: Consul clients treat 0 as "no index", and a blocking
//!   query with index 0 answers at once, so a 0 would turn watchers into busy loops.
//! - **Never backwards for a running catalog.** The counter only rises, and a derived index is
//!   only ever set to the counter's current value, so no derived index exceeds the global one.
//! - **Never backwards after restore.** [`crate::Catalog::restore`] resumes every index at the
//!   highest index restored (the persisted global index or any record's `ModifyIndex`).
//! - **Nothing changed, no number.** Callers bump only once they know something visible changes:
//!   a re-registration of what is there, a failed CAS, a delete of a missing key, or a heartbeat
//!   that repeats the status changes no index and wakes nobody.
//! - **A replica numbers nothing.** [`crate::Catalog::replicate`] takes the leader's numbers: the
//!   counter moves up to the commit's index, records keep their indexes, and a derived index
//!   moves to the index of the record that changed it (the commit's own for a delete, whose
//!   mutation carries none), never down.
//! - **Among servers sharing etcd, every index is a revision.** The leader numbers a whole batch
//!   with one tentative index (one above the last revision it knows: [`GlobalIndex::begin_batch`]),
//!   since the batch becomes one etcd transaction, and once etcd committed it takes etcd's
//!   numbers ([`crate::Catalog::renumber`]): the commit's revision, and each key's create and
//!   modify revisions, which replicas read off the keys. The tentative index is never above the
//!   revision (etcd's revision only rises), so no number it replaces was handed out before.

/// The global index counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GlobalIndex {
    value: u64,
    /// While a batch is numbered as one change: the index it started from.
    batch_from: Option<u64>,
}

impl GlobalIndex {
    /// A fresh counter at 1 (never 0, see the module documentation).
    pub(crate) const fn new() -> Self {
        Self::resume_at_least_one(1)
    }

    const fn resume_at_least_one(value: u64) -> Self {
        Self {
            value,
            batch_from: None,
        }
    }

    /// A counter resuming at `top`, the highest index restored (at least 1).
    pub(crate) fn resume_at(top: u64) -> Self {
        Self::resume_at_least_one(top.max(1))
    }

    /// The highest index of any change so far.
    pub(crate) fn get(self) -> u64 {
        self.value
    }

    /// The number the next change will take: a transaction numbers its writes with it before
    /// deciding whether to apply them (and then takes it with [`GlobalIndex::bump`]).
    pub(crate) fn peek_next(self) -> u64 {
        self.batch_from.unwrap_or(self.value) + 1
    }

    /// Numbers a new change: one more than any index handed out before (within a batch, the
    /// batch's one number). Everything one change touches (an instance, its checks, its
    /// service's index, the services list) takes this same number, and a batch-like change
    /// (every TTL expiring in one tick) takes one number in all.
    pub(crate) fn bump(&mut self) -> u64 {
        self.value = self.peek_next();
        self.value
    }

    /// Until [`GlobalIndex::end_batch`], every change takes the same number: the one
    /// answered, one above every index handed out before the batch (the open batch's, if one
    /// is open).
    pub(crate) fn begin_batch(&mut self) -> u64 {
        if self.batch_from.is_none() {
            self.batch_from = Some(self.value);
        }
        self.peek_next()
    }

    pub(crate) fn end_batch(&mut self) {
        self.batch_from = None;
    }

    /// The open batch's number, if one is open.
    pub(crate) fn open_batch(self) -> Option<u64> {
        self.batch_from.map(|from| from + 1)
    }

    /// Ends the batch as if it had not been: back to the index it started from (answered).
    pub(crate) fn undo_batch(&mut self) -> u64 {
        if let Some(from) = self.batch_from.take() {
            self.value = from;
        }
        self.value
    }

    /// Moves the counter up to `index`, a change numbered elsewhere (a replica applying the
    /// leader's commit, see [`crate::Catalog::replicate`]); never down.
    pub(crate) fn advance_to(&mut self, index: u64) {
        self.value = self.value.max(index);
    }
}
