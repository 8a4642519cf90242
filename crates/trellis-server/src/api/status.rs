//! Node- and cluster-level reads: `/v1/agent/self`, `/v1/agent/members`, `/v1/agent/host`,
//! `/v1/status/*`, `/v1/catalog/nodes`, `/v1/catalog/datacenters`, and `/metrics`.

use super::error::ApiError;
use super::host;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::node::{CONSUL_API_VERSION, Node};
use crate::published::NodeFields;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trellis_filter::schema;

/// `GET /v1/status/leader` (Consul forwards it to `?dc=`, so another datacenter is a 500).
pub async fn leader(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    QueryParams::new(q).check_dc(state.node())?;
    Ok(json_response(1, to_json_bytes(&leader_address(&state))))
}

/// The leader's Raft-style address: this server's, the leader's among servers sharing a store
/// (its host with the server port), or `""` when none is known, as Consul answers.
fn leader_address(state: &AppState) -> String {
    use crate::cluster::Role;
    match state.cluster().role() {
        Role::Alone | Role::Leader => state.node().server_address(),
        Role::Follower { leader: None } => String::new(),
        Role::Follower {
            leader: Some(holder),
        } => rpc_address(&holder),
    }
}

/// A server's Raft-style address as Consul shows it: the host of its HTTP API with the server
/// port (its node name when it gave no address).
fn rpc_address(holder: &crate::cluster::Holder) -> String {
    match holder.address.parse::<std::net::SocketAddr>() {
        Ok(addr) => std::net::SocketAddr::new(addr.ip(), crate::node::SERVER_RPC_PORT).to_string(),
        Err(_) => holder.node.clone(),
    }
}

pub async fn peers(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    QueryParams::new(q).check_dc(state.node())?;
    // Every live server sharing the store (this one alone without one), as Consul lists its
    // Raft peers.
    let mut peers: Vec<String> = state.cluster().members().iter().map(rpc_address).collect();
    if peers.is_empty() {
        peers.push(state.node().server_address());
    }
    peers.sort();
    peers.dedup();
    Ok(json_response(1, to_json_bytes(&peers)))
}

pub async fn datacenters(State(state): State<AppState>) -> Response {
    json_response(1, to_json_bytes(&[&state.node().datacenter]))
}

/// `GET /v1/catalog/nodes`: this server's node, unless `node-meta` or `filter` (Consul's
/// `Node` selectors) leave it out.
pub async fn catalog_nodes(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    let filter = query.filter(&schema::CATALOG_NODES)?;
    query.check_dc(state.node())?;
    let info = state.node().info();
    let listed = query.node_meta_matches(state.node())?
        && query.local_peer()
        && filter.is_none_or(|f| f.matches(&NodeFields(info)));
    let nodes: &[_] = if listed { &[info] } else { &[] };
    Ok(json_response(1, to_json_bytes(&nodes)))
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
        "Coord": node.coordinate(),
        "Member": member(node, false),
        "Stats": stats(node),
        "Meta": {},
        "xDS": {},
    });
    json_response(1, to_json_bytes(&body))
}

/// `Stats` as a Consul server prints them (agent/consul/server.go `Stats`, agent/agent.go): maps
/// of strings. This server is the datacenter's only server, so it leads and bootstraps it.
fn stats(node: &Node) -> Value {
    json!({
        "consul": {
            "server": "true",
            "leader": "true",
            "leader_addr": node.server_address(),
            "bootstrap": "true",
            "known_datacenters": "1",
            "acl": "disabled",
        },
        "build": {
            "prerelease": "",
            "revision": concat!("trellis-", env!("CARGO_PKG_VERSION")),
            "version": CONSUL_API_VERSION,
            "version_metadata": "",
        },
        "runtime": {
            // Go's names for the architectures.
            "arch": match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "x86" => "386",
                other => other,
            },
            "os": std::env::consts::OS,
            "cpu_count": std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
        },
        "trellis": {"version": env!("CARGO_PKG_VERSION")},
    })
}

/// This server as a Serf member (Consul's `serf.Member`): a live server of its datacenter. On
/// the WAN pool its name carries the datacenter, as Consul's do.
fn member(node: &Node, wan: bool) -> Value {
    let build = format!("{CONSUL_API_VERSION}:trellis");
    let mut tags = json!({
        "acls": "0",
        "bootstrap": "1",
        "build": build,
        "dc": node.datacenter,
        "ft_fs": "1",
        "ft_si": "1",
        "id": node.id,
        "port": "8300",
        "raft_vsn": "3",
        "role": "consul",
        "vsn": "2",
        "vsn_max": "3",
        "vsn_min": "2",
        "wan_join_port": "8302",
    });
    if !wan {
        tags["segment"] = json!("");
    }
    json!({
        "Name": if wan { format!("{}.{}", node.name, node.datacenter) } else { node.name.clone() },
        "Addr": node.address,
        "Port": if wan { 8302 } else { 8301 },
        "Tags": tags,
        // serf.StatusAlive
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    })
}

/// `GET /v1/agent/members[?wan][&segment=]`: this server is the only member of both pools.
pub async fn members(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    // Consul takes any non-empty `wan` as true.
    let wan = query.get("wan").is_some_and(|w| !w.is_empty());
    let segment = query.get("segment").unwrap_or_default();
    if wan && !(segment.is_empty() || segment == "_all") {
        return Err(ApiError::bad_request(
            "Cannot provide a segment with wan=true",
        ));
    }
    // This server is in the default segment ("").
    let members: Vec<Value> = if segment.is_empty() || segment == "_all" || wan {
        vec![member(state.node(), wan)]
    } else {
        Vec::new()
    };
    Ok(json_response(1, to_json_bytes(&members)))
}

/// `GET /v1/agent/host`: memory, CPUs, host identity and the root disk, as Consul reports them.
pub async fn agent_host() -> Result<Response, ApiError> {
    let info = tokio::task::spawn_blocking(host::collect)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting host information failed",
            )
        })?;
    Ok(json_response(1, to_json_bytes(&info)))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    // A retired catalog (the server is stopping) leaves the last values.
    let mut response = state.refreshed_metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
