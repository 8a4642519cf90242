//! The Trellis control plane: a Consul-compatible registry with health checks, KV, blocking
//! queries and a streaming watch, backed by a durable store with group commit.

mod acl;
mod api;
mod ca;
mod checker;
mod cluster;
pub mod config;
pub mod coordinator;
mod dashboard;
mod dns;
mod history;
mod ids;
mod metrics;
pub mod node;
mod published;
mod publisher;
mod queue;
mod shared;
mod state;
mod tls;
pub mod traces;
mod ttl;
mod writer;

/// The feed of formatted log lines `/v1/agent/monitor` streams; the binary's logging fills it.
pub use api::monitor::{LogFeed, LogLine, log_feed};
pub use config::{
    AclConfig, AclDefaultPolicy, AclTokens, ConfigError, ConfigFile, ConfigOverrides,
    ConnectConfig, DnsListen, DnsTtl, EtcdConfig, HostPort, InvalidHostPort, ServerConfig,
    StoreKind, TlsConfig,
};
pub use writer::WriterFailed;

use crate::cluster::{Cluster, Holder, Role};
use crate::coordinator::mesh::{CaIdentity, MeshClients};
use crate::coordinator::{Coordinator, Driver, DriverParts, Participants, RegistryResolver};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::publisher::Publisher;
use crate::shared::SharedCatalog;
use crate::state::{AppState, Parts};
use crate::writer::Writer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use trellis_catalog::{Catalog, Check};
use trellis_store::{
    DecisionLog, MemoryDecisionLog, MemoryStore, RedbDecisionLog, RedbStore, Store, StoreError,
};

/// How long a server sharing etcd waits at start for a leader to be known before it serves.
const LEADER_AT_START: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server did not start, or stopped. Each message is one line that says what to do;
/// no variant both prints an inner error and exposes it as its source.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "data directory {dir} is in use by another trellis server; stop it or choose another \
         --data-dir"
    )]
    DataDirInUse { dir: String },
    #[error("cannot open the store in {dir}: {error}")]
    Store { dir: String, error: StoreError },
    #[error("cannot load the ACL state: {0}")]
    Acl(String),
    #[error("cannot load the certificate authority: {0}")]
    Ca(String),
    #[error("cannot resolve {addr}: {error}")]
    Resolve { addr: String, error: io::Error },
    #[error("cannot listen on {addr}: {}", bind_failure(.error, "--http"))]
    Bind { addr: String, error: io::Error },
    #[error("cannot listen for DNS on {addr}: {}", bind_failure(.error, "--dns"))]
    DnsBind { addr: String, error: io::Error },
    #[error("cannot listen for OTLP on {addr}: {}", bind_failure(.error, "--otlp"))]
    OtlpBind { addr: String, error: io::Error },
    #[error("cannot listen for OTLP/gRPC on {addr}: {}", bind_failure(.error, "--otlp-grpc"))]
    OtlpGrpcBind { addr: String, error: io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(io::Error),
    #[error("cannot start the writer thread: {0}")]
    Thread(io::Error),
    #[error("{0}")]
    Writer(WriterFailed),
    #[error("the writer thread panicked; the server stopped")]
    WriterPanicked,
}

/// What went wrong binding, and what to do about it (`flag` chooses the address).
fn bind_failure(error: &io::Error, flag: &str) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "address already in use — another process (another trellis server?) uses it; stop \
             it or choose another address with {flag}"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("no such address on this machine; choose a local address with {flag}")
        }
        io::ErrorKind::PermissionDenied => format!(
            "permission denied (ports below 1024 need privileges); choose another port with {flag}"
        ),
        _ => error.to_string(),
    }
}

/// A started server.
pub struct Running {
    pub local_addr: SocketAddr,
    /// Where DNS is served (UDP and TCP), unless it is off.
    pub dns_addr: Option<SocketAddr>,
    /// Where the OTLP/HTTP trace receiver listens, unless it is off.
    pub otlp_addr: Option<SocketAddr>,
    /// Where the OTLP/gRPC trace receiver listens, unless it is off.
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub instances_restored: usize,
    serve: tokio::task::JoinHandle<Result<(), ServerError>>,
    /// Gives a shared store up once the server has stopped (etcd's lock).
    release: Option<trellis_etcd::Release>,
}

impl Running {
    /// Waits until the server has shut down (after `shutdown` resolved and requests drained).
    /// If the writer failed for good, the server shuts itself down and this is its error.
    pub async fn wait(self) -> Result<(), ServerError> {
        let result = match self.serve.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Serve(io::Error::other(e))),
        };
        if let Some(release) = self.release {
            let _ = tokio::task::spawn_blocking(move || release.release()).await;
        }
        result
    }
}

/// Opens the store, restores the catalog, binds the HTTP listener and serves until `shutdown`.
pub async fn start(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServerError> {
    config.validate()?;
    let stores = open_stores(&config)?;
    start_with_stores(config, stores, shutdown).await
}

/// What the server keeps durably: the catalog, the ACL state and the coordinator's decisions.
struct Stores {
    catalog: Box<dyn Store>,
    acl: Box<dyn trellis_store::AclLog>,
    decisions: Box<dyn DecisionLog>,
    release: Option<trellis_etcd::Release>,
    /// The shared store a replica follows, when there is one.
    etcd: Option<trellis_etcd::EtcdStore>,
}

/// The stores as configured: all three in etcd on one connection and lock, or the catalog
/// store of `open_store` with the logs in the data directory (memory with `--dev`).
fn open_stores(config: &ServerConfig) -> Result<Stores, ServerError> {
    if config.store == StoreKind::Etcd && !config.dev {
        let store_error = |error| ServerError::Store {
            dir: store_label(config),
            error,
        };
        let etcd = open_etcd(config)?;
        return Ok(Stores {
            acl: Box::new(trellis_store::RecordAclLog(
                etcd.records("acl").map_err(store_error)?,
            )),
            decisions: Box::new(trellis_store::RecordDecisionLog(
                etcd.records("transactions").map_err(store_error)?,
            )),
            release: Some(etcd.releaser()),
            catalog: Box::new(etcd.clone()),
            etcd: Some(etcd),
        });
    }
    let catalog = open_store(config)?;
    local_stores(config, catalog)
}

/// A store that cannot be opened, as the server says it: a data directory held by another
/// server gets its own one-line answer.
fn store_error(config: &ServerConfig, error: StoreError) -> ServerError {
    match error {
        StoreError::Locked { .. } => ServerError::DataDirInUse {
            dir: store_label(config),
        },
        error => ServerError::Store {
            dir: store_label(config),
            error,
        },
    }
}

/// `catalog` with the ACL and decision logs in the data directory (memory with `--dev`).
fn local_stores(config: &ServerConfig, catalog: Box<dyn Store>) -> Result<Stores, ServerError> {
    let store_error = |error| store_error(config, error);
    let (acl, decisions): (Box<dyn trellis_store::AclLog>, Box<dyn DecisionLog>) = if config.dev {
        (
            Box::new(trellis_store::MemoryAclLog::default()),
            Box::new(MemoryDecisionLog::default()),
        )
    } else {
        (
            Box::new(trellis_store::RedbAclLog::open(&config.data_dir).map_err(store_error)?),
            Box::new(RedbDecisionLog::open(&config.data_dir).map_err(store_error)?),
        )
    };
    Ok(Stores {
        catalog,
        acl,
        decisions,
        release: None,
        etcd: None,
    })
}

fn store_label(config: &ServerConfig) -> String {
    if config.dev {
        "memory".into()
    } else if config.store == StoreKind::Etcd {
        format!("etcd (prefix {})", config.etcd.prefix)
    } else {
        config.data_dir.display().to_string()
    }
}

/// The etcd store of `[etcd]`: connected, with a lease; the server follows it and campaigns
/// for its lock once it serves.
fn open_etcd(config: &ServerConfig) -> Result<trellis_etcd::EtcdStore, ServerError> {
    let etcd = &config.etcd;
    let options = trellis_etcd::EtcdOptions {
        endpoints: etcd.endpoints.clone(),
        prefix: etcd.prefix.clone(),
        username: etcd.username.clone(),
        password: etcd.password.clone(),
        ca_file: etcd.ca_file.clone(),
        cert_file: etcd.cert_file.clone(),
        key_file: etcd.key_file.clone(),
        max_txn_ops: etcd.max_txn_ops,
        holder: config.node_name.clone(),
        lease_ttl: etcd.lease().map_err(ServerError::Config)?,
        ..trellis_etcd::EtcdOptions::new(Vec::new())
    };
    trellis_etcd::EtcdStore::join(&options).map_err(|error| ServerError::Store {
        dir: store_label(config),
        error,
    })
}

/// The embedded catalog store (memory with `--dev`).
fn open_store(config: &ServerConfig) -> Result<Box<dyn Store>, ServerError> {
    if config.dev {
        return Ok(Box::new(MemoryStore::new()));
    }
    match RedbStore::open(&config.data_dir) {
        Ok(store) => Ok(Box::new(store)),
        Err(StoreError::Locked { .. }) => Err(ServerError::DataDirInUse {
            dir: store_label(config),
        }),
        Err(error) => Err(ServerError::Store {
            dir: store_label(config),
            error,
        }),
    }
}

/// Restores the catalog from the store (a shared store: at a revision the returned feed
/// follows on from); `clock` is the catalog's time origin.
fn restore(
    store: &dyn Store,
    etcd: Option<&trellis_etcd::EtcdStore>,
    config: &ServerConfig,
    clock: Instant,
) -> Result<
    (
        Catalog,
        Option<std::sync::mpsc::Receiver<trellis_etcd::Feed>>,
    ),
    ServerError,
> {
    let store_error = |error| ServerError::Store {
        dir: store_label(config),
        error,
    };
    let (snapshot, feed) = match etcd {
        Some(etcd) => {
            let (snapshot, revision) = etcd.load_at().map_err(store_error)?;
            (snapshot, Some(etcd.follow(revision).map_err(store_error)?))
        }
        None => (store.load().map_err(store_error)?, None),
    };
    let loaded = clock.elapsed();
    // Servers sharing a store see each other's status changes only through it.
    let index = snapshot.index;
    let catalog = writer::restored(snapshot, index, loaded, feed.is_some());
    tracing::info!(
        instances = catalog.instance_count(),
        load_ms = loaded.as_millis() as u64,
        restore_ms = (clock.elapsed() - loaded).as_millis() as u64,
        "catalog restored"
    );
    Ok((catalog, feed))
}

/// Why no address of a `HostPort` could be bound.
enum BindFailure {
    Resolve(io::Error),
    Bind(io::Error),
}

/// Binds the first address `addr` resolves to that can be bound.
async fn bind_any(addr: &HostPort) -> Result<TcpListener, BindFailure> {
    let candidates = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(BindFailure::Resolve)?;
    let mut failure: Option<io::Error> = None;
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            // "Not on this machine" (say, IPv6 off) says less than why another address failed.
            Err(error) if failure.is_none() || error.kind() != io::ErrorKind::AddrNotAvailable => {
                failure = Some(error);
            }
            Err(_) => {}
        }
    }
    Err(BindFailure::Bind(failure.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "resolves to no address")
    })))
}

/// Binds the HTTP API's listener.
async fn bind(addr: &HostPort) -> Result<TcpListener, ServerError> {
    bind_any(addr).await.map_err(|failure| match failure {
        BindFailure::Resolve(error) => ServerError::Resolve {
            addr: addr.to_string(),
            error,
        },
        BindFailure::Bind(error) => ServerError::Bind {
            addr: addr.to_string(),
            error,
        },
    })
}

/// Which OTLP receiver a listener is for: its flag and how its bind failure is reported.
#[derive(Clone, Copy)]
enum OtlpListener {
    Http,
    Grpc,
}

/// Binds an OTLP receiver's listener, if it is on. The default address taken (another
/// server, an OpenTelemetry collector) is a warning and no receiver; an address asked for that
/// cannot be bound is an error.
async fn bind_otlp(
    config: &ServerConfig,
    which: OtlpListener,
) -> Result<Option<TcpListener>, ServerError> {
    let (listen, explicit, flag) = match which {
        OtlpListener::Http => (config.otlp_listen(), config.otlp.is_some(), "--otlp"),
        OtlpListener::Grpc => (
            config.otlp_grpc_listen(),
            config.otlp_grpc.is_some(),
            "--otlp-grpc",
        ),
    };
    let Some(addr) = listen else {
        return Ok(None);
    };
    match bind_any(&addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(BindFailure::Bind(error)) if !explicit && error.kind() == io::ErrorKind::AddrInUse => {
            tracing::warn!(
                "the {} receiver is off: {addr} is already in use (another trellis server, an \
                 OpenTelemetry collector?); choose another address with {flag}, or {flag} off",
                match which {
                    OtlpListener::Http => "OTLP/HTTP",
                    OtlpListener::Grpc => "OTLP/gRPC",
                }
            );
            Ok(None)
        }
        Err(BindFailure::Resolve(error)) => Err(ServerError::Resolve {
            addr: addr.to_string(),
            error,
        }),
        Err(BindFailure::Bind(error)) => {
            let addr = addr.to_string();
            Err(match which {
                OtlpListener::Http => ServerError::OtlpBind { addr, error },
                OtlpListener::Grpc => ServerError::OtlpGrpcBind { addr, error },
            })
        }
    }
}

/// `start` with a given catalog store (the tests' failing one) and the local logs.
#[cfg(test)]
async fn start_with_store(
    config: ServerConfig,
    store: Box<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServerError> {
    let stores = local_stores(&config, store)?;
    start_with_stores(config, stores, shutdown).await
}

/// `start` with the given stores.
async fn start_with_stores(
    config: ServerConfig,
    stores: Stores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServerError> {
    let Stores {
        catalog: store,
        acl: acl_log,
        decisions,
        release,
        etcd,
    } = stores;
    // The certificate files are read before anything is bound.
    let tls = tls::server_config(&config.tls)?;
    let clock = Instant::now();
    let (catalog, feed) = restore(store.as_ref(), etcd.as_ref(), &config, clock)?;
    let cluster = Arc::new(match &etcd {
        Some(etcd) => {
            // Half the lease: a leader that has not renewed for longer may be losing it.
            let limit = config.etcd.lease().map_err(ServerError::Config)? / 2;
            let cluster = Cluster::shared(Arc::new(etcd.clone()), limit, ids::random_uuid());
            let secret = etcd
                .shared_secret(ids::random_uuid())
                .map_err(|error| store_error(&config, error))?;
            cluster.set_secret(secret);
            if let Some(client) = tls::peer_client(&config.tls).map_err(ServerError::Config)? {
                cluster.set_peer_client(client);
            }
            cluster
        }
        None => Cluster::new(Role::Alone),
    });
    let instances_restored = catalog.instance_count();
    let listener = bind(&config.http).await?;
    let local_addr = listener.local_addr().map_err(ServerError::Serve)?;
    let dns = match config.dns_listen() {
        Some(addr) => match dns::bind(&addr).await {
            Ok(bound) => Some(bound),
            // The default address taken (a Consul agent, another server): run without DNS
            // rather than not at all; an address asked for is a hard error.
            Err(dns::BindError::Bind(error))
                if config.dns.is_none() && error.kind() == io::ErrorKind::AddrInUse =>
            {
                tracing::warn!(
                    "DNS is off: {addr} is already in use (another trellis server, a Consul \
                     agent?); choose another address with --dns, or --dns off"
                );
                None
            }
            Err(dns::BindError::Resolve(error)) => {
                let addr = addr.to_string();
                return Err(ServerError::Resolve { addr, error });
            }
            Err(dns::BindError::Bind(error)) => {
                let addr = addr.to_string();
                return Err(ServerError::DnsBind { addr, error });
            }
        },
        None => None,
    };
    let dns_addr = dns.as_ref().map(|bound| bound.local_addr);
    let otlp = bind_otlp(&config, OtlpListener::Http).await?;
    let otlp_addr = otlp
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(ServerError::Serve)?;
    let otlp_grpc = bind_otlp(&config, OtlpListener::Grpc).await?;
    let otlp_grpc_addr = otlp_grpc
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(ServerError::Serve)?;
    let trace_store = traces::new_store(config.trace_store_bytes);
    let active_checks: Vec<Arc<Check>> = catalog
        .checks()
        .filter(|c| c.is_active())
        .cloned()
        .collect();
    let (checks_tx, checks_rx) = mpsc::unbounded_channel();
    let ttl = (cluster.role() != Role::Alone).then(|| {
        let ttl = Arc::new(ttl::TtlDeadlines::new(clock, cluster.clone()));
        for check in catalog.checks() {
            ttl.changed(check.id(), Some(check));
        }
        ttl
    });
    let publisher = Arc::new(Publisher::new(&catalog, checks_tx, ttl.clone()));
    let catalog = Arc::new(SharedCatalog::new(catalog));
    let metrics = Arc::new(Metrics::new());
    let collector = traces::ingest::Collector::new(
        trace_store.clone(),
        config.otlp_inflight_bytes,
        metrics.traces.clone(),
    );
    let node = Node::new(&config.node_name, &config.datacenter, local_addr);
    let keeping = match &etcd {
        // Among servers sharing a store, the CA is the store's: the same roots on every server.
        Some(etcd) => ca::Keeping::shared(
            Box::new(
                etcd.records("ca")
                    .map_err(|error| store_error(&config, error))?,
            ),
            format!("etcd {}ca/records/", config.etcd.prefix),
        ),
        None if config.dev => ca::Keeping::Memory,
        None => ca::Keeping::Dir(config.data_dir.join("ca")),
    };
    let ca = Arc::new(
        ca::Settings::from_config(&config.connect)
            .and_then(|settings| {
                ca::Ca::load_or_create_in(keeping, &settings, std::time::SystemTime::now())
            })
            .map_err(|error| ServerError::Ca(error.to_string()))?,
    );
    let resolve = Arc::new(RegistryResolver {
        publisher: Arc::clone(&publisher),
        catalog: Arc::clone(&catalog),
        node_address: node.address.clone(),
    });
    let coordinator = start_coordinator(&config, decisions, resolve, &metrics, &ca, &cluster)?;
    let (writer, queue) = queue::channel(config.max_queue);
    let (writer_done_tx, writer_done) = oneshot::channel();
    let writer_thread = Writer::new(
        catalog.clone(),
        store,
        queue,
        cluster.clone(),
        publisher.clone(),
        metrics.store.clone(),
        clock,
    );
    std::thread::Builder::new()
        .name("trellis-writer".into())
        .spawn(move || {
            // Dropped unsent if the writer panics, which `serve` also notices.
            let _ = writer_done_tx.send(writer_thread.run());
        })
        .map_err(ServerError::Thread)?;
    if let Some(feed) = feed {
        let handle = writer.clone();
        std::thread::Builder::new()
            .name("trellis-feed".into())
            .spawn(move || handle.feed_from(feed))
            .map_err(ServerError::Thread)?;
    }
    if let Some(etcd) = &etcd {
        let address = SocketAddr::new(
            node.address.parse().unwrap_or(local_addr.ip()),
            local_addr.port(),
        );
        let holder = Holder {
            node: config.node_name.clone(),
            address: address.to_string(),
            tls: tls.is_some(),
        }
        .to_value();
        etcd.announce(cluster.member_id(), holder.clone())
            .map_err(|error| store_error(&config, error))?;
        etcd.campaign(holder);
        // Serve once a leader is known (this server, or whoever the store's lock names), so
        // that a first write is not refused only because the campaign had not finished yet.
        // Bounded: a store it cannot reach still gets a server that answers reads.
        let mut role = cluster.subscribe();
        let known = role.wait_for(|role| *role != Role::Follower { leader: None });
        let _ = tokio::time::timeout(LEADER_AT_START, known).await;
    }
    if let Some(ttl) = ttl {
        let expirer = ttl::Expirer {
            writer: writer.clone(),
            catalog_changed: publisher.catalog_changed(),
            expired: metrics.ttl_expired.clone(),
        };
        tokio::spawn(ttl::run(ttl, expirer));
    }
    let checker = tokio::spawn(checker::run(
        writer.clone(),
        cluster.clone(),
        metrics.probes.clone(),
        active_checks,
        checks_rx,
        config.check_concurrency,
        config.enable_script_checks,
    ));
    let acl = Arc::new(open_acl(&config, acl_log, cluster.role() == Role::Alone)?);
    if cluster.role() != Role::Alone {
        tokio::spawn(acl::follow(
            acl.clone(),
            cluster.clone(),
            config.acl.tokens.initial_management.clone(),
        ));
    }
    let cluster_handle = cluster.clone();
    let state = AppState::new(Parts {
        node,
        catalog,
        publisher,
        writer,
        max_waiters: config.max_waiters,
        metrics,
        scripts_enabled: config.enable_script_checks,
        config: config.clone(),
        coordinator: coordinator.clone(),
        acl,
        ca,
        cluster,
    });
    let leads = cluster_handle.clone();
    tokio::spawn(ca::retire_expired(
        state.ca().clone(),
        state.closing(),
        move || leads.writes(),
    ));
    if cluster_handle.role() != Role::Alone {
        tokio::spawn(ca::follow_shared(
            state.ca().clone(),
            cluster_handle.clone(),
        ));
    }

    let dns_settings = dns::Settings {
        domain: config.dns_domain.clone(),
        ttl: config.dns_ttl.0,
    };
    let dns = dns
        .map(|bound| dns::serve(bound, state.clone(), &dns_settings))
        .transpose()
        .map_err(ServerError::Serve)?;
    let otlp = otlp.map(|listener| {
        let router = traces::receiver::router(collector.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router.into_make_service()).await {
                tracing::error!(%error, "the OTLP receiver stopped");
            }
        })
    });
    // gRPC is HTTP/2 without TLS: axum's server takes it by its connection preface. No Nagle:
    // an answer's headers, message and trailers would otherwise wait on the exporter's delayed
    // ACK (about 25 ms a call on one connection).
    let otlp_grpc = otlp_grpc.map(|listener| {
        let router = traces::grpc::router(collector.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router.into_make_service()).await {
                tracing::error!(%error, "the OTLP/gRPC receiver stopped");
            }
        })
    });
    let serve = tokio::spawn(async move {
        let result = serve(listener, tls, state, trace_store, shutdown, writer_done).await;
        for receiver in [otlp, otlp_grpc].into_iter().flatten() {
            receiver.abort();
        }
        checker.abort();
        coordinator.stop();
        // Closing the state (on shutdown or a writer failure) already stopped DNS from taking
        // queries; make sure it has, whatever ended the HTTP server.
        if let Some(dns) = dns {
            dns.stop().await;
        }
        result
    });
    Ok(Running {
        local_addr,
        dns_addr,
        otlp_addr,
        otlp_grpc_addr,
        instances_restored,
        serve,
        release,
    })
}

/// Opens the decision log, restores the coordinator from it and starts its driver thread.
fn start_coordinator(
    config: &ServerConfig,
    log: Box<dyn DecisionLog>,
    resolve: Arc<RegistryResolver>,
    metrics: &Metrics,
    ca: &ca::Ca,
    cluster: &Arc<Cluster>,
) -> Result<Coordinator, ServerError> {
    let store_error = |error| store_error(config, error);
    let (mut driver, coordinator) = Driver::start(DriverParts {
        log,
        // Participants behind mesh sidecars are reached with the coordinator's own identity.
        participants: Participants::new(resolve).with_mesh(Arc::new(MeshClients::new(Arc::new(
            CaIdentity {
                ca: ca.clone(),
                datacenter: config.datacenter.clone(),
            },
        )))),
        runtime: tokio::runtime::Handle::current(),
        metrics: metrics.coordinator.clone(),
        config: trellis_coordinator::Config::default(),
    })
    .map_err(store_error)?;
    let (cluster, runtime) = (Arc::clone(cluster), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("trellis-coordinator".into())
        .spawn(move || {
            // Only the server that writes the shared store drives transactions; a follower's
            // driver waits, and reads the log again when it takes over.
            if !cluster.writes() {
                runtime.block_on(cluster.until_writing());
                if let Err(error) = driver.reload() {
                    tracing::error!(%error, "the transaction coordinator cannot read its log");
                    return;
                }
            }
            if let Err(error) = driver.run() {
                tracing::error!(%error, "the transaction coordinator stopped");
            }
        })
        .map_err(ServerError::Thread)?;
    Ok(coordinator)
}

/// The ACL state from its log; `bootstrap`: bootstrap it with the configured initial
/// management token now (a server sharing a store does it once it leads, see `acl::follow`).
fn open_acl(
    config: &ServerConfig,
    log: Box<dyn trellis_store::AclLog>,
    bootstrap: bool,
) -> Result<acl::Acl, ServerError> {
    let default_policy = match config.acl.default_policy {
        AclDefaultPolicy::Allow => trellis_acl::DefaultPolicy::Allow,
        AclDefaultPolicy::Deny => trellis_acl::DefaultPolicy::Deny,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    acl::Acl::open(
        log,
        default_policy,
        &config.datacenter,
        config
            .acl
            .tokens
            .initial_management
            .as_deref()
            .filter(|_| bootstrap),
        now_ms,
    )
    .map_err(|error| ServerError::Acl(error.to_string()))
}

/// Serves HTTP (HTTPS with `tls`) until `shutdown` resolves or the writer stops for good, then
/// drains.
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    trace_store: traces::TraceStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
    writer_done: oneshot::Receiver<Result<(), WriterFailed>>,
) -> Result<(), ServerError> {
    // Jaeger's query API answers on the same port as the registry's.
    // The trace queries on the HTTP API's port: Jaeger's and Trellis's dependency graph.
    let trace_queries =
        traces::jaeger::router(trace_store.clone()).merge(traces::graph::router(trace_store));
    let extra = trace_queries.merge(dashboard::router(state.config().ui_dir.clone()));
    let router = api::router(state.clone(), extra);
    let (failed_tx, mut failed) = oneshot::channel();
    let stop = async move {
        tokio::pin!(shutdown);
        // A signal or `/v1/agent/leave`, whichever comes first.
        let leave = state.clone();
        let shutdown = async move {
            tokio::select! {
                () = &mut shutdown => {}
                () = leave.left() => tracing::info!("leaving: /v1/agent/leave was called"),
            }
        };
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            outcome = writer_done => {
                let error = match outcome {
                    Err(_) => ServerError::WriterPanicked,
                    Ok(Err(failed)) => ServerError::Writer(failed),
                    // The writer ends cleanly only once every queue handle is gone, and the
                    // state holds one: keep serving.
                    Ok(Ok(())) => {
                        shutdown.await;
                        state.close();
                        return;
                    }
                };
                // Answering 503 forever helps nobody: stop, and let the caller report why.
                tracing::warn!("the writer stopped; shutting the HTTP server down");
                let _ = failed_tx.send(error);
            }
        }
        // Release blocking queries and watch streams so the drain finishes promptly.
        state.close();
    };
    // into_make_service: axum 0.8 would otherwise rebuild the route table per connection.
    // HTTPS goes through the same server, given connections whose handshake is done, so
    // graceful shutdown drains both alike and plain HTTP keeps its path untouched.
    let served = match tls {
        None => axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(stop)
            .await
            .map_err(ServerError::Serve),
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config).map_err(ServerError::Serve)?;
            axum::serve(listener, router.into_make_service())
                .with_graceful_shutdown(stop)
                .await
                .map_err(ServerError::Serve)
        }
    };
    match failed.try_recv() {
        Ok(error) => Err(error),
        Err(_) => served,
    }
}

#[cfg(test)]
mod tests;
