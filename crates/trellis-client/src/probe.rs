//! Health probes with Consul's rules, shared by the registry's checker and the sidecar: an HTTP
//! answer 2xx is passing, 429 warning, anything else critical; a TCP connection is passing; a
//! gRPC health service answering SERVING is passing, anything else critical.
//!
//! HTTPS and gRPC-over-TLS verify the server against the system's trust store (as a Consul
//! agent does), unless the check sets `TLSSkipVerify`; `TLSServerName` is the name sent as SNI
//! and verified instead of the address's host. gRPC checks speak the standard health protocol
//! (`grpc.health.v1.Health/Check`) over HTTP/2 with a hand-encoded two-field protobuf, which
//! saves a code generator and a gRPC framework for one call.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trellis_types::CheckStatus;
use trellis_types::registration::GrpcCheck;

/// Most bytes of a response body kept in a check's output (Consul keeps 4 KiB).
pub const MAX_OUTPUT: usize = 4096;
/// Largest gRPC health answer read; the real one is a few bytes.
const MAX_GRPC_RESPONSE: usize = 64 * 1024;

/// Sends `request` (its timeout set by the caller) and classifies the answer; `label`, such as
/// `HTTP GET http://app/health`, starts the output.
pub async fn http(request: reqwest::RequestBuilder, label: &str) -> (CheckStatus, String) {
    match request.send().await {
        Ok(response) => {
            let code = response.status();
            let status = if code.is_success() {
                CheckStatus::Passing
            } else if code.as_u16() == 429 {
                CheckStatus::Warning
            } else {
                CheckStatus::Critical
            };
            let mut body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            body.truncate(MAX_OUTPUT);
            let output = format!("{label}: {code} Output: {}", String::from_utf8_lossy(&body));
            (status, output)
        }
        Err(error) => (
            CheckStatus::Critical,
            format!("{label}: {}", describe(&error)),
        ),
    }
}

/// What went wrong, ending with the innermost cause (a refused connection, a certificate the
/// trust store does not know) so that the output says why.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        return innermost(error);
    };
    let cause = innermost(error);
    if error.is_timeout() || cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    crate::root_cause(error).to_string()
}

/// Runs a script check's command: `args[0]` with the rest as its arguments, no shell, stdin
/// closed, stdout and stderr into one pipe. As Consul's `CheckMonitor`: exit 0 passing, 1
/// warning, anything else (a signal too) critical; the output is the last [`MAX_OUTPUT`] bytes
/// (prefixed `Captured N of M bytes` when cut). Past `timeout` (which covers the output being
/// read to its end) the command's process group is killed and the check is critical with
/// `Timed out (…) running check`.
#[cfg(unix)]
pub async fn script(args: &[String], timeout: Duration) -> (CheckStatus, String) {
    let Some((program, rest)) = args.split_first() else {
        return (
            CheckStatus::Critical,
            "script check without a command".into(),
        );
    };
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(error) => return (CheckStatus::Critical, format!("cannot run check: {error}")),
    };
    let spawned = writer.try_clone().and_then(|out| {
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(writer)
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        command.spawn()
        // `command` (and with it this process's copies of the pipe's write end) drops here,
        // so the reader sees the end once the command and its children are done.
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return (CheckStatus::Critical, error.to_string()),
    };
    let pid = child.id();
    let output = Arc::new(std::sync::Mutex::new(Tail::default()));
    let reading = tokio::task::spawn_blocking({
        let output = output.clone();
        move || read_tail(reader, &output)
    });
    let finished = tokio::time::timeout(timeout, async {
        let status = child.wait().await;
        let _ = reading.await;
        status
    })
    .await;
    let text = || output.lock().map(|t| t.text()).unwrap_or_default();
    match finished {
        Ok(Ok(status)) => {
            let result = match status.code() {
                Some(0) => CheckStatus::Passing,
                Some(1) => CheckStatus::Warning,
                _ => CheckStatus::Critical,
            };
            (result, text())
        }
        Ok(Err(error)) => (CheckStatus::Critical, error.to_string()),
        Err(_) => {
            if let Some(pid) = pid {
                kill_process_group(pid).await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            let mut message = format!(
                "Timed out ({}) running check",
                trellis_types::format_go_duration(timeout)
            );
            let output = text();
            if !output.is_empty() {
                message.push_str("\n\n");
                message.push_str(&output);
            }
            (CheckStatus::Critical, message)
        }
    }
}

/// Kills the process group `pgid` (a script check's command and what it started) with
/// `kill -KILL -- -PGID`; only on a timeout, so one more process then is cheap.
#[cfg(unix)]
async fn kill_process_group(pgid: u32) {
    // Best effort: the command itself is killed anyway.
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
}

/// The last [`MAX_OUTPUT`] bytes written, and how many were written in all.
#[derive(Default)]
struct Tail {
    kept: std::collections::VecDeque<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(MAX_OUTPUT)..];
        let over = (self.kept.len() + bytes.len()).saturating_sub(MAX_OUTPUT);
        self.kept.drain(..over);
        self.kept.extend(bytes);
    }

    fn text(&self) -> String {
        let (a, b) = self.kept.as_slices();
        let kept = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        if self.total > self.kept.len() as u64 {
            format!(
                "Captured {} of {} bytes\n...\n{kept}",
                self.kept.len(),
                self.total
            )
        } else {
            kept
        }
    }
}

#[cfg(unix)]
fn read_tail(mut reader: std::io::PipeReader, output: &std::sync::Mutex<Tail>) {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => match output.lock() {
                Ok(mut tail) => tail.push(&buf[..n]),
                Err(_) => return,
            },
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Opens (and closes) a TCP connection to `address` within `timeout`.
pub async fn tcp(address: &str, timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => (
            CheckStatus::Passing,
            format!("TCP connect {address}: Success"),
        ),
        Ok(Err(error)) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: {error}"),
        ),
        Err(_) => (
            CheckStatus::Critical,
            format!("dial tcp {address}: i/o timeout"),
        ),
    }
}

/// The TLS client settings of probes, built once: verifying against the system's trust store
/// (read at startup; `SSL_CERT_FILE` and `SSL_CERT_DIR` point elsewhere, as for OpenSSL), or
/// accepting any certificate for `TLSSkipVerify`; HTTP/1.1 for HTTP checks, h2 for gRPC.
#[derive(Clone)]
pub struct ProbeTls {
    http_verified: Arc<ClientConfig>,
    http_insecure: Arc<ClientConfig>,
    grpc_verified: Arc<ClientConfig>,
    grpc_insecure: Arc<ClientConfig>,
    /// System certificates loaded, for the log.
    pub roots: usize,
}

impl ProbeTls {
    pub fn new() -> Self {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (count, _ignored) = roots.add_parsable_certificates(loaded.certs);
        Self::with_roots(roots, count)
    }

    /// Settings verifying against `roots` only (tests bring their own CA).
    pub fn with_roots(roots: RootCertStore, count: usize) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let config = |verify: bool, alpn: &[u8]| {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
            let mut config = if verify {
                builder
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                        provider.clone(),
                    )))
                    .with_no_client_auth()
            };
            config.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(config)
        };
        Self {
            http_verified: config(true, b"http/1.1"),
            http_insecure: config(false, b"http/1.1"),
            grpc_verified: config(true, b"h2"),
            grpc_insecure: config(false, b"h2"),
            roots: count,
        }
    }

    fn http_config(&self, skip_verify: bool) -> Arc<ClientConfig> {
        if skip_verify {
            self.http_insecure.clone()
        } else {
            self.http_verified.clone()
        }
    }

    fn grpc_config(&self, skip_verify: bool) -> Arc<ClientConfig> {
        if skip_verify {
            self.grpc_insecure.clone()
        } else {
            self.grpc_verified.clone()
        }
    }
}

impl Default for ProbeTls {
    fn default() -> Self {
        Self::new()
    }
}

/// `TLSSkipVerify`: any certificate is accepted (the handshake's signatures are still checked,
/// as Go's `InsecureSkipVerify` does).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where and how an HTTP check sends its request: a client with the check's TLS settings, the
/// URL to request and the `Host` header to send when the URL's host was replaced.
pub struct HttpTarget {
    pub client: reqwest::Client,
    pub url: String,
    /// The original authority, when `TLSServerName` replaced the URL's host.
    pub host: Option<String>,
}

/// The client of one HTTP check. Like Consul's, it opens a new connection for every probe (no
/// keep-alive) and follows redirects. With `TLSServerName` on an `https` URL, the request goes
/// to the URL's address while TLS (SNI and verification) uses the given name: the URL's host is
/// replaced by that name, which resolves to the original host's addresses, and `Host` keeps the
/// original authority.
pub fn http_target(
    tls: &ProbeTls,
    url: &str,
    skip_verify: bool,
    server_name: &str,
) -> Result<HttpTarget, String> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| format!("invalid HTTP check URL {url:?}: {e}"))?;
    let builder = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .use_preconfigured_tls((*tls.http_config(skip_verify)).clone());
    let original_host = parsed.host_str().unwrap_or_default().to_owned();
    let rename = parsed.scheme() == "https"
        && !server_name.is_empty()
        && !server_name.eq_ignore_ascii_case(&original_host);
    if !rename {
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP check client: {e}"))?;
        return Ok(HttpTarget {
            client,
            url: url.to_owned(),
            host: None,
        });
    }
    let authority = match parsed.port() {
        Some(port) => format!("{original_host}:{port}"),
        None => original_host.clone(),
    };
    parsed
        .set_host(Some(server_name))
        .map_err(|e| format!("invalid TLSServerName {server_name:?}: {e}"))?;
    let resolver = AliasResolver {
        alias: server_name.to_ascii_lowercase(),
        host: original_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    };
    let client = builder
        .dns_resolver(Arc::new(resolver))
        .build()
        .map_err(|e| format!("cannot build the HTTP check client: {e}"))?;
    Ok(HttpTarget {
        client,
        url: parsed.to_string(),
        host: Some(authority),
    })
}

/// Resolves the `TLSServerName` alias to the URL's real host (looked up at every connection,
/// so DNS changes are followed) and every other name (a redirect's) as usual.
struct AliasResolver {
    alias: String,
    host: String,
}

impl reqwest::dns::Resolve for AliasResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = if name.as_str().eq_ignore_ascii_case(&self.alias) {
            self.host.clone()
        } else {
            name.as_str().to_owned()
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Asks a gRPC health service (`grpc.health.v1.Health/Check`) within `timeout`, with Consul's
/// outputs: `gRPC check <target>: success`, `gRPC <target> serving status: NOT_SERVING`, or the
/// RPC error.
pub async fn grpc(check: &GrpcCheck, timeout: Duration, tls: &ProbeTls) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, grpc_health(check, tls)).await {
        Err(_) => (
            CheckStatus::Critical,
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded".into(),
        ),
        Ok(Err(output)) => (CheckStatus::Critical, output),
        Ok(Ok(ServingStatus::SERVING)) => (
            CheckStatus::Passing,
            format!("gRPC check {}: success", check.target),
        ),
        Ok(Ok(status)) => (
            CheckStatus::Critical,
            format!("gRPC {} serving status: {}", check.target, status.name()),
        ),
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServingStatus(u64);

impl ServingStatus {
    const SERVING: Self = Self(1);

    fn name(self) -> String {
        match self.0 {
            0 => "UNKNOWN".into(),
            1 => "SERVING".into(),
            2 => "NOT_SERVING".into(),
            3 => "SERVICE_UNKNOWN".into(),
            other => other.to_string(),
        }
    }
}

fn unavailable(desc: impl std::fmt::Display) -> String {
    format!("rpc error: code = Unavailable desc = connection error: {desc}")
}

async fn grpc_health(check: &GrpcCheck, tls: &ProbeTls) -> Result<ServingStatus, String> {
    let (address, service) = check.address_and_service();
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| unavailable(format!("dial tcp {address}: {e}")))?;
    // Small request, small answer: do not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let scheme = if check.use_tls { "https" } else { "http" };
    let request = hyper::Request::post(format!("{scheme}://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            concat!("trellis-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(health_check_request(service)))
        .map_err(|e| format!("invalid gRPC check target {:?}: {e}", check.target))?;
    if !check.use_tls {
        return call(tcp, request).await;
    }
    let name = if check.tls_server_name.is_empty() {
        host_of(address)
    } else {
        check.tls_server_name.as_str()
    };
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| format!("invalid TLS server name {name:?}: {e}"))?;
    let stream = TlsConnector::from(tls.grpc_config(check.tls_skip_verify))
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(format!("TLS handshake with {address}: {e}")))?;
    call(stream, request).await
}

/// The host of `host:port` (without an IPv6 address's brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// One unary call over a fresh HTTP/2 connection.
async fn call<S>(stream: S, request: hyper::Request<Full<Bytes>>) -> Result<ServingStatus, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| unavailable(format!("HTTP/2 handshake: {e}")))?;
    let driver = AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(innermost(&e)))?;
    let (parts, body) = response.into_parts();
    if parts.status != hyper::StatusCode::OK {
        return Err(format!(
            "rpc error: code = Unknown desc = unexpected HTTP status code received from server: \
             {}",
            parts.status.as_u16()
        ));
    }
    // A "trailers-only" answer carries the status in its headers.
    if let Some(error) = grpc_error(&parts.headers) {
        return Err(error);
    }
    let collected = Limited::new(body, MAX_GRPC_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("rpc error: code = Internal desc = reading the answer: {e}"))?;
    if let Some(error) = collected.trailers().and_then(grpc_error) {
        return Err(error);
    }
    drop(driver);
    decode_health_check_response(collected.to_bytes())
}

/// Aborts the connection task when the call is done or abandoned (a timeout).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The RPC error of a `grpc-status` other than OK, as Go's gRPC prints it.
fn grpc_error(headers: &hyper::HeaderMap) -> Option<String> {
    let code: u32 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if code == 0 {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some(format!(
        "rpc error: code = {} desc = {message}",
        grpc_code_name(code)
    ))
}

fn grpc_code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| (*n).to_owned())
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { string service = 1; }`.
fn health_check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `HealthCheckResponse { ServingStatus status = 1; }` from one length-prefixed message; fields
/// it does not know are skipped, as protobuf readers do.
fn decode_health_check_response(mut body: Bytes) -> Result<ServingStatus, String> {
    let malformed =
        |why: &str| format!("rpc error: code = Internal desc = malformed answer: {why}");
    if body.len() < 5 {
        return Err(malformed("no message"));
    }
    if body.get_u8() != 0 {
        return Err(malformed("compressed message"));
    }
    let length = body.get_u32() as usize;
    if body.len() < length {
        return Err(malformed("truncated message"));
    }
    let mut message = body.split_to(length);
    // An absent field is the default: UNKNOWN.
    let mut status = ServingStatus(0);
    while message.has_remaining() {
        let key = get_varint(&mut message).ok_or_else(|| malformed("bad field key"))?;
        let skip = match key & 7 {
            0 => {
                let value = get_varint(&mut message).ok_or_else(|| malformed("bad varint"))?;
                if key >> 3 == 1 {
                    status = ServingStatus(value);
                }
                0
            }
            1 => 8,
            2 => get_varint(&mut message).ok_or_else(|| malformed("bad length"))? as usize,
            5 => 4,
            _ => return Err(malformed("unknown wire type")),
        };
        if message.remaining() < skip {
            return Err(malformed("truncated field"));
        }
        message.advance(skip);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_output_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.text(), "hello world");
        let mut tail = Tail::default();
        tail.push(&[b'a'; 3000]);
        tail.push(&[b'b'; 3000]);
        let text = tail.text();
        assert!(text.starts_with("Captured 4096 of 6000 bytes\n...\naaa"));
        assert!(text.ends_with(&"b".repeat(3000)));
        assert_eq!(text.len() - text.find("\n...\n").unwrap() - 5, MAX_OUTPUT);
    }

    #[tokio::test]
    async fn scripts_map_exit_codes_and_time_out() {
        let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let second = Duration::from_secs(5);
        assert_eq!(
            script(&sh("echo a; echo b >&2"), second).await,
            (CheckStatus::Passing, "a\nb\n".to_owned())
        );
        assert_eq!(script(&sh("exit 1"), second).await.0, CheckStatus::Warning);
        assert_eq!(script(&sh("exit 3"), second).await.0, CheckStatus::Critical);
        assert_eq!(
            script(&sh("kill -9 $$"), second).await.0,
            CheckStatus::Critical
        );
        let (status, output) = script(&sh("sleep 5"), Duration::from_millis(100)).await;
        assert_eq!(
            (status, output.as_str()),
            (CheckStatus::Critical, "Timed out (100ms) running check")
        );
        let (status, _) = script(&["/nonexistent".to_owned()], second).await;
        assert_eq!(status, CheckStatus::Critical);
    }

    #[test]
    fn health_check_request_encoding() {
        assert_eq!(&health_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let long = "x".repeat(200);
        let framed = health_check_request(&long);
        // 200 needs a two-byte varint: 0xc8 0x01.
        assert_eq!(&framed[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn health_check_response_decoding() {
        let decode = |bytes: &[u8]| decode_health_check_response(Bytes::copy_from_slice(bytes));
        assert_eq!(
            decode(&[0, 0, 0, 0, 2, 0x08, 1]),
            Ok(ServingStatus::SERVING)
        );
        assert_eq!(decode(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(ServingStatus(2)));
        // Empty message: the default, UNKNOWN.
        assert_eq!(decode(&[0, 0, 0, 0, 0]), Ok(ServingStatus(0)));
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            decode(&[0, 0, 0, 0, 6, 0x12, 2, 9, 9, 0x08, 1]),
            Ok(ServingStatus::SERVING)
        );
        assert!(decode(&[1, 0, 0, 0, 2, 0x08, 1]).is_err(), "compressed");
        assert!(decode(&[0, 0, 0, 0, 9, 0x08, 1]).is_err(), "truncated");
        assert!(
            decode(&[0, 0, 0, 0, 2, 0x12, 5]).is_err(),
            "field past the end"
        );
        assert!(decode(&[0, 0]).is_err());
    }

    #[test]
    fn grpc_errors_read_like_gos() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert("grpc-message", "unknown%20service".parse().unwrap());
        assert_eq!(
            grpc_error(&headers).unwrap(),
            "rpc error: code = NotFound desc = unknown service"
        );
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_error(&headers).is_none());
        assert_eq!(ServingStatus(2).name(), "NOT_SERVING");
        assert_eq!(host_of("[::1]:50051"), "::1");
        assert_eq!(host_of("svc.local:443"), "svc.local");
    }

    #[test]
    fn server_name_replaces_the_host_of_https_urls_only() {
        let tls = ProbeTls::with_roots(RootCertStore::empty(), 0);
        let t = http_target(
            &tls,
            "https://127.0.0.1:8443/health?x=1",
            false,
            "api.internal",
        )
        .unwrap();
        assert_eq!(t.url, "https://api.internal:8443/health?x=1");
        assert_eq!(t.host.as_deref(), Some("127.0.0.1:8443"));
        let t = http_target(&tls, "http://127.0.0.1:8080/health", false, "api.internal").unwrap();
        assert_eq!(t.url, "http://127.0.0.1:8080/health");
        assert!(t.host.is_none());
        let t = http_target(&tls, "https://api.internal/h", true, "API.internal").unwrap();
        assert!(t.host.is_none());
        assert!(http_target(&tls, "not a url", false, "").is_err());
    }
}
