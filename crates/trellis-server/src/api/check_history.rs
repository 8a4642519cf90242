//! `GET /v1/trellis/checks/history[?service=&check=&status=&limit=&index=&wait=]`: recent check
//! status changes, newest first, blocking on the catalog's index like `/v1/health/state`.
//!
//! ```json
//! {"transitions": [{"time": 1750000000000, "index": 42, "checkId": "service:web-1",
//!   "name": "Service 'web' check", "serviceId": "web-1", "serviceName": "web",
//!   "from": "passing", "to": "critical", "output": "TTL expired"}]}
//! ```
//!
//! `from` is null for a newly registered check. Memory only, the last
//! [`crate::history::CAPACITY`] changes; `limit` defaults to 100.

use super::authz::Authz;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use super::waiting::block_on_catalog;
use crate::history::CAPACITY;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use trellis_acl::Resource;
use trellis_types::CheckStatus;
use trellis_types::registration::service_key;

const DEFAULT_LIMIT: usize = 100;

pub async fn history(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let service = query.get("service").filter(|s| !s.is_empty());
    let check = query.get("check").filter(|c| !c.is_empty());
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some("passing") => Some(CheckStatus::Passing),
        Some("warning") => Some(CheckStatus::Warning),
        Some("critical") => Some(CheckStatus::Critical),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid status {other:?}: passing, warning or critical"
            )));
        }
    };
    let limit = match query.u64("limit")? {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(CAPACITY).min(CAPACITY),
    };
    block_on_catalog(&state, query.blocking()?).await?;
    let index = state.catalog()?.index();
    let wanted_service = service.map(service_key);
    let node = state.node().info().node.clone();
    let changes = state.check_history().newest(limit, |t| {
        let readable = match &t.service_name {
            Some(name) => authz.can_read(Resource::Service, name),
            None => authz.can_read(Resource::Node, &node),
        };
        readable
            && wanted_service.as_ref().is_none_or(|wanted| {
                t.service_name
                    .as_deref()
                    .is_some_and(|name| service_key(name) == *wanted)
            })
            && check.is_none_or(|c| t.check_id == c)
            && status.is_none_or(|s| t.to == s)
    });
    let transitions: Vec<Value> = changes
        .iter()
        .map(|c| {
            let t = &c.transition;
            json!({
                "time": c.time_ms,
                "index": t.index,
                "checkId": t.check_id,
                "name": t.name,
                "serviceId": t.service_id,
                "serviceName": t.service_name,
                "from": t.from.map(CheckStatus::as_str),
                "to": t.to.as_str(),
                "output": t.output,
            })
        })
        .collect();
    Ok(json_response(
        index,
        to_json_bytes(&json!({ "transitions": transitions })),
    ))
}
