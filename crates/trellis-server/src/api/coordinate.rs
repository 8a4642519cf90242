//! Network coordinates: `/v1/coordinate/datacenters`, `/v1/coordinate/nodes` and
//! `/v1/coordinate/node/{node}`. This server is the only node and the only server of its
//! datacenter, and it measures no round trips, so its coordinate is Serf's starting coordinate
//! (the origin, as `/v1/agent/self` reports it) and never changes: the index is always 1, and a
//! blocking read at index 1 waits out its wait.

use super::blocking::waiter_permit;
use super::error::ApiError;
use super::params::{Blocking, QueryParams};
use super::respond::{json_response, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

/// The coordinate's index: it never changes.
const INDEX: u64 = 1;

/// `GET /v1/coordinate/datacenters`: the WAN area with this server (named `node.dc` on the WAN,
/// as Consul's servers are).
pub async fn datacenters(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let node = state.node();
    let body = json!([{
        "Datacenter": node.datacenter,
        "AreaID": "wan",
        "Coordinates": [{
            "Node": format!("{}.{}", node.name, node.datacenter),
            "Segment": "",
            "Coord": node.coordinate(),
        }],
    }]);
    Ok(json_response(INDEX, to_json_bytes(&body)))
}

/// `GET /v1/coordinate/nodes[?segment=][&index=&wait=]`: the LAN coordinates of the datacenter.
pub async fn nodes(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let blocking = query.blocking()?;
    let listed = lan_coordinates(&state, &query);
    wait_unchanged(&state, blocking).await?;
    Ok(json_response(INDEX, to_json_bytes(&listed)))
}

/// `GET /v1/coordinate/node/{node}[?segment=]`: that node's LAN coordinate; 404 for a node
/// without one (every node but this server's).
pub async fn node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let blocking = query.blocking()?;
    let listed: Vec<Value> = lan_coordinates(&state, &query)
        .into_iter()
        .filter(|c| c["Node"] == node.as_str())
        .collect();
    if listed.is_empty() {
        return Err(ApiError::not_found(format!(
            "no coordinate for node {node:?}"
        )));
    }
    wait_unchanged(&state, blocking).await?;
    Ok(json_response(INDEX, to_json_bytes(&listed)))
}

/// `GET /v1/coordinate/node/` without a node.
pub async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

/// This server's LAN coordinate, unless `?segment=` names another segment (it is in the
/// default segment, "").
fn lan_coordinates(state: &AppState, query: &QueryParams) -> Vec<Value> {
    if query.get("segment").is_some_and(|s| !s.is_empty()) {
        return Vec::new();
    }
    vec![json!({
        "Node": state.node().name,
        "Segment": "",
        "Coord": state.node().coordinate(),
    })]
}

/// A blocking read at the (constant) index waits out its wait, or until shutdown.
async fn wait_unchanged(state: &AppState, blocking: Option<Blocking>) -> Result<(), ApiError> {
    let Some(blocking) = blocking.filter(|b| b.index == INDEX) else {
        return Ok(());
    };
    let _permit = waiter_permit(state)?;
    let mut closing = state.closing();
    if *closing.borrow_and_update() {
        return Ok(());
    }
    tokio::select! {
        _ = closing.changed() => {}
        () = tokio::time::sleep_until(blocking.deadline()) => {}
    }
    Ok(())
}
