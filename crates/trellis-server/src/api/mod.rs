//! The HTTP API: routes, error answers, query parameters, index headers and blocking queries.

mod agent;
mod health;
mod kv;
mod status;
mod watch;

use crate::state::AppState;
use crate::writer::{Submission, WriteError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use rand::Rng;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use trellis_catalog::{CatalogError, Command, Reply};
use trellis_types::parse_go_duration;

/// Largest request body: KV values may be up to 512 KiB, as in Consul.
pub const MAX_BODY: usize = 512 * 1024;
/// Default and longest wait of a blocking query.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(agent::register))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister))
        .route("/v1/agent/check/register", put(agent::register_check))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::deregister_check),
        )
        .route("/v1/agent/check/pass/{id}", put(agent::pass))
        .route("/v1/agent/check/warn/{id}", put(agent::warn))
        .route("/v1/agent/check/fail/{id}", put(agent::fail))
        .route("/v1/agent/check/update/{id}", put(agent::update))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/catalog/services", get(health::catalog_services))
        .route("/v1/catalog/service/{name}", get(health::catalog_service))
        .route("/v1/catalog/nodes", get(status::catalog_nodes))
        .route("/v1/catalog/datacenters", get(status::datacenters))
        .route("/v1/health/service/{name}", get(health::health_service))
        .route("/v1/health/checks/{name}", get(health::health_checks))
        .route(
            "/v1/kv/",
            get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/trellis/watch/{name}", get(watch::watch))
        .route("/metrics", get(status::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Counts every request by route and status, and times it.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = crate::metrics::RequestLabels {
        route: route.clone(),
        method,
        code: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&crate::metrics::RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// An error answer: a status and a short plain-text reason, as Consul answers.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl From<trellis_types::InvalidInput> for ApiError {
    fn from(e: trellis_types::InvalidInput) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl AppState {
    /// Queues a command for the writer and waits until it is applied (and durable, if it is a
    /// durable command).
    pub async fn submit(&self, command: Command) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .try_send(Submission { command, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server busy: write queue full, retry later",
                ),
                TrySendError::Disconnected(_) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down")
                }
            })?;
        match answer.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(WriteError::Catalog(CatalogError::NotFound(m)))) => {
                Err(ApiError::new(StatusCode::NOT_FOUND, m))
            }
            Ok(Err(WriteError::Catalog(CatalogError::Invalid(m)))) => Err(ApiError::bad_request(m)),
            Ok(Err(WriteError::Storage)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage failure; the write was not applied",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server is shutting down",
            )),
        }
    }

    /// A permit to hold a blocking query or watch stream open.
    pub fn waiter_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.waiters.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many blocking queries; retry later",
            )
        })
    }
}

/// Query parameters shared by the read endpoints.
#[derive(Debug, Default)]
pub struct QueryParams {
    pub pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A flag like `?passing`, `?passing=true` or `?recurse=1`.
    /// Values are those of Go's `strconv.ParseBool`, which Consul uses.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("" | "true" | "1" | "t" | "T" | "True" | "TRUE") => Ok(true),
            Some("false" | "0" | "f" | "F" | "False" | "FALSE") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value {other:?} for {key}"
            ))),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}")))
            })
            .transpose()
    }

    /// `?index=N&wait=D` if the request blocks.
    pub fn blocking(&self) -> Result<Option<Blocking>, ApiError> {
        let index = match self.get("index") {
            None => return Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid index {v:?}")))?,
        };
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => parse_go_duration(v)
                .map_err(|e| ApiError::bad_request(format!("invalid wait: {e}")))?,
        };
        if index == 0 {
            return Ok(None);
        }
        Ok(Some(Blocking {
            index,
            wait: wait.min(MAX_WAIT),
        }))
    }

    /// Refuses what this server cannot honour instead of silently ignoring it.
    pub fn check_common(&self, state: &AppState) -> Result<(), ApiError> {
        if let Some(filter) = self.get("filter")
            && !filter.trim().is_empty()
        {
            return Err(ApiError::bad_request(
                "filter expressions are not supported by this server; use tag, passing or node-meta",
            ));
        }
        if let Some(dc) = self.get("dc")
            && !dc.is_empty()
            && dc != state.node.datacenter
        {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("No path to datacenter {dc:?}"),
            ));
        }
        Ok(())
    }

    /// `node-meta=key:value` pairs; the synthesised node has to match all of them.
    pub fn node_meta_matches(&self, state: &AppState) -> Result<bool, ApiError> {
        let wanted = self.all("node-meta");
        if wanted.is_empty() {
            return Ok(true);
        }
        let meta = state.node.info().meta;
        for pair in wanted {
            let (key, value) = pair.split_once(':').ok_or_else(|| {
                ApiError::bad_request(format!("invalid node-meta {pair:?}: want key:value"))
            })?;
            if meta.get(key).map(String::as_str) != Some(value) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A blocking query's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

impl Blocking {
    /// The wait with random jitter of up to wait/16 added, so that many clients that started
    /// together do not all come back together.
    pub fn deadline(&self) -> tokio::time::Instant {
        let jitter_cap = self.wait / 16;
        let jitter = if jitter_cap.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..jitter_cap)
        };
        tokio::time::Instant::now() + self.wait + jitter
    }
}

/// A JSON answer with the Consul read headers.
pub fn json_response(index: u64, body: Bytes) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_index_headers(headers, index);
    response
}

pub fn add_index_headers(headers: &mut axum::http::HeaderMap, index: u64) {
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
}

pub fn to_json_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    // Serialising the API's own plain types cannot fail; `null` is the safe fallback.
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}

/// Waits on a watch channel until `current(value)` differs from the client's index or the
/// wait ends; answers the value to show (on timeout, the same index).
pub async fn block_on<T: Clone>(
    state: &AppState,
    mut rx: tokio::sync::watch::Receiver<T>,
    blocking: Option<Blocking>,
    index_of: impl Fn(&T) -> u64,
) -> Result<T, ApiError> {
    let current = rx.borrow_and_update().clone();
    let Some(blocking) = blocking else {
        return Ok(current);
    };
    if index_of(&current) != blocking.index {
        return Ok(current);
    }
    let _permit = state.waiter_permit()?;
    let deadline = blocking.deadline();
    let mut closing = state.closing.subscribe();
    loop {
        tokio::select! {
            _ = closing.changed() => return Ok(rx.borrow().clone()),
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(rx.borrow().clone());
                }
                let value = rx.borrow_and_update().clone();
                if index_of(&value) != blocking.index {
                    return Ok(value);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(rx.borrow().clone()),
        }
    }
}
