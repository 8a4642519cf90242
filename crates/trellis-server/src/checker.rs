//! Runs HTTP and TCP checks: one task per check, first probe at a random point of the interval
//! (so thousands of checks do not fire in lock-step), probes bounded by a semaphore.

use crate::queue::WriterHandle;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use trellis_catalog::{Check, Command};
use trellis_client::probe;
use trellis_types::{CheckKind, CheckStatus, HttpCheck};

/// A check whose probing must restart or stop: its ID and, if it is an HTTP or TCP check that
/// still exists, its current definition.
pub type CheckChange = (String, Option<Arc<Check>>);

/// Keeps one probe task per active check, restarting it when the check changes. `initial` are
/// the active checks at startup; later changes arrive from the writer through `changed`, so the
/// checker never reads the catalog.
pub async fn run(
    writer: WriterHandle,
    initial: Vec<Arc<Check>>,
    mut changed: mpsc::UnboundedReceiver<CheckChange>,
    concurrency: usize,
) {
    let limit = Arc::new(Semaphore::new(concurrency));
    let http = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP check client; HTTP checks will not run");
            return;
        }
    };
    let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
    for check in initial {
        let id = check.id().to_owned();
        reschedule(&writer, &mut tasks, &limit, &http, (id, Some(check)));
    }
    while let Some(change) = changed.recv().await {
        reschedule(&writer, &mut tasks, &limit, &http, change);
    }
}

fn reschedule(
    writer: &WriterHandle,
    tasks: &mut HashMap<String, AbortHandle>,
    limit: &Arc<Semaphore>,
    http: &reqwest::Client,
    (id, check): CheckChange,
) {
    if let Some(task) = tasks.remove(&id) {
        task.abort();
    }
    if let Some(check) = check {
        let task = tokio::spawn(probe_loop(
            writer.clone(),
            check,
            limit.clone(),
            http.clone(),
        ));
        tasks.insert(id, task.abort_handle());
    }
}

async fn probe_loop(
    writer: WriterHandle,
    check: Arc<Check>,
    limit: Arc<Semaphore>,
    http: reqwest::Client,
) {
    let interval = check.definition.interval.unwrap_or(Duration::from_secs(10));
    let offset = rand::rng().random_range(Duration::ZERO..interval);
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(permit) = limit.acquire().await else {
            return;
        };
        let (result, output) = probe(&check, &http).await;
        drop(permit);
        let command = Command::ReportCheck {
            check_id: check.id().to_owned(),
            result,
            output,
        };
        // A full queue drops this result; the next probe reports again.
        let _ = writer.try_submit(command);
    }
}

/// Runs one probe within the check's timeout (TTL checks are never probed: they report themselves).
async fn probe(check: &Check, http: &reqwest::Client) -> (CheckStatus, String) {
    let timeout = check.timeout();
    match &check.definition.kind {
        CheckKind::Http(h) => probe_http(h, timeout, http).await,
        CheckKind::Tcp { address } => probe::tcp(address, timeout).await,
        CheckKind::Ttl { .. } => (check.status, check.output.clone()),
    }
}

async fn probe_http(
    h: &HttpCheck,
    timeout: Duration,
    http: &reqwest::Client,
) -> (CheckStatus, String) {
    let Ok(method) = reqwest::Method::from_bytes(h.method.as_bytes()) else {
        return (
            CheckStatus::Critical,
            format!("invalid method {:?}", h.method),
        );
    };
    let mut request = http.request(method, &h.url).timeout(timeout);
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
