//! The engine's timers, soonest first: each undecided transaction's timeout and each branch's
//! next retry. Entries are checked when they fire (a retry whose branch has moved on does
//! nothing), and a transaction's timeout is removed when it is decided, so the set holds one
//! entry per undecided transaction plus one per pending retry.

use crate::model::Millis;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The transaction's time to reach a decision is up.
    Timeout(Arc<str>),
    /// Send the branch (by index) its current phase's message again.
    Retry(Arc<str>, usize),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(Millis, Timer)>,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Millis, timer: Timer) {
        self.queue.insert((at, timer));
    }

    pub(crate) fn remove(&mut self, at: Millis, timer: Timer) {
        self.queue.remove(&(at, timer));
    }

    /// Takes the earliest timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Millis) -> Option<Timer> {
        let first = self.queue.first()?;
        if first.0 > now {
            return None;
        }
        self.queue.pop_first().map(|(_, timer)| timer)
    }

    pub(crate) fn next(&self) -> Option<Millis> {
        self.queue.first().map(|(at, _)| *at)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
