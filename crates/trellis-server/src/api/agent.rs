//! `/v1/agent/...`: registering and deregistering services and checks, TTL updates, and the
//! agent's view of its services and checks.

use super::authz::Authz;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use super::waiting::{Hashed, Signal, add_content_hash, block_on_hash, content_hash};
use crate::cluster::{CheckReport, CheckStatusReport};
use crate::published::{ServiceFields, catalog_check_json};
use crate::queue::WriteError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use trellis_acl::{Need, Resource};
use trellis_catalog::{CatalogError, Command};
use trellis_filter::{Filter, schema};
use trellis_types::fields::Fields;
use trellis_types::{
    CheckDefinition, CheckStatus, Meta, ServiceRegistration, TaggedAddress, Weights,
};

/// Longest TTL output kept, as Consul's default `OutputMaxSize`.
const MAX_OUTPUT: usize = 4096;

fn parse_body(body: &Bytes, what: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "missing {what} in request body"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// Consul refuses a script check registered through the API unless `enable_script_checks` is
/// on, with a plain error: 500 and its reason.
fn refuse_disabled_scripts<'a>(
    state: &AppState,
    mut checks: impl Iterator<Item = &'a CheckDefinition>,
) -> Result<(), ApiError> {
    if !state.scripts_enabled() && checks.any(|c| c.kind.is_script()) {
        return Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::config::SCRIPTS_DISABLED,
        ));
    }
    Ok(())
}

pub async fn register(
    State(state): State<AppState>,
    authz: Authz,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<(), ApiError> {
    let query = QueryParams::new(query);
    let registration =
        ServiceRegistration::from_agent_json(parse_body(&body, "service definition")?)?;
    authz.require(Resource::Service, &registration.name, Need::Write)?;
    refuse_disabled_scripts(&state, registration.checks.iter())?;
    state
        .submit(Command::Register {
            registration,
            replace_existing_checks: query.flag("replace-existing-checks")?,
        })
        .await?;
    Ok(())
}

pub async fn deregister(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(), ApiError> {
    state.submit(Command::Deregister { service_id: id }).await?;
    Ok(())
}

pub async fn register_check(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<(), ApiError> {
    let check = CheckDefinition::from_agent_json(parse_body(&body, "check definition")?)?;
    // A service's check needs write on that service; a node check on this node.
    let owner = check.service_id.as_deref().and_then(|sid| {
        let catalog = state.catalog().ok()?;
        catalog.instance(sid).map(|i| i.registration.name.clone())
    });
    match owner {
        Some(service) => authz.require(Resource::Service, &service, Need::Write)?,
        None => authz.require(Resource::Node, &state.node().info().node, Need::Write)?,
    }
    refuse_disabled_scripts(&state, std::iter::once(&check))?;
    let missing = check
        .service_id
        .as_ref()
        .map(|sid| format!("ServiceID {sid:?} does not exist"));
    // Consul (since 1.12) answers a check on a service the agent does not have with 404 and
    // this reason; the catalog refuses it as invalid input.
    match state.submit(Command::RegisterCheck { check }).await {
        Err(WriteError::Rejected(CatalogError::Invalid(m))) if Some(&m) == missing.as_ref() => {
            Err(ApiError::not_found(m))
        }
        other => {
            other?;
            Ok(())
        }
    }
}

pub async fn deregister_check(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(), ApiError> {
    state
        .submit(Command::DeregisterCheck { check_id: id })
        .await?;
    Ok(())
}

async fn set_ttl(
    state: &AppState,
    check_id: String,
    status: CheckStatus,
    output: String,
) -> Result<(), ApiError> {
    let mut output = output;
    if output.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    // Among servers sharing a store this server owns the check's expiry (see `ttl.rs`): the
    // deadline moves here, and only a heartbeat that changes the check is written, by the
    // leader.
    if let Some(ttl) = state.ttl_deadlines() {
        let expired_meanwhile = ttl.settle(&check_id).await;
        let changes = state
            .catalog()?
            .ttl_heartbeat_changes(&check_id, status, &output)
            .map_err(WriteError::Rejected)?;
        ttl.heartbeat(&check_id, status);
        if !changes && !expired_meanwhile {
            return Ok(());
        }
        if !state.cluster().writes() {
            let report = CheckReport::Heartbeat(CheckStatusReport {
                check_id,
                status,
                output,
            });
            let index = state
                .cluster()
                .report(&report)
                .await
                .map_err(|reason| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason))?;
            state.catch_up(index).await;
            return Ok(());
        }
    }
    state
        .submit(Command::UpdateTtl {
            check_id,
            status,
            output,
        })
        .await?;
    Ok(())
}

async fn note_update(
    state: AppState,
    id: String,
    query: Vec<(String, String)>,
    status: CheckStatus,
) -> Result<(), ApiError> {
    let note = QueryParams::new(query)
        .get("note")
        .unwrap_or_default()
        .to_owned();
    set_ttl(&state, id, status, note).await
}

pub async fn pass(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<(), ApiError> {
    note_update(s, id, q, CheckStatus::Passing).await
}

pub async fn warn(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<(), ApiError> {
    note_update(s, id, q, CheckStatus::Warning).await
}

pub async fn fail(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<(), ApiError> {
    note_update(s, id, q, CheckStatus::Critical).await
}

/// `PUT /v1/agent/check/update/:id` with `{"Status": "...", "Output": "..."}`.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(), ApiError> {
    let mut fields = Fields::from_value(parse_body(&body, "check update")?, "check update")?;
    let status = fields
        .string(&["Status"])?
        .ok_or_else(|| ApiError::bad_request("missing Status"))?;
    let status = CheckStatus::parse(&status)?;
    let output = fields.string(&["Output"])?.unwrap_or_default();
    set_ttl(&state, id, status, output).await
}

/// An instance as `/v1/agent/services` shows it (Consul's `AgentService`), borrowed from the
/// catalog: listing 100,000 instances must not clone 100,000 registrations first.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AgentServiceView<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    meta: &'a Meta,
    port: u16,
    address: &'a str,
    /// `omitempty` in Consul's `api.AgentService`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: &'a BTreeMap<String, TaggedAddress>,
    weights: Weights,
    enable_tag_override: bool,
    datacenter: &'a str,
}

pub(super) fn agent_service<'a>(
    state: &'a AppState,
    r: &'a ServiceRegistration,
) -> AgentServiceView<'a> {
    AgentServiceView {
        id: &r.id,
        service: &r.name,
        tags: &r.tags,
        meta: &r.meta,
        port: r.port,
        address: &r.address,
        tagged_addresses: &r.tagged_addresses,
        weights: r.weights,
        enable_tag_override: r.enable_tag_override,
        datacenter: &state.node().datacenter,
    }
}

/// Every instance (that passes the filter) by ID, serialised straight from the catalog
/// (already in ID order).
struct Listing<'a> {
    state: &'a AppState,
    catalog: &'a trellis_catalog::Catalog,
    filter: Option<&'a Filter>,
    /// Only what the token may read is listed.
    authz: &'a Authz,
}

impl Serialize for Listing<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.catalog
                .instances()
                .filter(|i| {
                    self.authz.can_read(Resource::Service, &i.registration.name)
                        && self
                            .filter
                            .is_none_or(|f| f.matches(&ServiceFields(&i.registration)))
                })
                .map(|i| {
                    (
                        i.registration.id.as_str(),
                        agent_service(self.state, &i.registration),
                    )
                }),
        )
    }
}

/// A hash-blocking answer: JSON with the index headers and `X-Consul-ContentHash`.
fn hashed_response(hashed: Hashed) -> Response {
    let mut response = json_response(hashed.index, hashed.body);
    add_content_hash(response.headers_mut(), &hashed.hash);
    response
}

/// `GET /v1/agent/services`. Blocks with `?hash=` until the listing changes: Consul blocks only
/// `/v1/agent/service/:id` that way and answers this listing at once; honouring the hash here
/// too costs nothing and lets a client watch every local service with one request.
pub async fn services(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::AGENT_SERVICES)?;
    query.check_dc(state.node())?;
    let hashed = block_on_hash(&state, &query, Signal::Services, || {
        let catalog = state.catalog()?;
        let body = to_json_bytes(&Listing {
            state: &state,
            catalog: &catalog,
            filter: filter.as_ref(),
            authz: &authz,
        });
        Ok(Hashed {
            index: catalog.services_index(),
            hash: content_hash(&body),
            body,
        })
    })
    .await?;
    Ok(hashed_response(hashed))
}

/// `AgentService` with the hash of its own content, as `/v1/agent/service/:id` answers.
#[derive(Serialize)]
struct HashedAgentService<'a> {
    #[serde(flatten)]
    service: AgentServiceView<'a>,
    #[serde(rename = "ContentHash")]
    content_hash: &'a str,
}

/// `GET /v1/agent/service/:id`, blocking with `?hash=` until the instance changes (Consul's
/// hash-based blocking; the body carries the same `ContentHash`).
pub async fn service(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let hashed = block_on_hash(&state, &query, Signal::Services, || {
        let catalog = state.catalog()?;
        let instance = catalog
            .instance(&id)
            .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))?;
        let service = agent_service(&state, &instance.registration);
        let hash = content_hash(&to_json_bytes(&service));
        let body = to_json_bytes(&HashedAgentService {
            service,
            content_hash: &hash,
        });
        Ok(Hashed {
            index: instance.modify_index,
            hash,
            body,
        })
    })
    .await?;
    Ok(hashed_response(hashed))
}

/// `GET /v1/agent/checks`; blocks with `?hash=` until a check changes (see `services`).
pub async fn checks(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::AGENT_CHECKS)?;
    query.check_dc(state.node())?;
    let node = state.node();
    let hashed = block_on_hash(&state, &query, Signal::Catalog, || {
        let catalog = state.catalog()?;
        let checks: BTreeMap<&str, trellis_types::HealthCheck> = catalog
            .checks()
            .filter(|c| match &c.service_name {
                Some(service) => authz.can_read(Resource::Service, service),
                None => authz.can_read(Resource::Node, &node.info().node),
            })
            .filter_map(|c| {
                catalog_check_json(&catalog, c, node, filter.as_ref()).map(|json| (c.id(), json))
            })
            .collect();
        let body = to_json_bytes(&checks);
        Ok(Hashed {
            index: catalog.index(),
            hash: content_hash(&body),
            body,
        })
    })
    .await?;
    Ok(hashed_response(hashed))
}
