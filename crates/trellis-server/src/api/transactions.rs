//! The two-phase-commit coordinator's API under `/v1/trellis/txn`: begin (or the one-shot
//! submit), add a branch, commit, abort, read one transaction and list them, the reads blocking
//! with `?index=` like every other read. JSON in snake_case; times in milliseconds since the
//! UNIX epoch.

use super::blocking::{block_on, block_while};
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::coordinator::{NewBranch, Request, TraceContext, TxnError};
use crate::ids::random_uuid;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use trellis_coordinator::{CoordinatorError, Target, Txn, TxnState};
use trellis_types::parse_go_duration;

/// Longest gid and branch ID accepted.
pub const MAX_ID_LEN: usize = 128;
/// Largest payload of one branch, as JSON text.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most transactions one list answers.
pub const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BeginBody {
    #[serde(default)]
    gid: Option<String>,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    branches: Vec<BranchBody>,
    #[serde(default)]
    commit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BranchBody {
    branch_id: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
}

/// `POST /v1/trellis/txn[?wait=false]`: begins a transaction (idempotent for a given `gid`); with
/// `branches` adds them, with `"commit": true` commits (the one-shot submit).
pub async fn begin(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let body: BeginBody = parse(&body)?;
    let gid = match body.gid {
        Some(gid) => validate_id("gid", gid)?,
        None => random_uuid(),
    };
    let timeout_ms = body.timeout.as_ref().map(timeout_ms).transpose()?;
    let branches = body
        .branches
        .into_iter()
        .map(branch)
        .collect::<Result<Vec<_>, _>>()?;
    let commit = body.commit;
    let wait = commit && waits(&query)?;
    let request = Request::Begin {
        gid,
        timeout_ms,
        branches,
        commit,
    };
    let txn = state
        .coordinator()
        .request(request, wait, TraceContext::from_headers(&headers))
        .await
        .map_err(error)?;
    Ok(answer(&txn, commit))
}

/// `POST /v1/trellis/txn/{gid}/branches`: adds a branch to an open transaction.
pub async fn add_branch(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let branch = branch(parse(&body)?)?;
    let request = Request::AddBranch { gid, branch };
    let txn = state
        .coordinator()
        .request(request, false, TraceContext::from_headers(&headers))
        .await
        .map_err(error)?;
    Ok(answer(&txn, false))
}

/// `POST /v1/trellis/txn/{gid}/commit[?wait=false]`: answers with the outcome (200 committed,
/// 409 aborted with its cause), or at once (202 while preparing) with `?wait=false`.
pub async fn commit(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wait = waits(&QueryParams::new(q))?;
    let txn = state
        .coordinator()
        .request(
            Request::Commit { gid },
            wait,
            TraceContext::from_headers(&headers),
        )
        .await
        .map_err(error)?;
    Ok(answer(&txn, true))
}

/// `POST /v1/trellis/txn/{gid}/abort`.
pub async fn abort(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let txn = state
        .coordinator()
        .request(
            Request::Abort { gid },
            false,
            TraceContext::from_headers(&headers),
        )
        .await
        .map_err(error)?;
    Ok(answer(&txn, false))
}

/// `GET /v1/trellis/txn/{gid}[?index=&wait=]`.
pub async fn show(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let coordinator = state.coordinator();
    let signal = coordinator.changed();
    block_while(&state, signal, query.blocking()?, || {
        Ok(coordinator.get(&gid).map_or(0, |txn| txn.modify_index))
    })
    .await?;
    let txn = coordinator
        .get(&gid)
        .ok_or_else(|| ApiError::not_found(format!("no transaction {gid:?}")))?;
    Ok(json_response(txn.modify_index, to_json_bytes(&view(&txn))))
}

/// `GET /v1/trellis/txn[?state=&after=&limit=&index=&wait=]`: transactions by creation, one page
/// at a time (`after` is the `next` of the previous page).
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let wanted = match query.get("state") {
        None | Some("") => None,
        Some(text) => Some(TxnState::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown state {text:?}: open, preparing, committing, aborting, committed or aborted"
            ))
        })?),
    };
    let after = query.u64("after")?.unwrap_or(0);
    let limit = match query.u64("limit")? {
        None => DEFAULT_PAGE,
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
    };
    let coordinator = state.coordinator();
    let index = block_on(&state, coordinator.changed(), query.blocking()?, |i| *i).await?;
    let mut txns = coordinator
        .list(|txn| txn.create_index > after && wanted.is_none_or(|state| txn.state == state));
    let more = txns.len() > limit;
    txns.truncate(limit);
    let next = more
        .then(|| txns.last().map(|txn| txn.create_index))
        .flatten();
    let body = json!({
        "transactions": txns.iter().map(|txn| view(txn)).collect::<Vec<_>>(),
        "next": next,
    });
    Ok(json_response(index, to_json_bytes(&body)))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// `?wait=false` answers without waiting for the outcome.
fn waits(query: &QueryParams) -> Result<bool, ApiError> {
    match query.get("wait") {
        None => Ok(true),
        Some(text) => super::params::parse_bool(text)
            .ok_or_else(|| ApiError::bad_request(format!("invalid wait {text:?}: true or false"))),
    }
}

fn validate_id(what: &str, id: String) -> Result<String, ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(allowed) {
        return Err(ApiError::bad_request(format!(
            "invalid {what} {id:?}: 1 to {MAX_ID_LEN} letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(id)
}

/// `"10s"` (a Go duration) or a number of milliseconds.
fn timeout_ms(value: &Value) -> Result<u64, ApiError> {
    let ms = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => parse_go_duration(text)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(ApiError::bad_request(format!(
            "invalid timeout {value}: a duration such as \"10s\" or a number of milliseconds"
        ))),
    }
}

fn branch(body: BranchBody) -> Result<NewBranch, ApiError> {
    let id = validate_id("branch_id", body.branch_id)?;
    let target = match (body.service, body.url) {
        (Some(name), None) if !name.is_empty() => {
            let path = body.path.unwrap_or_default();
            if !path.is_empty() && !path.starts_with('/') {
                return Err(ApiError::bad_request(format!(
                    "branch {id:?}: path {path:?} must start with '/'"
                )));
            }
            Target::Service { name, path }
        }
        (None, Some(url)) if body.path.is_none() => {
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| ApiError::bad_request(format!("branch {id:?}: url {url:?}: {e}")))?;
            if parsed.scheme() != "http" || parsed.host_str().is_none() {
                return Err(ApiError::bad_request(format!(
                    "branch {id:?}: url {url:?} must be an http:// URL with a host"
                )));
            }
            Target::Url(url)
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "branch {id:?}: give either \"service\" (and optionally \"path\") or \"url\""
            )));
        }
    };
    let payload = body.payload.unwrap_or(Value::Null).to_string();
    if payload.len() > MAX_PAYLOAD {
        return Err(ApiError::bad_request(format!(
            "branch {id:?}: payload of {} bytes is over the limit of {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    Ok(NewBranch {
        id,
        target,
        payload: Arc::from(payload),
    })
}

fn error(error: TxnError) -> ApiError {
    let status = match &error {
        TxnError::Rejected(CoordinatorError::UnknownTransaction(_)) => StatusCode::NOT_FOUND,
        TxnError::Rejected(CoordinatorError::TooManyBranches { .. }) => StatusCode::BAD_REQUEST,
        TxnError::Rejected(CoordinatorError::Overloaded(_))
        | TxnError::Busy
        | TxnError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        TxnError::Rejected(_) => StatusCode::CONFLICT,
        TxnError::Storage => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.to_string())
}

/// A transaction's view with a status saying its outcome when a commit was asked for: 200
/// committed (or committing), 409 aborted (or aborting), 202 still preparing.
fn answer(txn: &Txn, outcome: bool) -> Response {
    let status = match txn.state {
        _ if !outcome => StatusCode::OK,
        TxnState::Committing | TxnState::Committed => StatusCode::OK,
        TxnState::Aborting | TxnState::Aborted => StatusCode::CONFLICT,
        TxnState::Open | TxnState::Preparing => StatusCode::ACCEPTED,
    };
    let mut response = json_response(txn.modify_index, to_json_bytes(&view(txn)));
    *response.status_mut() = status;
    response.into_response()
}

/// The JSON shape of a transaction.
pub fn view(txn: &Txn) -> Value {
    let branches: Vec<Value> = txn
        .branches
        .iter()
        .map(|b| {
            let mut branch = json!({
                "branch_id": b.id,
                "state": b.state.as_str(),
                "attempts": b.attempts,
                "last_error": b.last_error,
                "payload": serde_json::from_str::<Value>(&b.payload).unwrap_or(Value::Null),
            });
            match &b.target {
                Target::Service { name, path } => {
                    branch["service"] = json!(name);
                    branch["path"] = json!(path);
                }
                Target::Url(url) => branch["url"] = json!(url),
            }
            branch
        })
        .collect();
    json!({
        "gid": txn.gid,
        "state": txn.state.as_str(),
        "timeout_ms": txn.timeout_ms,
        "created_at": txn.created_at,
        "prepare_started_at": txn.prepare_started_at,
        "decided_at": txn.decided_at,
        "finished_at": txn.finished_at,
        "cause": txn.cause,
        "branches": branches,
        "create_index": txn.create_index,
        "modify_index": txn.modify_index,
        "trace_id": txn.trace_id,
    })
}
