//! TLS for the HTTP API: `trellis server --tls-cert --tls-key` serves HTTPS (TLS 1.2 and 1.3,
//! h2 and http/1.1 by ALPN) and announces `https://`; clients (the CLI, the Rust SDK, sidecars)
//! trust it through `--ca-file` or the environment; plain HTTP and untrusted certificates fail
//! with errors that say why; `--tls-client-ca` refuses clients without a certificate from that
//! CA; shutdown still drains requests in flight. Certificates are made by rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use support::{Proc, eventually};
use trellis_client::{Blocking, Client, ClientOptions, TlsOptions};

/// A certificate authority: its certificate and key, able to sign more.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, as PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of the tests: the server's CA and a certificate it signed for `registry.test` and
/// 127.0.0.1; a CA for clients and a client certificate it signed; another CA (trusted by
/// nobody) with a server and a client certificate of its own.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = Authority::new("trellis test server CA");
        let clients = Authority::new("trellis test client CA");
        let other = Authority::new("somebody else's CA");
        let (server_cert, server_key) = ca.issue(&["registry.test", "127.0.0.1"]);
        let (client_cert, client_key) = clients.issue(&["web-client"]);
        let (other_client_cert, other_client_key) = other.issue(&["web-client"]);
        Pki {
            ca: write("ca.pem", &ca.cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_ca: write("client-ca.pem", &clients.cert.pem()),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.cert.pem()),
            other_client_cert: write("other-client.pem", &other_client_cert),
            other_client_key: write("other-client.key", &other_client_key),
            _dir: dir,
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `trellis server --dev` serving HTTPS with the PKI's server certificate, `extra` flags
/// after; answers the process and its announced `https://ADDR`.
fn tls_server(pki: &Pki, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "server",
        "--dev",
        "--http",
        "127.0.0.1:0",
        "--dns",
        "off",
        "--otlp",
        "off",
        "--otlp-grpc",
        "off",
        "--tls-cert",
        path(&pki.server_cert),
        "--tls-key",
        path(&pki.server_key),
    ];
    args.extend_from_slice(extra);
    let server = Proc::start(&args, 1, None);
    let url = server.addr("API");
    assert!(url.starts_with("https://127.0.0.1:"), "announced {url}");
    (server, url)
}

/// The environment variables the clients read, removed so the tests' own environment cannot
/// change what they see.
const CLIENT_ENV: &[&str] = &[
    "TRELLIS_HTTP_ADDR",
    "CONSUL_HTTP_ADDR",
    "TRELLIS_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN",
    "TRELLIS_CACERT",
    "CONSUL_CACERT",
    "TRELLIS_CLIENT_CERT",
    "CONSUL_CLIENT_CERT",
    "TRELLIS_CLIENT_KEY",
    "CONSUL_CLIENT_KEY",
    "TRELLIS_TLS_SERVER_NAME",
    "CONSUL_TLS_SERVER_NAME",
];

/// Runs `trellis ARGS` with only `env` of the client variables set.
fn trellis(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trellis"));
    command.args(args).env("TRELLIS_LOG", "warn");
    for name in CLIENT_ENV {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run trellis")
}

/// `trellis services --addr URL FLAGS`: its stdout on success, its stderr on failure.
fn services(url: &str, flags: &[&str], env: &[(&str, &Path)]) -> Result<String, String> {
    let mut args = vec!["services", "--addr", url];
    args.extend_from_slice(flags);
    let output = trellis(&args, env);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(text(&output.stderr))
    }
}

fn sdk(url: &str, tls: TlsOptions) -> Client {
    Client::with_options(url, &ClientOptions { token: None, tls }).unwrap()
}

fn trusting(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca_file: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    }
}

async fn register(client: &Client, name: &str) {
    let registration = trellis_types::ServiceRegistration::from_json(
        serde_json::json!({"Name": name, "ID": format!("{name}-1"), "Port": 8080}),
    )
    .unwrap();
    client.register(&registration).await.unwrap();
}

/// A GET over HTTP/2 with TLS 1.2 only, trusting `ca` and verifying the server as
/// `registry.test`: the status, after checking ALPN chose h2 and TLS 1.2 was spoken.
async fn h2_tls12_get(addr: &str, ca: &Path, path: &str) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("registry.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("a TLS 1.2 handshake");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("an h2 connection");
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://registry.test{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("an h2 answer");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn https_works_for_the_cli_the_sdk_and_h2_with_the_ca_trusted() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &[]);
    let client = sdk(&url, trusting(&pki.ca));
    assert_eq!(client.base_url(), url);
    register(&client, "billing").await;
    let found = client.services().await.unwrap();
    assert!(found.value.contains_key("billing"), "{:?}", found.value);

    let cli = tokio::task::spawn_blocking({
        let url = url.clone();
        let ca = pki.ca.clone();
        move || services(&url, &["--ca-file", path(&ca)], &[])
    });
    let listed = cli.await.unwrap().expect("trellis services over HTTPS");
    assert!(listed.contains("billing"), "{listed}");

    // The certificate names registry.test and 127.0.0.1: verifying as a name it carries works.
    let named = sdk(
        &url,
        TlsOptions {
            server_name: Some("registry.test".into()),
            ..trusting(&pki.ca)
        },
    );
    assert_eq!(named.agent_services().await.unwrap().len(), 1);

    let addr = url.strip_prefix("https://").unwrap();
    assert_eq!(
        h2_tls12_get(addr, &pki.ca, "/v1/catalog/services").await,
        200
    );
}

#[tokio::test]
async fn plain_http_to_the_https_port_is_answered_400_saying_why() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &[]);
    let plain = url.replacen("https://", "http://", 1);
    let response = support::http()
        .get(format!("{plain}/v1/agent/self"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    let error = sdk(&plain, TlsOptions::default())
        .services()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("answered 400: Client sent an HTTP request to an HTTPS server."),
        "{error}"
    );
    // The server goes on serving HTTPS.
    let client = sdk(&url, trusting(&pki.ca));
    assert!(client.services().await.is_ok());
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_saying_what_to_do() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &[]);
    // No CA given: the system's trust store, which does not know the test CA.
    let error = services(&url, &[], &[]).unwrap_err();
    assert!(
        error.contains("TLS failed: invalid peer certificate"),
        "{error}"
    );
    assert!(
        error.contains("not signed by a CA this client trusts; give its CA with --ca-file"),
        "{error}"
    );
    assert!(
        !error.contains("no registry at"),
        "not 'unreachable': {error}"
    );
    let error = services(&url, &["--ca-file", path(&pki.other_ca)], &[]).unwrap_err();
    assert!(
        error.contains("not signed by a CA this client trusts"),
        "{error}"
    );
    // Trusted, but verified as a name the certificate does not carry.
    let error = services(
        &url,
        &[
            "--ca-file",
            path(&pki.ca),
            "--tls-server-name",
            "elsewhere.test",
        ],
        &[],
    )
    .unwrap_err();
    assert!(error.contains("not for this host"), "{error}");
    // A CA file that is not one: a clear error before any request.
    let error = services(&url, &["--ca-file", path(&pki.server_key)], &[]).unwrap_err();
    assert!(
        error.contains("invalid TLS settings: CA file") && error.contains("no certificate in it"),
        "{error}"
    );
    // A plain HTTP client at the HTTPS port: told to use https://.
    let plain_url = url.replacen("https://", "http://", 1);
    let error = services(&plain_url, &[], &[]).unwrap_err();
    assert!(
        error.contains(&format!("serves HTTPS: use {url} (--addr")),
        "{error}"
    );
    // An HTTPS client at a plain HTTP server.
    let plain = Proc::start(
        &[
            "server",
            "--dev",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "off",
            "--otlp",
            "off",
            "--otlp-grpc",
            "off",
        ],
        1,
        None,
    );
    let https = format!("https://{}", plain.addr("API"));
    let error = services(&https, &["--ca-file", path(&pki.ca)], &[]).unwrap_err();
    assert!(error.contains("does not speak TLS there"), "{error}");
}

#[test]
fn the_environment_names_the_ca_trellis_variables_first() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &[]);
    assert!(services(&url, &[], &[("CONSUL_CACERT", &pki.ca)]).is_ok());
    assert!(services(&url, &[], &[("TRELLIS_CACERT", &pki.ca)]).is_ok());
    let trellis_first = [
        ("TRELLIS_CACERT", pki.other_ca.as_path()),
        ("CONSUL_CACERT", pki.ca.as_path()),
    ];
    let error = services(&url, &[], &trellis_first).unwrap_err();
    assert!(
        error.contains("not signed by a CA this client trusts"),
        "{error}"
    );
    // A flag wins over the environment.
    assert!(services(&url, &["--ca-file", path(&pki.ca)], &trellis_first).is_ok());
    let name = [
        ("TRELLIS_CACERT", pki.ca.as_path()),
        ("CONSUL_TLS_SERVER_NAME", Path::new("elsewhere.test")),
    ];
    let error = services(&url, &[], &name).unwrap_err();
    assert!(error.contains("not for this host"), "{error}");
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &["--tls-client-ca", path(&pki.client_ca)]);
    let ca = pki.ca.clone();
    let without = sdk(&url, trusting(&ca)).services().await.unwrap_err();
    assert!(without.is_tls(), "{without}");
    let text = without.to_string();
    assert!(
        text.contains("the server refused this client's certificate or its absence"),
        "{text}"
    );
    let with = |cert: &Path, key: &Path| TlsOptions {
        client_cert: Some(cert.to_path_buf()),
        client_key: Some(key.to_path_buf()),
        ..trusting(&ca)
    };
    let client = sdk(&url, with(&pki.client_cert, &pki.client_key));
    register(&client, "ledger").await;
    assert!(
        client
            .services()
            .await
            .unwrap()
            .value
            .contains_key("ledger")
    );
    let stranger = sdk(&url, with(&pki.other_client_cert, &pki.other_client_key));
    let refused = stranger.services().await.unwrap_err();
    assert!(refused.is_tls(), "{refused}");
    // A certificate with somebody else's key is refused by the client itself, up front.
    let mismatched = Client::with_options(
        &url,
        &ClientOptions {
            token: None,
            tls: with(&pki.client_cert, &pki.other_client_key),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        mismatched.contains("the private key does not match the certificate"),
        "{mismatched}"
    );

    // The CLI: the flags, and Consul's variables.
    let (cert, key) = (pki.client_cert.clone(), pki.client_key.clone());
    let cli = tokio::task::spawn_blocking(move || {
        let flags = [
            "--ca-file",
            path(&ca),
            "--client-cert",
            path(&cert),
            "--client-key",
            path(&key),
        ];
        let by_flags = services(&url, &flags, &[]);
        let env = [
            ("CONSUL_CACERT", ca.as_path()),
            ("CONSUL_CLIENT_CERT", cert.as_path()),
            ("CONSUL_CLIENT_KEY", key.as_path()),
        ];
        let by_env = services(&url, &[], &env);
        let without = services(&url, &["--ca-file", path(&ca)], &[]);
        (by_flags, by_env, without)
    });
    let (by_flags, by_env, without) = cli.await.unwrap();
    assert!(by_flags.unwrap().contains("ledger"));
    assert!(by_env.unwrap().contains("ledger"));
    let error = without.unwrap_err();
    assert!(error.contains("--client-cert and --client-key"), "{error}");
}

#[tokio::test]
async fn a_sidecar_registers_and_deregisters_through_https() {
    let pki = Pki::new();
    let (_server, url) = tls_server(&pki, &["--tls-client-ca", path(&pki.client_ca)]);
    // The app: a listener the sidecar's TCP check can connect to.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app.local_addr().unwrap().port();
    let sidecar = support::sidecar(
        &url,
        "inventory",
        app_port,
        &[
            "--ca-file",
            path(&pki.ca),
            "--client-cert",
            path(&pki.client_cert),
            "--client-key",
            path(&pki.client_key),
            "--otlp-endpoint",
            "off",
        ],
        None,
    );
    let client = sdk(
        &url,
        TlsOptions {
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
            ..trusting(&pki.ca)
        },
    );
    let passing = |client: Client| async move {
        client
            .health_service("inventory", true, None)
            .await
            .map(|found| found.value.len())
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(10),
        "the sidecar's instance passing",
        || {
            let client = client.clone();
            async move { passing(client).await == 1 }
        },
    )
    .await;
    sidecar.signal("-TERM");
    eventually(Duration::from_secs(10), "the instance deregistered", || {
        let client = client.clone();
        async move {
            client
                .health_service("inventory", false, None)
                .await
                .is_ok_and(|found| found.value.is_empty())
        }
    })
    .await;
}

#[test]
fn a_sidecar_with_an_unusable_ca_file_stops_at_start_saying_why() {
    let pki = Pki::new();
    let output = trellis(
        &[
            "sidecar",
            "--registry",
            "https://127.0.0.1:1",
            "--service",
            "web",
            "--app",
            "127.0.0.1:1",
            "--ca-file",
            path(&pki.server_key),
        ],
        &[],
    );
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no certificate in it"), "{error}");
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_over_https() {
    let pki = Pki::new();
    let (mut server, url) = tls_server(&pki, &[]);
    let client = sdk(&url, trusting(&pki.ca));
    let index = client.services().await.unwrap().index;
    let blocked = tokio::spawn({
        let client = client.clone();
        async move {
            let blocking = Blocking {
                index,
                wait: Some(Duration::from_secs(60)),
            };
            client
                .health_service("nothing", false, Some(blocking))
                .await
        }
    });
    // Wait until the blocking query is held on the server.
    let pem = std::fs::read(&pki.ca).unwrap();
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    eventually(Duration::from_secs(10), "the blocking query held", || {
        let request = metrics.get(format!("{url}/metrics"));
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            text.lines().any(|l| l == "trellis_watchers 1")
        }
    })
    .await;
    server.signal("-TERM");
    let answer = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("released by the shutdown")
        .unwrap();
    assert!(answer.expect("answered, not cut").value.is_empty());
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let gone = client.services().await.unwrap_err();
    assert!(gone.is_unreachable(), "{gone}");
}
