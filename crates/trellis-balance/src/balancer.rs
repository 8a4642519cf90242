//! The per-service balancer: the endpoint set, per-endpoint load, and one pick per policy.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::ewma::{PeakEwma, PeakEwmaConfig};
use crate::hash::{hash_bytes, hash_value};
use crate::policy::Policy;
use crate::ring::Ring;

/// One upstream endpoint as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<K> {
    /// Identity. For `ring_hash` it should be the same on every proxy (an address or an
    /// instance id, not a local counter): ring positions are derived from it.
    pub id: K,
    /// Registry weight, used by `weighted` and `ring_hash`; 0 counts as 1.
    pub weight: u32,
    /// Whether the endpoint may receive traffic (healthy and not ejected); the caller decides.
    pub eligible: bool,
}

impl<K> Endpoint<K> {
    /// An eligible endpoint of weight 1.
    pub fn new(id: K) -> Self {
        Self {
            id,
            weight: 1,
            eligible: true,
        }
    }

    /// The same endpoint with another weight.
    #[must_use]
    pub fn with_weight(self, weight: u32) -> Self {
        Self { weight, ..self }
    }

    /// The same endpoint with another eligibility.
    #[must_use]
    pub fn with_eligible(self, eligible: bool) -> Self {
        Self { eligible, ..self }
    }
}

/// What the balancer knows about an endpoint, for the admin `/endpoints` view and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointView<'a, K> {
    pub id: &'a K,
    pub weight: u32,
    pub eligible: bool,
    /// Requests started and not yet ended.
    pub pending: u32,
    /// Peak-EWMA latency estimate at the `now` passed to [`Balancer::endpoints`].
    pub rtt_estimate: Duration,
}

#[derive(Debug, Clone)]
struct Slot<K> {
    id: K,
    weight: u32,
    eligible: bool,
    pending: u32,
    ewma: PeakEwma,
    /// Smooth weighted round robin's running "current weight".
    swrr: i64,
}

/// Picks endpoints of one upstream service according to a [`Policy`].
///
/// Weights are only used by `weighted` and `ring_hash`; the others treat endpoints alike.
#[derive(Debug, Clone)]
pub struct Balancer<K> {
    policy: Policy,
    ewma: PeakEwmaConfig,
    slots: Vec<Slot<K>>,
    index: HashMap<K, usize>,
    /// Slot indices of the eligible endpoints, in endpoint order.
    eligible: Vec<usize>,
    /// Round robin position; starts at a random offset so proxies started together do not all
    /// hit the first endpoint at once.
    cursor: Option<usize>,
    /// Built on first use after the ids or weights change.
    ring: Option<Ring>,
}

impl<K: Clone + Eq + Hash> Balancer<K> {
    /// An empty balancer with the default peak-EWMA tuning.
    pub fn new(policy: Policy) -> Self {
        Self::with_ewma(policy, PeakEwmaConfig::default())
    }

    /// An empty balancer with explicit peak-EWMA tuning.
    pub fn with_ewma(policy: Policy, ewma: PeakEwmaConfig) -> Self {
        Self {
            policy,
            ewma,
            slots: Vec::new(),
            index: HashMap::new(),
            eligible: Vec::new(),
            cursor: None,
            ring: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Switches algorithm (a live config change) keeping per-endpoint load and latency.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Replaces the endpoint set at `now`. Endpoints that stay keep their outstanding count and
    /// latency estimate; new ones start idle at the default estimate. Order matters for round
    /// robin only; a repeated id keeps its first occurrence.
    pub fn set_endpoints(
        &mut self,
        endpoints: impl IntoIterator<Item = Endpoint<K>>,
        now: Instant,
    ) {
        let mut old: HashMap<K, Slot<K>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(|slot| (slot.id.clone(), slot))
            .collect();
        let old_len = old.len();
        let mut ring_changed = false;
        self.index.clear();
        for ep in endpoints {
            if self.index.contains_key(&ep.id) {
                continue;
            }
            let weight = ep.weight.max(1);
            let slot = match old.remove(&ep.id) {
                Some(slot) => {
                    ring_changed |= slot.weight != weight;
                    Slot {
                        weight,
                        eligible: ep.eligible,
                        ..slot
                    }
                }
                None => {
                    ring_changed = true;
                    Slot {
                        id: ep.id.clone(),
                        weight,
                        eligible: ep.eligible,
                        pending: 0,
                        ewma: PeakEwma::new(&self.ewma, now),
                        swrr: 0,
                    }
                }
            };
            self.index.insert(ep.id, self.slots.len());
            self.slots.push(slot);
        }
        // Slot positions are baked into the ring, so any change of membership rebuilds it.
        if ring_changed || self.slots.len() != old_len {
            self.ring = None;
        }
        self.refresh_eligible();
    }

    /// Changes one endpoint's eligibility (health flap, ejection). Returns false if unknown.
    pub fn set_eligible(&mut self, id: &K, eligible: bool) -> bool {
        let Some(slot) = self.slot_mut(id) else {
            return false;
        };
        if slot.eligible != eligible {
            slot.eligible = eligible;
            self.refresh_eligible();
        }
        true
    }

    /// Chooses an endpoint for a request, or `None` if no endpoint is eligible.
    ///
    /// `hash_key` is the value of the policy's [`Policy::hash_header`] if the request has it;
    /// other policies ignore it. Picking does not count the request as started: call
    /// [`Balancer::on_start`] when it is actually sent.
    pub fn pick<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: Instant,
        hash_key: Option<&[u8]>,
    ) -> Option<K> {
        if self.eligible.is_empty() {
            return None;
        }
        let slot = match &self.policy {
            Policy::Random => self.random(rng),
            Policy::RoundRobin => self.round_robin(rng),
            Policy::Weighted => self.weighted(),
            Policy::LeastRequest => self.two_choices(rng, |s| f64::from(s.pending)),
            Policy::PeakEwma => {
                let config = self.ewma;
                // An endpoint not measured yet is costed at the mean of the measured ones, not
                // at the default guess: against peers answering in 1 ms a 30 ms guess would lose
                // every comparison, and under light load the newcomer would get no traffic
                // until the guess decayed, half a minute later.
                let measured: Vec<f64> = self
                    .slots
                    .iter()
                    .filter(|s| s.ewma.is_measured())
                    .map(|s| s.ewma.estimate(now, &config))
                    .collect();
                let unmeasured_cost = if measured.is_empty() {
                    None
                } else {
                    Some(measured.iter().sum::<f64>() / measured.len() as f64)
                };
                self.two_choices(rng, |s| {
                    let rtt = match unmeasured_cost {
                        Some(mean) if !s.ewma.is_measured() => mean,
                        _ => s.ewma.estimate(now, &config),
                    };
                    rtt * (f64::from(s.pending) + 1.0)
                })
            }
            Policy::RingHash { .. } => match hash_key {
                Some(key) => self.ring_owner(key),
                None => self.random(rng),
            },
        }?;
        self.slots.get(slot).map(|s| s.id.clone())
    }

    /// A request to `id` was sent: it counts as outstanding until [`Balancer::on_end`].
    pub fn on_start(&mut self, id: &K) {
        if let Some(slot) = self.slot_mut(id) {
            slot.pending = slot.pending.saturating_add(1);
        }
    }

    /// A request to `id` finished after `latency`. Unknown ids (an endpoint removed while the
    /// request was in flight) are ignored.
    pub fn on_end(&mut self, id: &K, latency: Duration, now: Instant, success: bool) {
        let config = self.ewma;
        if let Some(slot) = self.slot_mut(id) {
            slot.pending = slot.pending.saturating_sub(1);
            slot.ewma.observe(latency, success, now, &config);
        }
    }

    /// Every endpoint, in order, with its load as of `now`.
    pub fn endpoints(&self, now: Instant) -> impl Iterator<Item = EndpointView<'_, K>> {
        self.slots.iter().map(move |s| EndpointView {
            id: &s.id,
            weight: s.weight,
            eligible: s.eligible,
            pending: s.pending,
            rtt_estimate: Duration::from_nanos(s.ewma.estimate(now, &self.ewma).round() as u64),
        })
    }

    /// Number of endpoints, eligible or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of endpoints that may be picked.
    pub fn eligible_len(&self) -> usize {
        self.eligible.len()
    }

    fn slot_mut(&mut self, id: &K) -> Option<&mut Slot<K>> {
        let &i = self.index.get(id)?;
        self.slots.get_mut(i)
    }

    fn refresh_eligible(&mut self) {
        self.eligible.clear();
        self.eligible
            .extend((0..self.slots.len()).filter(|&i| self.slots[i].eligible));
    }

    fn random<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        self.eligible
            .get(rng.random_range(0..self.eligible.len()))
            .copied()
    }

    fn round_robin<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<usize> {
        let n = self.eligible.len();
        let cursor = *self.cursor.get_or_insert_with(|| rng.random_range(0..n));
        self.cursor = Some(cursor.wrapping_add(1));
        self.eligible.get(cursor % n).copied()
    }

    /// Smooth weighted round robin (nginx): every pick adds each weight to its endpoint's
    /// running value, takes the largest, and subtracts the total from it. Over any run of
    /// `Σweights` picks each endpoint gets exactly its weight, spread out rather than in
    /// bursts, and with no randomness the proportions hold even over short runs.
    fn weighted(&mut self) -> Option<usize> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for &i in &self.eligible {
            let weight = i64::from(self.slots[i].weight);
            self.slots[i].swrr += weight;
            total += weight;
            if best.is_none_or(|b| self.slots[i].swrr > self.slots[b].swrr) {
                best = Some(i);
            }
        }
        let best = best?;
        self.slots[best].swrr -= total;
        Some(best)
    }

    /// Power of two choices: two distinct eligible endpoints at random, the cheaper wins.
    /// On a tie the first draw wins, which is itself uniformly random.
    fn two_choices<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        cost: impl Fn(&Slot<K>) -> f64,
    ) -> Option<usize> {
        let n = self.eligible.len();
        if n == 1 {
            return self.eligible.first().copied();
        }
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (*self.eligible.get(a)?, *self.eligible.get(b)?);
        let (cost_a, cost_b) = (cost(self.slots.get(a)?), cost(self.slots.get(b)?));
        Some(if cost_b < cost_a { b } else { a })
    }

    fn ring_owner(&mut self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        let ring = self.ring.get_or_insert_with(|| {
            let nodes: Vec<(u64, u32)> = slots
                .iter()
                .map(|s| (hash_value(&s.id), s.weight))
                .collect();
            Ring::build(&nodes)
        });
        ring.lookup(hash_bytes(key), |i| {
            slots.get(i).is_some_and(|s| s.eligible)
        })
    }
}

#[cfg(test)]
mod tests;
