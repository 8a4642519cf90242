//! `/v1/kv/...`: key/value reads (single, `recurse`, `keys` + `separator`, `raw`, blocking) and
//! writes with `cas`, `flags`, `acquire` and `release`, answered `true`/`false` as Consul does.
//! As in Consul, `recurse`, `keys` and `raw` are flags by presence (`?recurse=false` recurses),
//! `cas`, `acquire` and `release` exclude each other, and every read answers `X-Consul-Index`
//! (404s included).

use super::authz::Authz;
use super::blocking::block_while;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, bool_response, json_response, to_json_bytes};
use crate::queue::WriteError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use std::collections::BTreeSet;
use trellis_acl::{Need, Resource};
use trellis_catalog::{Catalog, Command, KvEntry, Reply};
use trellis_types::KvPair;

type Q = Query<Vec<(String, String)>>;

pub async fn get(
    State(s): State<AppState>,
    authz: Authz,
    Path(key): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read(s, &authz, key, QueryParams::new(q)).await
}

pub async fn get_root(
    State(s): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read(s, &authz, String::new(), QueryParams::new(q)).await
}

pub async fn put(
    State(s): State<AppState>,
    authz: Authz,
    Path(key): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Key, &key, Need::Write)?;
    write(s, key, QueryParams::new(q), body).await
}

pub async fn put_root(
    State(s): State<AppState>,
    authz: Authz,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    authz.require(Resource::Key, "", Need::Write)?;
    write(s, String::new(), QueryParams::new(q), body).await
}

pub async fn delete(
    State(s): State<AppState>,
    authz: Authz,
    Path(key): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    remove(s, &authz, key, QueryParams::new(q)).await
}

pub async fn delete_root(
    State(s): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    remove(s, &authz, String::new(), QueryParams::new(q)).await
}

/// An entry as the API answers it: `LockIndex` always, `Session` while the lock is held.
pub fn pair(entry: &KvEntry) -> KvPair {
    KvPair {
        lock_index: entry.lock_index,
        key: entry.key.clone(),
        flags: entry.flags,
        value: (!entry.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
        session: entry.session.clone(),
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

/// Waits until the read's index moves off the client's (re-checked on each KV change), or the
/// wait ends.
async fn wait_for_change(
    state: &AppState,
    key: &str,
    single: bool,
    query: &QueryParams,
) -> Result<(), ApiError> {
    block_while(state, state.kv_changed(), query.blocking()?, || {
        Ok(read_index(&*state.catalog()?, key, single))
    })
    .await
}

/// Whether a flag Consul reads by its presence alone is in the query, whatever its value.
fn present(query: &QueryParams, key: &str) -> bool {
    query.get(key).is_some()
}

async fn read(
    state: AppState,
    authz: &Authz,
    key: String,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    let keys_only = present(&query, "keys");
    let recurse = !keys_only && present(&query, "recurse");
    let single = !recurse && !keys_only;
    if single && key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    // As Consul: one key needs read on it; listing keys needs list on the prefix; both lists
    // answer only the keys the token may read.
    if single {
        authz.require(Resource::Key, &key, Need::Read)?;
    } else if keys_only {
        authz.require(Resource::Key, &key, Need::List)?;
    }
    let readable = |k: &str| authz.can_read(Resource::Key, k);
    wait_for_change(&state, &key, single, &query).await?;
    let catalog = state.catalog()?;
    let index = read_index(&catalog, &key, single);
    if keys_only {
        // The old spelling still counts; the right one wins when both are given.
        let separator = query
            .get("separator")
            .or_else(|| query.get("seperator"))
            .unwrap_or_default();
        let keys: BTreeSet<String> = catalog
            .kv_range(&key)
            .filter(|e| readable(&e.key))
            .map(|e| match separator {
                "" => e.key.clone(),
                sep => match e.key[key.len()..].find(sep) {
                    Some(pos) => e.key[..key.len() + pos + sep.len()].to_owned(),
                    None => e.key.clone(),
                },
            })
            .collect();
        drop(catalog);
        // Listing the root answers an empty list rather than a 404, as Consul does.
        if keys.is_empty() && !key.is_empty() {
            return Ok(not_found(index));
        }
        return Ok(json_response(index, to_json_bytes(&keys)));
    }
    if recurse {
        let pairs: Vec<KvPair> = catalog
            .kv_range(&key)
            .filter(|e| readable(&e.key))
            .map(pair)
            .collect();
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
    if present(&query, "raw") {
        // As Consul: plain text that browsers must neither sniff nor run.
        let mut response = Bytes::from(entry.value).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        add_index_headers(headers, index);
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

/// Consul's answer to flags that may not be combined: 400 with the query, encoded.
fn conflicting(query: &QueryParams, flags: &[&str]) -> Result<(), ApiError> {
    if flags.iter().filter(|f| present(query, f)).count() > 1 {
        let mut pairs: Vec<&(String, String)> = query.pairs.iter().collect();
        pairs.sort();
        let encoded: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        return Err(ApiError::bad_request(format!(
            "Conflicting flags: {}",
            encoded.join("&")
        )));
    }
    Ok(())
}

/// Go's `url.QueryEscape`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

async fn write(
    state: AppState,
    key: String,
    query: QueryParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    conflicting(&query, &["cas", "acquire", "release"])?;
    let flags = query.u64("flags")?.unwrap_or(0);
    let value = body.to_vec();
    let acquire = query.get("acquire").map(str::to_owned);
    let release = query.get("release").map(str::to_owned);
    let locking = acquire.is_some() || release.is_some();
    if locking {
        // A bad key is the client's mistake (400); what the state refuses about the session
        // (missing, unknown) Consul answers 500.
        trellis_catalog::validate_key(&key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let command = match (acquire, release) {
        (Some(session), _) => Command::KvLock {
            key,
            value,
            flags,
            session,
        },
        (None, Some(session)) => Command::KvUnlock {
            key,
            value,
            flags,
            session,
        },
        (None, None) => Command::KvPut {
            key,
            value,
            flags,
            cas: query.u64("cas")?,
        },
    };
    match state.submit(command).await {
        Ok(Reply::Bool(ok)) => Ok(bool_response(ok)),
        Ok(_) => Ok(bool_response(true)),
        Err(WriteError::Rejected(refused)) if locking => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            refused.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn remove(
    state: AppState,
    authz: &Authz,
    key: String,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    conflicting(&query, &["recurse", "cas"])?;
    let recurse = present(&query, "recurse");
    if recurse {
        // Write on the prefix and on everything under it (Consul's KeyWritePrefix).
        if !authz.unrestricted() && !authz.authorizer().key_write_prefix(&key) {
            return Err(super::authz::denied(Resource::Key, &key, Need::Write));
        }
    } else {
        authz.require(Resource::Key, &key, Need::Write)?;
    }
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let command = Command::KvDelete {
        key,
        recurse,
        cas: query.u64("cas")?,
    };
    match state.submit(command).await? {
        Reply::Bool(ok) => Ok(bool_response(ok)),
        _ => Ok(bool_response(true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_flags_answer_the_query_like_go() {
        let query = QueryParams::new(vec![
            ("release".into(), "s 1".into()),
            ("cas".into(), "5".into()),
        ]);
        let error = conflicting(&query, &["cas", "acquire", "release"]).unwrap_err();
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let alone = QueryParams::new(vec![("acquire".into(), "s".into())]);
        assert!(conflicting(&alone, &["cas", "acquire", "release"]).is_ok());
        assert_eq!(query_escape("a b/c&d"), "a+b%2Fc%26d");
    }
}
