//! Runs HTTP(S), TCP, gRPC and script checks: one task per check, first probe at a random point of the
//! interval (so thousands of checks do not fire in lock-step), probes bounded by a semaphore.
//! Static checks (maintenance mode, catalog-registered status) and TTL checks are not probed.
//! Script checks run their command only while `enable_script_checks` is on; a script check
//! restored from the store on a server without it is critical and runs nothing.

use crate::cluster::{CheckReport, CheckStatusReport, Cluster};
use crate::config::SCRIPTS_DISABLED;
use crate::queue::WriterHandle;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use trellis_catalog::{Check, Command};
use trellis_client::probe::{self, HttpTarget, ProbeTls};
use trellis_types::{CheckKind, CheckStatus, HttpCheck};

/// A check whose probing must restart or stop: its ID and, if it is an HTTP or TCP check that
/// still exists, its current definition.
pub type CheckChange = (String, Option<Arc<Check>>);

/// Consul's request headers of HTTP checks, sent unless the check sets them itself.
const DEFAULT_HEADERS: [(&str, &str); 2] = [
    ("User-Agent", "Consul Health Check"),
    ("Accept", "text/plain, text/*, */*"),
];

/// Keeps one probe task per active check, restarting it when the check changes. `initial` are
/// the active checks at startup; later changes arrive from the writer through `changed`, so the
/// checker never reads the catalog. Among servers sharing a store, every server keeps a task
/// per check but probes only the checks rendezvous hashing gives it (`Cluster::probes`), and
/// a follower hands its results to the leader.
pub async fn run(
    writer: WriterHandle,
    cluster: Arc<Cluster>,
    probes: Counter,
    initial: Vec<Arc<Check>>,
    mut changed: mpsc::UnboundedReceiver<CheckChange>,
    concurrency: usize,
    scripts_enabled: bool,
) {
    let limit = Arc::new(Semaphore::new(concurrency));
    // Reading the system's trust store is file IO: off the runtime's threads.
    let tls = match tokio::task::spawn_blocking(ProbeTls::new).await {
        Ok(tls) => Arc::new(tls),
        Err(error) => {
            tracing::error!(%error, "cannot set up TLS for health checks; checks will not run");
            return;
        }
    };
    tracing::debug!(
        roots = tls.roots,
        "trust store for HTTPS and gRPC checks loaded"
    );
    let shared = Arc::new(Probing {
        writer,
        cluster,
        probes,
        limit,
        tls,
        scripts_enabled,
    });
    let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
    let mut apply = |change| reschedule(&shared, &mut tasks, change);
    for check in initial {
        apply((check.id().to_owned(), Some(check)));
    }
    while let Some(change) = changed.recv().await {
        apply(change);
    }
}

/// What every probe task shares.
struct Probing {
    writer: WriterHandle,
    cluster: Arc<Cluster>,
    /// Probes run, for `/metrics`.
    probes: Counter,
    /// Bounds the probes running at once.
    limit: Arc<Semaphore>,
    tls: Arc<ProbeTls>,
    scripts_enabled: bool,
}

fn reschedule(
    shared: &Arc<Probing>,
    tasks: &mut HashMap<String, AbortHandle>,
    (id, check): CheckChange,
) {
    if let Some(task) = tasks.remove(&id) {
        task.abort();
    }
    if let Some(check) = check.filter(|c| c.definition.kind.is_probed()) {
        let task = tokio::spawn(probe_loop(Arc::clone(shared), check));
        tasks.insert(id, task.abort_handle());
    }
}

async fn probe_loop(shared: Arc<Probing>, check: Arc<Check>) {
    let Probing {
        writer,
        cluster,
        probes,
        limit,
        tls,
        scripts_enabled,
    } = &*shared;
    let prober = Prober::new(&check, tls, *scripts_enabled);
    let interval = check.definition.interval.unwrap_or(Duration::from_secs(10));
    let offset = rand::rng().random_range(Duration::ZERO..interval);
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !cluster.probes(check.id()) {
            continue;
        }
        let Ok(permit) = limit.acquire().await else {
            return;
        };
        let (result, output) = prober.probe(&check, tls).await;
        probes.inc();
        drop(permit);
        if cluster.writes() {
            let command = Command::ReportCheck {
                check_id: check.id().to_owned(),
                result,
                output,
            };
            // A full queue drops this result; the next probe reports again.
            let _ = writer.try_submit(command);
        } else {
            let report = CheckReport::Probe(CheckStatusReport {
                check_id: check.id().to_owned(),
                status: result,
                output,
            });
            // No leader now, or it did not answer: the next probe reports again.
            if let Err(reason) = cluster.report(&report).await {
                tracing::debug!(%reason, check_id = check.id(), "cannot hand a probe's result to the leader");
            }
        }
    }
}

/// What one check's probes need, set up once per check: an HTTP check's client with its TLS
/// settings, or why it cannot run (every probe reports that: a bad TLS setting, or a script
/// check on a server whose script checks are off, as after a restart without the flag).
enum Prober {
    Http(HttpTarget),
    Unusable(String),
    Other,
}

impl Prober {
    fn new(check: &Check, tls: &ProbeTls, scripts_enabled: bool) -> Self {
        match &check.definition.kind {
            CheckKind::Script { .. } if !scripts_enabled => {
                Self::Unusable(SCRIPTS_DISABLED.to_owned())
            }
            CheckKind::Http(h) => {
                match probe::http_target(tls, &h.url, h.tls_skip_verify, &h.tls_server_name) {
                    Ok(target) => Self::Http(target),
                    Err(reason) => Self::Unusable(reason),
                }
            }
            _ => Self::Other,
        }
    }

    /// Runs one probe within the check's timeout (TTL and static checks are never probed).
    async fn probe(&self, check: &Check, tls: &ProbeTls) -> (CheckStatus, String) {
        let timeout = check.timeout();
        match (&check.definition.kind, self) {
            (_, Self::Unusable(reason)) => (CheckStatus::Critical, reason.clone()),
            (CheckKind::Http(h), Self::Http(target)) => probe_http(h, target, timeout).await,
            (CheckKind::Tcp { address }, _) => probe::tcp(address, timeout).await,
            (CheckKind::Grpc(g), _) => probe::grpc(g, timeout, tls).await,
            (CheckKind::Script { args }, _) => probe_script(args, check).await,
            _ => (check.status, check.output.clone()),
        }
    }
}

/// Runs a script check's command with its timeout (Consul's 30 s when it sets none).
async fn probe_script(args: &[String], check: &Check) -> (CheckStatus, String) {
    probe::script(args, check.timeout()).await
}

/// One HTTP check request: the check's method, headers (Consul's defaults for those it does
/// not set) and body.
async fn probe_http(
    h: &HttpCheck,
    target: &HttpTarget,
    timeout: Duration,
) -> (CheckStatus, String) {
    let Ok(method) = reqwest::Method::from_bytes(h.method.as_bytes()) else {
        return (
            CheckStatus::Critical,
            format!("invalid method {:?}", h.method),
        );
    };
    let mut request = target.client.request(method, &target.url).timeout(timeout);
    let has = |name: &str| h.headers.keys().any(|k| k.eq_ignore_ascii_case(name));
    for (name, value) in DEFAULT_HEADERS {
        if !has(name) {
            request = request.header(name, value);
        }
    }
    if let Some(host) = &target.host
        && !has("Host")
    {
        request = request.header("Host", host.as_str());
    }
    for (name, values) in &h.headers {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    if !h.body.is_empty() {
        request = request.body(h.body.clone());
    }
    probe::http(request, &format!("HTTP {} {}", h.method, h.url)).await
}
