//! The deadline queue behind [`crate::Catalog::tick`]: every check with something to happen at a
//! known time (a TTL running out, or the reaper's `DeregisterCriticalServiceAfter` passing) has
//! one entry, keyed by `(deadline, check ID)`, so a tick looks only at the checks that are due
//! and the writer can sleep until [`Deadlines::next`]. Session TTLs use the same queue (in
//! `session.rs`), and so does a server sharing a store for the TTL checks it owns (its `ttl.rs`).
//!
//! An ordered set plus an ID → deadline map, rather than a lazy binary heap with generation
//! numbers: a heartbeat moves its check's deadline with one map lookup, one removal and one
//! insertion, all O(log n), and the set never holds stale entries, so its size is the number of
//! checks with a deadline (a lazy heap grows by one entry per heartbeat until it is compacted)
//! and the earliest entry is always a live one. The set and the map share each ID (`Arc<str>`),
//! so moving a deadline allocates nothing: heartbeats are the hottest write.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Most due entries [`crate::Catalog::tick`] handles per call (checks, then sessions); the rest
/// stay due, so the next deadline is already past and the writer comes back at once.
pub const TICK_BUDGET: usize = 16_384;

/// Deadlines by ID, soonest first.
#[derive(Debug, Clone, Default)]
pub struct Deadlines {
    queue: BTreeSet<(Duration, Arc<str>)>,
    of: HashMap<Arc<str>, Duration>,
}

impl Deadlines {
    /// Sets (`Some`) or clears (`None`) the deadline of `id`. O(log n), and no allocation when
    /// `id` already has one; nothing to do when the deadline stays where it is.
    pub fn set(&mut self, id: &str, deadline: Option<Duration>) {
        let Some(new) = deadline else {
            return self.clear(id);
        };
        match self.of.get_key_value(id) {
            Some((_, old)) if *old == new => {}
            Some((key, old)) => {
                let entry = (*old, Arc::clone(key));
                self.queue.remove(&entry);
                let key = entry.1;
                self.of.insert(Arc::clone(&key), new);
                self.queue.insert((new, key));
            }
            None => {
                let key: Arc<str> = Arc::from(id);
                self.of.insert(Arc::clone(&key), new);
                self.queue.insert((new, key));
            }
        }
    }

    /// Forgets `id`'s deadline.
    pub fn clear(&mut self, id: &str) {
        if let Some((key, old)) = self.of.remove_entry(id) {
            self.queue.remove(&(old, key));
        }
    }

    /// The deadline of `id`, if it has one.
    pub fn get(&self, id: &str) -> Option<Duration> {
        self.of.get(id).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Duration> {
        self.queue.first().map(|(deadline, _)| *deadline)
    }

    /// At most `limit` IDs due at `now`, soonest first, left in the queue.
    pub(crate) fn due(&self, now: Duration, limit: usize) -> impl Iterator<Item = &str> {
        self.queue
            .iter()
            .take_while(move |(deadline, _)| *deadline <= now)
            .take(limit)
            .map(|(_, id)| &**id)
    }

    /// Takes out at most `limit` IDs due at `now`, soonest first. The caller acts on each and
    /// sets its next deadline, if it has one still to come.
    pub fn pop_due(&mut self, now: Duration, limit: usize) -> Vec<Arc<str>> {
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

    fn ids(due: Vec<Arc<str>>) -> Vec<String> {
        due.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn due_entries_come_out_soonest_first_and_bounded() {
        let mut d = Deadlines::default();
        d.set("b", Some(ms(20)));
        d.set("a", Some(ms(10)));
        d.set("c", Some(ms(30)));
        assert_eq!(d.next(), Some(ms(10)));
        assert!(d.pop_due(ms(9), 10).is_empty());
        assert_eq!(ids(d.pop_due(ms(30), 2)), ["a", "b"]);
        assert_eq!(d.next(), Some(ms(30)), "the rest stays due");
        assert_eq!(ids(d.pop_due(ms(30), 2)), ["c"]);
        assert_eq!((d.next(), d.len()), (None, 0));
    }

    #[test]
    fn moving_and_clearing_keep_one_entry_per_check() {
        let mut d = Deadlines::default();
        d.set("a", Some(ms(10)));
        d.set("a", Some(ms(50)));
        d.set("b", Some(ms(40)));
        assert_eq!(d.len(), 2);
        assert_eq!(ids(d.pop_due(ms(45), 10)), ["b"]);
        d.set("a", None);
        d.set("gone", None);
        d.clear("gone");
        assert_eq!((d.next(), d.len()), (None, 0));
    }
}
