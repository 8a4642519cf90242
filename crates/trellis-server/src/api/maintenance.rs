//! Maintenance mode, as a Consul agent does it: `PUT /v1/agent/service/maintenance/:id` and
//! `PUT /v1/agent/maintenance` register (or remove) a critical check nobody runs,
//! `_service_maintenance:<id>` on the instance or `_node_maintenance` on the node. The check is an
//! ordinary durable check, so maintenance survives a restart, and a node check counts for every
//! instance: node maintenance makes every instance critical in every health read.

use super::catalog_write::static_check;
use super::error::ApiError;
use super::params::{QueryParams, parse_bool};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use trellis_catalog::{CatalogError, Command};
use trellis_types::{CheckDefinition, CheckStatus};

/// Consul's names for the maintenance checks (`api.ServiceMaintPrefix`, `api.NodeMaint`).
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
pub const NODE_MAINT: &str = "_node_maintenance";

/// The `Type` the maintenance checks report.
const MAINTENANCE_TYPE: &str = "maintenance";

/// Notes when no reason is given: Consul's words.
const DEFAULT_SERVICE_REASON: &str = "Maintenance mode is enabled for this service, but no reason \
     was provided. This is a default message.";
const DEFAULT_NODE_REASON: &str = "Maintenance mode is enabled for this node, but no reason was \
     provided. This is a default message.";

/// Whether a check is one of the maintenance checks (they make the aggregated status
/// `maintenance`).
pub fn is_maintenance_check(check_id: &str) -> bool {
    check_id == NODE_MAINT || check_id.starts_with(SERVICE_MAINT_PREFIX)
}

/// `?enable=` is required and is a Go boolean; `?reason=` is optional.
fn parse_toggle(query: &QueryParams) -> Result<(bool, String), ApiError> {
    let raw = query
        .get("enable")
        .ok_or_else(|| ApiError::bad_request("Missing value for enable"))?;
    let enable = parse_bool(raw)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid value for enable: {raw:?}")))?;
    Ok((enable, query.get("reason").unwrap_or_default().to_owned()))
}

/// Registers the check unless it is there already (as Consul, the first reason stays), or
/// removes it if it is there.
async fn toggle(state: &AppState, enable: bool, check: CheckDefinition) -> Result<(), ApiError> {
    let check_id = check.id.clone().unwrap_or_default();
    let present = state.catalog()?.check(&check_id).is_some();
    match (enable, present) {
        (true, false) => {
            state.submit(Command::RegisterCheck { check }).await?;
        }
        (false, true) => {
            let removed = state.submit(Command::DeregisterCheck { check_id }).await;
            match removed {
                // Someone else turned it off meanwhile: off is what was asked for.
                Err(crate::queue::WriteError::Rejected(CatalogError::NotFound(_))) => {}
                other => {
                    other?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false[&reason=]`.
pub async fn service_maintenance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<(), ApiError> {
    let (enable, reason) = parse_toggle(&QueryParams::new(q))?;
    if state.catalog()?.instance(&id).is_none() {
        return Err(ApiError::not_found(format!(
            "No service registered with ID {id:?}"
        )));
    }
    let reason = if reason.is_empty() {
        DEFAULT_SERVICE_REASON.to_owned()
    } else {
        reason
    };
    let check = static_check(
        format!("{SERVICE_MAINT_PREFIX}{id}"),
        "Service Maintenance Mode".to_owned(),
        Some(id),
        reason,
        CheckStatus::Critical,
        MAINTENANCE_TYPE.to_owned(),
    );
    toggle(&state, enable, check).await
}

/// `PUT /v1/agent/maintenance?enable=true|false[&reason=]`.
pub async fn node_maintenance(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<(), ApiError> {
    let (enable, reason) = parse_toggle(&QueryParams::new(q))?;
    let reason = if reason.is_empty() {
        DEFAULT_NODE_REASON.to_owned()
    } else {
        reason
    };
    let check = static_check(
        NODE_MAINT.to_owned(),
        "Node Maintenance Mode".to_owned(),
        None,
        reason,
        CheckStatus::Critical,
        MAINTENANCE_TYPE.to_owned(),
    );
    toggle(&state, enable, check).await
}

/// `PUT /v1/agent/service/maintenance/` without an ID.
pub async fn missing_service_id() -> ApiError {
    ApiError::bad_request("Missing service ID")
}
