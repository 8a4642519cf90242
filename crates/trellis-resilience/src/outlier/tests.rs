//! Every transition of the outlier detector, with a synthetic clock.

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn detector(n: u64) -> OutlierDetector<u64> {
    let mut d = OutlierDetector::new(OutlierConfig::default());
    d.set_endpoints(0..n);
    d
}

/// Fails `endpoint` until something happens; returns that event.
fn fail_until_event(d: &mut OutlierDetector<u64>, endpoint: u64, now: Instant) -> Event {
    (0..100)
        .find_map(|_| d.record(&endpoint, false, now))
        .expect("an event within 100 failures")
}

/// Fails `endpoint` until it is ejected; returns the end of the ejection and its count.
fn eject(d: &mut OutlierDetector<u64>, endpoint: u64, now: Instant) -> (Instant, u32) {
    match fail_until_event(d, endpoint, now) {
        Event::Ejected { until, ejections } => (until, ejections),
        other => panic!("expected an ejection, got {other:?}"),
    }
}

#[test]
fn ejects_after_consecutive_failures_only() {
    let t0 = Instant::now();
    let mut d = detector(4);
    for _ in 0..4 {
        assert_eq!(d.record(&0, false, t0), None);
    }
    // A success resets the streak.
    assert_eq!(d.record(&0, true, t0), None);
    for _ in 0..4 {
        assert_eq!(d.record(&0, false, t0), None);
    }
    assert_eq!(
        d.record(&0, false, t0),
        Some(Event::Ejected {
            until: t0 + secs(30),
            ejections: 1
        })
    );
    assert!(!d.is_eligible(&0, t0));
    assert_eq!(
        d.state(&0, t0 + secs(29)),
        EndpointState::Ejected {
            until: t0 + secs(30)
        }
    );
    assert_eq!(d.ejected_count(), 1);
    assert!(d.is_eligible(&1, t0));
}

#[test]
fn outcomes_while_ejected_are_ignored() {
    let t0 = Instant::now();
    let mut d = detector(4);
    eject(&mut d, 0, t0);
    assert_eq!(d.record(&0, true, t0 + secs(1)), None);
    assert_eq!(d.record(&0, false, t0 + secs(1)), None);
    assert_eq!(
        d.state(&0, t0 + secs(1)),
        EndpointState::Ejected {
            until: t0 + secs(30)
        }
    );
    // Probing but no probe handed out: still a stale outcome.
    assert_eq!(d.record(&0, true, t0 + secs(31)), None);
    assert_eq!(d.state(&0, t0 + secs(31)), EndpointState::Probing);
}

#[test]
fn probing_hands_out_exactly_one_probe() {
    let t0 = Instant::now();
    let mut d = detector(4);
    eject(&mut d, 0, t0);
    assert!(!d.try_take_probe(&0, t0 + secs(29)), "still ejected");
    let t = t0 + secs(30);
    assert_eq!(d.state(&0, t), EndpointState::Probing);
    assert!(!d.is_eligible(&0, t), "probing is not general eligibility");
    assert!(d.try_take_probe(&0, t));
    assert!(!d.try_take_probe(&0, t));
    assert!(!d.try_take_probe(&0, t + secs(14)));
    assert_eq!(d.next_probe(t + secs(1)), None);
    assert!(!d.try_take_probe(&1, t), "healthy endpoints have no probe");
    assert!(!d.try_take_probe(&99, t), "unknown endpoints have no probe");
}

#[test]
fn lost_probe_is_handed_out_again_after_probe_timeout() {
    let t0 = Instant::now();
    let mut d = detector(4);
    eject(&mut d, 0, t0);
    let t = t0 + secs(30);
    assert!(d.try_take_probe(&0, t));
    assert_eq!(d.next_probe(t + secs(15)), Some(0));
    assert_eq!(d.next_probe(t + secs(16)), None);
}

#[test]
fn probe_success_returns_the_endpoint() {
    let t0 = Instant::now();
    let mut d = detector(4);
    eject(&mut d, 0, t0);
    let t = t0 + secs(30);
    assert_eq!(d.next_probe(t), Some(0));
    assert_eq!(d.record(&0, true, t + secs(1)), Some(Event::Returned));
    assert_eq!(d.state(&0, t + secs(1)), EndpointState::Healthy);
    assert!(d.is_eligible(&0, t + secs(1)));
    assert_eq!(d.ejected_count(), 0);
    // The failure streak starts over.
    for _ in 0..4 {
        assert_eq!(d.record(&0, false, t + secs(2)), None);
    }
}

#[test]
fn probe_failure_ejects_again_for_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let mut d = detector(4);
    let (mut until, _) = eject(&mut d, 0, t0);
    let mut lengths = vec![];
    for _ in 0..12 {
        assert!(d.try_take_probe(&0, until));
        let Some(Event::Ejected {
            until: next,
            ejections,
        }) = d.record(&0, false, until)
        else {
            panic!("probe failure must re-eject");
        };
        lengths.push((next - until).as_secs());
        assert_eq!(ejections as usize, lengths.len() + 1);
        until = next;
    }
    assert_eq!(
        lengths,
        [60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300]
    );
    assert_eq!(d.ejected_count(), 1);
}

#[test]
fn repeated_ejections_grow_and_healthy_time_forgives_them() {
    let t0 = Instant::now();
    let mut d = detector(4);
    let cycle = |d: &mut OutlierDetector<u64>, now: Instant| {
        let (until, n) = eject(d, 0, now);
        assert!(d.try_take_probe(&0, until));
        assert_eq!(d.record(&0, true, until), Some(Event::Returned));
        (until, n)
    };
    let (back, n) = cycle(&mut d, t0);
    assert_eq!(n, 1);
    // Fails again soon after returning: the second ejection is twice as long.
    let (back, n) = cycle(&mut d, back + secs(1));
    assert_eq!(n, 2);
    let (back, n) = cycle(&mut d, back + secs(1));
    assert_eq!(n, 3);
    // 60 s healthy (two base ejections) forgives two of the three.
    let (until, n) = eject(&mut d, 0, back + secs(60));
    assert_eq!(n, 2);
    assert_eq!(until, back + secs(60) + secs(60));
    assert!(d.try_take_probe(&0, until));
    assert_eq!(d.record(&0, true, until), Some(Event::Returned));
    // A long healthy spell forgives everything.
    let (_, n) = eject(&mut d, 0, until + secs(3600));
    assert_eq!(n, 1);
}

#[test]
fn never_ejects_more_than_max_percent() {
    let t0 = Instant::now();
    let mut d = detector(4);
    assert!(matches!(
        fail_until_event(&mut d, 0, t0),
        Event::Ejected { .. }
    ));
    assert!(matches!(
        fail_until_event(&mut d, 1, t0),
        Event::Ejected { .. }
    ));
    // Half of four are out: the third would exceed 50%.
    assert_eq!(fail_until_event(&mut d, 2, t0), Event::EjectionSkipped);
    assert!(d.is_eligible(&2, t0));
    assert_eq!(d.record(&2, false, t0), Some(Event::EjectionSkipped));
    assert_eq!(d.ejected_count(), 2);

    // Probing endpoints still count against the cap.
    let t = t0 + secs(30);
    assert_eq!(d.record(&2, false, t), Some(Event::EjectionSkipped));
    // Once one returns there is room, and the next failure ejects the waiting endpoint.
    assert!(d.try_take_probe(&0, t));
    assert_eq!(d.record(&0, true, t), Some(Event::Returned));
    assert!(matches!(
        d.record(&2, false, t),
        Some(Event::Ejected { ejections: 1, .. })
    ));
}

#[test]
fn a_lone_endpoint_is_never_ejected() {
    let t0 = Instant::now();
    let mut d = detector(1);
    assert_eq!(fail_until_event(&mut d, 0, t0), Event::EjectionSkipped);
    assert!(d.is_eligible(&0, t0));
}

#[test]
fn probe_failure_is_allowed_even_at_the_cap() {
    let t0 = Instant::now();
    let mut d = detector(2);
    let (until, _) = eject(&mut d, 0, t0);
    assert_eq!(fail_until_event(&mut d, 1, t0), Event::EjectionSkipped);
    assert!(d.try_take_probe(&0, until));
    assert!(matches!(
        d.record(&0, false, until),
        Some(Event::Ejected { ejections: 2, .. })
    ));
}

#[test]
fn zero_threshold_disables_ejection() {
    let t0 = Instant::now();
    let mut d = OutlierDetector::new(OutlierConfig {
        consecutive_failures: 0,
        ..OutlierConfig::default()
    });
    d.set_endpoints(0..4u64);
    for _ in 0..100 {
        assert_eq!(d.record(&0, false, t0), None);
    }
}

#[test]
fn endpoint_set_changes_keep_survivors_and_recount() {
    let t0 = Instant::now();
    let mut d = detector(4);
    eject(&mut d, 0, t0);
    eject(&mut d, 1, t0);
    d.set_endpoints([1, 2, 3, 4]);
    assert_eq!(d.len(), 4);
    assert_eq!(d.ejected_count(), 1);
    assert!(!d.is_eligible(&1, t0));
    assert!(
        d.is_eligible(&0, t0),
        "forgotten endpoints count as healthy"
    );
    assert_eq!(
        d.record(&0, false, t0),
        None,
        "unknown endpoints are ignored"
    );
    d.set_endpoints([]);
    assert!(d.is_empty());
    assert_eq!(d.ejected_count(), 0);
    assert_eq!(d.next_probe(t0 + secs(100)), None);
}
