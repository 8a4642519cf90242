//! The periodic scan behind [`crate::Catalog::tick`]: finds TTL checks that ran out (and marks
//! them critical) and services due for the reaper, examining at most [`TICK_BUDGET`] checks per
//! call and resuming after the last check examined.

use crate::check::Check;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

/// Most checks [`crate::Catalog::tick`] examines per call.
pub const TICK_BUDGET: usize = 16_384;

/// Where the scan stopped: the next scan resumes after the last check examined, so every check is
/// examined once per `ceil(checks / TICK_BUDGET)` ticks.
#[derive(Debug, Clone, Default)]
pub(crate) struct TickScan {
    cursor: Option<String>,
}

/// What one scan found. The catalog numbers and publishes the changes.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// TTL checks this scan turned critical; their indexes are still the old ones.
    pub(crate) expired: Vec<String>,
    /// Service IDs with a check critical for longer than its `DeregisterCriticalServiceAfter`.
    pub(crate) reap: BTreeSet<String>,
}

impl TickScan {
    /// Examines the next at most [`TICK_BUDGET`] checks in ID order, wrapping around.
    pub(crate) fn scan(
        &mut self,
        checks: &mut BTreeMap<String, Arc<Check>>,
        now: Duration,
    ) -> Findings {
        let mut found = Findings::default();
        let mut examine = |id: &String, check: &mut Arc<Check>| {
            // Test before make_mut: published views share these Arcs, and cloning every check
            // on every tick would cost far more than the scan.
            if check.ttl_due(now) && Arc::make_mut(check).expire_ttl(now) {
                found.expired.push(id.clone());
            }
            if check.should_reap(now)
                && let Some(service_id) = check.service_id()
            {
                found.reap.insert(service_id.to_owned());
            }
        };
        // At most TICK_BUDGET checks per tick, resuming after the last one examined: with
        // hundreds of thousands of checks a full pass (pointer chasing through every check)
        // would hold the writer for tens of milliseconds each tick; this way a pass spans a
        // few ticks instead.
        let budget = checks.len().min(TICK_BUDGET);
        let mut seen = 0;
        let mut last: Option<String> = None;
        if let Some(cursor) = self.cursor.take() {
            let mut tail_last = None;
            for (id, check) in checks
                .range_mut::<str, _>((Bound::Excluded(cursor.as_str()), Bound::Unbounded))
                .take(budget)
            {
                examine(id, check);
                tail_last = Some(id);
                seen += 1;
            }
            last = tail_last.cloned();
        }
        let mut head_last = None;
        for (id, check) in checks.iter_mut().take(budget - seen) {
            examine(id, check);
            head_last = Some(id);
        }
        if let Some(id) = head_last {
            last = Some(id.clone());
        }
        self.cursor = last;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::CheckDefinition;

    fn ttl_checks(n: usize) -> BTreeMap<String, Arc<Check>> {
        (0..n)
            .map(|i| {
                let id = format!("c{i:06}");
                let definition = CheckDefinition::from_json(
                    serde_json::json!({"CheckID": id, "Name": id, "TTL": "5s", "Status": "passing"}),
                )
                .expect("valid check");
                (id, Arc::new(Check::new(definition, None, 1, Duration::ZERO)))
            })
            .collect()
    }

    #[test]
    fn resumes_after_a_cursor_that_was_removed() {
        let mut checks = ttl_checks(TICK_BUDGET + 10);
        let mut scan = TickScan::default();
        let first = scan.scan(&mut checks, Duration::from_secs(5));
        assert_eq!(first.expired.len(), TICK_BUDGET);
        let cursor = first.expired.last().cloned().expect("some expired");
        // The check the scan stopped at goes away before the next tick.
        checks.remove(&cursor);
        let second = scan.scan(&mut checks, Duration::from_secs(5));
        assert_eq!(second.expired.len(), 10, "the rest, each once");
        assert!(second.expired.iter().all(|id| id > &cursor));
    }

    #[test]
    fn a_small_set_is_scanned_whole_every_time() {
        let mut checks = ttl_checks(3);
        let mut scan = TickScan::default();
        assert!(
            scan.scan(&mut checks, Duration::from_secs(1))
                .expired
                .is_empty()
        );
        // The cursor now sits on the last check; the next scan wraps and sees all three once.
        let found = scan.scan(&mut checks, Duration::from_secs(5));
        assert_eq!(found.expired, ["c000000", "c000001", "c000002"]);
    }
}
