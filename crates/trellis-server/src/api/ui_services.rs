//! `GET /v1/internal/ui/services`: every service with its tags, instance count and health
//! counts, in the shape of Consul's endpoint of the same name (which Consul's own UI lists
//! services with), plus how many instances are passing, warning and critical by their worst
//! check. Blocking on the catalog's index, so a dashboard sees any registration or check change.

use super::authz::Authz;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use super::waiting::block_on_catalog;
use crate::published::{CONSUL_SERVICE, shows_consul_instance};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};
use trellis_acl::Resource;
use trellis_catalog::ServiceSummary;

pub async fn services(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_dc(state.node())?;
    block_on_catalog(&state, query.blocking()?).await?;
    let catalog = state.catalog()?;
    let mut summaries = catalog.service_summaries();
    summaries.retain(|s| authz.can_read(Resource::Service, &s.name));
    // This server's own `consul` service, as `/v1/catalog/services` lists it.
    if shows_consul_instance(&catalog)
        && authz.can_read(Resource::Service, CONSUL_SERVICE)
        && !summaries.iter().any(|s| s.name == CONSUL_SERVICE)
    {
        let consul = ServiceSummary {
            name: CONSUL_SERVICE.to_owned(),
            instance_count: 1,
            instances: [1, 0, 0],
            ..ServiceSummary::default()
        };
        let at = summaries.partition_point(|s| s.name.as_str() < CONSUL_SERVICE);
        summaries.insert(at, consul);
    }
    let node = state.node().info();
    let datacenter = &state.config().datacenter;
    let body: Vec<Value> = summaries
        .iter()
        .map(|s| {
            json!({
                "Name": s.name,
                "Datacenter": datacenter,
                "Tags": s.tags,
                "Nodes": [node.node],
                "InstanceCount": s.instance_count,
                "ChecksPassing": s.checks[0],
                "ChecksWarning": s.checks[1],
                "ChecksCritical": s.checks[2],
                "InstancesPassing": s.instances[0],
                "InstancesWarning": s.instances[1],
                "InstancesCritical": s.instances[2],
            })
        })
        .collect();
    Ok(json_response(catalog.index(), to_json_bytes(&body)))
}
