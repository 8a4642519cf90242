//! `PUT /v1/catalog/register` and `PUT /v1/catalog/deregister`. The server is its only node, so
//! these register and deregister on it through the same commands as the agent endpoints; a
//! request for another node is refused (400) rather than silently put on this one, since this
//! server keeps no external nodes.
//!
//! A catalog check with a `Definition` to run (`HTTP`, `TCP`, `GRPC` or `TTL`) becomes the
//! check this server runs, since it is the agent of its node; one without a definition is a
//! static check whose status is the one registered (re-register to change it), as in Consul's
//! catalog.

use super::authz::Authz;
use super::error::ApiError;
use super::node::is_this_node;
use super::respond::bool_response;
use crate::node::Node;
use crate::queue::WriteError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use trellis_acl::{Need, Resource};
use trellis_catalog::{CatalogError, Command};
use trellis_types::registration::StaticCheck;
use trellis_types::{CheckDefinition, CheckKind, CheckStatus, ServiceRegistration};

/// Fields of a check `Definition` that make it a check to run (or one this server refuses).
const RUNNABLE: &[&str] = &[
    "HTTP",
    "TCP",
    "GRPC",
    "TTL",
    "ScriptArgs",
    "Args",
    "DockerContainerID",
    "H2PING",
    "UDP",
    "OSService",
    "AliasService",
    "AliasNode",
];

/// Removes a field by name without regard to case or `_` (the lenient parsers' rule).
fn take(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let wanted = normalise(name);
    let key = map.keys().find(|k| normalise(k) == wanted)?.clone();
    map.remove(&key).filter(|v| !v.is_null())
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn take_string(map: &mut Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match take(map, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Bool(true) => true,
    }
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a JSON object"
        ))),
    }
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    let value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    object(value, "request body")
}

/// `Node` must name this server's node; `Datacenter`, if given, must be its datacenter.
fn check_node(node: &Node, map: &mut Map<String, Value>) -> Result<(), ApiError> {
    let name = take_string(map, "Node")?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Must provide node"));
    }
    if !is_this_node(node, &name) {
        return Err(ApiError::bad_request(format!(
            "node {name:?} is not this server's node: trellis keeps one node, {:?}; register on \
             it (or use the agent endpoints)",
            node.name
        )));
    }
    let dc = take_string(map, "Datacenter")?;
    if !dc.is_empty() && dc != node.datacenter {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("No path to datacenter {dc:?}"),
        ));
    }
    Ok(())
}

/// A check to register, and the output to show for a static one.
struct CatalogCheck {
    definition: CheckDefinition,
    output: String,
}

/// One entry of `Check`/`Checks`: a Consul `HealthCheck`.
fn parse_check(node: &Node, value: Value) -> Result<CatalogCheck, ApiError> {
    let mut map = object(value, "Check")?;
    let check_node = take_string(&mut map, "Node")?;
    if !check_node.is_empty() && !is_this_node(node, &check_node) {
        return Err(ApiError::bad_request(format!(
            "check node {check_node:?} does not match the registration's node"
        )));
    }
    let mut definition = match take(&mut map, "Definition") {
        None => Map::new(),
        Some(d) => object(d, "Check Definition")?,
    };
    let output = take_string(&mut map, "Output")?;
    let check_type = take_string(&mut map, "Type")?;
    let runnable = definition
        .iter()
        .any(|(k, v)| is_set(v) && RUNNABLE.iter().any(|r| normalise(r) == normalise(k)));
    let mut fields = Map::new();
    for name in ["CheckID", "Name", "ServiceID", "Notes", "Status"] {
        if let Some(v) = take(&mut map, name) {
            fields.insert(name.to_owned(), v);
        }
    }
    if runnable {
        // The definition's fields sit beside the check's, as the agent endpoint takes them.
        fields.append(&mut definition);
        let definition = CheckDefinition::from_json(Value::Object(fields))?;
        return Ok(CatalogCheck {
            definition,
            output: String::new(),
        });
    }
    let status = match take_string(&mut fields, "Status")? {
        s if s.is_empty() => CheckStatus::Critical,
        s => CheckStatus::parse(&s)?,
    };
    let name = take_string(&mut fields, "Name")?;
    let id = take_string(&mut fields, "CheckID")?;
    let id = if id.is_empty() { name.clone() } else { id };
    if name.is_empty() {
        return Err(ApiError::bad_request("missing check Name"));
    }
    trellis_types::registration::validate_id("CheckID", &id)?;
    let service_id = take_string(&mut fields, "ServiceID")?;
    Ok(CatalogCheck {
        definition: static_check(
            id,
            name,
            (!service_id.is_empty()).then_some(service_id),
            take_string(&mut fields, "Notes")?,
            status,
            check_type,
        ),
        output,
    })
}

/// A check nobody runs (a catalog-registered or maintenance check): `status` until a write
/// changes it.
pub fn static_check(
    id: String,
    name: String,
    service_id: Option<String>,
    notes: String,
    status: CheckStatus,
    check_type: String,
) -> CheckDefinition {
    CheckDefinition {
        id: Some(id),
        name: Some(name),
        service_id,
        notes,
        status: Some(status),
        kind: CheckKind::Static(StaticCheck {
            status,
            r#type: check_type,
        }),
        interval: None,
        timeout: None,
        deregister_critical_service_after: None,
        success_before_passing: 0,
        failures_before_critical: 0,
        failures_before_warning: 0,
    }
}

/// `PUT /v1/catalog/register`: `{"Node", "Service"?, "Check"?, "Checks"?}`; answers `true`.
/// Node-level fields (`Address`, `TaggedAddresses`, `NodeMeta`) are not kept: the node is
/// synthesised from the server's configuration.
pub async fn register(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut map = parse_body(&body)?;
    check_node(state.node(), &mut map)?;
    let service = match take(&mut map, "Service") {
        None => None,
        Some(value) => {
            let mut service = object(value, "Service")?;
            // A `NodeService` has no checks: those go in `Check`/`Checks` beside it.
            take(&mut service, "Check");
            take(&mut service, "Checks");
            Some(ServiceRegistration::from_json(Value::Object(service))?)
        }
    };
    // A service needs write on it; node-level changes (checks alone) write on this node.
    match &service {
        Some(service) => authz.require(Resource::Service, &service.name, Need::Write)?,
        None => authz.require(Resource::Node, &state.node().info().node, Need::Write)?,
    }
    let mut checks = Vec::new();
    if let Some(check) = take(&mut map, "Check") {
        checks.push(parse_check(state.node(), check)?);
    }
    match take(&mut map, "Checks") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                checks.push(parse_check(state.node(), item)?);
            }
        }
        Some(_) => return Err(ApiError::bad_request("Checks must be a list")),
    }
    // Refuse a check on an unknown service before registering anything.
    {
        let catalog = state.catalog()?;
        for check in &checks {
            if let Some(sid) = &check.definition.service_id
                && catalog.instance(sid).is_none()
                && service.as_ref().is_none_or(|s| &s.id != sid)
            {
                return Err(ApiError::bad_request(format!(
                    "ServiceID {sid:?} does not exist"
                )));
            }
        }
    }
    if let Some(registration) = service {
        state
            .submit(Command::Register {
                registration,
                replace_existing_checks: false,
            })
            .await?;
    }
    for CatalogCheck { definition, output } in checks {
        let check_id = definition.id.clone().unwrap_or_default();
        let status = definition.status;
        state
            .submit(Command::RegisterCheck { check: definition })
            .await?;
        if let (false, Some(result)) = (output.is_empty(), status) {
            // The output of a static check is kept in memory, as a probe result's.
            state
                .submit(Command::ReportCheck {
                    check_id,
                    result,
                    output,
                })
                .await?;
        }
    }
    Ok(bool_response(true))
}

/// `PUT /v1/catalog/deregister`: `{"Node", "ServiceID"}` or `{"Node", "CheckID"}`; answers
/// `true`, also for an ID that is not there (as Consul). Without either Consul would remove the
/// node itself, which this server cannot do: 400.
pub async fn deregister(
    State(state): State<AppState>,
    authz: Authz,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut map = parse_body(&body)?;
    check_node(state.node(), &mut map)?;
    let service_id = take_string(&mut map, "ServiceID")?;
    let check_id = take_string(&mut map, "CheckID")?;
    // Write on the service the instance or check belongs to, or on this node.
    let service = {
        let catalog = state.catalog()?;
        if !service_id.is_empty() {
            catalog
                .instance(&service_id)
                .map(|i| i.registration.name.clone())
        } else {
            catalog
                .check(&check_id)
                .and_then(|c| c.service_name.clone())
        }
    };
    match service {
        Some(service) => authz.require(Resource::Service, &service, Need::Write)?,
        None => authz.require(Resource::Node, &state.node().info().node, Need::Write)?,
    }
    let command = if !service_id.is_empty() {
        Command::Deregister { service_id }
    } else if !check_id.is_empty() {
        Command::DeregisterCheck { check_id }
    } else {
        return Err(ApiError::bad_request(
            "this server's node cannot be deregistered; give ServiceID or CheckID",
        ));
    };
    match state.submit(command).await {
        Ok(_) | Err(WriteError::Rejected(CatalogError::NotFound(_))) => Ok(bool_response(true)),
        Err(e) => Err(e.into()),
    }
}
