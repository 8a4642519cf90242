//! Consul's intentions API (`/v1/connect/intentions/*`) and `/v1/agent/connect/authorize`, in
//! Consul's shapes. Intentions are kept as `service-intentions` config entries (one per
//! destination), so they are durable like every config entry and `/v1/config` shows the same
//! data; the pure rules (precedence, match order, decisions, how a write changes an entry) are
//! `trellis_types::intention` and `trellis_types::intention_entry`.
//!
//! - `GET /v1/connect/intentions` lists them (filtered to what the token may read; blocking).
//! - `PUT|GET|DELETE /v1/connect/intentions/exact?source=S&destination=D` by name.
//! - `POST /v1/connect/intentions`, `GET|PUT|DELETE /v1/connect/intentions/:id` by legacy ID.
//! - `GET /v1/connect/intentions/match?by=source|destination&name=N` answers each name's
//!   intentions in evaluation order (blocking), with the header `X-Trellis-Intention-Default`
//!   saying what no intention matching decides (`allow` or `deny`), for the sidecars.
//! - `GET /v1/connect/intentions/check?source=S&destination=D` answers `{"Allowed": bool}`.
//! - `POST /v1/agent/connect/authorize` decides for a client certificate's SPIFFE identity.
//!
//! Access, as Consul: reading an intention needs `intentions:read` on either end, writing
//! `intentions:write` on its destination, a match `intentions:read` on each name, a check
//! `service:read` on the destination, an authorize `service:write` on the target. Pairs no
//! intention matches are allowed unless the ACL default policy is `deny` (Consul's default).
//!
//! A write reads the destination's entry and writes it back with a `cas` on its index, again
//! if another write came between: the entry is never changed from a stale copy. Errors Consul
//! answers from its RPC layer (validation, a duplicate pair) are 500s with Consul's words, as
//! `/v1/config` answers them; malformed requests are 400s.

use super::authz::{Authz, denied};
use super::blocking::{wait_for, waiter_permit};
use super::clock::rfc3339;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{bool_response, json_response, to_json_bytes};
use crate::config::AclDefaultPolicy;
use crate::ids::random_uuid;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;
use trellis_acl::{Need, Resource};
use trellis_catalog::{Catalog, Command, Reply};
use trellis_types::ConfigEntry;
use trellis_types::config_entry::{ConfigEntryError, SERVICE_INTENTIONS};
use trellis_types::intention::{self, DEFAULT_NAMESPACE, Intention, SOURCE_TYPE_CONSUL};
use trellis_types::intention_entry::{self, ExactWrite, LegacyWrite, MatchBy};

type Q = Query<Vec<(String, String)>>;

/// The header of match and check answers that says what pairs no intention matches get.
pub const DEFAULT_HEADER: &str = "x-trellis-intention-default";

/// Most names one match query may ask for (each is a list in the answer).
const MAX_MATCH_NAMES: usize = 64;
/// How often a write is tried again when other writes keep changing the entry under it.
const WRITE_ATTEMPTS: usize = 16;

fn server_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// How Consul answers a refused write: what its RPC layer refuses is a 500, a body it cannot
/// take a 400 (so is what Trellis does not build).
fn refused(error: ConfigEntryError) -> ApiError {
    match error {
        ConfigEntryError::Invalid(_) => server_error(error.to_string()),
        ConfigEntryError::Decode(_)
        | ConfigEntryError::Unsupported(_)
        | ConfigEntryError::NotBuilt(_) => ApiError::bad_request(error.to_string()),
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("Intention not found")
}

/// Whether pairs no intention matches may connect: Consul takes the ACL default policy.
pub fn default_allow(state: &AppState) -> bool {
    state.config().acl.default_policy == AclDefaultPolicy::Allow
}

fn default_header(state: &AppState) -> HeaderValue {
    HeaderValue::from_static(if default_allow(state) {
        "allow"
    } else {
        "deny"
    })
}

/// Every intention, in Consul's list order.
fn all_intentions(catalog: &Catalog) -> Vec<Intention> {
    let mut all: Vec<Intention> = catalog
        .config_entries(Some(SERVICE_INTENTIONS))
        .flat_map(|entry| intention_entry::intentions_of(entry))
        .collect();
    intention::sort_by_precedence(&mut all);
    all
}

/// Consul's `Intention.CanRead`: `intentions:read` on either end shows the whole intention,
/// so both ends can learn why a connection is or is not allowed.
fn can_read(authz: &Authz, ixn: &Intention) -> bool {
    authz.can_read(Resource::Intention, &ixn.source_name)
        || authz.can_read(Resource::Intention, &ixn.destination_name)
}

fn require_write(authz: &Authz, destination: &str) -> Result<(), ApiError> {
    authz.require(Resource::Intention, destination, Need::Write)
}

/// A service named in a query (`name`, or `default/name` as Consul takes it): the name.
fn parse_name(what: &str, input: &str) -> Result<String, ApiError> {
    let invalid =
        |reason: &str| ApiError::bad_request(format!("{what} {input:?} is invalid: {reason}"));
    match input.split_once('/') {
        None => Ok(input.to_owned()),
        Some((_, rest)) if rest.contains('/') => Err(invalid("input can contain at most one '/'")),
        Some((ns, name)) if ns.is_empty() || ns.eq_ignore_ascii_case(DEFAULT_NAMESPACE) => {
            Ok(name.to_owned())
        }
        Some(_) => Err(invalid("Namespaces are a Consul Enterprise feature")),
    }
}

/// A required query parameter, once (Consul's 400 otherwise).
fn required(query: &QueryParams, key: &str) -> Result<String, ApiError> {
    let values = query.all(key);
    match values.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ApiError::bad_request(format!(
            "required query parameter '{key}' not set"
        ))),
    }
}

fn source_and_destination(query: &QueryParams) -> Result<(String, String), ApiError> {
    let source = required(query, "source")?;
    let destination = required(query, "destination")?;
    Ok((
        parse_name("source", &source)?,
        parse_name("destination", &destination)?,
    ))
}

// --- Request bodies, as Go's encoding/json reads them into `structs.Intention` -------------

/// A body's fields by name: an exact key first, else one that differs only in case (Go's
/// decoder); unknown keys are ignored, as Go's are.
struct Body(Map<String, Value>);

impl Body {
    fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(Value::Null) => Ok(Body(Map::new())),
            Ok(other) => Err(decode_error(format!(
                "json: cannot unmarshal {} into Go value of type structs.Intention",
                go_json_kind(&other)
            ))),
            Err(e) => Err(decode_error(e.to_string())),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    fn string(&self, name: &str) -> Result<String, ApiError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(field_error(name, other, "string")),
        }
    }

    fn meta(&self) -> Result<BTreeMap<String, String>, ApiError> {
        match self.get("Meta") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Null => Ok((k.clone(), String::new())),
                    other => Err(field_error("Meta", other, "string")),
                })
                .collect(),
            Some(other) => Err(field_error("Meta", other, "map[string]string")),
        }
    }

    fn permissions(&self) -> Result<Vec<Value>, ApiError> {
        match self.get("Permissions") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(other) => Err(field_error(
                "Permissions",
                other,
                "[]*structs.IntentionPermission",
            )),
        }
    }

    /// A namespace field: empty or `default` (Consul CE's only namespace).
    fn namespace(&self, name: &str, side: &str) -> Result<(), ApiError> {
        let ns = self.string(name)?;
        if ns.is_empty() || ns.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
            return Ok(());
        }
        Err(server_error(format!(
            "Invalid {side} namespace {ns:?}: Namespaces is a Consul Enterprise feature"
        )))
    }

    /// `SourceType`, `consul` when absent (as Consul defaults it).
    fn source_type(&self) -> Result<String, ApiError> {
        let kind = self.string("SourceType")?;
        Ok(if kind.is_empty() {
            SOURCE_TYPE_CONSUL.to_owned()
        } else {
            kind
        })
    }
}

fn decode_error(reason: String) -> ApiError {
    ApiError::bad_request(format!("Request decode failed: {reason}"))
}

fn go_json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn field_error(name: &str, value: &Value, go: &str) -> ApiError {
    decode_error(format!(
        "json: cannot unmarshal {} into Go struct field Intention.{name} of type {go}",
        go_json_kind(value)
    ))
}

// --- Writes --------------------------------------------------------------------------------

/// What a write does to the entry it read.
enum Plan {
    /// Nothing to change (deleting what is not there).
    Nothing,
    Put(ConfigEntry),
    /// Delete the entry (its last source went).
    Delete(String),
}

/// Reads the entry `find` picks, asks `plan` what to make of it, and writes that with a `cas`
/// on the index it read; if another write changed the entry in between, reads it again.
async fn write_entry(
    state: &AppState,
    find: impl Fn(&Catalog) -> Option<Arc<ConfigEntry>>,
    mut plan: impl FnMut(Option<&ConfigEntry>) -> Result<Plan, ApiError>,
) -> Result<(), ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let prev = find(&*state.catalog()?);
        let cas = prev.as_ref().map_or(0, |e| e.modify_index);
        let command = match plan(prev.as_deref())? {
            Plan::Nothing => return Ok(()),
            Plan::Put(entry) => Command::ConfigUpsert {
                entry,
                cas: Some(cas),
            },
            Plan::Delete(name) => Command::ConfigDelete {
                kind: SERVICE_INTENTIONS.to_owned(),
                name,
                cas: Some(cas),
            },
        };
        if matches!(state.submit(command).await?, Reply::Bool(true)) {
            return Ok(());
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the intention was changed by other writes meanwhile; retry",
    ))
}

fn entry_of(catalog: &Catalog, destination: &str) -> Option<Arc<ConfigEntry>> {
    catalog
        .config_entry(SERVICE_INTENTIONS, destination)
        .cloned()
}

/// The entry holding the legacy intention `id`.
fn entry_with_id(catalog: &Catalog, id: &str) -> Option<Arc<ConfigEntry>> {
    catalog
        .config_entries(Some(SERVICE_INTENTIONS))
        .find(|e| intention_entry::holds_legacy_id(e, id))
        .cloned()
}

fn legacy_intention(catalog: &Catalog, id: &str) -> Option<Intention> {
    let entry = entry_with_id(catalog, id)?;
    intention_entry::intentions_of(&entry)
        .into_iter()
        .find(|i| i.id == id)
}

/// Consul looks legacy IDs up in a UUID index, which refuses anything else with a 400.
fn check_uuid(id: &str) -> Result<(), ApiError> {
    if id.len() != 36 {
        return Err(ApiError::bad_request("UUID must be 36 characters"));
    }
    let well_formed = id.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    if !well_formed {
        return Err(ApiError::bad_request("UUID improperly formatted"));
    }
    Ok(())
}

fn legacy_write(body: &Body) -> Result<LegacyWrite, ApiError> {
    body.namespace("SourceNS", "source")?;
    body.namespace("DestinationNS", "destination")?;
    if !body.permissions()?.is_empty() {
        return Err(refused(ConfigEntryError::NotBuilt(
            "Permissions (L7 intentions: only allow/deny actions are enforced)".into(),
        )));
    }
    Ok(LegacyWrite {
        source: body.string("SourceName")?,
        destination: body.string("DestinationName")?,
        action: body.string("Action")?,
        source_type: body.source_type()?,
        description: body.string("Description")?,
        meta: body.meta()?,
    })
}

// --- Handlers ------------------------------------------------------------------------------

/// `GET /v1/connect/intentions`: every intention the token may read, highest precedence
/// first; blocks with `?index&wait` until an intention changes.
pub async fn list(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    if let Some(blocking) = query.blocking()? {
        let signal = state.config_changed();
        if state.catalog()?.config_index() == blocking.index {
            let _permit = waiter_permit(&state)?;
            wait_for(&state, signal, blocking.deadline(), || {
                Ok(state.catalog()?.config_kind_index(SERVICE_INTENTIONS) > blocking.index)
            })
            .await?;
        }
    }
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let all = all_intentions(&catalog);
    drop(catalog);
    let visible: Vec<&Intention> = all.iter().filter(|i| can_read(&authz, i)).collect();
    Ok(json_response(index, to_json_bytes(&visible)))
}

/// `GET /v1/connect/intentions/exact?source=S&destination=D`.
pub async fn get_exact(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let (source, destination) = source_and_destination(&query)?;
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let found = entry_of(&catalog, &destination).and_then(|e| {
        intention_entry::intentions_of(&e)
            .into_iter()
            .find(|i| i.source_name == source)
    });
    drop(catalog);
    let found = found.ok_or_else(not_found)?;
    if !can_read(&authz, &found) {
        return Err(denied(Resource::Intention, &destination, Need::Read));
    }
    Ok(json_response(index, to_json_bytes(&found)))
}

/// `PUT /v1/connect/intentions/exact?source=S&destination=D`: creates or replaces the
/// intention from S to D (body: `Action`, `Description`, `SourceType`, `Meta`); `true`.
pub async fn put_exact(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let (source, destination) = source_and_destination(&query)?;
    let body = Body::parse(&body)?;
    if !body.string("ID")?.is_empty() {
        return Err(server_error("ID must not be specified"));
    }
    require_write(&authz, &destination)?;
    let write = ExactWrite {
        source,
        destination: destination.clone(),
        action: body.string("Action")?,
        source_type: body.string("SourceType")?,
        description: body.string("Description")?,
        meta: body.meta()?,
        permissions: body.permissions()?,
    };
    write_entry(
        &state,
        |catalog| entry_of(catalog, &destination),
        |prev| {
            intention_entry::upsert_exact(prev, &write)
                .map(Plan::Put)
                .map_err(refused)
        },
    )
    .await?;
    Ok(bool_response(true))
}

/// `DELETE /v1/connect/intentions/exact?source=S&destination=D`: `true`, also when there was
/// no such intention (as Consul).
pub async fn delete_exact(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let (source, destination) = source_and_destination(&query)?;
    require_write(&authz, &destination)?;
    write_entry(
        &state,
        |catalog| entry_of(catalog, &destination),
        |prev| {
            let Some(prev) = prev else {
                return Ok(Plan::Nothing);
            };
            match intention_entry::delete_exact(prev, &source) {
                None => Ok(Plan::Nothing),
                Some(Ok(Some(entry))) => Ok(Plan::Put(entry)),
                Some(Ok(None)) => Ok(Plan::Delete(prev.name.clone())),
                Some(Err(e)) => Err(refused(e)),
            }
        },
    )
    .await?;
    Ok(bool_response(true))
}

/// `POST /v1/connect/intentions`: a legacy create; answers `{"ID": "<uuid>"}`.
pub async fn create(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let body = Body::parse(&body)?;
    let write = legacy_write(&body)?;
    require_write(&authz, &write.destination)?;
    if !body.string("ID")?.is_empty() {
        return Err(server_error(
            "ID must be empty when creating a new intention",
        ));
    }
    write.validate().map_err(server_error)?;
    let id = random_uuid();
    let now = rfc3339(SystemTime::now());
    write_entry(
        &state,
        |catalog| entry_of(catalog, &write.destination),
        |prev| {
            intention_entry::create_legacy(prev, &write, &id, &now)
                .map(Plan::Put)
                .map_err(refused)
        },
    )
    .await?;
    Ok(json_response(0, to_json_bytes(&json!({ "ID": id }))))
}

/// `GET /v1/connect/intentions/:id`.
pub async fn read(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    check_uuid(&id)?;
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let found = legacy_intention(&catalog, &id);
    drop(catalog);
    let found = found.ok_or_else(not_found)?;
    if !can_read(&authz, &found) {
        return Err(denied(
            Resource::Intention,
            &found.destination_name,
            Need::Read,
        ));
    }
    Ok(json_response(index, to_json_bytes(&found)))
}

/// `PUT /v1/connect/intentions/:id`: a legacy update (its destination cannot change);
/// answers `{"ID": "<id>"}`.
pub async fn update(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let body = Body::parse(&body)?;
    let write = legacy_write(&body)?;
    let existing = legacy_intention(&*state.catalog()?, &id)
        .ok_or_else(|| server_error(format!("Cannot modify non-existent intention: '{id}'")))?;
    require_write(&authz, &existing.destination_name)?;
    write.validate().map_err(server_error)?;
    let now = rfc3339(SystemTime::now());
    write_entry(
        &state,
        |catalog| entry_with_id(catalog, &id),
        |entry| match entry {
            Some(entry) => intention_entry::update_legacy(entry, &id, &write, &now)
                .map(Plan::Put)
                .map_err(refused),
            // Deleted meanwhile.
            None => Err(server_error(format!(
                "Cannot modify non-existent intention: '{id}'"
            ))),
        },
    )
    .await?;
    Ok(json_response(0, to_json_bytes(&json!({ "ID": id }))))
}

/// `DELETE /v1/connect/intentions/:id`: `true`.
pub async fn delete(
    State(state): State<AppState>,
    authz: Authz,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let missing = || server_error(format!("Cannot delete non-existent intention: '{id}'"));
    let existing = legacy_intention(&*state.catalog()?, &id).ok_or_else(missing)?;
    require_write(&authz, &existing.destination_name)?;
    write_entry(
        &state,
        |catalog| entry_with_id(catalog, &id),
        |entry| {
            let entry = entry.ok_or_else(missing)?;
            match intention_entry::delete_legacy(entry, &id).map_err(refused)? {
                Some(rest) => Ok(Plan::Put(rest)),
                None => Ok(Plan::Delete(entry.name.clone())),
            }
        },
    )
    .await?;
    Ok(bool_response(true))
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=N[&name=M]`: for each name,
/// the intentions that match it in evaluation order (the first whose other end matches
/// decides). Blocks with `?index&wait` until the answer changes; the header
/// `X-Trellis-Intention-Default` is what no match decides.
pub async fn matches(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let by = query
        .get("by")
        .filter(|_| query.all("by").len() == 1)
        .ok_or_else(|| ApiError::bad_request("required query parameter 'by' not set"))?;
    let by = MatchBy::parse(by).ok_or_else(|| {
        ApiError::bad_request("'by' parameter must be one of 'source' or 'destination'")
    })?;
    let raw = query.all("name");
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "required query parameter 'name' not set",
        ));
    }
    if raw.len() > MAX_MATCH_NAMES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_MATCH_NAMES} names per match query"
        )));
    }
    let mut names = Vec::with_capacity(raw.len());
    for input in raw {
        let name = parse_name("name", &input)?;
        authz.require(Resource::Intention, &name, Need::Read)?;
        names.push((input, name));
    }
    let answer = |catalog: &Catalog| -> BTreeMap<String, Vec<Intention>> {
        let all = all_intentions(catalog);
        names
            .iter()
            .map(|(input, name)| (input.clone(), intention_entry::matching(&all, by, name)))
            .collect()
    };
    if let Some(blocking) = query.blocking()? {
        // Subscribed before reading, so no change between the read and the wait is missed.
        let signal = state.config_changed();
        let (index, before) = {
            let catalog = state.catalog()?;
            (catalog.config_index(), answer(&catalog))
        };
        if index == blocking.index {
            let _permit = waiter_permit(&state)?;
            // Other config entries, and intentions of other services, move the index too:
            // only a different answer wakes the caller (Consul hashes its answer for this).
            wait_for(&state, signal, blocking.deadline(), || {
                let catalog = state.catalog()?;
                Ok(
                    catalog.config_kind_index(SERVICE_INTENTIONS) > blocking.index
                        && answer(&catalog) != before,
                )
            })
            .await?;
        }
    }
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let body = answer(&catalog);
    drop(catalog);
    let mut response = json_response(index, to_json_bytes(&body));
    response
        .headers_mut()
        .insert(DEFAULT_HEADER, default_header(&state));
    Ok(response)
}

/// `GET /v1/connect/intentions/check?source=S&destination=D`: `{"Allowed": bool}`.
pub async fn check(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    if let Some(kind) = query.get("source-type")
        && !kind.is_empty()
        && kind != SOURCE_TYPE_CONSUL
    {
        return Err(ApiError::bad_request(format!(
            "unsupported SourceType: {kind:?}"
        )));
    }
    let (source, destination) = source_and_destination(&query)?;
    // Only pass/fail is answered, so reading the destination service is enough (Consul).
    authz.require(Resource::Service, &destination, Need::Read)?;
    let catalog = state.catalog()?;
    let index = catalog.config_index();
    let candidates = intention_entry::matching(
        &all_intentions(&catalog),
        MatchBy::Destination,
        &destination,
    );
    drop(catalog);
    let decision = intention::decide(&candidates, &source, default_allow(&state));
    let mut response = json_response(
        index,
        to_json_bytes(&json!({ "Allowed": decision.allowed })),
    );
    response
        .headers_mut()
        .insert(DEFAULT_HEADER, default_header(&state));
    Ok(response)
}

/// A SPIFFE service identity: `spiffe://<trust domain>/[ap/<partition>/]ns/<ns>/dc/<dc>/svc/<name>`.
struct SpiffeService {
    trust_domain: String,
    partition: String,
    namespace: String,
    service: String,
}

/// Why a client certificate URI is not a service's identity (Consul's 400 texts).
fn parse_spiffe(uri: &str) -> Result<SpiffeService, &'static str> {
    const NOT_CONNECT: &str = "ClientCertURI not a valid Connect identifier";
    const NOT_SERVICE: &str = "ClientCertURI not a valid Service identifier";
    let rest = uri.strip_prefix("spiffe://").ok_or(NOT_CONNECT)?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['?', '#', '@']) || path.contains(['?', '#']) {
        return Err(NOT_CONNECT);
    }
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| NOT_CONNECT)
        })
        .collect::<Result<_, _>>()?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (partition, parts) = match parts.as_slice() {
        ["ap", partition, rest @ ..] => (*partition, rest),
        rest => ("", rest),
    };
    match parts {
        ["ns", ns, "dc", dc, "svc", name]
            if !ns.is_empty() && !dc.is_empty() && !name.is_empty() =>
        {
            Ok(SpiffeService {
                trust_domain: host.to_owned(),
                partition: partition.to_owned(),
                namespace: (*ns).to_owned(),
                service: (*name).to_owned(),
            })
        }
        // Agents, mesh gateways, servers: Connect identities, but not services.
        ["agent", ..] | ["gateway", ..] | [""] | [] => Err(NOT_SERVICE),
        _ => Err(NOT_CONNECT),
    }
}

/// `POST /v1/agent/connect/authorize`: may the client certificate's service connect to
/// `Target`? `{"Authorized": bool, "Reason": "..."}`, as Consul's agent answers.
pub async fn authorize(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = Body::parse(&body)?;
    let target = body.string("Target")?;
    let uri = body.string("ClientCertURI")?;
    body.string("ClientCertSerial")?;
    if target.is_empty() {
        return Err(ApiError::bad_request("Target service must be specified"));
    }
    let caller = parse_spiffe(&uri).map_err(ApiError::bad_request)?;
    authz.require(Resource::Service, &target, Need::Write)?;
    let answer = |authorized: bool, reason: String| {
        let mut response = json_response(
            0,
            to_json_bytes(&json!({ "Authorized": authorized, "Reason": reason })),
        );
        response
            .headers_mut()
            .insert(DEFAULT_HEADER, default_header(&state));
        response
    };
    if !caller.partition.is_empty() && !caller.partition.eq_ignore_ascii_case("default") {
        return Ok(answer(
            false,
            format!(
                "Mismatched partitions: {:?} != \"default\"",
                caller.partition
            ),
        ));
    }
    // Only this cluster's CA issues identities Trellis knows (no federation).
    if !caller
        .trust_domain
        .eq_ignore_ascii_case(&state.ca().trust_domain())
    {
        return Ok(answer(
            false,
            format!(
                "Identity from an external trust domain: {}",
                caller.trust_domain
            ),
        ));
    }
    let candidates = if caller.namespace == DEFAULT_NAMESPACE {
        let catalog = state.catalog()?;
        intention_entry::matching(&all_intentions(&catalog), MatchBy::Destination, &target)
    } else {
        // Every intention's source is in the default namespace: none matches another one.
        Vec::new()
    };
    let decision = intention::decide(&candidates, &caller.service, default_allow(&state));
    Ok(answer(decision.allowed, decision.reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_service_identities() {
        let ok = parse_spiffe("spiffe://abc.consul/ns/default/dc/dc1/svc/web").unwrap();
        assert_eq!(
            (
                ok.trust_domain.as_str(),
                ok.namespace.as_str(),
                ok.service.as_str()
            ),
            ("abc.consul", "default", "web")
        );
        let ap = parse_spiffe("spiffe://abc.consul/ap/p1/ns/default/dc/dc1/svc/web").unwrap();
        assert_eq!(ap.partition, "p1");
        assert_eq!(
            parse_spiffe("spiffe://abc.consul/agent/client/dc/dc1/id/x").err(),
            Some("ClientCertURI not a valid Service identifier")
        );
        for bad in [
            "http://x/ns/default/dc/dc1/svc/web",
            "spiffe:///ns/a",
            "spiffe://x/foo",
            "",
        ] {
            assert_eq!(
                parse_spiffe(bad).err(),
                Some("ClientCertURI not a valid Connect identifier"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_in_queries() {
        assert_eq!(parse_name("source", "web").unwrap(), "web");
        assert_eq!(parse_name("source", "default/web").unwrap(), "web");
        assert!(parse_name("source", "ns1/web").is_err());
        assert!(parse_name("source", "a/b/c").is_err());
    }

    #[test]
    fn uuids() {
        assert!(check_uuid("8f246b77-f3e1-ff88-5b48-8ec93abf3e05").is_ok());
        assert!(check_uuid("nope").is_err());
        assert!(check_uuid("8f246b77-f3e1-ff88-5b48-8ec93abf3e0z").is_err());
    }
}
