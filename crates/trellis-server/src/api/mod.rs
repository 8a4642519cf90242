//! The HTTP API: the route table and the middleware that counts, times and logs every request.

mod acl;
mod agent;
mod agent_health;
mod agent_ops;
mod authz;
mod blocking;
mod catalog_write;
mod check_history;
mod clock;
mod compress;
mod config;
mod connect_ca;
mod coordinate;
mod cross_origin;
mod error;
mod event;
mod forward;
mod health;
mod host;
mod intentions;
mod kv;
mod maintenance;
pub mod monitor;
mod node;
mod operator;
mod params;
mod respond;
mod session;
mod status;
mod transactions;
mod txn;
mod ui_services;
mod waiting;
mod watch;

use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
pub use compress::accepts_gzip;
use error::ApiError;
use std::time::Instant;

/// Largest request body: KV values may be up to 512 KiB, as in Consul.
pub const MAX_BODY: usize = 512 * 1024;

/// The HTTP API, with `extra` routes of other modules (Jaeger's query API) behind the same
/// layers: counted, timed and logged by `observe`, the body bounded.
pub fn router(state: AppState, extra: Router) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(agent::register))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister))
        .route("/v1/agent/check/register", put(agent::register_check))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::deregister_check),
        )
        .route("/v1/agent/check/pass/{id}", put(agent::pass))
        .route("/v1/agent/check/warn/{id}", put(agent::warn))
        .route("/v1/agent/check/fail/{id}", put(agent::fail))
        .route("/v1/agent/check/update/{id}", put(agent::update))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/service/{id}", get(agent::service))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/agent/members", get(status::members))
        .route("/v1/agent/host", get(status::agent_host))
        .route("/v1/agent/metrics", get(agent_ops::metrics))
        .route("/v1/agent/reload", put(agent_ops::reload))
        .route("/v1/agent/leave", put(agent_ops::leave))
        .route("/v1/agent/monitor", get(monitor::monitor))
        .route("/v1/agent/maintenance", put(maintenance::node_maintenance))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(maintenance::service_maintenance),
        )
        .route(
            "/v1/agent/service/maintenance/",
            put(maintenance::missing_service_id),
        )
        .route("/v1/agent/health/service/id/{id}", get(agent_health::by_id))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(agent_health::by_name),
        )
        .route(
            "/v1/agent/health/service/id/",
            get(agent_health::missing_id),
        )
        .route(
            "/v1/agent/health/service/name/",
            get(agent_health::missing_name),
        )
        .route("/v1/catalog/register", put(catalog_write::register))
        .route("/v1/catalog/deregister", put(catalog_write::deregister))
        .route("/v1/catalog/node/{node}", get(node::catalog_node))
        .route(
            "/v1/catalog/node-services/{node}",
            get(node::catalog_node_services),
        )
        .route("/v1/health/node/{node}", get(node::health_node))
        .route("/v1/health/state/{state}", get(node::health_state))
        .route("/v1/catalog/node/", get(node::missing_node))
        .route("/v1/catalog/node-services/", get(node::missing_node))
        .route("/v1/health/node/", get(node::missing_node))
        .route("/v1/health/state/", get(node::missing_state))
        .route("/v1/catalog/services", get(health::catalog_services))
        .route("/v1/catalog/service/{name}", get(health::catalog_service))
        .route("/v1/catalog/nodes", get(status::catalog_nodes))
        .route("/v1/catalog/datacenters", get(status::datacenters))
        .route("/v1/health/service/{name}", get(health::health_service))
        .route("/v1/health/checks/{name}", get(health::health_checks))
        .route(
            "/v1/kv/",
            get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/list", get(session::list))
        .route("/v1/session/node/{node}", get(session::node))
        .route(
            "/v1/session/{op}/",
            get(session::missing).put(session::missing),
        )
        .route("/v1/event/fire/{name}", put(event::fire))
        .route("/v1/event/fire/", put(event::missing_name))
        .route("/v1/event/list", get(event::list))
        .route("/v1/config", put(config::apply))
        .route(
            "/v1/config/",
            get(config::list_all).delete(config::delete_without_name),
        )
        .route(
            "/v1/config/{kind}",
            get(config::list).delete(config::delete_without_name),
        )
        .route(
            "/v1/config/{kind}/",
            get(config::get_unnamed).delete(config::delete_unnamed),
        )
        .route(
            "/v1/config/{kind}/{*name}",
            get(config::get).delete(config::delete),
        )
        .route(
            "/v1/trellis/txn",
            get(transactions::list).post(transactions::begin),
        )
        .route("/v1/trellis/txn/{gid}", get(transactions::show))
        .route(
            "/v1/trellis/txn/{gid}/branches",
            post(transactions::add_branch),
        )
        .route("/v1/trellis/txn/{gid}/commit", post(transactions::commit))
        .route("/v1/trellis/txn/{gid}/abort", post(transactions::abort))
        .route("/v1/coordinate/datacenters", get(coordinate::datacenters))
        .route("/v1/coordinate/nodes", get(coordinate::nodes))
        .route("/v1/coordinate/update", put(coordinate::update))
        .route("/v1/coordinate/node/{node}", get(coordinate::node))
        .route("/v1/coordinate/node/", get(coordinate::missing_node))
        .route(
            "/v1/operator/raft/configuration",
            get(operator::raft_configuration),
        )
        .route(
            "/v1/operator/autopilot/health",
            get(operator::autopilot_health),
        )
        .route("/v1/txn", put(txn::txn))
        .route("/v1/internal/ui/services", get(ui_services::services))
        .route("/v1/connect/ca/roots", get(connect_ca::roots))
        .route("/v1/agent/connect/ca/roots", get(connect_ca::roots))
        .route("/v1/agent/connect/ca/leaf/{service}", get(connect_ca::leaf))
        .route(
            "/v1/connect/intentions",
            get(intentions::list).post(intentions::create),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(intentions::get_exact)
                .put(intentions::put_exact)
                .delete(intentions::delete_exact),
        )
        .route("/v1/connect/intentions/match", get(intentions::matches))
        .route("/v1/connect/intentions/check", get(intentions::check))
        .route(
            "/v1/connect/intentions/{id}",
            get(intentions::read)
                .put(intentions::update)
                .delete(intentions::delete),
        )
        .route("/v1/agent/connect/authorize", post(intentions::authorize))
        .route(
            "/v1/connect/ca/configuration",
            get(connect_ca::get_configuration).put(connect_ca::set_configuration),
        )
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/token", put(acl::create_token))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::read_token)
                .put(acl::update_token)
                .delete(acl::delete_token),
        )
        .route("/v1/acl/tokens", get(acl::list_tokens))
        .route("/v1/acl/policy", put(acl::create_policy))
        .route("/v1/acl/policy/name/{name}", get(acl::read_policy_by_name))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::read_policy)
                .put(acl::update_policy)
                .delete(acl::delete_policy),
        )
        .route("/v1/acl/policies", get(acl::list_policies))
        .route("/v1/trellis/checks/history", get(check_history::history))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/trellis/watch/{name}", get(watch::watch))
        .route("/metrics", get(status::metrics))
        .with_state(state.clone())
        .merge(extra)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(compress::gzip_json))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(middleware::from_fn(refuse_enterprise_headers))
        .layer(middleware::from_fn(
            cross_origin::refuse_cross_origin_writes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::forward_to_leader,
        ))
        .layer(middleware::from_fn_with_state(state, observe))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The Enterprise scope headers a Consul CE server refuses on every endpoint (agent/http_ce.go):
/// a non-empty `X-Consul-Namespace` or `X-Consul-Partition`, `default` included, is a 400 naming
/// the header, checked before the `ns`/`partition` query parameters (`QueryParams::check_dc`).
/// Inside `observe`, so refusals are counted and logged like any other answer.
async fn refuse_enterprise_headers(request: Request, next: Next) -> Response {
    for (name, feature) in [
        ("X-Consul-Namespace", "Namespaces"),
        ("X-Consul-Partition", "Partitions"),
    ] {
        // Go's `Header.Get`: the first value.
        if request
            .headers()
            .get(name)
            .is_some_and(|v| !v.as_bytes().is_empty())
        {
            return ApiError::bad_request(format!(
                "Invalid header: {name:?} - {feature} are a Consul Enterprise feature"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Counts every request by route and status, times it, and logs it at debug level.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    // Cheap (shared bytes); read only when debug logging is on.
    let uri = request.uri().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // For streams (watch) this is the time to the response head, not the stream's lifetime.
    tracing::debug!(
        method = %method,
        path = %uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        status,
        ms = format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
        "request"
    );
    let metrics = state.metrics();
    let labels = RequestLabels {
        route: route.clone(),
        method: method.as_str().to_owned(),
        code: status,
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    response
}
