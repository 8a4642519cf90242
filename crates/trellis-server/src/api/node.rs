//! Node-wide reads: `/v1/catalog/node/:node`, `/v1/catalog/node-services/:node`,
//! `/v1/health/node/:node` and `/v1/health/state/:state`. The server is its only node, so a node
//! read is a read of the whole catalog; an unknown node answers what Consul answers for one.

use super::authz::Authz;
use super::blocking::block_on;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use super::waiting::block_on_catalog;
use crate::node::Node;
use crate::published::{
    CONSUL_SERVICE, CheckFields, ServiceFields, catalog_check_json, consul_instance, node_service,
    shows_consul_instance,
};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use trellis_acl::Resource;
use trellis_catalog::{Catalog, InstanceRecord};
use trellis_filter::{Filter, schema};
use trellis_types::response::ServiceInfo;
use trellis_types::{CheckStatus, HealthCheck, NodeInfo};

/// Whether `name` names this server's node: its name (without regard to case, as Consul's
/// catalog matches node names) or its node ID.
pub(super) fn is_this_node(node: &Node, name: &str) -> bool {
    node.name.eq_ignore_ascii_case(name) || node.id == name
}

/// `/v1/catalog/node/:node`: the node and its services by ID.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServices {
    node: NodeInfo,
    services: BTreeMap<String, ServiceInfo>,
}

/// `/v1/catalog/node-services/:node`: the node and its services as a list.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServiceList {
    node: Option<NodeInfo>,
    services: Option<Vec<ServiceInfo>>,
}

/// The node's services that pass `filter` (Consul's `NodeService` selectors), in ID order, as
/// Consul prints them (`published::node_service`, the shape of a health entry's `Service`).
/// The server's own `consul` service is among them (synthesised, as in the catalog and health
/// reads) unless an instance was registered with the ID `consul`.
fn node_services(catalog: &Catalog, filter: Option<&Filter>) -> Vec<ServiceInfo> {
    let consul = consul_instance();
    let mut instances: Vec<&InstanceRecord> = catalog.instances().map(|i| &**i).collect();
    if shows_consul_instance(catalog) {
        let at = instances.partition_point(|i| i.registration.id.as_str() < CONSUL_SERVICE);
        instances.insert(at, &consul);
    }
    instances
        .into_iter()
        .filter(|i| filter.is_none_or(|f| f.matches(&ServiceFields(&i.registration))))
        .map(node_service)
        .collect()
}

/// The node's services after blocking on the services index: `render` gets the catalog (or
/// `None` for another node) and the request's `?filter=`; the answer carries the services
/// index.
async fn node_read(
    state: &AppState,
    node: &str,
    query: Vec<(String, String)>,
    render: impl FnOnce(Option<&Catalog>, Option<&Filter>) -> Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(query);
    let filter = query.filter(&schema::CATALOG_NODE_SERVICES)?;
    query.check_dc(state.node())?;
    let rx = state.services_changed();
    block_on(state, rx, query.blocking()?, |i| *i).await?;
    let catalog = state.catalog()?;
    let body = render(
        is_this_node(state.node(), node).then_some(&*catalog),
        filter.as_ref(),
    );
    Ok(json_response(catalog.services_index(), body))
}

/// `GET /v1/catalog/node/:node`. Another node is `null`, as Consul answers for an unknown node.
pub async fn catalog_node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let info = state.node().info().clone();
    node_read(&state, &node, q, |catalog, filter| match catalog {
        None => Bytes::from_static(b"null"),
        Some(catalog) => to_json_bytes(&NodeServices {
            node: info,
            services: node_services(catalog, filter)
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
        }),
    })
    .await
}

/// `GET /v1/catalog/node-services/:node`. Another node is `{"Node": null, "Services": null}`,
/// as Consul answers for an unknown node.
pub async fn catalog_node_services(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let info = state.node().info().clone();
    node_read(&state, &node, q, |catalog, filter| {
        to_json_bytes(&match catalog {
            None => NodeServiceList {
                node: None,
                services: None,
            },
            Some(catalog) => NodeServiceList {
                node: Some(info),
                services: Some(node_services(catalog, filter)),
            },
        })
    })
    .await
}

/// Every check on the node, `serfHealth` included, with a status `keep` accepts and passing
/// `filter` (Consul's `HealthCheck` selectors), ordered by check ID as Consul lists them.
fn node_checks(
    catalog: &Catalog,
    node: &Node,
    authz: &Authz,
    keep: impl Fn(CheckStatus) -> bool,
    filter: Option<&Filter>,
) -> Vec<HealthCheck> {
    // Only what the token may read: a service's checks need read on it, node checks on the node.
    let node_readable = authz.can_read(Resource::Node, &node.info().node);
    let serf = std::iter::once(node.serf_health().clone())
        .filter(|c| node_readable && keep(c.status))
        .filter(|c| filter.is_none_or(|f| f.matches(&CheckFields::Rendered(c))));
    let mut checks: Vec<HealthCheck> = serf
        .chain(
            catalog
                .checks()
                .filter(|c| match &c.service_name {
                    Some(service) => authz.can_read(Resource::Service, service),
                    None => node_readable,
                })
                .filter(|c| keep(c.status))
                .filter_map(|c| catalog_check_json(catalog, c, node, filter)),
        )
        .collect();
    checks.sort_by(|a, b| a.check_id.cmp(&b.check_id));
    checks
}

/// A read of checks across the catalog: blocks on the global index (any change may change
/// them) and answers with it.
async fn checks_read(
    state: &AppState,
    query: &QueryParams,
    render: impl FnOnce(&Catalog) -> Vec<HealthCheck>,
) -> Result<Response, ApiError> {
    block_on_catalog(state, query.blocking()?).await?;
    let catalog = state.catalog()?;
    let body = to_json_bytes(&render(&catalog));
    Ok(json_response(catalog.index(), body))
}

/// `GET /v1/health/node/:node`: the node's checks; another node has none (`[]`, as in Consul).
pub async fn health_node(
    State(state): State<AppState>,
    authz: Authz,
    Path(node): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::HEALTH_CHECKS)?;
    query.check_dc(state.node())?;
    let ours = is_this_node(state.node(), &node);
    checks_read(&state, &query, |catalog| {
        if ours {
            node_checks(catalog, state.node(), &authz, |_| true, filter.as_ref())
        } else {
            Vec::new()
        }
    })
    .await
}

/// `GET /v1/health/state/:state` with `any`, `passing`, `warning` or `critical`. Consul answers
/// an unknown state with an empty list; this server says it is not one of them (400).
pub async fn health_state(
    State(state): State<AppState>,
    authz: Authz,
    Path(wanted): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let wanted = match wanted.as_str() {
        "any" => None,
        "passing" => Some(CheckStatus::Passing),
        "warning" => Some(CheckStatus::Warning),
        "critical" => Some(CheckStatus::Critical),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid check state {other:?}: want any, passing, warning or critical"
            )));
        }
    };
    let filter = query.filter(&schema::HEALTH_CHECKS)?;
    query.check_dc(state.node())?;
    let meta_ok = query.node_meta_matches(state.node())?;
    checks_read(&state, &query, |catalog| {
        if meta_ok {
            node_checks(
                catalog,
                state.node(),
                &authz,
                |s| wanted.is_none_or(|w| w == s),
                filter.as_ref(),
            )
        } else {
            Vec::new()
        }
    })
    .await
}

/// `/v1/health/state/`, `/v1/health/node/`, `/v1/catalog/node/`... without the last segment.
pub async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

pub async fn missing_state() -> ApiError {
    ApiError::bad_request("Missing check state")
}
