//! A follower hands the leader what only the leader may answer, as Consul's servers forward to
//! theirs: writes, `?consistent` reads (which the leader answers only once the store's quorum
//! has confirmed it still leads), the coordinator and the CA. After a forwarded write it
//! waits until its own replica has the leader's index, so a client reads its writes on the
//! server that took them. It also says on every read whether a leader is known.

use super::error::ApiError;
use crate::cluster::{Cluster, Holder, REPORT_PATH, SECRET_HEADER};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Marks a request a follower forwarded: the leader answers it with its index, and a server
/// that is not the leader does not forward it again.
const FORWARDED: HeaderName = HeaderName::from_static("x-trellis-forwarded");
/// The leader's global index when it answered a forwarded request.
const LEADER_INDEX: HeaderName = HeaderName::from_static("x-trellis-index");
/// Largest body a follower forwards (the leader's own limits are lower).
const MAX_FORWARDED_BODY: usize = 64 << 20;
/// How long a follower waits for its replica to catch up with a write it forwarded.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

pub async fn forward_to_leader(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let cluster = state.cluster();
    if let Some(check_id) = request.uri().path().strip_prefix(REPORT_PATH) {
        let check_id = percent_encoding::percent_decode_str(check_id)
            .decode_utf8_lossy()
            .into_owned();
        return receive_report(&state, check_id, request).await;
    }
    let forwarded = request.headers().contains_key(&FORWARDED);
    if cluster.writes()
        && is_read(&request)
        && is_consistent(&request)
        && !cluster.confirm_leadership().await
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "No cluster leader: this server's leadership could not be confirmed with the store",
        )
        .into_response();
    }
    if cluster.writes() || !must_forward(&request) {
        let mut response = next.run(request).await;
        if forwarded {
            let index = *state.catalog_changed().borrow();
            response
                .headers_mut()
                .insert(LEADER_INDEX, HeaderValue::from(index));
        }
        mark_leader(&state, &mut response);
        return response;
    }
    if forwarded {
        // Sent here by a follower that thought this server leads: the leadership moved.
        return no_leader();
    }
    let Some(leader) = cluster.leader() else {
        return no_leader();
    };
    match forward(cluster, &leader, request).await {
        Ok(response) => {
            let index = response
                .headers()
                .get(&LEADER_INDEX)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(index) = index {
                catch_up(&state, index).await;
            }
            response
        }
        Err(reason) => {
            // Once a second at most: clients retry fast while a leader is replaced.
            static WARNED: std::sync::Mutex<Option<std::time::Instant>> =
                std::sync::Mutex::new(None);
            if let Ok(mut last) = WARNED.lock()
                && last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
            {
                *last = Some(std::time::Instant::now());
                tracing::warn!(leader = %leader.node, %reason, "cannot forward to the leader");
            }
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the cluster leader {}: {reason}", leader.node),
            )
            .into_response()
        }
    }
}

/// A probe's result a follower hands over: taken only from a server that shows the shared
/// secret (it can read the store), only by the leader, and through the hysteresis of
/// `ReportCheck` like the leader's own probes.
async fn receive_report(state: &AppState, check_id: String, request: Request) -> Response {
    let cluster = state.cluster();
    let shown = request
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let Some(secret) = cluster.secret() else {
        return ApiError::not_found("no such endpoint").into_response();
    };
    if !constant_time_eq(&shown, secret.as_bytes()) {
        return ApiError::new(StatusCode::FORBIDDEN, "Permission denied").into_response();
    }
    if !cluster.writes() {
        return no_leader();
    }
    #[derive(serde::Deserialize)]
    struct Report {
        #[serde(rename = "Status")]
        status: trellis_types::CheckStatus,
        #[serde(rename = "Output", default)]
        output: String,
    }
    let body = match axum::body::to_bytes(request.into_body(), 1 << 20).await {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    let report: Report = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    let command = trellis_catalog::Command::ReportCheck {
        check_id,
        result: report.status,
        output: report.output,
    };
    match state.submit(command).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Equality that takes as long whatever the bytes (a secret is compared).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether only the leader may answer `request`.
fn must_forward(request: &Request) -> bool {
    let path = request.uri().path();
    // What belongs to this server, not to the shared store: its process, and what Consul's
    // agents keep to themselves or gossip (user events, network coordinates).
    let local = matches!(
        path,
        "/v1/agent/leave" | "/v1/agent/reload" | "/v1/coordinate/update"
    ) || path.starts_with("/v1/event/");
    if !path.starts_with("/v1/") || local {
        return false;
    }
    let leader_only = path.starts_with("/v1/trellis/txn")
        || path.starts_with("/v1/connect/ca/")
        || path.starts_with("/v1/agent/connect/");
    !is_read(request) || is_consistent(request) || leader_only
}

fn is_read(request: &Request) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    )
}

/// Whether the client asked for `?consistent`.
fn is_consistent(request: &Request) -> bool {
    request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("consistent"))
    })
}

/// Consul's answer when no leader can be reached.
fn no_leader() -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "No cluster leader").into_response()
}

/// `X-Consul-KnownLeader` and `X-Consul-LastContact` as this server knows them, on reads
/// that carry them: a follower that knows no leader says so, and for how long.
fn mark_leader(state: &AppState, response: &mut Response) {
    let headers = response.headers_mut();
    if !headers.contains_key("x-consul-knownleader") {
        return;
    }
    let cluster = state.cluster();
    let known = cluster.known_leader();
    let contact = cluster.last_contact().as_millis() as u64;
    headers.insert(
        "x-consul-knownleader",
        HeaderValue::from_static(if known { "true" } else { "false" }),
    );
    headers.insert("x-consul-lastcontact", HeaderValue::from(contact));
}

/// Sends `request` to the leader and gives its answer back (a leader found gone is deposed
/// first, so that the client's retry finds a new one).
async fn forward(cluster: &Cluster, leader: &Holder, request: Request) -> Result<Response, String> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = cluster
        .peer()
        .request(parts.method, leader.url(path))
        .body(body)
        .header(&FORWARDED, "1");
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = cluster
        .send_to_leader(leader, outgoing)
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(name) && name != header::CONTENT_LENGTH {
            response = response.header(name, value);
        }
    }
    let body = Body::from_stream(answer.bytes_stream());
    response
        .body(body)
        .map_err(|e| format!("cannot relay the answer: {e}"))
}

/// Waits (a bounded time) until this server's replica has reached `index`.
async fn catch_up(state: &AppState, index: u64) {
    let mut changed = state.catalog_changed();
    let reached = tokio::time::timeout(CATCH_UP, changed.wait_for(|seen| *seen >= index)).await;
    if reached.is_err() {
        tracing::warn!(
            index,
            "the replica did not reach the leader's index in time"
        );
    }
}
