//! HTTPS and gRPC health checks against real servers the tests start: an HTTPS server (hyper
//! and rustls, certificates made by rcgen) and the reference gRPC health server (Python's
//! `grpcio-health-checking`, installed into a virtualenv under the cargo target directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Server, http};

/// A certificate and its key.
struct Issued {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

/// A CA and a certificate it issued for `internal.test` (the name checks give as
/// `TLSServerName`), and a self-signed certificate for `127.0.0.1` nobody trusts.
struct Pki {
    ca_pem: String,
    trusted_leaf: Issued,
    untrusted_self_signed: Issued,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trellis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issued = |cert: rcgen::Certificate, key: KeyPair| Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    };
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["internal.test".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let own_key = KeyPair::generate().unwrap();
    let own = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .self_signed(&own_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        trusted_leaf: issued(leaf, leaf_key),
        untrusted_self_signed: issued(own, own_key),
    }
}

/// What the HTTPS server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    sni: Option<String>,
    host: Option<String>,
    user_agent: Option<String>,
}

/// An HTTPS server: `/health` answers 200; `/strict` answers 200 only to a `POST` with
/// `X-Token: secret` and the body `ping`, else 400 saying what was wrong.
async fn https_server(identity: &Issued, seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![identity.cert_der.clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate aborts the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let sni = sni.clone();
                    async move {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let (method, path) =
                            (request.method().clone(), request.uri().path().to_owned());
                        let (token, host, user_agent) =
                            (header("x-token"), header("host"), header("user-agent"));
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(Seen {
                            path: path.clone(),
                            sni,
                            host,
                            user_agent,
                        });
                        let (status, text) = match path.as_str() {
                            "/health" => (200, "ok".to_owned()),
                            "/strict"
                                if method == "POST"
                                    && token.as_deref() == Some("secret")
                                    && body == "ping" =>
                            {
                                (200, "strict ok".to_owned())
                            }
                            _ => (
                                400,
                                format!("wrong request: {method} {path} {token:?} {body:?}"),
                            ),
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// `trellis server --dev` trusting `ca_file` only (as `SSL_CERT_FILE` makes any OpenSSL-style
/// client do).
fn start_trellis(ca_file: &Path) -> Server {
    Server::start_with(&["--dev"], |command| {
        command
            .env("SSL_CERT_FILE", ca_file)
            .env_remove("SSL_CERT_DIR");
    })
}

async fn register_check(c: &reqwest::Client, t: &Server, check: Value) {
    let r = c
        .put(format!("{}/v1/agent/check/register", t.url))
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{check}: {}", r.text().await.unwrap());
}

/// Waits until check `id` has `status` and an output containing `output`.
async fn expect_check(c: &reqwest::Client, t: &Server, id: &str, status: &str, output: &str) {
    let url = format!("{}/v1/agent/checks", t.url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checks: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        let check = &checks[id];
        if check["Status"] == status && check["Output"].as_str().is_some_and(|o| o.contains(output))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "check {id} is not {status} with output containing {output:?}: {check}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A check definition probed every 200 ms: `kind` (`HTTP` or `GRPC`) is `target`, `extra`
/// adds fields.
fn check(kind: &str, id: &str, target: String, extra: Value) -> Value {
    let mut check = json!({"ID": id, "Name": id, "Interval": "200ms", "Timeout": "2s"});
    let fields = check.as_object_mut().unwrap();
    fields.insert(kind.to_owned(), Value::String(target));
    fields.extend(extra.as_object().unwrap().clone());
    check
}

fn http_check(id: &str, url: String, extra: Value) -> Value {
    check("HTTP", id, url, extra)
}

#[tokio::test]
async fn https_checks_verify_skip_verify_and_use_the_server_name() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let untrusted = https_server(&pki.untrusted_self_signed, seen.clone()).await;
    let trusted = https_server(&pki.trusted_leaf, seen.clone()).await;
    let t = start_trellis(&ca_file);
    let c = http();

    // A self-signed certificate: accepted with TLSSkipVerify, refused without.
    register_check(
        &c,
        &t,
        http_check(
            "skip",
            format!("https://{untrusted}/health"),
            json!({"TLSSkipVerify": true}),
        ),
    )
    .await;
    register_check(
        &c,
        &t,
        http_check("verify", format!("https://{untrusted}/health"), json!({})),
    )
    .await;
    expect_check(
        &c,
        &t,
        "skip",
        "passing",
        &format!("HTTP GET https://{untrusted}/health: 200 OK Output: ok"),
    )
    .await;
    expect_check(&c, &t, "verify", "critical", "UnknownIssuer").await;

    // A certificate from a trusted CA for internal.test: the URL's IP does not match it, the
    // server name does (sent as SNI; Host keeps the URL's authority).
    register_check(
        &c,
        &t,
        http_check("by-ip", format!("https://{trusted}/health"), json!({})),
    )
    .await;
    register_check(
        &c,
        &t,
        http_check(
            "by-name",
            format!("https://{trusted}/health"),
            json!({"TLSServerName": "internal.test"}),
        ),
    )
    .await;
    expect_check(&c, &t, "by-ip", "critical", "not valid for name").await;
    expect_check(&c, &t, "by-name", "passing", "200 OK").await;
    {
        let seen = seen.lock().unwrap();
        let hit = seen
            .iter()
            .find(|s| s.sni.as_deref() == Some("internal.test"))
            .expect("a request with SNI internal.test");
        assert_eq!(hit.host.as_deref(), Some(trusted.to_string().as_str()));
        assert_eq!(hit.user_agent.as_deref(), Some("Consul Health Check"));
        assert_eq!(hit.path, "/health");
    }

    // Method, Header and Body are sent as the check says.
    register_check(
        &c,
        &t,
        http_check(
            "strict",
            format!("https://{trusted}/strict"),
            json!({"TLSServerName": "internal.test", "Method": "POST",
                   "Header": {"X-Token": ["secret"]}, "Body": "ping"}),
        ),
    )
    .await;
    register_check(
        &c,
        &t,
        http_check(
            "strict-without-token",
            format!("https://{trusted}/strict"),
            json!({"TLSServerName": "internal.test", "Method": "POST", "Body": "ping"}),
        ),
    )
    .await;
    expect_check(&c, &t, "strict", "passing", "strict ok").await;
    expect_check(
        &c,
        &t,
        "strict-without-token",
        "critical",
        "400 Bad Request",
    )
    .await;
}

/// The reference gRPC health server: `grpc_health.v1.health.HealthServicer` on a plain and a
/// TLS port. A line `<service> <STATUS>` on stdin changes a status (`-` is the server's).
const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

cert_file, key_file = sys.argv[1], sys.argv[2]
servicer = health.HealthServicer()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
plain = server.add_insecure_port("127.0.0.1:0")
with open(cert_file, "rb") as f:
    cert = f.read()
with open(key_file, "rb") as f:
    key = f.read()
secure = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
Status = health_pb2.HealthCheckResponse
servicer.set("", Status.SERVING)
servicer.set("up.svc", Status.SERVING)
servicer.set("down.svc", Status.NOT_SERVING)
server.start()
print(plain, secure, flush=True)
for line in sys.stdin:
    name, status = line.split()
    servicer.set("" if name == "-" else name, getattr(Status, status))
    print("ok", flush=True)
server.stop(0)
"#;

/// Pinned versions of the reference server.
const GRPC_REQUIREMENTS: &str = "grpcio==1.85.1\ngrpcio-health-checking==1.85.1\n";

/// The cargo target directory (the test binary's `trellis` is in its `debug/`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_trellis"))
        .ancestors()
        .nth(2)
        .expect("target directory")
        .to_owned()
}

/// A virtualenv with the pinned gRPC packages, made once under the target directory.
fn grpc_python() -> PathBuf {
    let venv = target_dir().join("grpc-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(".requirements");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(GRPC_REQUIREMENTS)
    {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "python3 -m venv failed: this test needs Python 3 with venv (Debian: apt-get install \
         python3-venv; scripts/install-deps installs it)"
    );
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, GRPC_REQUIREMENTS).unwrap();
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status();
    assert!(
        installed.is_ok_and(|s| s.success()),
        "pip install of {GRPC_REQUIREMENTS:?} into {} failed",
        venv.display()
    );
    std::fs::write(&stamp, GRPC_REQUIREMENTS).unwrap();
    python
}

struct GrpcServer {
    child: Child,
    stdin: ChildStdin,
    replies: std::io::Lines<BufReader<std::process::ChildStdout>>,
    plain: u16,
    secure: u16,
}

impl GrpcServer {
    fn start(dir: &Path, identity: &Issued) -> GrpcServer {
        let script = dir.join("grpc_health_server.py");
        let (cert, key) = (dir.join("grpc.crt"), dir.join("grpc.key"));
        std::fs::write(&script, GRPC_SERVER).unwrap();
        std::fs::write(&cert, &identity.cert_pem).unwrap();
        std::fs::write(&key, &identity.key_pem).unwrap();
        let mut child = Command::new(grpc_python())
            .arg(&script)
            .args([&cert, &key])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            // The failed handshakes the test causes on purpose are not worth a log line.
            .env("GRPC_VERBOSITY", "ERROR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC health server");
        let stdin = child.stdin.take().unwrap();
        let mut replies = BufReader::new(child.stdout.take().unwrap()).lines();
        let ports = replies
            .next()
            .expect("the gRPC server exited before printing its ports")
            .unwrap();
        let mut ports = ports.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        let (plain, secure) = (ports.next().unwrap(), ports.next().unwrap());
        GrpcServer {
            child,
            stdin,
            replies,
            plain,
            secure,
        }
    }

    /// Sets a service's serving status (`-` is the server as a whole).
    fn set(&mut self, service: &str, status: &str) {
        writeln!(self.stdin, "{service} {status}").unwrap();
        assert_eq!(self.replies.next().unwrap().unwrap(), "ok");
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_check(id: &str, target: String, extra: Value) -> Value {
    check("GRPC", id, target, extra)
}

#[tokio::test]
async fn grpc_checks_against_the_reference_health_server() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut grpc = GrpcServer::start(dir.path(), &pki.trusted_leaf);
    let t = start_trellis(&ca_file);
    let c = http();
    let plain = format!("127.0.0.1:{}", grpc.plain);
    let secure = format!("127.0.0.1:{}", grpc.secure);

    for (id, target, extra) in [
        ("server", plain.clone(), json!({})),
        ("up", format!("{plain}/up.svc"), json!({})),
        ("down", format!("{plain}/down.svc"), json!({})),
        ("unknown", format!("{plain}/no.such.svc"), json!({})),
        ("refused", "127.0.0.1:1".to_owned(), json!({})),
        (
            "tls-skip",
            secure.clone(),
            json!({"GRPCUseTLS": true, "TLSSkipVerify": true}),
        ),
        (
            "tls-name",
            format!("{secure}/up.svc"),
            json!({"GRPCUseTLS": true, "TLSServerName": "internal.test"}),
        ),
        ("tls-by-ip", secure.clone(), json!({"GRPCUseTLS": true})),
        ("plain-to-tls", secure.clone(), json!({})),
    ] {
        register_check(&c, &t, grpc_check(id, target, extra)).await;
    }
    expect_check(
        &c,
        &t,
        "server",
        "passing",
        &format!("gRPC check {plain}: success"),
    )
    .await;
    expect_check(&c, &t, "up", "passing", "success").await;
    expect_check(
        &c,
        &t,
        "down",
        "critical",
        &format!("gRPC {plain}/down.svc serving status: NOT_SERVING"),
    )
    .await;
    expect_check(&c, &t, "unknown", "critical", "code = NotFound").await;
    expect_check(&c, &t, "refused", "critical", "connection error").await;
    expect_check(&c, &t, "tls-skip", "passing", "success").await;
    expect_check(&c, &t, "tls-name", "passing", "success").await;
    expect_check(&c, &t, "tls-by-ip", "critical", "not valid for name").await;
    expect_check(&c, &t, "plain-to-tls", "critical", "rpc error").await;

    // The server changes its mind: the checks follow.
    grpc.set("down.svc", "SERVING");
    grpc.set("-", "NOT_SERVING");
    expect_check(&c, &t, "down", "passing", "success").await;
    expect_check(&c, &t, "server", "critical", "NOT_SERVING").await;
}
