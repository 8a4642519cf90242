//! The deadline queue behind [`crate::Catalog::tick`]: every check with something to happen at a
//! known time (a TTL running out, or the reaper's `DeregisterCriticalServiceAfter` passing) has
//! one entry, keyed by `(deadline, check ID)`, so a tick looks only at the checks that are due
//! and the writer can sleep until [`Deadlines::next`].
//!
//! An ordered set plus an ID → deadline map (as `session.rs` keeps session timers), rather than
//! a lazy binary heap with generation numbers: a heartbeat moves its check's deadline with one
//! map lookup, one removal and one insertion, all O(log n), and the set never holds stale
//! entries, so its size is the number of checks with a deadline (a lazy heap grows by one entry
//! per heartbeat until it is compacted) and the earliest entry is always a live one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Most due entries [`crate::Catalog::tick`] handles per call (checks, then sessions); the rest
/// stay due, so the next deadline is already past and the writer comes back at once.
pub const TICK_BUDGET: usize = 16_384;

/// The checks' deadlines, soonest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deadlines {
    queue: BTreeSet<(Duration, String)>,
    of: HashMap<String, Duration>,
}

impl Deadlines {
    /// Sets (`Some`) or clears (`None`) the deadline of check `id`. O(log n); nothing to do when
    /// the deadline stays where it is.
    pub(crate) fn set(&mut self, id: &str, deadline: Option<Duration>) {
        match (self.of.get_mut(id), deadline) {
            (Some(old), Some(new)) => {
                if *old != new {
                    // Take the queued ID back and reuse it for the new entry.
                    let key = self
                        .queue
                        .take(&(*old, id.to_owned()))
                        .map_or_else(|| id.to_owned(), |(_, key)| key);
                    *old = new;
                    self.queue.insert((new, key));
                }
            }
            (Some(_), None) => self.clear(id),
            (None, Some(new)) => {
                self.of.insert(id.to_owned(), new);
                self.queue.insert((new, id.to_owned()));
            }
            (None, None) => {}
        }
    }

    /// Forgets check `id`'s deadline.
    pub(crate) fn clear(&mut self, id: &str) {
        if let Some(old) = self.of.remove(id) {
            self.queue.remove(&(old, id.to_owned()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Duration> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// Takes out at most `limit` checks due at `now`, soonest first. The caller acts on each and
    /// sets its next deadline, if it has one still to come.
    pub(crate) fn pop_due(&mut self, now: Duration, limit: usize) -> Vec<String> {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.queue.first() {
                Some((deadline, _)) if *deadline <= now => {}
                _ => break,
            }
            if let Some((_, id)) = self.queue.pop_first() {
                self.of.remove(&id);
                due.push(id);
            }
        }
        due
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn due_entries_come_out_soonest_first_and_bounded() {
        let mut d = Deadlines::default();
        d.set("b", Some(ms(20)));
        d.set("a", Some(ms(10)));
        d.set("c", Some(ms(30)));
        assert_eq!(d.next(), Some(ms(10)));
        assert!(d.pop_due(ms(9), 10).is_empty());
        assert_eq!(d.pop_due(ms(30), 2), ["a", "b"]);
        assert_eq!(d.next(), Some(ms(30)), "the rest stays due");
        assert_eq!(d.pop_due(ms(30), 2), ["c"]);
        assert_eq!((d.next(), d.len()), (None, 0));
    }

    #[test]
    fn moving_and_clearing_keep_one_entry_per_check() {
        let mut d = Deadlines::default();
        d.set("a", Some(ms(10)));
        d.set("a", Some(ms(50)));
        d.set("b", Some(ms(40)));
        assert_eq!(d.len(), 2);
        assert_eq!(d.pop_due(ms(45), 10), ["b"]);
        d.set("a", None);
        d.set("gone", None);
        d.clear("gone");
        assert_eq!((d.next(), d.len()), (None, 0));
    }
}
