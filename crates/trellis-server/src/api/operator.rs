//! Operator reads: `/v1/operator/raft/configuration` and `/v1/operator/autopilot/health`.
//! Trellis has no Raft: this server is its datacenter's only server, so it is the only voter and
//! the leader, always healthy, and tolerates no failure. Where Consul reports a Raft index, this
//! reports the catalog's global index (what every write takes, as every Raft write takes a log
//! index); the term is always 1.

use super::clock::rfc3339;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::node::CONSUL_API_VERSION;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::json;

/// Raft protocol version 3, what Consul servers speak.
const RAFT_PROTOCOL: &str = "3";

/// What both reads check (`dc`, no filter, a valid `?stale`), and the index they report.
fn raft_index(state: &AppState, q: Vec<(String, String)>) -> Result<u64, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    query.flag("stale")?;
    Ok((*state.catalog_changed().borrow()).max(1))
}

/// `GET /v1/operator/raft/configuration[?stale]`: Consul's `RaftConfigurationResponse`.
pub async fn raft_configuration(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let index = raft_index(&state, q)?;
    let node = state.node();
    let body = json!({
        "Servers": [{
            "ID": node.id,
            "Node": node.name,
            "Address": node.server_address(),
            "Leader": true,
            "ProtocolVersion": RAFT_PROTOCOL,
            "Voter": true,
            "LastIndex": index,
        }],
        "Index": index,
    });
    Ok(json_response(index, to_json_bytes(&body)))
}

/// `GET /v1/operator/autopilot/health`: Consul's `OperatorHealthReply` (Consul answers 429 when
/// unhealthy; this server always is healthy).
pub async fn autopilot_health(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let index = raft_index(&state, q)?;
    let node = state.node();
    let body = json!({
        "Healthy": true,
        "FailureTolerance": 0,
        "Servers": [{
            "ID": node.id,
            "Name": node.name,
            "Address": node.server_address(),
            "SerfStatus": "alive",
            "Version": CONSUL_API_VERSION,
            "Leader": true,
            "LastContact": "0s",
            "LastTerm": 1,
            "LastIndex": index,
            "Healthy": true,
            "Voter": true,
            "StableSince": rfc3339(state.started()),
        }],
    });
    Ok(json_response(index, to_json_bytes(&body)))
}
