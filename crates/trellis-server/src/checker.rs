//! Runs HTTP and TCP checks: one task per check, first probe at a random point of the interval
//! (so thousands of checks do not fire in lock-step), probes bounded by a semaphore.

use crate::state::AppState;
use crate::writer::{CheckChange, Submission};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use trellis_catalog::{Check, Command};
use trellis_types::{CheckKind, CheckStatus, HttpCheck};

/// Most bytes of a probe's response body kept as the check's output (Consul keeps 4 KiB).
const MAX_OUTPUT: usize = 4096;

/// Keeps one probe task per active check, restarting it when the check changes.
pub async fn run(
    state: AppState,
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
    // At startup only: later changes arrive with their checks from the writer.
    let initial: Vec<Arc<Check>> = state
        .catalog
        .read()
        .checks()
        .filter(|c| c.is_active())
        .cloned()
        .collect();
    for check in initial {
        let id = check.id().to_owned();
        reschedule(&state, &mut tasks, &limit, &http, (id, Some(check)));
    }
    while let Some(change) = changed.recv().await {
        reschedule(&state, &mut tasks, &limit, &http, change);
    }
}

fn reschedule(
    state: &AppState,
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
            state.clone(),
            check,
            limit.clone(),
            http.clone(),
        ));
        tasks.insert(id, task.abort_handle());
    }
}

async fn probe_loop(
    state: AppState,
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
        let (reply, _answer) = oneshot::channel();
        let command = Command::ReportCheck {
            check_id: check.id().to_owned(),
            result,
            output,
        };
        // A full queue drops this result; the next probe reports again.
        let _ = state.writer.try_send(Submission { command, reply });
    }
}

/// Runs one probe within the check's timeout.
pub async fn probe(check: &Check, http: &reqwest::Client) -> (CheckStatus, String) {
    let timeout = check.timeout();
    match &check.definition.kind {
        CheckKind::Http(h) => probe_http(h, timeout, http).await,
        CheckKind::Tcp { address } => probe_tcp(address, timeout).await,
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
    match request.send().await {
        Ok(response) => {
            let code = response.status();
            let status = if code.is_success() {
                CheckStatus::Passing
            } else if code.as_u16() == 429 {
                CheckStatus::Warning
            } else {
                CheckStatus::Critical
            };
            let mut body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            body.truncate(MAX_OUTPUT);
            let output = format!(
                "HTTP {} {}: {} Output: {}",
                h.method,
                h.url,
                code,
                String::from_utf8_lossy(&body)
            );
            (status, output)
        }
        Err(error) => (
            CheckStatus::Critical,
            format!("HTTP {} {}: {}", h.method, h.url, describe(&error)),
        ),
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "request timed out".into()
    } else if error.is_connect() {
        "connection failed".into()
    } else if error.is_builder() && error.url().is_some_and(|u| u.scheme() == "https") {
        "https checks are not supported by this build".into()
    } else {
        error.to_string()
    }
}

async fn probe_tcp(address: &str, timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => (
            CheckStatus::Passing,
            format!("TCP connect {address}: Success"),
        ),
        Ok(Err(error)) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: {error}"),
        ),
        Err(_) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: i/o timeout"),
        ),
    }
}
