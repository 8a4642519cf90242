//! `GET /v1/agent/health/service/id/:id` and `/name/:name`: an instance's aggregated health as
//! an HTTP status, for load balancers and scripts, as a Consul agent answers it: 200 passing,
//! 429 warning, 503 critical or maintenance, 404 unknown; JSON by default, the bare status with
//! `?format=text` (or `Accept: text/plain`).

use super::agent::{AgentServiceView, agent_service};
use super::error::ApiError;
use super::maintenance::is_maintenance_check;
use super::params::QueryParams;
use super::respond::to_json_bytes;
use crate::published::check_json;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use trellis_catalog::{Catalog, InstanceRecord};
use trellis_types::{CheckStatus, HealthCheck};

/// Consul's `AgentServiceChecksInfo`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo<'a> {
    aggregated_status: &'static str,
    service: Option<AgentServiceView<'a>>,
    checks: Option<Vec<HealthCheck>>,
}

/// The aggregated status of a set of checks with Consul's precedence: maintenance, critical,
/// warning, passing (no checks is passing).
fn aggregated_status(checks: &[HealthCheck]) -> &'static str {
    if checks.iter().any(|c| is_maintenance_check(&c.check_id)) {
        return "maintenance";
    }
    match checks.iter().map(|c| c.status).max() {
        Some(CheckStatus::Critical) => "critical",
        Some(CheckStatus::Warning) => "warning",
        _ => "passing",
    }
}

fn status_code(aggregated: &str) -> StatusCode {
    match aggregated {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An instance's checks as the agent knows them: its own and the node's (not `serfHealth`,
/// which the catalog adds, not the agent), and their aggregated status.
fn instance_health<'a>(
    state: &'a AppState,
    catalog: &'a Catalog,
    instance: &'a InstanceRecord,
) -> ServiceChecksInfo<'a> {
    let r = &instance.registration;
    let checks: Vec<HealthCheck> = catalog
        .checks()
        .filter(|c| c.service_id().is_none_or(|sid| sid == r.id))
        .map(|c| {
            let service = c
                .service_id()
                .map(|_| (r.id.as_str(), r.name.as_str(), r.tags.as_slice()));
            check_json(c, state.node(), service)
        })
        .collect();
    ServiceChecksInfo {
        aggregated_status: aggregated_status(&checks),
        service: Some(agent_service(state, r)),
        checks: Some(checks),
    }
}

/// Plain text when asked by `Accept: text/plain...` or `?format=text`, as Consul decides.
fn wants_text(headers: &HeaderMap, query: &QueryParams) -> bool {
    let accept_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    accept_text || query.get("format").is_some_and(|f| f == "text")
}

fn answer(code: StatusCode, text: bool, status_text: &str, json: Bytes) -> Response {
    let (body, content_type) = if text {
        (Bytes::from(status_text.to_owned()), "text/plain")
    } else {
        (json, "application/json")
    };
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /v1/agent/health/service/id/:id`.
pub async fn by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let text = wants_text(&headers, &query);
    let catalog = state.catalog()?;
    let Some(instance) = catalog.instance(&id) else {
        let reason = format!("ServiceId {id} not found");
        let json = to_json_bytes(&ServiceChecksInfo {
            aggregated_status: "critical",
            service: None,
            checks: None,
        });
        return Ok(answer(StatusCode::NOT_FOUND, text, &reason, json));
    };
    let info = instance_health(&state, &catalog, instance);
    let status = info.aggregated_status;
    Ok(answer(
        status_code(status),
        text,
        status,
        to_json_bytes(&info),
    ))
}

/// `GET /v1/agent/health/service/name/:name`: every instance of the service, and the worst
/// status of them as the HTTP status.
pub async fn by_name(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let text = wants_text(&headers, &query);
    let catalog = state.catalog()?;
    let view = crate::published::service_view(&catalog, &name);
    let infos: Vec<ServiceChecksInfo> = view
        .instances
        .iter()
        .map(|i| instance_health(&state, &catalog, &i.instance))
        .collect();
    // The worst status wins: passing 200 < warning 429 < critical or maintenance 503 (the
    // first of equals, as Consul).
    let mut worst: Option<&'static str> = None;
    for info in &infos {
        if worst.is_none_or(|w| status_code(w) < status_code(info.aggregated_status)) {
            worst = Some(info.aggregated_status);
        }
    }
    let (code, status) = match worst {
        Some(status) => (status_code(status), status.to_owned()),
        None => (
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not Found"),
        ),
    };
    Ok(answer(code, text, &status, to_json_bytes(&infos)))
}

/// `/v1/agent/health/service/id/` or `/name/` without the last segment.
pub async fn missing_id() -> ApiError {
    ApiError::bad_request("Missing serviceID")
}

pub async fn missing_name() -> ApiError {
    ApiError::bad_request("Missing service Name")
}
