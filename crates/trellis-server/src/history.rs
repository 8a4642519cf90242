//! The recent check status changes, newest last, bounded: what the dashboard shows as a
//! check's history and as the overview's recent errors. Memory only (a restart starts it
//! empty); the oldest changes go first when it is full.

use parking_lot::Mutex;
use std::collections::VecDeque;
use trellis_catalog::CheckTransition;

/// Most status changes kept, across all checks.
pub const CAPACITY: usize = 10_000;

/// A status change and when it was published (milliseconds since the UNIX epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub time_ms: u64,
    pub transition: CheckTransition,
}

#[derive(Debug)]
pub struct CheckHistory {
    changes: Mutex<VecDeque<Change>>,
    capacity: usize,
}

impl Default for CheckHistory {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl CheckHistory {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            changes: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Adds `transitions`, which happened (were published) at `time_ms`.
    pub fn record(&self, transitions: &[CheckTransition], time_ms: u64) {
        if transitions.is_empty() {
            return;
        }
        // A tick expiring more than the whole capacity keeps only its last ones.
        let skip = transitions.len().saturating_sub(self.capacity);
        let mut changes = self.changes.lock();
        for transition in &transitions[skip..] {
            if changes.len() == self.capacity {
                changes.pop_front();
            }
            changes.push_back(Change {
                time_ms,
                transition: transition.clone(),
            });
        }
    }

    /// Up to `limit` changes that `keep` selects, newest first.
    pub fn newest(&self, limit: usize, keep: impl Fn(&CheckTransition) -> bool) -> Vec<Change> {
        self.changes
            .lock()
            .iter()
            .rev()
            .filter(|c| keep(&c.transition))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::CheckStatus;

    fn transition(check: &str, service: &str, to: CheckStatus) -> CheckTransition {
        CheckTransition {
            check_id: check.into(),
            name: check.into(),
            service_id: Some(service.into()),
            service_name: Some(service.into()),
            from: None,
            to,
            output: String::new(),
            index: 1,
        }
    }

    #[test]
    fn keeps_the_newest_within_capacity() {
        let history = CheckHistory::with_capacity(3);
        history.record(&[transition("a", "web", CheckStatus::Critical)], 1);
        history.record(
            &[
                transition("b", "db", CheckStatus::Passing),
                transition("c", "web", CheckStatus::Warning),
                transition("d", "web", CheckStatus::Passing),
            ],
            2,
        );
        let ids = |changes: Vec<Change>| {
            changes
                .into_iter()
                .map(|c| c.transition.check_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(history.newest(10, |_| true)), ["d", "c", "b"]);
        let web = |t: &CheckTransition| t.service_name.as_deref() == Some("web");
        assert_eq!(ids(history.newest(1, web)), ["d"]);
        // More at once than the capacity: the last ones stay.
        let many: Vec<_> = (0..5)
            .map(|i| transition(&i.to_string(), "x", CheckStatus::Critical))
            .collect();
        history.record(&many, 3);
        assert_eq!(ids(history.newest(10, |_| true)), ["4", "3", "2"]);
    }
}
