//! This proxy's place in the mesh: its leaf certificate from the registry's CA (renewed at
//! 70 % of its lifetime) and the mesh's roots (watched with a blocking query, so a rotated root
//! is trusted at once), kept as the current [`trellis_client::mesh::MeshTls`] configurations
//! that the inbound listener and outbound connections take.
//!
//! Every root the registry lists is trusted, so during a rotation leaves of the old and of the
//! new root both verify; when the active root changes the leaf is replaced at once. Connections
//! keep the configuration they were made with; new ones take the current one.

use crate::{Error, Result};
use rustls::{ClientConfig, ServerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};
use trellis_client::mesh::MeshTls as Configs;
pub use trellis_client::mesh::{MESH_META, PeerIdentity, server_name as mesh_server_name};
use trellis_client::{Blocking, CaRoots, Client, LeafCert};

/// Set by the inbound sidecar to the calling service's name, from its verified certificate;
/// always removed from what arrives, so an app can trust it.
pub const PEER_HEADER: &str = "x-trellis-peer";
/// The calling service's full SPIFFE identity.
pub const PEER_URI_HEADER: &str = "x-trellis-peer-uri";

/// How one endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Plain,
    /// Mutual TLS with the mesh identity, to an endpoint that must prove it is this service.
    Mesh {
        service: &'a str,
    },
}

/// A leaf is renewed once this share of its lifetime has passed.
const RENEW_AT: f64 = 0.7;

/// One generation of keys and trust.
struct Material {
    configs: Configs,
    /// Roots index and active root of the registry answer these were made from.
    roots_index: u64,
    active_root: String,
    serial: String,
    valid_after: SystemTime,
    valid_before: SystemTime,
}

impl Material {
    fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .valid_before
            .duration_since(self.valid_after)
            .unwrap_or_default();
        self.valid_after + lifetime.mul_f64(RENEW_AT)
    }
}

/// The configurations for roots and a leaf.
fn build(roots: &CaRoots, roots_index: u64, leaf: &LeafCert) -> Result<Material> {
    let configs = Configs::new(roots, &leaf.cert_pem, &leaf.private_key_pem)
        .map_err(|e| Error::config(e.to_string()))?;
    Ok(Material {
        configs,
        roots_index,
        active_root: roots.active_root_id.clone(),
        serial: leaf.serial_number.clone(),
        valid_after: leaf.valid_after,
        valid_before: leaf.valid_before,
    })
}

/// This proxy's mesh identity and trust, kept current.
pub struct MeshTls {
    service: String,
    client: Client,
    material: RwLock<Arc<Material>>,
    /// Counts replacements of the material, so derived configurations know they are stale.
    generation: AtomicU64,
}

impl MeshTls {
    /// Fetches the roots and a leaf for `service` from the registry, retrying for up to
    /// `patience` (the registry may be starting too).
    pub async fn fetch(client: Client, service: &str, patience: Duration) -> Result<Arc<Self>> {
        let deadline = tokio::time::Instant::now() + patience;
        let material = loop {
            match Self::load(&client, service, None).await {
                Ok(material) => break material,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot get a mesh certificate yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            %service,
            serial = %material.serial,
            "mesh certificate issued"
        );
        Ok(Arc::new(Self {
            service: service.to_owned(),
            client,
            material: RwLock::new(Arc::new(material)),
            generation: AtomicU64::new(0),
        }))
    }

    async fn load(client: &Client, service: &str, blocking: Option<Blocking>) -> Result<Material> {
        let roots = client.ca_roots(blocking).await.map_err(registry_error)?;
        let leaf = client.leaf_cert(service).await.map_err(registry_error)?;
        build(&roots.value, roots.index, &leaf)
    }

    fn current(&self) -> Arc<Material> {
        self.material
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, material: Material) {
        *self.material.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the leaf or the roots are replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A client configuration that talks only to `service` whatever address it dials, offering
    /// `alpn` (for hyper's pooled HTTP/2 client, which dials addresses).
    pub fn client_config_for(
        &self,
        service: &str,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<ClientConfig>> {
        self.current()
            .configs
            .client_for(service, alpn)
            .map_err(|e| Error::config(e.to_string()))
    }

    /// The inbound listener's configuration now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().configs.server.clone()
    }

    /// Outbound connections' configuration now.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().configs.client.clone()
    }

    /// The serial number of the leaf in use (tests and logs).
    pub fn serial(&self) -> String {
        self.current().serial.clone()
    }

    /// Who the peer of an accepted connection is.
    pub fn peer_of(&self, connection: &rustls::ServerConnection) -> Option<PeerIdentity> {
        self.current().configs.peer_of(connection)
    }

    /// Keeps the leaf and roots current until `self` is dropped: renews the leaf at 70 % of its
    /// lifetime, and on a roots change trusts the new set (and takes a new leaf if the active
    /// root changed).
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(maintain(weak))
    }
}

fn registry_error(e: trellis_client::Error) -> Error {
    Error::config(format!("mesh TLS: {e}"))
}

/// How long until `at`, from the wall clock.
fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

async fn maintain(mesh: Weak<MeshTls>) {
    let mut retry = Duration::from_millis(500);
    loop {
        // Hold no strong reference across the waits, so dropping the proxy ends this task.
        let Some((client, service, current)) = mesh
            .upgrade()
            .map(|m| (m.client.clone(), m.service.clone(), m.current()))
        else {
            return;
        };
        let renew = until(current.renew_at());
        let blocking = Blocking {
            index: current.roots_index,
            wait: Some(Duration::from_secs(300)),
        };
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            roots = client.ca_roots(Some(blocking)) => match roots {
                Ok(roots) if roots.index == current.roots_index => {
                    // The wait ended with nothing new, or the registry does not block: do not
                    // spin on it.
                    tokio::time::sleep_until(started + Duration::from_secs(1)).await;
                    continue;
                }
                Ok(roots) => {
                    let rotated = roots.value.active_root_id != current.active_root;
                    match client.leaf_cert(&service).await {
                        Ok(leaf) => build(&roots.value, roots.index, &leaf).map(|m| (m, rotated)),
                        Err(e) => Err(registry_error(e)),
                    }
                }
                Err(e) => Err(registry_error(e)),
            },
            () = tokio::time::sleep(renew) => MeshTls::load(&client, &service, None)
                .await
                .map(|m| (m, false)),
        };
        let Some(mesh) = mesh.upgrade() else { return };
        match outcome {
            Ok((material, rotated)) => {
                tracing::info!(
                    service = %mesh.service,
                    serial = %material.serial,
                    rotated,
                    "mesh certificate renewed"
                );
                mesh.replace(material);
                retry = Duration::from_millis(500);
            }
            Err(e) => {
                // Keep the current leaf (it stays valid a while) and try again soon.
                tracing::warn!(error = %e, "cannot renew the mesh certificate; retrying");
                drop(mesh);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
}
