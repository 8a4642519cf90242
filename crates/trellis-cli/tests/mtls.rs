//! Mutual TLS between sidecars (`--mtls`) with the registry's CA, as real processes: the
//! caller's identity reaches the app, plaintext and foreign certificates are refused,
//! intentions allow and deny live, and leaves renew under load without a failed request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::{Proc, http};
use trellis_proxy::body::{Body, full};
use trellis_proxy::hyper::{Request, Response};
use trellis_proxy::server::{ShutdownTrigger, serve, shutdown_pair};

fn registry(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["server", "--dev", "--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, 1, None);
    let url = format!("http://{}", p.addrs[0].1);
    (p, url)
}

/// An app answering with the peer headers its sidecar gave it: `<peer>|<peer uri>`.
async fn echo_app() -> (u16, ShutdownTrigger) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, shutdown) = shutdown_pair();
    tokio::spawn(serve(
        listener,
        |request: Request<Body>| async move {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let body = format!(
                "{}|{}",
                header("x-trellis-peer"),
                header("x-trellis-peer-uri")
            );
            Response::new(full(body))
        },
        shutdown,
        Duration::from_secs(1),
    ));
    (port, stop)
}

fn mesh_sidecar(registry: &str, service: &str, app_port: u16, extra: &[&str]) -> Proc {
    let mut args = vec!["--mtls"];
    args.extend_from_slice(extra);
    support::sidecar(registry, service, app_port, &args, Some("info"))
}

/// Calls `service` through the sidecar whose outbound listener is `outbound`.
async fn call(outbound: &str, service: &str) -> (u16, String, String) {
    let r = http()
        .get(format!("http://{outbound}/"))
        .header("host", service)
        // Never trusted from the outside: the inbound sidecar replaces it.
        .header("x-trellis-peer", "admin")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let error = r
        .headers()
        .get("x-trellis-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, error, r.text().await.unwrap())
}

async fn trust_domain(registry: &str) -> String {
    let roots: serde_json::Value = http()
        .get(format!("{registry}/v1/connect/ca/roots"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    roots["TrustDomain"].as_str().unwrap().to_owned()
}

/// `users` (an echo app behind a mesh sidecar) and its caller `web` (another, whose outbound
/// listener the tests call through), `users` reachable through `web`.
struct Pair {
    users: Proc,
    web: Proc,
    outbound: String,
    _apps: [ShutdownTrigger; 2],
}

async fn users_and_web(registry: &str, web_extra: &[&str]) -> Pair {
    let (users_port, users_app) = echo_app().await;
    let (web_port, web_app) = echo_app().await;
    let users = mesh_sidecar(registry, "users", users_port, &[]);
    let web = mesh_sidecar(registry, "web", web_port, web_extra);
    let outbound = web.addr("outbound");
    support::eventually(Duration::from_secs(20), "users reachable", || {
        let outbound = outbound.clone();
        async move { call(&outbound, "users").await.0 == 200 }
    })
    .await;
    Pair {
        users,
        web,
        outbound,
        _apps: [users_app, web_app],
    }
}

/// Calls `users` through an outbound listener again and again, counting answers, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(outbound: &str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let task = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let outbound = outbound.to_owned();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match call(&outbound, "users").await {
                        (200, _, _) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Load {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Stops; answers (successful, failed) calls.
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A certificate and key (PEM, concatenated) for `service` from the registry's CA.
async fn mesh_identity(registry: &str, service: &str) -> reqwest::Identity {
    let leaf: serde_json::Value = http()
        .get(format!("{registry}/v1/agent/connect/ca/leaf/{service}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pem = format!(
        "{}{}",
        leaf["CertPEM"].as_str().unwrap(),
        leaf["PrivateKeyPEM"].as_str().unwrap()
    );
    reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
}

/// A TLS client presenting `identity` that accepts any server (what is tested is the
/// server's check of the client).
fn tls_client(identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_calls_carry_the_verified_identity_and_anything_else_is_refused() {
    let (_server, url) = registry(&[]);
    let pair = users_and_web(&url, &[]).await;
    let td = trust_domain(&url).await;

    // Through the mesh: the app sees the caller's identity, not what the caller claimed.
    let outbound = &pair.outbound;
    let answer = call(outbound, "users").await;
    assert_eq!(
        answer.2,
        format!("web|spiffe://{td}/ns/default/dc/dc1/svc/web")
    );

    // Plaintext to the mTLS inbound: refused, saying why.
    let inbound = pair.users.addr("inbound");
    let r = http()
        .get(format!("http://{inbound}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-trellis-error"], "mtls required");

    // TLS without a client certificate: refused.
    let refused = tls_client(None)
        .get(format!("https://{inbound}/"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A certificate naming a mesh service, from another CA: refused.
    let foreign = foreign_identity(&td, "web");
    let refused = tls_client(Some(foreign))
        .get(format!("https://{inbound}/"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A certificate from the mesh CA: let in, with its identity.
    let identity = mesh_identity(&url, "billing").await;
    let r = tls_client(Some(identity))
        .get(format!("https://{inbound}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!("billing|spiffe://{td}/ns/default/dc/dc1/svc/billing")
    );

    // The instance is registered as taking only mutual TLS.
    let instances: serde_json::Value = http()
        .get(format!("{url}/v1/catalog/service/users"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(instances[0]["ServiceMeta"]["trellis-mtls"], "true");
}

/// A leaf for `service` in trust domain `td`, signed by a CA the mesh does not know.
fn foreign_identity(td: &str, service: &str) -> reqwest::Identity {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{td}/ns/default/dc/dc1/svc/{service}")
            .try_into()
            .unwrap(),
    )];
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let pem = format!("{}{}", leaf.pem(), key.serialize_pem());
    reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
}

async fn put_intention(registry: &str, source: &str, destination: &str, action: &str) {
    let r = http()
        .put(format!(
            "{registry}/v1/connect/intentions/exact?source={source}&destination={destination}"
        ))
        .json(&serde_json::json!({"SourceType": "consul", "Action": action}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intentions_deny_and_allow_live() {
    let (_server, url) = registry(&[]);
    let pair = users_and_web(&url, &[]).await;
    let outbound = pair.outbound.clone();

    put_intention(&url, "web", "users", "deny").await;
    support::eventually(Duration::from_secs(10), "web denied", || {
        let outbound = outbound.clone();
        async move {
            let (status, error, _) = call(&outbound, "users").await;
            status == 403 && error == "intention denied"
        }
    })
    .await;

    // A wildcard allow does not beat the exact deny.
    put_intention(&url, "*", "users", "allow").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&outbound, "users").await.0, 403);

    put_intention(&url, "web", "users", "allow").await;
    support::eventually(Duration::from_secs(10), "web allowed again", || {
        let outbound = outbound.clone();
        async move { call(&outbound, "users").await.0 == 200 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_renew_under_continuous_load_without_a_failed_request() {
    // The shortest leaf lifetime the registry issues: renewed after about 42 s.
    let (_server, url) = registry(&["--leaf-cert-ttl", "1m"]);
    // Idle upstream connections close at once, so the load keeps making new handshakes.
    let pair = users_and_web(&url, &["--pool-idle-timeout", "50ms"]).await;
    let load = Load::start(&pair.outbound, Duration::from_millis(20));
    let renewed = |p: &Proc| p.log().contains("mesh certificate renewed");
    support::eventually(Duration::from_secs(70), "both leaves renewed", || {
        let done = renewed(&pair.users) && renewed(&pair.web);
        async move { done }
    })
    .await;
    // Keep the load on across the new leaves for a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0);
    assert!(ok > 100, "{ok}");
}

fn gateway(registry: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "gateway",
        "--registry",
        registry,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--route",
        "/users=users",
        "--workers",
        "1",
    ];
    args.extend_from_slice(extra);
    Proc::start(&args, 2, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_speaks_mutual_tls_to_mesh_sidecars() {
    let (_server, url) = registry(&[]);
    let (users_port, _users_app) = echo_app().await;
    let _users = mesh_sidecar(&url, "users", users_port, &[]);
    let td = trust_domain(&url).await;
    let meshed = gateway(&url, &["--mtls", "--identity", "edge"]);
    let plain = gateway(&url, &[]);

    let get = |gw: &Proc| {
        let url = format!("http://{}/users/", gw.addr("gateway"));
        async move {
            let r = http().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    support::eventually(Duration::from_secs(20), "users through the gateway", || {
        get(&meshed).map(|(status, _)| status == 200)
    })
    .await;
    assert_eq!(
        get(&meshed).await.1,
        format!("edge|spiffe://{td}/ns/default/dc/dc1/svc/edge")
    );
    // A gateway without a mesh identity cannot reach an mTLS-only instance.
    assert_eq!(get(&plain).await.0, 502);

    // Intentions apply to the gateway's identity like any other caller's.
    put_intention(&url, "edge", "users", "deny").await;
    support::eventually(Duration::from_secs(10), "edge denied", || {
        get(&meshed).map(|(status, _)| status == 403)
    })
    .await;
}

/// A two-phase-commit participant recording each phase and who called it.
async fn participant_app() -> (
    u16,
    Arc<std::sync::Mutex<Vec<(String, String)>>>,
    ShutdownTrigger,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop, shutdown) = shutdown_pair();
    let seen = calls.clone();
    tokio::spawn(serve(
        listener,
        move |request: Request<Body>| {
            let peer = request
                .headers()
                .get("x-trellis-peer")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((request.uri().path().to_owned(), peer));
            async move { Response::new(full("{}")) }
        },
        shutdown,
        Duration::from_secs(1),
    ));
    (port, calls, stop)
}

async fn submit(registry: &str, gid: &str) -> serde_json::Value {
    http()
        .post(format!("{registry}/v1/trellis/txn"))
        .json(&serde_json::json!({
            "gid": gid,
            "branches": [{"branch_id": "take", "service": "stock", "payload": {}}],
            "commit": true
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_reaches_mesh_participants_with_its_own_identity() {
    let (_server, url) = registry(&[]);
    let (port, calls, _app) = participant_app().await;
    let _stock = mesh_sidecar(&url, "stock", port, &[]);
    support::eventually(Duration::from_secs(20), "stock passing", || {
        let url = format!("{url}/v1/health/service/stock?passing");
        async move {
            let list: serde_json::Value =
                http().get(url).send().await.unwrap().json().await.unwrap();
            list.as_array().is_some_and(|a| a.len() == 1)
        }
    })
    .await;

    let txn = submit(&url, "mesh-1").await;
    assert_eq!(txn["state"], "committed", "{txn}");
    let seen = calls.lock().unwrap().clone();
    let coordinator = "trellis-coordinator".to_owned();
    assert_eq!(
        seen,
        [
            ("/prepare".to_owned(), coordinator.clone()),
            ("/commit".to_owned(), coordinator)
        ]
    );

    // Denied by an intention, the participant never sees the prepare: the vote is no, and
    // the abort waits until the coordinator may reach the participant again.
    put_intention(&url, "trellis-coordinator", "stock", "deny").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let txn = submit(&url, "mesh-2").await;
    assert!(
        txn["cause"]["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("answered 403: intention denied")),
        "{txn}"
    );
    assert_eq!(calls.lock().unwrap().len(), 2);
    put_intention(&url, "trellis-coordinator", "stock", "allow").await;
    support::eventually(Duration::from_secs(30), "the abort delivered", || {
        let url = format!("{url}/v1/trellis/txn/mesh-2");
        async move {
            let txn: serde_json::Value =
                http().get(url).send().await.unwrap().json().await.unwrap();
            txn["state"] == "aborted"
        }
    })
    .await;
    assert_eq!(
        calls.lock().unwrap()[2],
        ("/abort".to_owned(), "trellis-coordinator".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_trailers_crosses_the_mesh_over_http2_and_mutual_tls() {
    let (_server, url) = registry(&[]);
    let (grpc_port, _grpc_app) = support::grpc_echo_app().await;
    let _greeter = mesh_sidecar(&url, "greeter", grpc_port, &[]);
    let (caller_port, _caller_app) = echo_app().await;
    let caller = mesh_sidecar(&url, "caller", caller_port, &[]);
    let (body, trailers) = support::grpc_call(&caller.addr("outbound"), "greeter").await;
    assert_eq!(body.as_ref(), b"\0\0\0\0\x02hi");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "h2=true peer=caller");
}

/// An operator CA: its certificate (PEM), and the rcgen pieces to sign leaves with.
fn operator_ca() -> (String, rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "Operator Mesh CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert, key)
}

/// A leaf for `service` signed by `ca`, valid from `from` to `to` seconds relative to now.
fn leaf_signed_by(
    ca: &(String, rcgen::Certificate, rcgen::KeyPair),
    td: &str,
    service: &str,
    from: i64,
    to: i64,
) -> reqwest::Identity {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
    let now = time::OffsetDateTime::now_utc();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{td}/ns/default/dc/dc1/svc/{service}")
            .try_into()
            .unwrap(),
    )];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now + time::Duration::seconds(from);
    params.not_after = now + time::Duration::seconds(to);
    let cert = params.signed_by(&key, &ca.1, &ca.2).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_mesh_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = operator_ca();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    std::fs::write(&cert, &ca.0).unwrap();
    std::fs::write(&key, ca.2.serialize_pem()).unwrap();
    let (_server, url) = registry(&[
        "--ca-cert",
        cert.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
    ]);
    let (users_port, _users_app) = echo_app().await;
    let users = mesh_sidecar(&url, "users", users_port, &[]);
    let inbound = users.addr("inbound");
    let td = trust_domain(&url).await;

    let current = leaf_signed_by(&ca, &td, "web", -3600, 3600);
    let r = tls_client(Some(current))
        .get(format!("https://{inbound}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("web|"));

    let expired = leaf_signed_by(&ca, &td, "web", -7200, -3600);
    let refused = tls_client(Some(expired))
        .get(format!("https://{inbound}/"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    support::eventually(Duration::from_secs(5), "the refusal logged", || {
        let logged = users.log().lines().any(|l| {
            l.contains("mutual TLS handshake refused") && l.contains("certificate expired")
        });
        async move { logged }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_continuous_load_fails_no_request() {
    let (_server, url) = registry(&[]);
    // Idle upstream connections close at once, so the load keeps making new handshakes.
    let pair = users_and_web(&url, &["--pool-idle-timeout", "50ms"]).await;
    let roots = |url: String| async move {
        let roots: serde_json::Value = http()
            .get(format!("{url}/v1/connect/ca/roots"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        roots
    };
    let before = roots(url.clone()).await["ActiveRootID"].clone();

    let load = Load::start(&pair.outbound, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A new root, made by the server: the old one stays trusted for the leaves it signed.
    let r = http()
        .put(format!("{url}/v1/connect/ca/configuration"))
        .json(&serde_json::json!({"Provider": "consul", "Config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let after = roots(url.clone()).await;
    assert_ne!(after["ActiveRootID"], before);
    assert_eq!(after["Roots"].as_array().unwrap().len(), 2, "{after}");

    let rotated = |p: &Proc| p.log().contains("rotated=true");
    support::eventually(
        Duration::from_secs(20),
        "both sidecars took a new leaf",
        || {
            let done = rotated(&pair.users) && rotated(&pair.web);
            async move { done }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0);
    assert!(ok > 50, "{ok}");
}
