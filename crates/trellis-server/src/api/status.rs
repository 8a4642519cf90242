//! Node- and cluster-level reads: `/v1/agent/self`, `/v1/status/*`, `/v1/catalog/nodes`,
//! `/v1/catalog/datacenters`, and `/metrics`.

use super::respond::{json_response, to_json_bytes};
use crate::metrics::HealthLabels;
use crate::node::CONSUL_API_VERSION;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn leader(State(state): State<AppState>) -> Response {
    json_response(1, to_json_bytes(&state.node().server_address()))
}

pub async fn peers(State(state): State<AppState>) -> Response {
    json_response(1, to_json_bytes(&[state.node().server_address()]))
}

pub async fn datacenters(State(state): State<AppState>) -> Response {
    json_response(1, to_json_bytes(&[&state.node().datacenter]))
}

pub async fn catalog_nodes(State(state): State<AppState>) -> Response {
    json_response(1, to_json_bytes(&[state.node().info()]))
}

/// Every top-level value is an object, as Consul clients expect.
pub async fn agent_self(State(state): State<AppState>) -> Response {
    let node = state.node();
    let body = json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": true,
            "Revision": concat!("trellis-", env!("CARGO_PKG_VERSION")),
            "Version": CONSUL_API_VERSION,
            "BuildDate": "",
        },
        "DebugConfig": {},
        "Coord": {"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5},
        "Member": {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {"dc": node.datacenter, "role": "consul", "id": node.id, "build": CONSUL_API_VERSION},
            "Status": 1,
        },
        "Stats": {"trellis": {"version": env!("CARGO_PKG_VERSION")}},
        "Meta": {},
        "xDS": {},
    });
    json_response(1, to_json_bytes(&body))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.metrics();
    // A retired catalog (the server is stopping) leaves the last values.
    if let Ok(catalog) = state.catalog() {
        metrics.services.set(catalog.service_count() as i64);
        for (status, count) in catalog.health_counts() {
            let labels = HealthLabels {
                health: status.as_str().to_owned(),
            };
            metrics.instances.get_or_create(&labels).set(count as i64);
        }
    }
    metrics.watchers.set(state.waiters_in_use() as i64);
    let mut response = metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
