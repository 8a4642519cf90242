//! A follower hands the leader what only the leader may answer, as Consul's servers forward to
//! theirs: writes, `?consistent` reads (which the leader answers only once the store's quorum
//! has confirmed it still leads), the coordinator and the CA. After a forwarded write it
//! waits until its own replica has the leader's index, so a client reads its writes on the
//! server that took them. It also says on every read whether a leader is known.

use super::error::ApiError;
use crate::cluster::{
    CheckReport, Cluster, Holder, LEADER_INDEX, Owner, REPORT_PATH, SECRET_HEADER,
};
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
/// Marks a TTL heartbeat sent to the server that owns the check: it handles it itself.
const TO_OWNER: HeaderName = HeaderName::from_static("x-trellis-check-owner");
/// Largest body a follower forwards (the leader's own limits are lower).
const MAX_FORWARDED_BODY: usize = 64 << 20;
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
    if request.uri().path() == REPORT_PATH {
        return receive_report(&state, request).await;
    }
    if cluster.role() != crate::cluster::Role::Alone
        && let Some(check_id) = ttl_heartbeat(&request)
    {
        return to_owner(&state, check_id, request, next).await;
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
            if let Some(index) = leader_index(&response) {
                state.catch_up(index).await;
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

/// What a check's owner hands over (a probe's result, a TTL heartbeat that changes the check,
/// TTLs that ran out): taken only from a server that shows the shared secret (it can read the
/// store), only by the leader, which applies it as its own owner would (a probe's result
/// through the check's hysteresis). Answered once written, with the leader's index.
async fn receive_report(state: &AppState, request: Request) -> Response {
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
    let body = match axum::body::to_bytes(request.into_body(), 16 << 20).await {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    let report: CheckReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    // The expiry of a check that went meanwhile is no error: there is nothing left to expire.
    if let Err(error) = state.submit_all(report.into_commands()).await {
        return ApiError::from(error).into_response();
    }
    let index = *state.catalog_changed().borrow();
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(LEADER_INDEX, HeaderValue::from(index));
    response
}

/// The check a TTL heartbeat (`PUT /v1/agent/check/{pass,warn,fail,update}/:id`) is for.
fn ttl_heartbeat(request: &Request) -> Option<String> {
    if request.method() != Method::PUT {
        return None;
    }
    let rest = request.uri().path().strip_prefix("/v1/agent/check/")?;
    let (verb, id) = rest.split_once('/')?;
    if !matches!(verb, "pass" | "warn" | "fail" | "update") || id.is_empty() {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Among servers sharing a store a TTL heartbeat goes to the server that owns the check's
/// expiry, which keeps the deadline in memory and writes only a change (see `ttl.rs`). A
/// heartbeat for this server, or sent here as to its owner, or whose owner cannot be reached
/// (it died; its checks move to the survivors within a lease), is handled here.
async fn to_owner(state: &AppState, check_id: String, request: Request, next: Next) -> Response {
    let sent_to_owner = request.headers().contains_key(&TO_OWNER);
    let owner = match state.cluster().owner(&check_id) {
        Owner::Other(owner) if !sent_to_owner => owner,
        _ => {
            let mut response = next.run(request).await;
            if sent_to_owner {
                // The server that sent it catches up to what this one wrote.
                let index = *state.catalog_changed().borrow();
                response
                    .headers_mut()
                    .insert(LEADER_INDEX, HeaderValue::from(index));
            }
            return response;
        }
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_FORWARDED_BODY).await {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(error.to_string()).into_response(),
    };
    let outgoing = outgoing(state.cluster(), &owner, &parts, body.clone()).header(&TO_OWNER, "1");
    match outgoing.send().await {
        Ok(answer) => match relayed(answer) {
            Ok(response) if response.status().is_success() => {
                if let Some(index) = leader_index(&response) {
                    state.catch_up(index).await;
                }
                response
            }
            Ok(response) => response,
            Err(reason) => ApiError::new(StatusCode::BAD_GATEWAY, reason).into_response(),
        },
        Err(error) => {
            tracing::debug!(%error, owner = %owner.node, check_id, "the check's owner cannot be reached: handled here");
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
    }
}

/// Equality that takes as long whatever the bytes (a secret is compared).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The index another server said it answered at.
fn leader_index(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(LEADER_INDEX)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether only the leader may answer `request`.
fn must_forward(request: &Request) -> bool {
    let path = request.uri().path();
    // What belongs to this server, not to the shared store: its process, and what Consul's
    // agents keep to themselves or gossip (user events, network coordinates); and a session's
    // renewal, which any server makes in the store itself (its etcd lease).
    let local = matches!(
        path,
        "/v1/agent/leave" | "/v1/agent/reload" | "/v1/coordinate/update"
    ) || path.starts_with("/v1/event/")
        || path.starts_with("/v1/session/renew/");
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
    let outgoing = outgoing(cluster, leader, &parts, body).header(&FORWARDED, "1");
    let answer = cluster
        .send_to_leader(leader, outgoing)
        .await
        .map_err(|e| e.to_string())?;
    relayed(answer)
}

/// A request as received, to be sent on to another server `to`.
fn outgoing(
    cluster: &Cluster,
    to: &Holder,
    parts: &axum::http::request::Parts,
    body: axum::body::Bytes,
) -> reqwest::RequestBuilder {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = cluster
        .peer()
        .request(parts.method.clone(), to.url(path))
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing
}

/// Another server's answer, given back as this server's.
fn relayed(answer: reqwest::Response) -> Result<Response, String> {
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
