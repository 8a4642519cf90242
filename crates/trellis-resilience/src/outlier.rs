//! Outlier detection: a circuit breaker per endpoint of one upstream service.
//!
//! An endpoint that fails `consecutive_failures` times in a row is ejected (taken out of load
//! balancing) for `base_ejection × n`, where `n` counts its recent ejections, capped at
//! `max_ejection`. When the time is up it is *probing*: exactly one request may be sent to it.
//! Success returns it to rotation; failure ejects it again, for longer. The detector never holds
//! more than `max_ejection_percent` of the endpoints out at once, because ejecting most of a
//! service moves its whole load onto the rest and turns a partial outage into a full one.
//!
//! Memory of past ejections fades: each `base_ejection` an endpoint spends healthy after
//! returning forgives one ejection, so an endpoint that flaps gets ever longer ejections while
//! one that failed once last week starts again from `base_ejection`.
//!
//! Wiring in the proxy: declare the endpoints that discovery reports healthy with
//! [`OutlierDetector::set_endpoints`]; before balancing a request ask
//! [`OutlierDetector::next_probe`] and, on `Some`, send the request there instead; record every
//! outcome; on [`Event::Ejected`] mark the endpoint ineligible in the balancer, on
//! [`Event::Returned`] eligible again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tuning of an [`OutlierDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint. Default 5; 0 disables ejection.
    pub consecutive_failures: u32,
    /// Length of a first ejection; later ones are multiples of it. Default 30 s.
    pub base_ejection: Duration,
    /// Longest ejection. Default 300 s.
    pub max_ejection: Duration,
    /// Most endpoints ejected (or probing) at once, in percent of the endpoint count; an
    /// ejection that would exceed it is skipped. Default 50.
    pub max_ejection_percent: u32,
    /// How long a probe may stay unanswered before another probe is allowed, in case the
    /// caller lost the first one (cancelled request). Default 15 s, the overall request timeout.
    pub probe_timeout: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            probe_timeout: Duration::from_secs(15),
        }
    }
}

/// Where an endpoint stands, as seen at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// In rotation.
    Healthy,
    /// Out of rotation until `until`.
    Ejected { until: Instant },
    /// Ejection over: it gets one probe request, then is either healthy or ejected again.
    Probing,
}

/// A change the proxy must act on (update the balancer's eligibility, log, count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Take the endpoint out of rotation. `ejections` is how many recent ejections, this one
    /// included, set the length.
    Ejected { until: Instant, ejections: u32 },
    /// The failure threshold was reached but ejecting would exceed `max_ejection_percent`; the
    /// endpoint stays in rotation and will be ejected on a later failure if room appears.
    EjectionSkipped,
    /// The probe succeeded: put the endpoint back in rotation.
    Returned,
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    ejections: u32,
    /// When it last returned from an ejection; `None` if it never was ejected.
    healthy_since: Option<Instant>,
    mode: Mode,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Healthy,
    /// Probing once `until` has passed; `probe` is when the probe was handed out.
    Ejected {
        until: Instant,
        probe: Option<Instant>,
    },
}

impl Entry {
    fn new() -> Self {
        Self {
            failures: 0,
            ejections: 0,
            healthy_since: None,
            mode: Mode::Healthy,
        }
    }
}

/// Ejection state of every endpoint of one upstream service.
///
/// Endpoints must be declared with [`OutlierDetector::set_endpoints`]: the ejection cap is a
/// share of them. Unknown endpoints are treated as healthy and their outcomes ignored.
#[derive(Debug, Clone)]
pub struct OutlierDetector<K> {
    config: OutlierConfig,
    entries: HashMap<K, Entry>,
    /// Entries not `Healthy` (ejected or probing); both count against the cap.
    out: usize,
}

impl<K: Clone + Eq + Hash> OutlierDetector<K> {
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            out: 0,
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Changes the tuning (live config change); current ejections keep their end time.
    pub fn set_config(&mut self, config: OutlierConfig) {
        self.config = config;
    }

    /// Declares the current endpoint set. Endpoints that stay keep their state, new ones start
    /// healthy, removed ones are forgotten.
    pub fn set_endpoints(&mut self, endpoints: impl IntoIterator<Item = K>) {
        let mut old = std::mem::take(&mut self.entries);
        for k in endpoints {
            let entry = old.remove(&k).unwrap_or_else(Entry::new);
            self.entries.insert(k, entry);
        }
        self.out = self
            .entries
            .values()
            .filter(|e| matches!(e.mode, Mode::Ejected { .. }))
            .count();
    }

    /// Records the outcome of a request to `endpoint`.
    ///
    /// Outcomes arriving while the endpoint is ejected, or probing without a probe handed out,
    /// belong to requests sent before the ejection and are ignored. While probing, the outcome
    /// is taken as the probe's.
    pub fn record(&mut self, endpoint: &K, success: bool, now: Instant) -> Option<Event> {
        let config = self.config;
        let room = self.has_room_for_one_more();
        let entry = self.entries.get_mut(endpoint)?;
        match entry.mode {
            Mode::Healthy if success => {
                entry.failures = 0;
                None
            }
            Mode::Healthy => {
                entry.failures = entry.failures.saturating_add(1);
                if config.consecutive_failures == 0 || entry.failures < config.consecutive_failures
                {
                    return None;
                }
                if !room {
                    return Some(Event::EjectionSkipped);
                }
                let forgiven = match entry.healthy_since {
                    Some(since) if !config.base_ejection.is_zero() => {
                        let healthy = now.saturating_duration_since(since);
                        u32::try_from(healthy.as_nanos() / config.base_ejection.as_nanos())
                            .unwrap_or(u32::MAX)
                    }
                    _ => 0,
                };
                entry.ejections = entry.ejections.saturating_sub(forgiven);
                self.out += 1;
                Some(eject(entry, &config, now))
            }
            Mode::Ejected { until, probe } => {
                if now < until || probe.is_none() {
                    return None;
                }
                if success {
                    entry.mode = Mode::Healthy;
                    entry.failures = 0;
                    entry.healthy_since = Some(now);
                    self.out -= 1;
                    Some(Event::Returned)
                } else {
                    // Already counted against the cap, so it can always be ejected again.
                    Some(eject(entry, &config, now))
                }
            }
        }
    }

    /// Whether ordinary requests may go to `endpoint` (probes are handed out separately).
    pub fn is_eligible(&self, endpoint: &K, now: Instant) -> bool {
        self.state(endpoint, now) == EndpointState::Healthy
    }

    pub fn state(&self, endpoint: &K, now: Instant) -> EndpointState {
        match self.entries.get(endpoint).map(|e| e.mode) {
            None | Some(Mode::Healthy) => EndpointState::Healthy,
            Some(Mode::Ejected { until, .. }) if now < until => EndpointState::Ejected { until },
            Some(Mode::Ejected { .. }) => EndpointState::Probing,
        }
    }

    /// Hands out the probe of a probing `endpoint`: true for exactly one caller (until that
    /// probe's outcome is recorded, or `probe_timeout` passes without one).
    pub fn try_take_probe(&mut self, endpoint: &K, now: Instant) -> bool {
        let timeout = self.config.probe_timeout;
        self.entries
            .get_mut(endpoint)
            .is_some_and(|e| take_probe(e, now, timeout))
    }

    /// Hands out the probe of any probing endpoint. The proxy calls this before balancing each
    /// request and, on `Some`, sends that request to the returned endpoint. Costs nothing while
    /// no endpoint is ejected.
    pub fn next_probe(&mut self, now: Instant) -> Option<K> {
        if self.out == 0 {
            return None;
        }
        let timeout = self.config.probe_timeout;
        self.entries
            .iter_mut()
            .find_map(|(k, e)| take_probe(e, now, timeout).then(|| k.clone()))
    }

    /// Number of endpoints ejected or probing.
    pub fn ejected_count(&self) -> usize {
        self.out
    }

    /// Number of declared endpoints.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn has_room_for_one_more(&self) -> bool {
        let allowed = self.entries.len() as u128 * u128::from(self.config.max_ejection_percent);
        (self.out as u128 + 1) * 100 <= allowed
    }
}

fn eject(entry: &mut Entry, config: &OutlierConfig, now: Instant) -> Event {
    entry.ejections = entry.ejections.saturating_add(1);
    entry.failures = 0;
    let length = config
        .base_ejection
        .saturating_mul(entry.ejections)
        .min(config.max_ejection);
    let until = now.checked_add(length).unwrap_or(now);
    entry.mode = Mode::Ejected { until, probe: None };
    Event::Ejected {
        until,
        ejections: entry.ejections,
    }
}

fn take_probe(entry: &mut Entry, now: Instant, timeout: Duration) -> bool {
    let Mode::Ejected { until, probe } = &mut entry.mode else {
        return false;
    };
    let free = probe.is_none_or(|taken| now.saturating_duration_since(taken) >= timeout);
    if now < *until || !free {
        return false;
    }
    *probe = Some(now);
    true
}

#[cfg(test)]
mod tests;
