//! `/v1/config`: Consul's config entries, as Consul answers them. `PUT /v1/config[?cas=]`
//! writes an entry (`true`/`false`), `GET /v1/config/:kind[/:name]` reads one or a kind's list
//! (`GET /v1/config/` every entry), `DELETE /v1/config/:kind/:name[?cas=]` deletes one (`{}`, or
//! `true`/`false` with `cas`). Trellis keeps `service-defaults`, `proxy-defaults` and
//! `service-intentions` (the intentions `api/intentions.rs` serves); the other kinds that
//! configure Connect are refused when written (400) and read as absent.
//!
//! `?filter=` takes Consul's filter expressions on a `service-defaults` list (selectors of
//! `structs.ServiceConfigEntry`), as Consul, which refuses them on other kinds.
//!
//! Every read answers the config entries index (Consul's table index) and blocks with
//! `?index&wait`: it answers at once if that index moved, otherwise it waits until what it reads
//! changes (the entry, or an entry of the kind), as Consul's watch on that entry or kind does.
//! A body that does not decode is a 400 with Consul's words; what Consul's `Normalize` or
//! `Validate` refuses is a 500, as Consul answers it.

use super::blocking::{wait_for, waiter_permit};
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{add_index_headers, bool_response, json_response, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use trellis_catalog::{Catalog, Command, Reply};
use trellis_filter::{Field, Selectable, schema};
use trellis_types::ConfigEntry;
use trellis_types::config_entry::{
    ConfigEntryError, KindSupport, SERVICE_DEFAULTS, decode_config_entry, invalid_kind,
    kind_support, normalize_name,
};

type Q = Query<Vec<(String, String)>>;

fn server_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// How Consul answers a refused entry: a body that does not decode (and a kind Trellis does not
/// keep) is a 400, what `Normalize`/`Validate` refuse an RPC error, a 500.
fn refused(error: ConfigEntryError) -> ApiError {
    match error {
        ConfigEntryError::Invalid(_) => server_error(error.to_string()),
        ConfigEntryError::Decode(_)
        | ConfigEntryError::Unsupported(_)
        | ConfigEntryError::NotBuilt(_) => ApiError::bad_request(error.to_string()),
    }
}

/// `PUT /v1/config[?cas=N]`: one entry as the body; `true`, or `false` for a failed `cas`.
pub async fn apply(
    State(state): State<AppState>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let cas = query.u64("cas")?;
    if body.iter().all(u8::is_ascii_whitespace) {
        // Go's JSON decoder on an empty body.
        return Err(ApiError::bad_request("Request decoding failed: EOF"));
    }
    let raw: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))?;
    let entry = decode_config_entry(raw).map_err(refused)?;
    match state.submit(Command::ConfigUpsert { entry, cas }).await? {
        Reply::Bool(done) => Ok(bool_response(done)),
        _ => Ok(bool_response(true)),
    }
}

/// `GET /v1/config/`: every entry, by kind, then name.
pub async fn list_all(State(state): State<AppState>, Query(q): Q) -> Result<Response, ApiError> {
    list_kind(state, String::new(), QueryParams::new(q)).await
}

/// `GET /v1/config/:kind`: the entries of a kind, by name.
pub async fn list(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    list_kind(state, kind, QueryParams::new(q)).await
}

/// `GET /v1/config/:kind/:name` (the name may hold slashes).
pub async fn get(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read_one(state, kind, name, QueryParams::new(q)).await
}

/// `GET /v1/config/:kind/`: the entry with an empty name (there is none).
pub async fn get_unnamed(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    read_one(state, kind, String::new(), QueryParams::new(q)).await
}

/// `DELETE /v1/config/:kind/:name[?cas=N]`.
pub async fn delete(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    remove(state, kind, name, QueryParams::new(q)).await
}

/// `DELETE /v1/config/:kind/`: an empty name (for `proxy-defaults`, `global`, as Consul
/// normalises it).
pub async fn delete_unnamed(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    remove(state, kind, String::new(), QueryParams::new(q)).await
}

/// `DELETE /v1/config/` or `/v1/config/:kind`: Consul's 404.
pub async fn delete_without_name() -> ApiError {
    ApiError::not_found("Must provide both a kind and name to delete")
}

/// A read of a kind Consul does not have is its RPC error, a 500.
fn check_kind(kind: &str) -> Result<(), ApiError> {
    match kind_support(kind) {
        KindSupport::Unknown => Err(server_error(invalid_kind(kind))),
        KindSupport::Supported | KindSupport::Connect => Ok(()),
    }
}

async fn read_one(
    state: AppState,
    kind: String,
    name: String,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    check_kind(&kind)?;
    let version = |catalog: &Catalog| catalog.config_entry(&kind, &name).map(|e| e.modify_index);
    if let Some(blocking) = query.blocking()? {
        // Subscribed before reading, so no change between the read and the wait is missed.
        let signal = state.config_changed();
        let (index, seen) = {
            let catalog = state.catalog()?;
            (catalog.config_index(), version(&catalog))
        };
        if index == blocking.index {
            let _permit = waiter_permit(&state)?;
            wait_for(&state, signal, blocking.deadline(), || {
                Ok(version(&*state.catalog()?) != seen)
            })
            .await?;
        }
    }
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let entry = catalog.config_entry(&kind, &name).cloned();
    drop(catalog);
    match entry {
        Some(entry) => Ok(json_response(index, to_json_bytes(entry.as_ref()))),
        None => {
            let mut response =
                ApiError::not_found(format!("Config entry not found for {kind:?} / {name:?}"))
                    .into_response();
            add_index_headers(response.headers_mut(), index);
            Ok(response)
        }
    }
}

async fn list_kind(
    state: AppState,
    kind: String,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.check_dc(state.node())?;
    if !kind.is_empty() {
        check_kind(&kind)?;
    }
    let filter = if kind == SERVICE_DEFAULTS {
        query.filter(&schema::SERVICE_DEFAULTS)?
    } else if query.get("filter").is_some_and(|f| !f.trim().is_empty()) {
        // Consul filters only service-defaults lists, and refuses the others with its RPC error.
        return Err(server_error(format!(
            "filtering not supported for config entry kind={kind}"
        )));
    } else {
        None
    };
    let wanted = (!kind.is_empty()).then_some(kind.as_str());
    if let Some(blocking) = query.blocking()? {
        let signal = state.config_changed();
        if state.catalog()?.config_index() == blocking.index {
            let _permit = waiter_permit(&state)?;
            wait_for(&state, signal, blocking.deadline(), || {
                let catalog = state.catalog()?;
                Ok(match wanted {
                    Some(kind) => catalog.config_kind_index(kind) > blocking.index,
                    None => catalog.config_index() != blocking.index,
                })
            })
            .await?;
        }
    }
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let entries: Vec<Arc<ConfigEntry>> = catalog
        .config_entries(wanted)
        .filter(|entry| filter.as_ref().is_none_or(|f| f.matches(&Selected(entry))))
        .cloned()
        .collect();
    drop(catalog);
    let body: Vec<&ConfigEntry> = entries.iter().map(Arc::as_ref).collect();
    Ok(json_response(index, to_json_bytes(&body)))
}

async fn remove(
    state: AppState,
    kind: String,
    name: String,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.check_common(state.node())?;
    if kind_support(&kind) == KindSupport::Unknown {
        // Consul makes the entry to delete first: an unknown kind is its 400.
        return Err(ApiError::bad_request(invalid_kind(&kind)));
    }
    let name = normalize_name(&kind, &name).map_err(refused)?;
    let cas = query.u64("cas")?;
    let reply = state
        .submit(Command::ConfigDelete { kind, name, cas })
        .await?;
    let deleted = matches!(reply, Reply::Bool(true));
    if cas.is_some() {
        return Ok(bool_response(deleted));
    }
    // Without `cas` Consul answers an empty object, kept so for its older clients.
    let mut response = "{}".into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// An entry as a filter reads it: its fields by Consul's names, lists of objects element by
/// element. Values Trellis keeps as sent (`UpstreamConfig`, `RateLimits`) may spell their keys in
/// any case or snake_case, as Consul's decoder takes them.
struct Selected<'a>(&'a ConfigEntry);

impl Selectable for Selected<'_> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        match path {
            ["Kind"] => Field::from(&self.0.kind),
            ["Name"] => Field::from(&self.0.name),
            [first, rest @ ..] => {
                let loose = matches!(*first, "UpstreamConfig" | "RateLimits");
                self.0
                    .field(first)
                    .map_or(Field::Missing, |value| select_json(value, rest, loose))
            }
            [] => Field::Missing,
        }
    }
}

fn select_json<'a>(value: &'a Value, path: &[&str], loose: bool) -> Field<'a> {
    match (value, path) {
        (Value::Null, _) => Field::Missing,
        (Value::Array(items), [_, ..]) => {
            Field::each(items.iter().map(|item| select_json(item, path, loose)))
        }
        (Value::Object(map), [first, rest @ ..]) => {
            let found = map.get(*first).or_else(|| {
                loose
                    .then(|| map.iter().find(|(k, _)| loose_name(k) == loose_name(first)))
                    .flatten()
                    .map(|(_, v)| v)
            });
            found.map_or(Field::Missing, |v| select_json(v, rest, loose))
        }
        (_, [_, ..]) => Field::Missing,
        (Value::String(s), []) => Field::Str(s),
        (Value::Bool(b), []) => Field::Bool(*b),
        (Value::Number(n), []) => Field::Int(
            n.as_i64()
                .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
        ),
        (Value::Array(items), []) => match items.iter().map(Value::as_str).collect() {
            Some(strings) => Field::List(strings),
            None => Field::each(items.iter().map(|_| Field::Missing)),
        },
        (Value::Object(map), []) => Field::keys(map.keys()),
    }
}

/// A key compared as Consul's decoder compares it: without regard to case or underscores.
fn loose_name(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}
