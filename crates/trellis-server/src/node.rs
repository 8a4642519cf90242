//! The server's own node, synthesised as a Consul agent in dev mode would present itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use trellis_types::response::CheckDefinitionInfo;
use trellis_types::{CheckStatus, HealthCheck, NodeInfo};

/// Version of the Consul API this server emulates (reported by `/v1/agent/self`).
pub const CONSUL_API_VERSION: &str = "1.17.0";

/// The server RPC port every Consul server listens on (and lists its `consul` service with).
pub const SERVER_RPC_PORT: u16 = 8300;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub http: SocketAddr,
    /// What `info` and `serf_health` answer, built once: they never change.
    info: NodeInfo,
    serf: HealthCheck,
}

impl Node {
    pub fn new(name: &str, datacenter: &str, http: SocketAddr) -> Self {
        let ip = match http.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let (id, address) = (node_id(name), ip.to_string());
        let tagged: BTreeMap<String, String> = ["lan", "lan_ipv4", "wan", "wan_ipv4"]
            .into_iter()
            .map(|k| (k.to_owned(), address.clone()))
            .collect();
        let info = NodeInfo {
            id: id.clone(),
            node: name.to_owned(),
            address: address.clone(),
            datacenter: datacenter.to_owned(),
            tagged_addresses: tagged,
            meta: BTreeMap::from([("consul-network-segment".to_owned(), String::new())]),
            create_index: 1,
            modify_index: 1,
        };
        Self {
            name: name.to_owned(),
            id,
            address,
            datacenter: datacenter.to_owned(),
            http,
            info,
            serf: serf_health(name),
        }
    }

    /// The node as Consul prints it.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The always-passing node health check every Consul agent reports.
    pub fn serf_health(&self) -> &HealthCheck {
        &self.serf
    }

    /// This server's network coordinate: Serf's starting coordinate (8 dimensions at the
    /// origin). It measures no round trips, so it never changes. `/v1/agent/self` reports it
    /// as `Coord` and `/v1/coordinate/*` as the node's coordinate.
    pub fn coordinate(&self) -> serde_json::Value {
        serde_json::json!({
            "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "Error": 1.5,
            "Adjustment": 0.0,
            "Height": 1e-5,
        })
    }

    /// The Raft-style address `/v1/status/leader` reports.
    pub fn server_address(&self) -> String {
        format!("{}:{SERVER_RPC_PORT}", self.address)
    }
}

/// The always-passing node health check every Consul agent reports.
fn serf_health(node: &str) -> HealthCheck {
    HealthCheck {
        node: node.to_owned(),
        check_id: "serfHealth".into(),
        name: "Serf Health Status".into(),
        status: CheckStatus::Passing,
        notes: String::new(),
        output: "Agent alive and reachable".into(),
        service_id: String::new(),
        service_name: String::new(),
        service_tags: Vec::new(),
        check_type: String::new(),
        interval: String::new(),
        timeout: String::new(),
        exposed_port: 0,
        definition: CheckDefinitionInfo::default(),
        create_index: 1,
        modify_index: 1,
    }
}

/// A stable UUID-shaped node ID derived from the name (two FNV-1a hashes), so restarts keep it.
fn node_id(name: &str) -> String {
    let mut hashes = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4u64];
    for (i, h) in hashes.iter_mut().enumerate() {
        for byte in name.bytes().chain(std::iter::once(i as u8)) {
            *h ^= u64::from(byte);
            *h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    uuid::Uuid::from_u64_pair(hashes[0], hashes[1])
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable_and_uuid_shaped() {
        let a = node_id("alpha");
        assert_eq!(a, node_id("alpha"));
        assert_ne!(a, node_id("beta"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn node_ids_did_not_change_with_the_uuid_crate() {
        // Values of the hand-written formatting this replaced: ids must survive upgrades.
        assert_eq!(node_id("alpha"), "bbd248a4-91ed-a911-d01d-bbfb8385c5bb");
        assert_eq!(node_id("trellis"), "00974f5c-cfa5-ed12-10f1-efc305542748");
        assert_eq!(node_id(""), "af63bd4c-8601-b7df-789e-9e398d40991f");
    }
}
