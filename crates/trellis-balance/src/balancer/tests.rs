//! Property tests of every policy, driven by a seeded RNG and a synthetic clock.

use std::collections::HashMap;
use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

/// One clock origin for every test, so endpoints added by helpers and the times the tests
/// use agree exactly.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn balancer(policy: Policy, n: u64) -> Balancer<u64> {
    let mut b = Balancer::new(policy);
    b.set_endpoints((0..n).map(Endpoint::new), origin());
    b
}

fn counts(b: &mut Balancer<u64>, rng: &mut StdRng, now: Instant, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; b.len()];
    for _ in 0..picks {
        let id = b.pick(rng, now, None).expect("an eligible endpoint");
        counts[id as usize] += 1;
    }
    counts
}

const ALL: [&str; 6] = [
    "random",
    "round_robin",
    "weighted",
    "least_request",
    "peak_ewma",
    "ring_hash",
];

#[test]
fn nothing_to_pick_without_eligible_endpoints() {
    let t0 = origin();
    for name in ALL {
        let policy: Policy = name.parse().expect(name);
        let mut b = Balancer::<u64>::new(policy.clone());
        assert_eq!(b.pick(&mut rng(1), t0, Some(b"k")), None, "{name} empty");
        b.set_endpoints([Endpoint::new(1).with_eligible(false)], origin());
        assert_eq!(
            b.pick(&mut rng(1), t0, Some(b"k")),
            None,
            "{name} ineligible"
        );
        assert_eq!(b.pick(&mut rng(1), t0, None), None, "{name} ineligible");
        assert!(b.set_eligible(&1, true));
        assert_eq!(
            b.pick(&mut rng(1), t0, Some(b"k")),
            Some(1),
            "{name} single"
        );
        assert!(!b.set_eligible(&2, true));
    }
}

#[test]
fn ineligible_endpoints_are_never_picked() {
    let t0 = origin();
    for name in ALL {
        let mut b = balancer(name.parse().expect(name), 5);
        b.set_eligible(&2, false);
        let mut r = rng(3);
        for i in 0..2000u32 {
            let key = i.to_le_bytes();
            assert_ne!(b.pick(&mut r, t0, Some(&key)), Some(2), "{name}");
        }
    }
}

#[test]
fn random_is_uniform() {
    let mut b = balancer(Policy::Random, 10);
    let picks = 30_000;
    let counts = counts(&mut b, &mut rng(7), origin(), picks);
    let expected = picks as f64 / 10.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 27.88 is the 99.9th percentile of chi-square with 9 degrees of freedom.
    assert!(chi2 < 27.88, "chi2 = {chi2}, counts = {counts:?}");
}

#[test]
fn round_robin_cycles_in_order() {
    let t0 = origin();
    let mut b = balancer(Policy::RoundRobin, 4);
    let mut r = rng(11);
    let seq: Vec<u64> = (0..12)
        .map(|_| b.pick(&mut r, t0, None).expect("pick"))
        .collect();
    let first = seq[0];
    for (i, &id) in seq.iter().enumerate() {
        assert_eq!(id, (first + i as u64) % 4, "{seq:?}");
    }
    // Without endpoint 1 the cycle continues over the other three, still in order.
    b.set_eligible(&1, false);
    let seq: Vec<u64> = (0..9)
        .map(|_| b.pick(&mut r, t0, None).expect("pick"))
        .collect();
    for window in seq.windows(4) {
        assert_eq!(window[0], window[3], "{seq:?}");
        let mut distinct = window[..3].to_vec();
        distinct.sort_unstable();
        assert_eq!(distinct, [0, 2, 3], "{seq:?}");
    }
}

#[test]
fn round_robin_start_is_random() {
    let t0 = origin();
    let firsts: std::collections::HashSet<u64> = (0..32)
        .map(|seed| {
            let mut b = balancer(Policy::RoundRobin, 4);
            b.pick(&mut rng(seed), t0, None).expect("pick")
        })
        .collect();
    assert!(firsts.len() > 1, "{firsts:?}");
}

#[test]
fn weighted_follows_registry_weights_smoothly() {
    let t0 = origin();
    let mut b = Balancer::new(Policy::Weighted);
    b.set_endpoints(
        [
            Endpoint::new(0).with_weight(1),
            Endpoint::new(1).with_weight(2),
            Endpoint::new(2).with_weight(7),
        ],
        origin(),
    );
    let mut r = rng(5);
    let seq: Vec<u64> = (0..10_000)
        .map(|_| b.pick(&mut r, t0, None).expect("pick"))
        .collect();
    let count = |id| seq.iter().filter(|&&x| x == id).count();
    assert_eq!([count(0), count(1), count(2)], [1000, 2000, 7000]);
    // Smooth: every window of 10 picks holds exactly the weights, with no long bursts.
    for window in seq.chunks(10) {
        assert_eq!(window.iter().filter(|&&x| x == 2).count(), 7, "{window:?}");
    }
    assert!(
        seq.windows(4).all(|w| w.iter().any(|&x| x != 2)),
        "burst of 2s"
    );
}

#[test]
fn weight_zero_counts_as_one() {
    let t0 = origin();
    let mut b = Balancer::new(Policy::Weighted);
    b.set_endpoints(
        [Endpoint::new(0).with_weight(0), Endpoint::new(1)],
        origin(),
    );
    let c = counts(&mut b, &mut rng(1), t0, 100);
    assert_eq!(c, [50, 50]);
}

#[test]
fn least_request_prefers_the_less_loaded() {
    let t0 = origin();
    let mut b = balancer(Policy::LeastRequest, 2);
    for _ in 0..3 {
        b.on_start(&0);
    }
    let c = counts(&mut b, &mut rng(2), t0, 1000);
    assert_eq!(c, [0, 1000]);

    // With many endpoints, the busiest one loses every comparison it takes part in.
    let mut b = balancer(Policy::LeastRequest, 4);
    for _ in 0..5 {
        b.on_start(&3);
    }
    let c = counts(&mut b, &mut rng(2), t0, 3000);
    assert_eq!(c[3], 0, "{c:?}");
    assert!(c[..3].iter().all(|&n| (800..1200).contains(&n)), "{c:?}");
}

#[test]
fn least_request_breaks_ties_at_random() {
    let t0 = origin();
    let mut b = balancer(Policy::LeastRequest, 2);
    let c = counts(&mut b, &mut rng(9), t0, 10_000);
    assert!((4700..5300).contains(&c[0]), "{c:?}");
}

#[test]
fn least_request_tracks_start_and_end() {
    let t0 = origin();
    let mut b = balancer(Policy::LeastRequest, 2);
    b.on_start(&0);
    b.on_start(&0);
    b.on_end(&0, ms(1), t0, true);
    b.on_start(&1);
    b.on_start(&1);
    // 0 has one outstanding, 1 has two.
    assert_eq!(counts(&mut b, &mut rng(4), t0, 100), [100, 0]);
    // Ending more than started never underflows.
    for _ in 0..5 {
        b.on_end(&0, ms(1), t0, true);
    }
    assert_eq!(b.endpoints(t0).next().map(|e| e.pending), Some(0));
}

/// Sends `requests` sequential requests, one every 10 ms, each finishing with the latency that
/// `latency_of` gives its endpoint. Returns the clock after the run and the picks per endpoint.
fn simulate(
    b: &mut Balancer<u64>,
    r: &mut StdRng,
    mut now: Instant,
    requests: usize,
    latency_of: impl Fn(u64) -> Duration,
) -> (Instant, Vec<usize>) {
    let mut counts = vec![0; b.len()];
    for _ in 0..requests {
        now += ms(10);
        let id = b.pick(r, now, None).expect("pick");
        counts[id as usize] += 1;
        b.on_start(&id);
        b.on_end(&id, latency_of(id), now, true);
    }
    (now, counts)
}

#[test]
fn peak_ewma_moves_traffic_away_from_a_slow_endpoint_and_back() {
    let t0 = origin();
    let mut b = balancer(Policy::PeakEwma, 3);
    let mut r = rng(21);
    // Light sequential load: once the untried default estimates have decayed below the
    // measured ones, every endpoint is in use.
    let (now, c) = simulate(&mut b, &mut r, t0, 3000, |_| ms(10));
    assert!(c.iter().all(|&n| n > 500), "{c:?}");

    // Endpoint 0 turns slow: after its first slow answer it gets almost nothing.
    let slow = |id| if id == 0 { ms(500) } else { ms(10) };
    let (now, c) = simulate(&mut b, &mut r, now, 3000, slow);
    assert!(c[0] < 3000 / 50, "slow endpoint still got {c:?}");

    // It recovers. Its estimate decays while idle, it gets tried, answers fast, and regains
    // its share within a few decay periods.
    let (now, _) = simulate(&mut b, &mut r, now, 10_000, |_| ms(10));
    let (_, c) = simulate(&mut b, &mut r, now, 3000, |_| ms(10));
    assert!(c[0] > 3000 / 5, "recovered endpoint only got {c:?}");
}

#[test]
fn peak_ewma_cost_counts_outstanding_requests() {
    let t0 = origin();
    let mut b = balancer(Policy::PeakEwma, 2);
    for id in [0, 1] {
        b.on_start(&id);
        b.on_end(&id, ms(20), t0, true);
    }
    // Same latency; 0 has two requests in flight, so costs 3× as much.
    b.on_start(&0);
    b.on_start(&0);
    assert_eq!(counts(&mut b, &mut rng(1), t0, 100), [0, 100]);

    // A 5× faster endpoint still wins with one request in flight (cost 8 ms against 20 ms).
    let mut b = balancer(Policy::PeakEwma, 2);
    b.on_end(&0, ms(4), t0, true);
    b.on_end(&1, ms(20), t0, true);
    b.on_start(&0);
    assert_eq!(counts(&mut b, &mut rng(1), t0, 100), [100, 0]);
}

#[test]
fn peak_ewma_unmeasured_endpoint_is_costed_at_the_mean_of_measured_ones() {
    let t0 = origin();
    let mut b = balancer(Policy::PeakEwma, 3);
    b.on_end(&0, ms(100), t0, true);
    b.on_end(&1, ms(20), t0, true);
    // 2 has not answered yet: it costs the mean (60 ms), so it beats 0 and loses to 1.
    let c = counts(&mut b, &mut rng(1), t0, 300);
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > c[2] && c[2] > 0, "{c:?}");
    // Its own estimate is still the default guess until it answers.
    let view: Vec<_> = b.endpoints(t0).map(|e| e.rtt_estimate).collect();
    assert_eq!(view, [ms(100), ms(20), ms(30)]);
}

#[test]
fn peak_ewma_fast_failures_do_not_attract_traffic() {
    let t0 = origin();
    let mut b = balancer(Policy::PeakEwma, 2);
    b.on_end(&0, ms(50), t0, true);
    b.on_end(&1, ms(50), t0, true);
    let mut now = t0;
    // For 20 s both answer every 100 ms; 1 fails in a millisecond, 0 succeeds in 50 ms.
    for _ in 0..200 {
        now += ms(100);
        b.on_end(&0, ms(50), now, true);
        b.on_end(&1, ms(1), now, false);
    }
    let view: Vec<_> = b.endpoints(now).map(|e| e.rtt_estimate).collect();
    assert_eq!(view, [ms(50), ms(50)], "failing fast must not look fast");
    let c = counts(&mut b, &mut rng(1), now, 1000);
    assert!(c[1] < 600, "{c:?}");
}

fn ring_map(b: &mut Balancer<u64>, keys: usize) -> Vec<u64> {
    let t0 = origin();
    let mut r = rng(0);
    (0..keys)
        .map(|k| {
            let key = format!("user-{k}");
            b.pick(&mut r, t0, Some(key.as_bytes())).expect("pick")
        })
        .collect()
}

fn ring_hash() -> Policy {
    Policy::ring_hash("x-user").expect("valid header")
}

#[test]
fn ring_hash_same_key_same_endpoint_regardless_of_order() {
    let mut b = balancer(ring_hash(), 10);
    let first = ring_map(&mut b, 2000);
    assert_eq!(ring_map(&mut b, 2000), first);
    // Another proxy that lists the endpoints in another order agrees.
    let mut other = Balancer::new(ring_hash());
    other.set_endpoints((0..10).rev().map(Endpoint::new), origin());
    assert_eq!(ring_map(&mut other, 2000), first);
    // Every endpoint owns a fair-ish share of the keys.
    let mut per: HashMap<u64, usize> = HashMap::new();
    for id in &first {
        *per.entry(*id).or_default() += 1;
    }
    assert_eq!(per.len(), 10);
    assert!(per.values().all(|&n| (120..300).contains(&n)), "{per:?}");
}

#[test]
fn ring_hash_removing_an_endpoint_moves_only_its_keys() {
    let keys = 10_000;
    let mut b = balancer(ring_hash(), 10);
    let before = ring_map(&mut b, keys);
    b.set_endpoints((0..10).filter(|&id| id != 4).map(Endpoint::new), origin());
    let after = ring_map(&mut b, keys);
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            moved += 1;
            assert_eq!(*old, 4, "a key on a surviving endpoint moved");
        }
    }
    assert!(moved < keys * 15 / 100, "moved {moved}");
    assert_eq!(moved, before.iter().filter(|&&id| id == 4).count());
}

#[test]
fn ring_hash_adding_an_endpoint_moves_about_one_share() {
    let keys = 10_000;
    let mut b = balancer(ring_hash(), 10);
    let before = ring_map(&mut b, keys);
    b.set_endpoints((0..11).map(Endpoint::new), origin());
    let after = ring_map(&mut b, keys);
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            moved += 1;
            assert_eq!(*new, 10, "a key moved between old endpoints");
        }
    }
    // Ideal is 1/11 ≈ 9.1%.
    assert!(
        (keys * 5 / 100..keys * 14 / 100).contains(&moved),
        "moved {moved}"
    );
}

#[test]
fn ring_hash_ineligible_endpoint_lends_its_keys_and_gets_them_back() {
    let keys = 5000;
    let mut b = balancer(ring_hash(), 10);
    let before = ring_map(&mut b, keys);
    b.set_eligible(&3, false);
    let during = ring_map(&mut b, keys);
    for (old, new) in before.iter().zip(&during) {
        assert!(old == new || *old == 3);
        assert_ne!(*new, 3);
    }
    // Same result as removing it outright.
    let mut removed = balancer(ring_hash(), 0);
    removed.set_endpoints((0..10).filter(|&id| id != 3).map(Endpoint::new), origin());
    assert_eq!(ring_map(&mut removed, keys), during);
    b.set_eligible(&3, true);
    assert_eq!(ring_map(&mut b, keys), before);
}

#[test]
fn ring_hash_follows_weights() {
    let mut b = Balancer::new(ring_hash());
    b.set_endpoints(
        [Endpoint::new(0).with_weight(3), Endpoint::new(1)],
        origin(),
    );
    let map = ring_map(&mut b, 10_000);
    let heavy = map.iter().filter(|&&id| id == 0).count();
    assert!((6800..8200).contains(&heavy), "{heavy}");
}

#[test]
fn ring_hash_without_a_key_is_random() {
    let mut b = balancer(ring_hash(), 4);
    let c = counts(&mut b, &mut rng(8), origin(), 4000);
    assert!(c.iter().all(|&n| (800..1200).contains(&n)), "{c:?}");
}

#[test]
fn ring_hash_weight_change_rebuilds_the_ring() {
    let mut b = balancer(ring_hash(), 2);
    let before = ring_map(&mut b, 4000);
    b.set_endpoints(
        [Endpoint::new(0).with_weight(4), Endpoint::new(1)],
        origin(),
    );
    let after = ring_map(&mut b, 4000);
    let zero = |m: &[u64]| m.iter().filter(|&&id| id == 0).count();
    assert!(
        zero(&after) > zero(&before) + 1000,
        "{} {}",
        zero(&before),
        zero(&after)
    );
}

#[test]
fn endpoint_updates_keep_state_of_survivors() {
    let t0 = origin();
    let mut b = balancer(Policy::LeastRequest, 3);
    b.on_start(&1);
    b.on_end(&1, ms(80), t0, true);
    b.on_start(&1);
    b.on_start(&2);
    b.set_endpoints(
        [
            Endpoint::new(1).with_weight(5),
            Endpoint::new(3),
            Endpoint::new(1),
        ],
        origin(),
    );
    let view: Vec<_> = b
        .endpoints(t0)
        .map(|e| (*e.id, e.weight, e.pending, e.rtt_estimate))
        .collect();
    assert_eq!(view, [(1, 5, 1, ms(80)), (3, 1, 0, ms(30))]);
    // A request to a removed endpoint finishing later is harmless.
    b.on_end(&2, ms(1), t0, true);
    assert_eq!(b.len(), 2);
    assert_eq!(b.eligible_len(), 2);
    assert!(!b.is_empty());
}

#[test]
fn switching_policy_keeps_load_state() {
    let t0 = origin();
    let mut b = balancer(Policy::RoundRobin, 2);
    b.on_start(&0);
    b.set_policy(Policy::LeastRequest);
    assert_eq!(b.policy(), &Policy::LeastRequest);
    assert_eq!(counts(&mut b, &mut rng(1), t0, 20), [0, 20]);
}

#[test]
fn peak_ewma_newcomer_is_costed_like_its_measured_peers() {
    // Regression: an endpoint that joins next to one answering in 1 ms used to be costed at
    // the 30 ms default guess and got no traffic under light load until the guess decayed.
    let t0 = origin();
    let mut b = balancer(Policy::PeakEwma, 1);
    let mut r = rng(5);
    for i in 0..20 {
        let now = t0 + ms(i);
        let id = b.pick(&mut r, now, None).expect("endpoint");
        b.on_start(&id);
        b.on_end(&id, ms(1), now, true);
    }
    b.set_endpoints([Endpoint::new(0), Endpoint::new(1)], t0 + ms(20));
    let mut picked_newcomer = 0;
    for i in 0..50 {
        let now = t0 + ms(21 + i);
        let id = b.pick(&mut r, now, None).expect("endpoint");
        b.on_start(&id);
        b.on_end(&id, ms(1), now, true);
        picked_newcomer += usize::from(id == 1);
    }
    assert!(picked_newcomer >= 1, "the newcomer was never tried");
}
