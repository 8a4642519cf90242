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

/// The global index counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GlobalIndex(u64);

impl GlobalIndex {
    /// A fresh counter at 1 (never 0, see the module documentation).
    pub(crate) const fn new() -> Self {
        Self(1)
    }

    /// A counter resuming at `top`, the highest index restored (at least 1).
    pub(crate) fn resume_at(top: u64) -> Self {
        Self(top.max(1))
    }

    /// The highest index of any change so far.
    pub(crate) fn get(self) -> u64 {
        self.0
    }

    /// The number the next change will take: a transaction numbers its writes with it before
    /// deciding whether to apply them (and then takes it with [`GlobalIndex::bump`]).
    pub(crate) fn peek_next(self) -> u64 {
        self.0 + 1
    }

    /// Numbers a new change: one more than any index handed out before. Everything one change
    /// touches (an instance, its checks, its service's index, the services list) takes this same
    /// number, and a batch-like change (every TTL expiring in one tick) takes one number in all.
    pub(crate) fn bump(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    /// Moves the counter up to `index`, a change numbered elsewhere (a replica applying the
    /// leader's commit, see [`crate::Catalog::replicate`]); never down.
    pub(crate) fn advance_to(&mut self, index: u64) {
        self.0 = self.0.max(index);
    }
}
