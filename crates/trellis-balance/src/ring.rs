//! Consistent-hash ring (ketama style) behind the `ring_hash` policy.
//!
//! Each endpoint owns `VNODES_PER_WEIGHT × weight` points on a 64-bit circle, derived only from
//! the endpoint's own id. A key goes to the first point clockwise from its hash whose endpoint
//! is eligible. Adding or removing an endpoint therefore only moves the keys that land on its
//! points, and skipping an ineligible endpoint sends its keys exactly where removing it would.

use crate::hash::mix;

/// Points per unit of weight. 160 is ketama's choice: with 10 endpoints the share of each stays
/// within about ±10% of its fair share.
const VNODES_PER_WEIGHT: u64 = 160;

/// Upper bound on points, so large registry weights (say 1000) cannot build a huge ring; above
/// it every endpoint's count is scaled down proportionally.
const MAX_POINTS: u64 = 1 << 16;

/// SplitMix64 increment: successive points of one endpoint are a SplitMix64 sequence seeded
/// with the endpoint's hash.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// (point, endpoint hash, slot index), sorted by point then endpoint hash so the ring does
    /// not depend on the order endpoints were listed in.
    points: Vec<(u64, u64, usize)>,
}

impl Ring {
    /// Builds the ring for `(endpoint hash, weight)` pairs; the slot index of each is its
    /// position in the iterator.
    pub(crate) fn build(nodes: &[(u64, u32)]) -> Self {
        let total: u64 = nodes
            .iter()
            .map(|&(_, w)| u64::from(w.max(1)) * VNODES_PER_WEIGHT)
            .sum();
        let scale = if total > MAX_POINTS {
            MAX_POINTS as f64 / total as f64
        } else {
            1.0
        };
        let mut points = Vec::new();
        for (slot, &(hash, weight)) in nodes.iter().enumerate() {
            let wanted = (f64::from(weight.max(1)) * VNODES_PER_WEIGHT as f64 * scale).round();
            let count = (wanted as u64).max(1);
            points.extend(
                (1..=count).map(|j| (mix(hash.wrapping_add(j.wrapping_mul(GOLDEN))), hash, slot)),
            );
        }
        points.sort_unstable();
        Self { points }
    }

    /// The slot owning `key_hash`: the first eligible one clockwise.
    pub(crate) fn lookup(&self, key_hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self
            .points
            .partition_point(|&(point, _, _)| point < key_hash);
        let (before, after) = self.points.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|&(_, _, slot)| slot)
            .find(|&slot| eligible(slot))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_count_follows_weight_and_is_capped() {
        assert_eq!(Ring::build(&[(1, 1), (2, 3)]).len(), 4 * 160);
        let huge = Ring::build(&[(1, 1000), (2, 1000)]);
        assert!(huge.len() as u64 <= MAX_POINTS + 2, "{}", huge.len());
        assert!(huge.len() as u64 >= MAX_POINTS - 2, "{}", huge.len());
        assert_eq!(Ring::build(&[]).lookup(42, |_| true), None);
    }

    #[test]
    fn lookup_wraps_and_skips_ineligible() {
        let ring = Ring::build(&[(10, 1), (20, 1)]);
        for key in [0, u64::MAX, 1 << 63] {
            let owner = ring.lookup(key, |_| true).expect("non-empty");
            let other = 1 - owner;
            assert_eq!(ring.lookup(key, |s| s == other), Some(other));
        }
        assert_eq!(ring.lookup(5, |_| false), None);
    }
}
