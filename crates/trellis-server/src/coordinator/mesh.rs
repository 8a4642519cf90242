//! Phase messages to participants that take only mutual TLS (instances registered by a mesh
//! sidecar, `--mtls`): the coordinator's own mesh identity, [`COORDINATOR_IDENTITY`] (a leaf
//! this server's CA signs for it, replaced at 70 % of its lifetime or when the roots change),
//! and a pooled HTTP/1.1 client per participant service that talks only to an instance proving
//! it is that service.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trellis_client::mesh::{MeshConnector, MeshTls};

/// The service name in the coordinator's certificate: intentions name it as the source of
/// phase messages.
pub const COORDINATOR_IDENTITY: &str = "trellis-coordinator";

/// Share of a leaf's lifetime after which a new one is signed.
const RENEW_AT: f64 = 0.7;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordinator's certificate as its CA issues it.
pub struct Issued {
    pub tls: MeshTls,
    pub valid_after: SystemTime,
    pub valid_before: SystemTime,
    /// The roots generation it was made with.
    pub roots_index: u64,
}

/// Where the coordinator's identity comes from (this server's CA).
pub trait Identity: Send + Sync {
    /// A new leaf for [`COORDINATOR_IDENTITY`], with the roots to trust.
    fn issue(&self) -> Result<Issued, String>;
    /// The current roots generation: a change means the roots to trust changed.
    fn roots_index(&self) -> u64;
}

pub type MeshClient = Client<MeshConnector, Full<Bytes>>;

struct Current {
    renew_at: SystemTime,
    roots_index: u64,
    tls: MeshTls,
    /// One client (and connection pool) per participant service.
    clients: HashMap<String, MeshClient>,
}

/// Clients for mutual-TLS participants, made on first use and remade with a new leaf.
pub struct MeshClients {
    identity: Arc<dyn Identity>,
    current: Mutex<Option<Current>>,
}

impl MeshClients {
    pub fn new(identity: Arc<dyn Identity>) -> Self {
        Self {
            identity,
            current: Mutex::new(None),
        }
    }

    /// A client that reaches instances of `service` over mutual TLS.
    pub fn client_for(&self, service: &str, now: SystemTime) -> Result<MeshClient, String> {
        let mut current = self.current.lock();
        let fresh = current
            .as_ref()
            .is_some_and(|c| now < c.renew_at && c.roots_index == self.identity.roots_index());
        let current = match &mut *current {
            Some(c) if fresh => c,
            slot => {
                let issued = self.identity.issue()?;
                let lifetime = issued
                    .valid_before
                    .duration_since(issued.valid_after)
                    .unwrap_or_default();
                slot.insert(Current {
                    renew_at: issued.valid_after + lifetime.mul_f64(RENEW_AT),
                    roots_index: issued.roots_index,
                    tls: issued.tls,
                    clients: HashMap::new(),
                })
            }
        };
        if let Some(client) = current.clients.get(service) {
            return Ok(client.clone());
        }
        let config = current
            .tls
            .client_for(service, vec![b"http/1.1".to_vec()])
            .map_err(|e| e.to_string())?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(MeshConnector::new(config, CONNECT_TIMEOUT));
        current.clients.insert(service.to_owned(), client.clone());
        Ok(client)
    }
}

/// The coordinator's identity from this server's own CA.
pub struct CaIdentity {
    pub ca: crate::ca::Ca,
    pub datacenter: String,
}

impl Identity for CaIdentity {
    fn issue(&self) -> Result<Issued, String> {
        let state = self.ca.current();
        let leaf = state
            .sign_leaf(&self.datacenter, COORDINATOR_IDENTITY, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let active = state.active().id.clone();
        let roots = trellis_client::CaRoots {
            active_root_id: active.clone(),
            trust_domain: state.trust_domain(),
            roots: state
                .roots()
                .into_iter()
                .map(|root| trellis_client::CaRoot {
                    id: root.id.clone(),
                    root_cert: root.pem.clone(),
                    intermediate_certs: Vec::new(),
                    active: root.id == active,
                })
                .collect(),
        };
        let tls = MeshTls::new(&roots, &leaf.cert_pem, &leaf.key_pem).map_err(|e| e.to_string())?;
        Ok(Issued {
            tls,
            valid_after: leaf.valid_after,
            valid_before: leaf.valid_before,
            roots_index: state.roots_index(),
        })
    }

    fn roots_index(&self) -> u64 {
        self.ca.current().roots_index()
    }
}
