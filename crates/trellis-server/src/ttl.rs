//! TTL checks among servers sharing a store. Each check's expiry is owned by one live server,
//! the member rendezvous hashing picks for it (as for active probes, `Cluster::owner`): its
//! heartbeats are handed to that server (`api/forward.rs`), which moves the check's deadline in
//! memory and writes only a heartbeat that changes the check; when a deadline passes, the owner
//! has the leader turn the check critical (`Command::ExpireTtl`). When the members change, each
//! server gives the checks it takes over a full TTL from then, since the heartbeats that kept
//! them went to their old owner. A server alone keeps its TTLs in its catalog, and none of this
//! runs.

use crate::cluster::{CheckReport, Cluster};
use crate::queue::WriterHandle;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::watch;
use trellis_catalog::{Check, Deadlines};
use trellis_types::{CheckKind, CheckStatus};

/// Longest a heartbeat waits for an expiry of its check that is on its way to the leader.
const SETTLE: Duration = Duration::from_secs(5);
/// How soon an expiry the leader could not take is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Most checks handed to the leader as expired in one request.
const MAX_EXPIRED: usize = 4096;

/// The deadlines of the TTL checks this server owns.
pub struct TtlDeadlines {
    /// The server's clock: deadlines are times since it started.
    clock: Instant,
    cluster: Arc<Cluster>,
    timers: parking_lot::Mutex<Timers>,
    /// Wakes [`run`] when a deadline earlier than those it sleeps for was set.
    wake: Notify,
    /// Wakes heartbeats waiting for an expiry to reach the leader.
    settled: Notify,
}

#[derive(Default)]
struct Timers {
    /// Every TTL check of the replica, with its TTL: what a change of members re-arms.
    ttls: HashMap<Arc<str>, Duration>,
    /// When each check this server owns runs out (none while it is critical, as far as this
    /// server knows).
    deadlines: Deadlines,
    /// Checks whose expiry is on its way to the leader.
    expiring: HashSet<Arc<str>>,
}

impl Timers {
    /// Sets `id`'s deadline; whether it is now the earliest (the loop must wake for it).
    fn set(&mut self, id: &str, deadline: Option<Duration>) -> bool {
        self.deadlines.set(id, deadline);
        deadline.is_some() && self.deadlines.next() == deadline
    }
}

impl TtlDeadlines {
    pub fn new(clock: Instant, cluster: Arc<Cluster>) -> Self {
        Self {
            clock,
            cluster,
            timers: parking_lot::Mutex::new(Timers::default()),
            wake: Notify::new(),
            settled: Notify::new(),
        }
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Check `id` was added or changed (`Some`), or is gone: a TTL check this server owns gets
    /// a full TTL from now (it was just registered or changed), unless it is critical.
    pub fn changed(&self, id: &str, check: Option<&Check>) {
        let now = self.now();
        let ttl = check.and_then(|check| ttl_of(check).map(|ttl| (check, ttl)));
        let mut timers = self.timers.lock();
        let earliest = match ttl {
            None => {
                timers.ttls.remove(id);
                timers.set(id, None)
            }
            Some((check, ttl)) => {
                timers.ttls.insert(Arc::from(id), ttl);
                let runs = check.status != CheckStatus::Critical && self.cluster.probes(id);
                timers.set(id, runs.then_some(now + ttl))
            }
        };
        drop(timers);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// A heartbeat of `status` handled here: the check's TTL starts again (it has none while
    /// critical).
    pub fn heartbeat(&self, id: &str, status: CheckStatus) {
        let now = self.now();
        let mut timers = self.timers.lock();
        let Some(ttl) = timers.ttls.get(id).copied() else {
            return;
        };
        let earliest = timers.set(id, (status != CheckStatus::Critical).then_some(now + ttl));
        drop(timers);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Waits (at most [`SETTLE`]) while an expiry of `id` is on its way to the leader; whether
    /// there was one: a heartbeat after it must then be written, whatever the replica says.
    pub async fn settle(&self, id: &str) -> bool {
        let until = tokio::time::Instant::now() + SETTLE;
        let mut waited = false;
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.timers.lock().expiring.contains(id) {
                return waited;
            }
            waited = true;
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return waited;
            }
        }
    }

    /// The members changed: every check this server owns now and had no deadline for gets a
    /// full TTL from now (also a critical one: the leader ignores the expiry of a critical
    /// check, and this server cannot know whether another turned it passing meanwhile); the
    /// checks it no longer owns lose theirs.
    fn rearm(&self) {
        let now = self.now();
        let mut timers = self.timers.lock();
        let Timers {
            ttls, deadlines, ..
        } = &mut *timers;
        for (id, ttl) in ttls.iter() {
            if !self.cluster.probes(id) {
                deadlines.clear(id);
            } else if deadlines.get(id).is_none() {
                deadlines.set(id, Some(now + *ttl));
            }
        }
    }

    /// Takes out the checks whose TTL ran out and that this server owns (the others' deadlines
    /// are dropped), marking them on their way to the leader.
    fn take_due(&self) -> Vec<String> {
        let now = self.now();
        let mut timers = self.timers.lock();
        let due = timers.deadlines.pop_due(now, MAX_EXPIRED);
        let mut expired = Vec::new();
        for id in due {
            if self.cluster.probes(&id) {
                expired.push(id.to_string());
                timers.expiring.insert(id);
            }
        }
        expired
    }

    /// The expiry of `ids` reached the leader (`ok`) or not: heartbeats waiting for it go on,
    /// and an expiry that failed is tried again soon.
    fn settle_all(&self, ids: &[String], ok: bool) {
        let retry = self.now() + RETRY;
        let mut timers = self.timers.lock();
        for id in ids {
            timers.expiring.remove(id.as_str());
            if !ok && timers.ttls.contains_key(id.as_str()) && timers.deadlines.get(id).is_none() {
                timers.deadlines.set(id, Some(retry));
            }
        }
        drop(timers);
        self.settled.notify_waiters();
    }

    fn next(&self) -> Option<Duration> {
        self.timers.lock().deadlines.next()
    }
}

/// A check's TTL, if it is a TTL check.
fn ttl_of(check: &Check) -> Option<Duration> {
    match check.definition.kind {
        CheckKind::Ttl { ttl } => Some(ttl),
        _ => None,
    }
}

/// What [`run`] hands expiries to: the writer (on the leader), and the replica's index to catch
/// up with (on a follower).
pub struct Expirer {
    pub writer: WriterHandle,
    pub catalog_changed: watch::Receiver<u64>,
    /// TTL checks this server had marked critical, for `/metrics`.
    pub expired: Counter,
}

/// Expires the TTL checks this server owns when their deadlines pass, and re-arms them when
/// the members change; runs for as long as the server does.
pub async fn run(ttl: Arc<TtlDeadlines>, mut expirer: Expirer) {
    let mut members = ttl.cluster.subscribe_members();
    loop {
        let sleep = match ttl.next() {
            Some(deadline) => tokio::time::sleep_until((ttl.clock + deadline).into()),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            () = sleep => {}
            () = ttl.wake.notified() => continue,
            changed = members.changed() => {
                if changed.is_err() {
                    return;
                }
                ttl.rearm();
                continue;
            }
        }
        let expired = ttl.take_due();
        if expired.is_empty() {
            continue;
        }
        let result = expire(&ttl.cluster, &mut expirer, expired.clone()).await;
        match &result {
            Ok(()) => {
                expirer.expired.inc_by(expired.len() as u64);
            }
            Err(reason) => {
                tracing::warn!(%reason, checks = expired.len(), "cannot have TTL checks that ran out marked critical; trying again");
            }
        }
        ttl.settle_all(&expired, result.is_ok());
    }
}

/// Has the leader (this server, or through its API) turn `ids` critical, and waits until this
/// server's replica shows it.
async fn expire(cluster: &Cluster, expirer: &mut Expirer, ids: Vec<String>) -> Result<(), String> {
    let report = CheckReport::Expired(ids);
    if cluster.writes() {
        let commands = report.into_commands();
        return expirer
            .writer
            .submit_all(commands)
            .await
            .map_err(|error| error.to_string());
    }
    let index = cluster.report(&report).await?;
    crate::cluster::catch_up(&mut expirer.catalog_changed, index).await;
    Ok(())
}
