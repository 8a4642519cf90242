//! One upstream service as the proxy sees it: endpoints, load balancer, outlier detector, retry
//! budget, concurrency and rate limits, all behind one short-held lock.
//!
//! The pure state machines come from `trellis-balance` and `trellis-resilience`; this module
//! feeds them the clock and randomness and keeps them consistent with each other (an ejected
//! endpoint is ineligible in the balancer, a returned one eligible again).

use crate::config::ServicePolicy;
use crate::mesh_tls::{MESH_META, Transport};
use crate::metrics::{Direction, Metrics, RequestMetrics};
use crate::reject::Reject;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use trellis_balance::{Balancer, Endpoint};
use trellis_resilience::{
    Backoff, Event, Jitter, OutlierConfig, OutlierDetector, RetryBudget, RetryBudgetConfig,
    TokenBucket,
};
use trellis_types::{CheckStatus, WatchInstance};

/// An endpoint's identity: `host:port`, the same on every proxy (ring-hash positions derive
/// from it) and directly usable as a URI authority.
pub type EndpointKey = Arc<str>;

/// Whether an instance was registered by a sidecar that takes only mutual TLS.
fn is_meshed(instance: &WatchInstance) -> bool {
    instance.meta.get(MESH_META).is_some_and(|v| v == "true")
}

/// What discovery told us about one endpoint.
#[derive(Debug, Clone)]
struct Known {
    key: EndpointKey,
    instance: Arc<str>,
    weight: u32,
    status: CheckStatus,
}

/// Where the endpoint set comes from, shown in `/endpoints`.
#[derive(Debug, Clone, Default)]
struct Source {
    /// The registry watch is connected (always true for a static endpoint).
    connected: bool,
    /// Registry index of the last endpoint set.
    index: u64,
    /// The policy includes a KV override.
    policy_from_kv: bool,
}

struct State {
    policy: Arc<ServicePolicy>,
    known: Vec<Known>,
    balancer: Balancer<EndpointKey>,
    outlier: OutlierDetector<EndpointKey>,
    budget: RetryBudget,
    bucket: Option<TokenBucket>,
    /// `None` when unlimited.
    semaphore: Option<Arc<Semaphore>>,
    source: Source,
    /// Endpoints whose instance takes only mutual TLS (registered by a mesh sidecar).
    meshed: HashSet<EndpointKey>,
}

pub struct Upstream {
    name: Arc<String>,
    state: Mutex<State>,
    /// Becomes true once the first discovery attempt finished (with endpoints or not), so the
    /// first requests wait for discovery instead of failing at once.
    resolved: watch::Sender<bool>,
    metrics: Metrics,
    /// Request counters and histogram for this service, resolved once per direction.
    request_metrics: [OnceLock<RequestMetrics>; 3],
    /// Whether any endpoint is meshed, so plaintext services pay no lookup per request.
    any_meshed: AtomicBool,
}

/// A request admitted past the rate and concurrency limits.
pub struct Admission {
    pub policy: Arc<ServicePolicy>,
    /// Held until the response body ends.
    pub permit: Option<OwnedSemaphorePermit>,
}

fn outlier_config(policy: &ServicePolicy) -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: policy.outlier.consecutive_failures,
        base_ejection: policy.outlier.base_ejection,
        max_ejection: policy.outlier.max_ejection,
        max_ejection_percent: (policy.outlier.max_ejected_share * 100.0).round() as u32,
        // A probe whose request outlives the overall timeout was lost.
        probe_timeout: policy.timeout,
    }
}

fn budget(policy: &ServicePolicy) -> RetryBudget {
    RetryBudget::new(RetryBudgetConfig {
        min_retries_per_sec: policy.retry_budget.min_per_second,
        ratio: policy.retry_budget.ratio,
        window: policy.retry_budget.window,
    })
}

fn bucket(policy: &ServicePolicy) -> Option<TokenBucket> {
    policy
        .rate_limit
        .as_ref()
        .map(|r| TokenBucket::new(r.per_second, r.burst.unwrap_or(r.per_second)))
}

fn semaphore(policy: &ServicePolicy) -> Option<Arc<Semaphore>> {
    (policy.max_concurrent > 0).then(|| Arc::new(Semaphore::new(policy.max_concurrent as usize)))
}

impl Upstream {
    pub fn new(name: &str, policy: ServicePolicy, metrics: Metrics) -> Self {
        let state = State {
            balancer: Balancer::new(policy.load_balancer.clone()),
            outlier: OutlierDetector::new(outlier_config(&policy)),
            budget: budget(&policy),
            bucket: bucket(&policy),
            semaphore: semaphore(&policy),
            policy: Arc::new(policy),
            known: Vec::new(),
            source: Source::default(),
            meshed: HashSet::new(),
        };
        Self {
            name: Arc::new(name.to_owned()),
            state: Mutex::new(state),
            resolved: watch::channel(false).0,
            metrics,
            request_metrics: Default::default(),
            any_meshed: AtomicBool::new(false),
        }
    }

    /// An upstream with one fixed endpoint (the sidecar's local app).
    pub fn fixed(name: &str, addr: &str, policy: ServicePolicy, metrics: Metrics) -> Self {
        let upstream = Self::new(name, policy, metrics);
        upstream.set_endpoints(
            vec![WatchInstance {
                id: "local-app".to_owned(),
                address: String::new(),
                port: 0,
                tags: Vec::new(),
                meta: Default::default(),
                weights: Default::default(),
                status: CheckStatus::Passing,
            }],
            0,
            Some(addr),
        );
        upstream.lock().source.connected = true;
        upstream
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The request metrics of this service for `direction`, resolved on first use.
    pub fn request_metrics(&self, direction: Direction) -> &RequestMetrics {
        self.request_metrics[direction as usize]
            .get_or_init(|| self.metrics.request_metrics(direction, &self.name))
    }

    pub fn name(&self) -> &Arc<String> {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn policy(&self) -> Arc<ServicePolicy> {
        self.lock().policy.clone()
    }

    /// Replaces the endpoint set from a watch event (`authority` overrides the address for the
    /// fixed upstream).
    pub fn set_endpoints(
        &self,
        instances: Vec<WatchInstance>,
        index: u64,
        authority: Option<&str>,
    ) {
        let meshed: HashSet<EndpointKey> = instances
            .iter()
            .filter(|i| authority.is_none() && is_meshed(i))
            .map(|i| Arc::from(authority_of(&i.address, i.port).as_str()))
            .collect();
        let known: Vec<Known> = instances
            .into_iter()
            .map(|i| Known {
                key: match authority {
                    Some(a) => Arc::from(a),
                    None => Arc::from(authority_of(&i.address, i.port).as_str()),
                },
                weight: match i.status {
                    CheckStatus::Warning => i.weights.warning,
                    _ => i.weights.passing,
                },
                instance: Arc::from(i.id),
                status: i.status,
            })
            .collect();
        let now = Instant::now();
        let mut state = self.lock();
        state
            .outlier
            .set_endpoints(known.iter().map(|k| k.key.clone()));
        let endpoints: Vec<Endpoint<EndpointKey>> = known
            .iter()
            .map(|k| Endpoint {
                id: k.key.clone(),
                weight: k.weight,
                eligible: state.outlier.is_eligible(&k.key, now),
            })
            .collect();
        state.balancer.set_endpoints(endpoints, now);
        state.known = known;
        state.source.index = index;
        self.any_meshed.store(!meshed.is_empty(), Ordering::Relaxed);
        state.meshed = meshed;
        drop(state);
        self.resolved.send_replace(true);
    }

    /// How to speak to `endpoint`: mutual TLS naming this service if its instance takes only
    /// that.
    pub fn transport_of(&self, endpoint: &EndpointKey) -> Transport<'_> {
        if self.any_meshed.load(Ordering::Relaxed) && self.lock().meshed.contains(endpoint) {
            Transport::Mesh {
                service: self.name.as_str(),
            }
        } else {
            Transport::Plain
        }
    }

    /// Records the state of the registry connection; a failed first attempt still counts as
    /// resolved so requests fail fast instead of waiting for a registry that is down.
    pub fn set_connected(&self, connected: bool) {
        self.lock().source.connected = connected;
        if !connected {
            self.resolved.send_replace(true);
        }
    }

    /// Waits until discovery answered once (or `deadline`); true if it did.
    pub async fn wait_resolved(&self, deadline: Instant) -> bool {
        if *self.resolved.borrow() {
            return true;
        }
        let mut rx = self.resolved.subscribe();
        let wait = rx.wait_for(|resolved| *resolved);
        matches!(
            tokio::time::timeout_at(deadline.into(), wait).await,
            Ok(Ok(_))
        )
    }

    /// Applies a new policy; per-endpoint load and ejections are kept.
    pub fn set_policy(&self, policy: ServicePolicy, from_kv: bool) {
        let mut state = self.lock();
        let old = state.policy.clone();
        if old.load_balancer != policy.load_balancer {
            state.balancer.set_policy(policy.load_balancer.clone());
        }
        state.outlier.set_config(outlier_config(&policy));
        if old.retry_budget != policy.retry_budget {
            state.budget = budget(&policy);
        }
        if old.rate_limit != policy.rate_limit {
            state.bucket = bucket(&policy);
        }
        if old.max_concurrent != policy.max_concurrent {
            state.semaphore = semaphore(&policy);
        }
        state.policy = Arc::new(policy);
        state.source.policy_from_kv = from_kv;
    }

    /// Applies the rate and concurrency limits and counts the request for the retry budget.
    pub fn admit(&self, now: Instant) -> Result<Admission, (Reject, Option<Duration>)> {
        let mut state = self.lock();
        if let Some(bucket) = state.bucket.as_mut()
            && !bucket.try_acquire(now)
        {
            return Err((Reject::RateLimited, Some(bucket.retry_after(now))));
        }
        let permit = match &state.semaphore {
            Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err((Reject::ConcurrencyLimit, None)),
            },
            None => None,
        };
        state.budget.deposit(now);
        Ok(Admission {
            policy: state.policy.clone(),
            permit,
        })
    }

    /// Chooses the endpoint of the next attempt and counts it as started. An ejected endpoint
    /// whose time is up gets this request as its probe. `avoid` (the endpoint that just failed)
    /// is skipped whenever another one is eligible; when it is the only eligible endpoint it is
    /// chosen again, as Envoy and Linkerd retry a single-host cluster on that host.
    pub fn pick(
        &self,
        now: Instant,
        hash_key: Option<&[u8]>,
        avoid: Option<&EndpointKey>,
    ) -> Option<EndpointKey> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut rng = rand::rng();
        let chosen = match state.outlier.next_probe(now) {
            Some(probe) if Some(&probe) != avoid => Some(probe),
            _ => {
                let mut chosen = state.balancer.pick(&mut rng, now, hash_key);
                // A retry must not land on the endpoint that just failed when another one is
                // eligible: hide it from the balancer for this one pick.
                if let Some(avoid) = avoid
                    && chosen.as_ref() == Some(avoid)
                    && state.balancer.eligible_len() > 1
                {
                    state.balancer.set_eligible(avoid, false);
                    chosen = state.balancer.pick(&mut rng, now, None);
                    state.balancer.set_eligible(avoid, true);
                }
                chosen
            }
        };
        if let Some(key) = &chosen {
            state.balancer.on_start(key);
        }
        chosen
    }

    /// Records how an attempt to `key` went, feeding the balancer's latency estimate and the
    /// outlier detector.
    pub fn finish(&self, key: &EndpointKey, latency: Duration, success: bool, now: Instant) {
        let mut state = self.lock();
        state.balancer.on_end(key, latency, now, success);
        match state.outlier.record(key, success, now) {
            Some(Event::Ejected { until, ejections }) => {
                state.balancer.set_eligible(key, false);
                drop(state);
                self.metrics.ejection(&self.name);
                tracing::warn!(service = %self.name, endpoint = %key, ejections,
                    for_ms = until.saturating_duration_since(now).as_millis() as u64,
                    "endpoint ejected after consecutive failures");
            }
            Some(Event::Returned) => {
                state.balancer.set_eligible(key, true);
                drop(state);
                tracing::info!(service = %self.name, endpoint = %key, "endpoint returned after probe");
            }
            Some(Event::EjectionSkipped) | None => {}
        }
    }

    /// The registry instance id of the endpoint `key`, for spans.
    pub fn instance_of(&self, key: &EndpointKey) -> Option<Arc<str>> {
        self.lock()
            .known
            .iter()
            .find(|k| k.key == *key)
            .map(|k| k.instance.clone())
    }

    /// Asks the budget for one retry.
    pub fn try_retry(&self, now: Instant) -> bool {
        self.lock().budget.try_withdraw(now)
    }

    /// The pause before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let policy = self.policy();
        let backoff = Backoff {
            base: policy.backoff.base,
            max: policy.backoff.max,
            jitter: Jitter::Full,
        };
        backoff.delay(attempt, &mut rand::rng())
    }

    /// Counts of (healthy, ejected) endpoints, for the `trellis_endpoints` gauge.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        let state = self.lock();
        let ejected = state
            .known
            .iter()
            .filter(|k| !state.outlier.is_eligible(&k.key, now))
            .count();
        (state.known.len() - ejected, ejected)
    }

    /// What this upstream knows, for the admin `/endpoints` page.
    pub fn view(&self, now: Instant) -> Value {
        let mut state = self.lock();
        let loads: std::collections::HashMap<EndpointKey, (u32, Duration)> = state
            .balancer
            .endpoints(now)
            .map(|v| (v.id.clone(), (v.pending, v.rtt_estimate)))
            .collect();
        let endpoints: Vec<Value> = state
            .known
            .iter()
            .map(|k| {
                let (pending, rtt) = loads.get(&k.key).copied().unwrap_or_default();
                let ejection = match state.outlier.state(&k.key, now) {
                    trellis_resilience::EndpointState::Healthy => "healthy",
                    trellis_resilience::EndpointState::Ejected { .. } => "ejected",
                    trellis_resilience::EndpointState::Probing => "probing",
                };
                json!({
                    "address": &*k.key,
                    "instance": &*k.instance,
                    "health": k.status.as_str(),
                    "state": ejection,
                    "weight": k.weight,
                    "pending": pending,
                    "latency_ms": rtt.as_secs_f64() * 1000.0,
                    // The peak-EWMA cost the balancer compares: latency × (pending + 1).
                    "load": rtt.as_secs_f64() * 1000.0 * f64::from(pending + 1),
                })
            })
            .collect();
        let retries_available = state.budget.available(now);
        json!({
            "connected": state.source.connected,
            "index": state.source.index,
            "policy_from_kv": state.source.policy_from_kv,
            "load_balancer": state.policy.load_balancer,
            "retries_available": retries_available,
            "endpoints": endpoints,
        })
    }
}

/// `host:port`, bracketing IPv6 literals.
fn authority_of(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_types::Weights;

    fn instance(port: u16) -> WatchInstance {
        WatchInstance {
            id: format!("i{port}"),
            address: "127.0.0.1".into(),
            port,
            tags: vec![],
            meta: Default::default(),
            weights: Weights::default(),
            status: CheckStatus::Passing,
        }
    }

    #[test]
    fn failing_endpoint_is_ejected_and_avoided() {
        let mut policy = ServicePolicy::default();
        policy.outlier.consecutive_failures = 2;
        let up = Upstream::new("svc", policy, Metrics::new());
        up.set_endpoints(vec![instance(1), instance(2), instance(3)], 7, None);
        let bad: EndpointKey = Arc::from("127.0.0.1:2");
        let now = Instant::now();
        up.finish(&bad, Duration::from_millis(1), false, now);
        up.finish(&bad, Duration::from_millis(1), false, now);
        assert_eq!(up.counts(now), (2, 1));
        for _ in 0..200 {
            let key = up.pick(now, None, None).unwrap();
            assert_ne!(key, bad);
            up.finish(&key, Duration::from_millis(1), true, now);
        }
        // After the ejection it gets exactly one probe, then rejoins on success.
        let later = now + Duration::from_secs(2);
        assert_eq!(up.pick(later, None, None).unwrap(), bad);
        up.finish(&bad, Duration::from_millis(1), true, later);
        assert_eq!(up.counts(later), (3, 0));
        assert_eq!(up.view(later)["index"], 7);
    }

    #[test]
    fn limits_reject_with_reasons() {
        let mut policy = ServicePolicy {
            max_concurrent: 1,
            ..ServicePolicy::default()
        };
        let up = Upstream::new("svc", policy.clone(), Metrics::new());
        let now = Instant::now();
        let first = up.admit(now).ok().unwrap();
        assert!(matches!(up.admit(now), Err((Reject::ConcurrencyLimit, _))));
        drop(first);
        assert!(up.admit(now).is_ok());

        policy.max_concurrent = 0;
        policy.rate_limit = Some(crate::config::RateLimitConfig {
            per_second: 1,
            burst: Some(2),
        });
        up.set_policy(policy, true);
        assert!(up.admit(now).is_ok());
        assert!(up.admit(now).is_ok());
        assert!(matches!(up.admit(now), Err((Reject::RateLimited, Some(_)))));
    }

    #[test]
    fn avoided_endpoint_is_skipped_when_others_exist() {
        let up = Upstream::new("svc", ServicePolicy::default(), Metrics::new());
        up.set_endpoints(vec![instance(1), instance(2)], 1, None);
        let avoid: EndpointKey = Arc::from("127.0.0.1:1");
        let now = Instant::now();
        let mut avoided = 0;
        for _ in 0..100 {
            let key = up.pick(now, None, Some(&avoid)).unwrap();
            avoided += usize::from(key != avoid);
            up.finish(&key, Duration::from_millis(1), true, now);
        }
        assert_eq!(avoided, 100);
    }

    #[test]
    fn the_only_eligible_endpoint_is_picked_even_when_avoided() {
        let up = Upstream::new("svc", ServicePolicy::default(), Metrics::new());
        up.set_endpoints(vec![instance(1)], 1, None);
        let only: EndpointKey = Arc::from("127.0.0.1:1");
        let now = Instant::now();
        assert_eq!(up.pick(now, None, Some(&only)), Some(only.clone()));
        up.finish(&only, Duration::from_millis(1), true, now);
    }
}
