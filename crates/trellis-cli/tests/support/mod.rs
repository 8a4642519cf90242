//! Test support: start the real `trellis` binary (a server on a free port, or any command as a
//! [`Proc`] with the addresses it printed and its log) and talk to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `trellis server` with the given extra flags and waits for its address line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, |_| {})
    }

    /// Like [`Server::start`], with the command changed by `configure` first (its environment,
    /// say).
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trellis"));
        command
            .arg("server")
            .args(["--http", "127.0.0.1:0"])
            .args(args)
            .env("TRELLIS_LOG", "warn");
        configure(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start trellis server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("server exited before printing its address")
                .expect("read stdout");
            if let Some(pos) = line.find("http://") {
                break line[pos..].trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url }
    }

    pub fn dev() -> Server {
        Server::start(&["--dev"])
    }

    pub fn durable(dir: &Path) -> Server {
        Server::start(&["--data-dir", dir.to_str().expect("utf-8 path")])
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `trellis server ARGS` to its exit (it must fail to start) and answers its stderr.
pub fn fails_to_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("server")
        .args(["--http", "127.0.0.1:0", "--dns", "off"])
        .args(args)
        .env_remove("TRELLIS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trellis server {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert!(!output.status.success(), "{args:?} started: {stderr}");
    stderr
}

/// A `trellis` child process, killed when the test ends, with the addresses it printed
/// ("X listening on ADDR" lines on stdout) and, when started with a log filter, its stderr.
pub struct Proc {
    pub child: Child,
    /// (the word before "listening on", the address), in the order printed.
    pub addrs: Vec<(String, String)>,
    /// Its stderr so far, when started with a log filter (see [`Proc::log`]).
    pub log: Arc<Mutex<String>>,
    /// When the last expected address line was read.
    pub ready_at: Instant,
}

impl Proc {
    /// Starts `trellis ARGS` and waits for `lines` "X listening on ADDR" lines. With
    /// `Some(filter)` it logs at that `TRELLIS_LOG` filter into [`Proc::log`]; with `None` at
    /// `warn`, to the test's stderr.
    pub fn start(args: &[&str], lines: usize, log: Option<&str>) -> Proc {
        Proc::try_start(args, lines, log)
            .unwrap_or_else(|| panic!("trellis {args:?} exited before printing its addresses"))
    }

    /// Like [`Proc::start`]; `None` if the process exits before printing `lines` addresses
    /// (a port still taken, say).
    pub fn try_start(args: &[&str], lines: usize, log: Option<&str>) -> Option<Proc> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trellis"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match log {
            Some(filter) => command.env("TRELLIS_LOG", filter).stderr(Stdio::piped()),
            None => command.env("TRELLIS_LOG", "warn").stderr(Stdio::inherit()),
        };
        let mut child = command.spawn().expect("start trellis");
        let sink = Arc::new(Mutex::new(String::new()));
        if let Some(mut stderr) = child.stderr.take() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().push_str(&text);
                }
            });
        }
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addrs = Vec::new();
        let mut line = String::new();
        while addrs.len() < lines {
            line.clear();
            if reader.read_line(&mut line).expect("read stdout") == 0 {
                let _ = child.wait();
                return None;
            }
            if let Some((what, addr)) = line.trim().split_once(" listening on ") {
                let what = what.rsplit(' ').next().unwrap_or(what).to_owned();
                let addr = addr.strip_prefix("http://").unwrap_or(addr);
                let addr = addr.split_whitespace().next().unwrap_or(addr).to_owned();
                addrs.push((what, addr));
            }
            // The server's last start-up line: no address comes after it.
            assert!(
                addrs.len() >= lines || !line.contains(" instances restored"),
                "trellis {args:?} printed {} of {lines} addresses: {addrs:?}",
                addrs.len()
            );
        }
        let ready_at = Instant::now();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Some(Proc {
            child,
            addrs,
            log: sink,
            ready_at,
        })
    }

    /// The address printed as "`what` listening on ADDR" (`API` for the server's HTTP API).
    pub fn addr(&self, what: &str) -> String {
        self.addrs
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {what} address in {:?}", self.addrs))
    }

    /// What it logged so far (empty unless started with a log filter).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` (`-TERM`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trellis sidecar` for `service` in front of the app on loopback port `app_port`, every
/// listener on a free port, probing the app every 100 ms with a 3 s TTL, one worker thread;
/// `extra` flags go after these. Waits for its three addresses (`inbound`, `outbound`, `admin`).
pub fn sidecar(
    registry: &str,
    service: &str,
    app_port: u16,
    extra: &[&str],
    log: Option<&str>,
) -> Proc {
    let app = format!("127.0.0.1:{app_port}");
    let mut args = vec![
        "sidecar",
        "--registry",
        registry,
        "--service",
        service,
        "--app",
        &app,
        "--inbound",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--check-interval",
        "100ms",
        "--ttl",
        "3s",
        "--workers",
        "1",
    ];
    args.extend_from_slice(extra);
    Proc::start(&args, 3, log)
}

/// A loopback port that was free a moment ago (nothing listens on it now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Like [`http`], with a timeout for each request.
pub fn http_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Polls `condition` until it holds, answering how long that took; panics with `what` once
/// the timeout passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

pub fn index_of(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("x-consul-index")
        .expect("X-Consul-Index header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A `trellis server --dev` with its trace collector: OTLP/HTTP and OTLP/gRPC on free
/// loopback ports, and Jaeger's query API on its HTTP API.
pub struct Collector {
    pub proc: Proc,
    /// The HTTP API, `http://ADDR`.
    pub http: String,
    /// The OTLP/HTTP traces URL, `http://ADDR/v1/traces`.
    pub otlp: String,
    /// The OTLP/gRPC endpoint, `http://ADDR`.
    pub grpc: String,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::start_with(&[])
    }

    /// Like [`Collector::start`], with more server flags.
    pub fn start_with(extra: &[&str]) -> Collector {
        let mut args = vec![
            "server",
            "--dev",
            "--http",
            "127.0.0.1:0",
            "--dns",
            "off",
            "--otlp",
            "127.0.0.1:0",
            "--otlp-grpc",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(&args, 3, None);
        Collector {
            http: format!("http://{}", proc.addr("API")),
            otlp: format!("http://{}/v1/traces", proc.addr("OTLP")),
            grpc: format!("http://{}", proc.addr("OTLP/gRPC")),
            proc,
        }
    }

    /// `GET path` on the HTTP API: the status and the JSON answer (`null` if not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = http()
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_default())
    }
}

impl Collector {
    /// Trace `id` as Jaeger's API answers it (`data[0]`), once it has at least `spans` spans
    /// (exporters send in batches); panics after 20 s.
    pub async fn trace(&self, id: &str, spans: usize) -> serde_json::Value {
        let path = format!("/api/traces/{id}");
        let found = Arc::new(Mutex::new(serde_json::Value::Null));
        let what = format!("{spans} spans of {id}");
        eventually(Duration::from_secs(20), &what, || {
            let found = found.clone();
            let path = path.clone();
            async move {
                let (_, body) = self.get(&path).await;
                let n = body["data"][0]["spans"].as_array().map_or(0, Vec::len);
                *found.lock().unwrap() = body["data"][0].clone();
                n >= spans
            }
        })
        .await;
        found.lock().unwrap().clone()
    }
}

/// The bytes of a hex string (trace and span ids).
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The body of `GET url` as text (a `/metrics` page, say).
pub async fn get_json(url: &str) -> serde_json::Value {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

pub async fn get_text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// Now, in nanoseconds since the UNIX epoch (span times).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// An OTLP string attribute.
pub fn string_kv(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Bootstraps the ACL system of the server at `base` (`http://ADDR`) and answers the management
/// token's secret.
pub async fn bootstrap_acl(base: &str) -> String {
    let answer: serde_json::Value = http()
        .put(format!("{base}/v1/acl/bootstrap"))
        .send()
        .await
        .expect("PUT /v1/acl/bootstrap")
        .json()
        .await
        .expect("a token");
    answer["SecretID"]
        .as_str()
        .unwrap_or_else(|| panic!("no SecretID in {answer}"))
        .to_owned()
}

/// A gRPC-like app on a free loopback port (answers `(port, stop)`): echoes the request's body
/// and ends with trailers `grpc-status: 0` and `grpc-message: h2=<was it HTTP/2>` (plus
/// ` peer=<x-trellis-peer>` when its sidecar set one).
pub async fn grpc_echo_app() -> (u16, trellis_proxy::server::ShutdownTrigger) {
    use trellis_proxy::body::Body;
    use trellis_proxy::http_body_util::{BodyExt, StreamBody};
    use trellis_proxy::hyper::body::Frame;
    use trellis_proxy::hyper::{HeaderMap, Request, Response, Version};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, shutdown) = trellis_proxy::server::shutdown_pair();
    tokio::spawn(trellis_proxy::server::serve(
        listener,
        |request: Request<Body>| async move {
            let mut message = format!("h2={}", request.version() == Version::HTTP_2);
            if let Some(peer) = request.headers().get("x-trellis-peer") {
                message.push_str(&format!(" peer={}", peer.to_str().unwrap()));
            }
            let payload = request.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", message.parse().unwrap());
            let frames = vec![Ok(Frame::data(payload)), Ok(Frame::trailers(trailers))];
            let mut response =
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
        },
        shutdown,
        Duration::from_secs(1),
    ));
    (port, stop)
}

/// A gRPC call (HTTP/2, prior knowledge) of `service` through the outbound listener at
/// `outbound`, repeated until it is answered 200 (discovery may not know `service` yet):
/// answers the body and the trailers.
pub async fn grpc_call(
    outbound: &str,
    service: &str,
) -> (trellis_proxy::bytes::Bytes, trellis_proxy::hyper::HeaderMap) {
    use trellis_proxy::http_body_util::{BodyExt, StreamBody};
    use trellis_proxy::hyper::body::Frame;
    use trellis_proxy::hyper::{Request, Version};
    let tcp = tokio::net::TcpStream::connect(outbound).await.unwrap();
    let (mut client, connection) = trellis_proxy::hyper::client::conn::http2::handshake(
        trellis_proxy::hyper_util::rt::TokioExecutor::new(),
        trellis_proxy::hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let start = Instant::now();
    loop {
        let frames = vec![Ok::<_, trellis_proxy::hyper::Error>(Frame::data(
            trellis_proxy::bytes::Bytes::from_static(b"\0\0\0\0\x02hi"),
        ))];
        let request = Request::post(format!("http://{service}/helloworld.Greeter/SayHello"))
            .version(Version::HTTP_2)
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        if response.status() == 200 {
            assert_eq!(response.version(), Version::HTTP_2);
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().expect("trailers");
            return (collected.to_bytes(), trailers);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{service} never answered 200: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
