//! `/v1/session/...`: create, destroy, renew, info, list and node, as Consul answers them. Reads
//! carry `X-Consul-Index` (the sessions index: the last session created or destroyed) and block
//! on it with `?index&wait`; what the state refuses at create (a TTL out of range, a missing or
//! critical check, an unknown node) is a 500 with Consul's words, a body that does not decode a
//! 400.

use super::blocking::block_on;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, bool_response, json_response, to_json_bytes};
use crate::ids::random_uuid;
use crate::queue::WriteError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::sync::Arc;
use trellis_catalog::{Catalog, Command, MAX_SESSIONS, Reply};
use trellis_types::Session;
use trellis_types::session::{SessionInputError, session_from_create};

type Q = Query<Vec<(String, String)>>;

fn server_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// `PUT /v1/session/create`: an optional JSON body; answers `{"ID": "..."}`.
pub async fn create(
    State(state): State<AppState>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let body = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Null) => None,
            Ok(value) => Some(value),
            Err(e) => {
                return Err(ApiError::bad_request(format!("Request decode failed: {e}")));
            }
        }
    };
    let node = state.node().name.clone();
    let session = session_from_create(body, random_uuid(), &node).map_err(|e| match e {
        SessionInputError::Decode(_) => ApiError::bad_request(e.to_string()),
        SessionInputError::Refused(_) => server_error(e.to_string()),
    })?;
    // This server is its own single node: a session elsewhere has no node to live on.
    if !session.node.eq_ignore_ascii_case(&node) {
        return Err(server_error("Missing node registration"));
    }
    if state.catalog()?.session_count() >= MAX_SESSIONS {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many sessions (at most {MAX_SESSIONS}); destroy unused ones"),
        ));
    }
    let id = session.id.clone();
    match state.submit(Command::SessionCreate { session }).await {
        Ok(_) => Ok(json_body(serde_json::json!({ "ID": id }))),
        Err(WriteError::Rejected(refused)) => Err(server_error(refused.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn json_body(value: serde_json::Value) -> Response {
    let mut response = to_json_bytes(&value).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `PUT /v1/session/destroy/:id`: `true`, whether or not the session existed.
pub async fn destroy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    QueryParams::new(q).check_common(state.node())?;
    state.submit(Command::SessionDestroy { id }).await?;
    Ok(bool_response(true))
}

/// Among servers sharing a store a session's TTL is an etcd lease: any server renews it
/// there, with no write (`None` alone: the catalog's timer is renewed through the writer). The
/// session as this server's replica has it, if its lease was alive.
async fn renew_shared(
    state: &AppState,
    id: &str,
) -> Option<Result<Option<Arc<Session>>, ApiError>> {
    if state.cluster().role() == crate::cluster::Role::Alone {
        return None;
    }
    let session = match state.catalog() {
        Ok(catalog) => catalog.session(id).cloned(),
        Err(retired) => return Some(Err(retired.into())),
    };
    if session.as_ref().is_none_or(|s| s.ttl.is_empty()) {
        // Unknown, or without a TTL: nothing to renew.
        return Some(Ok(session));
    }
    Some(match state.cluster().renew_session(id).await? {
        Ok(alive) => Ok(session.filter(|_| alive)),
        Err(reason) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason)),
    })
}

/// `PUT /v1/session/renew/:id`: `[session]`, or 404 for an unknown session.
pub async fn renew(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    QueryParams::new(q).check_common(state.node())?;
    let session = match renew_shared(&state, &id).await {
        Some(renewed) => renewed?,
        None => match state
            .submit(Command::SessionRenew { id: id.clone() })
            .await?
        {
            Reply::Session(session) => session,
            _ => None,
        },
    };
    let index = state.catalog()?.sessions_index();
    match session {
        Some(session) => Ok(json_response(index, to_json_bytes(&[session.as_ref()]))),
        _ => {
            let mut response =
                ApiError::not_found(format!("Session id '{id}' not found")).into_response();
            add_index_headers(response.headers_mut(), index);
            Ok(response)
        }
    }
}

/// `GET /v1/session/info/:id`: `[session]`, or `[]` for an unknown one.
pub async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read(state, QueryParams::new(q), |catalog| {
        catalog.session(&id).cloned().into_iter().collect()
    })
    .await
}

/// `GET /v1/session/list`: every session, by ID.
pub async fn list(State(state): State<AppState>, Query(q): Q) -> Result<Response, ApiError> {
    read(state, QueryParams::new(q), |catalog| {
        catalog.sessions().cloned().collect()
    })
    .await
}

/// `GET /v1/session/node/:node`: the sessions of a node (names match without regard to case).
pub async fn node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read(state, QueryParams::new(q), |catalog| {
        catalog
            .sessions()
            .filter(|s| s.node.eq_ignore_ascii_case(&node))
            .cloned()
            .collect()
    })
    .await
}

/// The session paths without their ID or node, answered as Consul answers them.
pub async fn missing(Path(op): Path<String>) -> ApiError {
    match op.as_str() {
        "destroy" | "renew" | "info" => ApiError::bad_request("Missing session"),
        "node" => ApiError::bad_request("Missing node name"),
        _ => ApiError::not_found("no such endpoint"),
    }
}

/// A session read: blocks while the sessions index is the client's, then answers what `select`
/// picks, with that index.
async fn read(
    state: AppState,
    query: QueryParams,
    select: impl Fn(&Catalog) -> Vec<Arc<Session>>,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    block_on(&state, state.sessions_changed(), query.blocking()?, |i| *i).await?;
    let catalog = state.catalog()?;
    let index = catalog.sessions_index();
    let sessions = select(&catalog);
    drop(catalog);
    let body: Vec<&Session> = sessions.iter().map(Arc::as_ref).collect();
    Ok(json_response(index, to_json_bytes(&body)))
}
