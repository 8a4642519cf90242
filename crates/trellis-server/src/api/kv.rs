//! `/v1/kv/...`: key/value reads (single, `recurse`, `keys` + `separator`, `raw`, blocking) and
//! writes with `cas` and `flags`, answered `true`/`false` as Consul does.

use super::blocking::waiter_permit;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, json_response, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use std::collections::BTreeSet;
use trellis_catalog::{Catalog, Command, KvEntry, Reply};
use trellis_types::KvPair;

type Q = Query<Vec<(String, String)>>;

pub async fn get(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read(s, key, QueryParams::new(q)).await
}

pub async fn get_root(State(s): State<AppState>, Query(q): Q) -> Result<Response, ApiError> {
    read(s, String::new(), QueryParams::new(q)).await
}

pub async fn put(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(s, key, QueryParams::new(q), body).await
}

pub async fn put_root(
    State(s): State<AppState>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(s, String::new(), QueryParams::new(q), body).await
}

pub async fn delete(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    remove(s, key, QueryParams::new(q)).await
}

pub async fn delete_root(State(s): State<AppState>, Query(q): Q) -> Result<Response, ApiError> {
    remove(s, String::new(), QueryParams::new(q)).await
}

fn pair(entry: &KvEntry) -> KvPair {
    KvPair {
        lock_index: 0,
        key: entry.key.clone(),
        flags: entry.flags,
        value: (!entry.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
        create_index: entry.create_index,
        modify_index: entry.modify_index,
    }
}

/// The index a read answers and blocks on. A single existing key answers its own
/// `ModifyIndex`, as Consul does: clients use it for CAS, and writes to keys that merely share
/// its prefix must not wake its watchers. Prefix reads (`recurse`, `keys`) and missing keys
/// answer the index of everything under the prefix, deletions included.
fn read_index(catalog: &Catalog, key: &str, single: bool) -> u64 {
    match catalog.kv_get(key) {
        Some(entry) if single => entry.modify_index,
        _ => catalog.kv_index(key),
    }
}

/// Waits until the read's index moves off the client's, or the wait ends.
async fn wait_for_change(
    state: &AppState,
    key: &str,
    single: bool,
    query: &QueryParams,
) -> Result<(), ApiError> {
    let Some(blocking) = query.blocking()? else {
        return Ok(());
    };
    let mut rx = state.kv_changed();
    let mut closing = state.closing();
    if read_index(&*state.catalog()?, key, single) != blocking.index {
        return Ok(());
    }
    let _permit = waiter_permit(state)?;
    let deadline = blocking.deadline();
    loop {
        tokio::select! {
            changed = rx.changed() => {
                let index = read_index(&*state.catalog()?, key, single);
                if changed.is_err() || index != blocking.index {
                    return Ok(());
                }
            }
            _ = closing.changed() => return Ok(()),
            () = tokio::time::sleep_until(deadline) => return Ok(()),
        }
    }
}

async fn read(state: AppState, key: String, query: QueryParams) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    let recurse = query.flag("recurse")?;
    let keys_only = query.get("keys").is_some() && query.flag("keys")?;
    let raw = query.flag("raw")?;
    let single = !recurse && !keys_only;
    wait_for_change(&state, &key, single, &query).await?;
    let catalog = state.catalog()?;
    let index = read_index(&catalog, &key, single);
    if keys_only {
        let separator = query.get("separator").unwrap_or_default();
        let keys: BTreeSet<String> = catalog
            .kv_range(&key)
            .map(|e| match separator {
                "" => e.key.clone(),
                sep => match e.key[key.len()..].find(sep) {
                    Some(pos) => e.key[..key.len() + pos + sep.len()].to_owned(),
                    None => e.key.clone(),
                },
            })
            .collect();
        drop(catalog);
        if keys.is_empty() {
            return Ok(not_found(index));
        }
        return Ok(json_response(index, to_json_bytes(&keys)));
    }
    if recurse {
        let pairs: Vec<KvPair> = catalog.kv_range(&key).map(pair).collect();
        drop(catalog);
        if pairs.is_empty() {
            return Ok(not_found(index));
        }
        return Ok(json_response(index, to_json_bytes(&pairs)));
    }
    let Some(entry) = catalog.kv_get(&key).cloned() else {
        return Ok(not_found(index));
    };
    drop(catalog);
    if raw {
        let mut response = Bytes::from(entry.value).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        add_index_headers(response.headers_mut(), index);
        return Ok(response);
    }
    Ok(json_response(index, to_json_bytes(&[pair(&entry)])))
}

/// A missing key is a 404 with an empty body, still carrying the index headers.
fn not_found(index: u64) -> Response {
    let mut response = StatusCode::NOT_FOUND.into_response();
    add_index_headers(response.headers_mut(), index);
    response
}

fn bool_response(value: bool) -> Response {
    let body = if value { "true" } else { "false" };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refuse_sessions(query: &QueryParams) -> Result<(), ApiError> {
    if query.get("acquire").is_some() || query.get("release").is_some() {
        return Err(ApiError::bad_request(
            "sessions (acquire/release) are not supported",
        ));
    }
    Ok(())
}

async fn write(
    state: AppState,
    key: String,
    query: QueryParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    refuse_sessions(&query)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("missing key name"));
    }
    let command = Command::KvPut {
        key,
        value: body.to_vec(),
        flags: query.u64("flags")?.unwrap_or(0),
        cas: query.u64("cas")?,
    };
    match state.submit(command).await? {
        Reply::Bool(ok) => Ok(bool_response(ok)),
        Reply::Done => Ok(bool_response(true)),
    }
}

async fn remove(state: AppState, key: String, query: QueryParams) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    let recurse = query.flag("recurse")?;
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request("missing key name"));
    }
    let command = Command::KvDelete {
        key,
        recurse,
        cas: query.u64("cas")?,
    };
    match state.submit(command).await? {
        Reply::Bool(ok) => Ok(bool_response(ok)),
        Reply::Done => Ok(bool_response(true)),
    }
}
