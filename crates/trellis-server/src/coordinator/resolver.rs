//! Participants named by service: the passing instances of the service in this server's own
//! registry, read from the service's published view (no lock once someone reads it).

use super::participants::{Endpoint, Resolve};
use crate::publisher::Publisher;
use crate::shared::SharedCatalog;
use std::sync::Arc;
use trellis_client::mesh::MESH_META;
use trellis_types::CheckStatus;

pub struct RegistryResolver {
    pub publisher: Arc<Publisher>,
    pub catalog: Arc<SharedCatalog>,
    /// Where an instance registered without an address runs (Consul's rule: the node's).
    pub node_address: String,
}

impl Resolve for RegistryResolver {
    fn passing(&self, service: &str) -> Vec<Endpoint> {
        let Ok(slot) = self.publisher.slot_in(&self.catalog, service) else {
            return Vec::new();
        };
        let published = slot.current();
        published
            .view
            .instances
            .iter()
            .filter(|view| view.status == CheckStatus::Passing)
            .map(|view| {
                let registration = &view.instance.registration;
                let host = if registration.address.is_empty() {
                    self.node_address.clone()
                } else {
                    registration.address.clone()
                };
                Endpoint {
                    host,
                    port: registration.port,
                    meshed: registration
                        .meta
                        .get(MESH_META)
                        .is_some_and(|v| v == "true"),
                }
            })
            .collect()
    }
}
