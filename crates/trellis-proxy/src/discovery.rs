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
use trellis_client::{Blocking, Client, Indexed};
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
    pub fn new(registry: &str, policies: PolicySource, metrics: Metrics) -> crate::Result<Self> {
        let client = Client::new(registry)?;
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

/// Follows the service's watch stream for the life of the process.
async fn watch_endpoints(client: Client, upstream: Arc<Upstream>) {
    let service = upstream.name().clone();
    let mut failures = 0u32;
    loop {
        match client.watch(&service).await {
            Ok(mut events) => {
                upstream.set_connected(true);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            failures = 0;
                            tracing::debug!(%service, index = event.index, endpoints = event.instances.len(), "endpoints changed");
                            upstream.set_endpoints(event.instances, event.index, None);
                        }
                        Err(e) => {
                            tracing::warn!(%service, error = %e, "registry watch broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%service, error = %e, "cannot watch registry; keeping last known endpoints")
            }
        }
        upstream.set_connected(false);
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay(&RECONNECT, failures.min(16))).await;
    }
}

async fn watch_policy(client: Client, source: Arc<PolicySource>, upstream: Arc<Upstream>) {
    watch_policy_with(client, source, upstream, |_| {}).await;
}

/// Follows `trellis/config/<service>` with blocking queries. An invalid value is logged and
/// ignored (the previous policy stays); a deleted key returns the service to its static policy.
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
    let mut current: Option<Option<Value>> = None;
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
                    tracing::warn!(%service, error = %e, "policy query refused");
                } else {
                    tracing::debug!(%service, error = %e, "cannot read policy from registry");
                }
                failures += 1;
                tokio::time::sleep(delay(&RECONNECT, failures.min(16))).await;
                continue;
            }
        };
        failures = 0;
        let parsed: Option<Value> = match &value {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(%service, error = %e, "policy in KV is not JSON; ignored");
                    current.clone().flatten()
                }
            },
        };
        if current.as_ref() != Some(&parsed) {
            match source.resolve(&service, parsed.as_ref()) {
                Ok(mut policy) => {
                    force(&mut policy);
                    if current.is_some() || parsed.is_some() {
                        tracing::info!(%service, from_kv = parsed.is_some(), "policy applied");
                    }
                    upstream.set_policy(policy, parsed.is_some());
                    current = Some(parsed);
                }
                Err(e) => {
                    tracing::warn!(%service, error = %e, "policy in KV rejected; keeping the previous one")
                }
            }
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
