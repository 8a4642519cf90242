//! Discovery: one registry watch per upstream service the proxy has been asked for, plus a
//! blocking-query watch of its policy key in KV. Both reconnect with back-off and keep the last
//! known state while the registry is unreachable.

use crate::config::{KV_PREFIX, PolicySource};
use crate::metrics::Metrics;
use crate::reject::Reject;
use crate::upstream::Upstream;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use trellis_client::{Blocking, Client, ClientOptions, Indexed};
use trellis_resilience::{Backoff, Jitter};

/// A jittered back-off delay (the thread-local generator must not live across an await).
pub(crate) fn delay(backoff: &Backoff, attempt: u32) -> Duration {
    backoff.delay(attempt, &mut rand::rng())
}

/// Most distinct services one proxy watches; names beyond it are refused (a client sending
/// random Host headers must not make the proxy open unbounded watches).
pub const MAX_SERVICES: usize = 4096;

/// Reconnect pacing for registry watches.
const RECONNECT: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(5),
    jitter: Jitter::Equal,
};

/// How long a blocking KV query waits on the server.
const KV_WAIT: Duration = Duration::from_secs(300);

pub struct Discovery {
    client: Client,
    policies: Arc<PolicySource>,
    metrics: Metrics,
    upstreams: RwLock<HashMap<String, Arc<Upstream>>>,
}

impl Discovery {
    /// Discovery through the registry at `registry`, reached with `options` (token, TLS).
    pub fn new(
        registry: &str,
        options: &ClientOptions,
        policies: PolicySource,
        metrics: Metrics,
    ) -> crate::Result<Self> {
        let client = Client::with_options(registry, options)?;
        Ok(Self {
            client,
            policies: Arc::new(policies),
            metrics,
            upstreams: RwLock::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn policies(&self) -> &Arc<PolicySource> {
        &self.policies
    }

    /// The upstream for `service`, starting its watches on first use.
    pub fn upstream(&self, service: &str) -> Result<Arc<Upstream>, Reject> {
        if let Some(found) = self.read().get(service) {
            return Ok(found.clone());
        }
        if trellis_types::registration::validate_service_name(service).is_err() {
            return Err(Reject::BadTarget);
        }
        let mut map = self.upstreams.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(service) {
            return Ok(found.clone());
        }
        if map.len() >= MAX_SERVICES {
            return Err(Reject::BadTarget);
        }
        // Validated at startup, so resolving the static layers cannot fail here; fall back to
        // defaults rather than refuse traffic if it somehow does.
        let policy = self.policies.resolve(service, None).unwrap_or_default();
        let upstream = Arc::new(Upstream::new(service, policy, self.metrics.clone()));
        map.insert(service.to_owned(), upstream.clone());
        drop(map);
        tokio::spawn(watch_endpoints(self.client.clone(), upstream.clone()));
        tokio::spawn(watch_policy(
            self.client.clone(),
            self.policies.clone(),
            upstream.clone(),
        ));
        Ok(upstream)
    }

    /// Adds an upstream whose endpoints the caller manages (no registry watch): tests, and
    /// services given fixed addresses.
    pub fn add_static(&self, upstream: Arc<Upstream>) {
        let mut map = self.upstreams.write().unwrap_or_else(|e| e.into_inner());
        map.insert(upstream.name().to_string(), upstream);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Upstream>>> {
        self.upstreams.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every watched upstream, sorted by name.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Starts a watch of the KV policy of an upstream that discovery does not own (the
    /// sidecar's inbound side).
    pub fn watch_policy_of(
        &self,
        upstream: Arc<Upstream>,
        force: fn(&mut crate::config::ServicePolicy),
    ) {
        tokio::spawn(watch_policy_with(
            self.client.clone(),
            self.policies.clone(),
            upstream,
            force,
        ));
    }
}

/// Follows the service's watch stream for the life of the process. A lost connection is
/// logged once at warn (not once per reconnect attempt) and its end at info.
async fn watch_endpoints(client: Client, upstream: Arc<Upstream>) {
    let service = upstream.name().clone();
    let mut failures = 0u32;
    let mut outage_since: Option<Instant> = None;
    loop {
        match client.watch(&service).await {
            Ok(mut events) => {
                upstream.set_connected(true);
                if let Some(since) = outage_since.take() {
                    tracing::info!(%service, down_ms = since.elapsed().as_millis() as u64,
                        "registry watch reconnected");
                }
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            failures = 0;
                            tracing::debug!(%service, index = event.index,
                                endpoints = event.instances.len(),
                                instances = ?event.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
                                "endpoint set changed");
                            upstream.set_endpoints(event.instances, event.index, None);
                        }
                        Err(e) => {
                            tracing::warn!(%service, error = %e,
                                "registry watch broke; keeping the last known endpoints");
                            outage_since = Some(Instant::now());
                            break;
                        }
                    }
                }
            }
            Err(e) if outage_since.is_none() => {
                tracing::warn!(%service, error = %e,
                    "cannot watch the registry; keeping the last known endpoints, retrying");
                outage_since = Some(Instant::now());
            }
            Err(e) => tracing::debug!(%service, error = %e, "cannot watch the registry yet"),
        }
        upstream.set_connected(false);
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay(&RECONNECT, failures.min(16))).await;
    }
}

async fn watch_policy(client: Client, source: Arc<PolicySource>, upstream: Arc<Upstream>) {
    watch_policy_with(client, source, upstream, |_| {}).await;
}

/// Follows `trellis/config/<service>` with blocking queries. An invalid value is logged once
/// at warn and ignored (the previous policy stays in force); a deleted key returns the service
/// to its static policy.
async fn watch_policy_with(
    client: Client,
    source: Arc<PolicySource>,
    upstream: Arc<Upstream>,
    force: fn(&mut crate::config::ServicePolicy),
) {
    let service = upstream.name().clone();
    let key = format!("{KV_PREFIX}{service}");
    let mut index = 0u64;
    let mut failures = 0u32;
    let mut layer = KvLayer::default();
    loop {
        let asked = Instant::now();
        let blocking = Blocking {
            index,
            wait: Some(KV_WAIT),
        };
        let (value, new_index) = match client.kv_get(&key, Some(blocking)).await {
            Ok(Indexed { value: None, index }) => (None, index),
            Ok(Indexed {
                value: Some(pair),
                index,
            }) => (Some(pair.decoded_value().unwrap_or_default()), index),
            Err(e) => {
                if matches!(e, trellis_client::Error::Status { .. }) {
                    tracing::warn!(%service, %key, error = %e, "policy query refused");
                } else {
                    tracing::debug!(%service, %key, error = %e, "cannot read policy from registry");
                }
                failures += 1;
                tokio::time::sleep(delay(&RECONNECT, failures.min(16))).await;
                continue;
            }
        };
        failures = 0;
        match layer.update(&source, &service, value.as_deref(), force) {
            PolicyChange::Unchanged => {}
            PolicyChange::Apply { policy, from_kv } => {
                tracing::info!(%service, %key, from_kv, "policy applied");
                upstream.set_policy(policy, from_kv);
            }
            PolicyChange::Invalid { reason } => tracing::warn!(%service, %key, %reason,
                "invalid policy in KV ignored; the previous policy stays in force"),
        }
        // An index that goes backwards means the registry restarted: start over (Consul's
        // documented rule). Guard against a server that answers without blocking.
        let requested = index;
        index = if new_index < index { 0 } else { new_index };
        let answered_at_once = asked.elapsed() < Duration::from_millis(50);
        if answered_at_once && requested != 0 && (index == requested || index == 0) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The KV layer of one service's policy: what is in force, and the last value refused.
#[derive(Debug, Default)]
struct KvLayer {
    /// `None` until the first answer; then the KV layer in force (`Some(None)`: no key).
    applied: Option<Option<Value>>,
    /// The raw value last refused, so a refusal is logged once, not on every re-read.
    refused: Option<Vec<u8>>,
}

/// What a new KV value means for the policy.
#[derive(Debug)]
enum PolicyChange {
    Unchanged,
    Apply {
        policy: crate::config::ServicePolicy,
        from_kv: bool,
    },
    /// Not JSON, or not a valid policy: the previous policy stays in force.
    Invalid {
        reason: String,
    },
}

impl KvLayer {
    /// Takes the key's current value (`None`: no key).
    fn update(
        &mut self,
        source: &PolicySource,
        service: &str,
        raw: Option<&[u8]>,
        force: fn(&mut crate::config::ServicePolicy),
    ) -> PolicyChange {
        if raw.is_some() && self.refused.as_deref() == raw {
            return PolicyChange::Unchanged;
        }
        let parsed = match raw.map(serde_json::from_slice::<Value>).transpose() {
            Ok(parsed) => parsed,
            Err(e) => return self.refuse(raw, format!("not JSON: {e}")),
        };
        self.refused = None;
        if self.applied.as_ref() == Some(&parsed) {
            return PolicyChange::Unchanged;
        }
        match source.resolve(service, parsed.as_ref()) {
            Ok(mut policy) => {
                force(&mut policy);
                let from_kv = parsed.is_some();
                let first_without_key = self.applied.is_none() && !from_kv;
                self.applied = Some(parsed);
                if first_without_key {
                    // Nothing in KV at startup: the static policy is already in force.
                    return PolicyChange::Unchanged;
                }
                PolicyChange::Apply { policy, from_kv }
            }
            Err(e) => self.refuse(raw, e.to_string()),
        }
    }

    fn refuse(&mut self, raw: Option<&[u8]>, reason: String) -> PolicyChange {
        self.refused = raw.map(<[u8]>::to_vec);
        PolicyChange::Invalid { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(layer: &mut KvLayer, raw: Option<&str>) -> PolicyChange {
        layer.update(
            &PolicySource::default(),
            "users",
            raw.map(str::as_bytes),
            |_| {},
        )
    }

    #[test]
    fn kv_policy_applies_and_invalid_values_keep_the_previous_one() {
        let mut layer = KvLayer::default();
        assert!(matches!(update(&mut layer, None), PolicyChange::Unchanged));
        let PolicyChange::Apply { policy, from_kv } =
            update(&mut layer, Some(r#"{"max_retries": 1}"#))
        else {
            panic!("applied");
        };
        assert!(from_kv);
        assert_eq!(policy.max_retries, 1);
        assert!(matches!(
            update(&mut layer, Some(r#"{"max_retries": 1}"#)),
            PolicyChange::Unchanged
        ));

        let PolicyChange::Invalid { reason } =
            update(&mut layer, Some(r#"{"max_retries": "lots"}"#))
        else {
            panic!("refused");
        };
        assert!(
            reason.contains("max_retries") || reason.contains("invalid type"),
            "{reason}"
        );
        assert!(
            matches!(
                update(&mut layer, Some(r#"{"max_retries": "lots"}"#)),
                PolicyChange::Unchanged
            ),
            "refused once, not on every re-read"
        );
        let PolicyChange::Invalid { reason } = update(&mut layer, Some("not json")) else {
            panic!("refused");
        };
        assert!(reason.starts_with("not JSON"), "{reason}");
        // Back to the value in force: nothing to do.
        assert!(matches!(
            update(&mut layer, Some(r#"{"max_retries": 1}"#)),
            PolicyChange::Unchanged
        ));
        // Deleting the key returns to the static policy.
        let PolicyChange::Apply { policy, from_kv } = update(&mut layer, None) else {
            panic!("applied");
        };
        assert!(!from_kv);
        assert_eq!(policy.max_retries, 2);
    }

    #[test]
    fn an_invalid_value_at_startup_leaves_the_static_policy() {
        let mut layer = KvLayer::default();
        assert!(matches!(
            update(&mut layer, Some("[1]")),
            PolicyChange::Invalid { .. }
        ));
        let PolicyChange::Apply { from_kv, .. } = update(&mut layer, Some("{}")) else {
            panic!("applied");
        };
        assert!(from_kv);
    }
}
