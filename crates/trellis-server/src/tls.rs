//! HTTPS for the HTTP API: the rustls settings the `[tls]` table names (read and checked at
//! start), and a listener that gives axum's server only connections whose TLS handshake is
//! done. Each handshake runs in a task of its own with a deadline, so a slow or silent client
//! holds up no other; a plain HTTP request is answered 400, as Go's servers (Consul's) do.

use crate::config::{ConfigError, TlsConfig};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use trellis_client::tls::{certs_from_pem_file, key_from_pem_file, key_problem};

/// How long a client has, from connecting, to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum's accept loop; more make handshake tasks wait.
const READY_QUEUE: usize = 128;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on the HTTPS port (Go's words, so Consul users recognise it).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 48\r\n\
\r\n\
Client sent an HTTP request to an HTTPS server.\n";

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

/// The HTTP API's TLS settings, `None` for plain HTTP: TLS 1.3 and 1.2, h2 and http/1.1 by
/// ALPN, and with a client CA, a certificate it signed required of every client. Each file is
/// read and checked here, so a missing file, a file without a certificate or a key that does
/// not match is one line naming it, before any port is bound.
pub fn server_config(config: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    config.validate()?;
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let chain = certs_from_pem_file(cert_file)
        .map_err(|e| invalid(format!("tls.cert_file (--tls-cert): {e}")))?;
    let key = key_from_pem_file(key_file)
        .map_err(|e| invalid(format!("tls.key_file (--tls-key): {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS versions: {e}")))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let certs = certs_from_pem_file(ca_file)
                .map_err(|e| invalid(format!("tls.client_ca_file (--tls-client-ca): {e}")))?;
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    invalid(format!(
                        "tls.client_ca_file (--tls-client-ca): file {}: not a usable CA \
                         certificate: {e}",
                        ca_file.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(format!("tls.client_ca_file (--tls-client-ca): {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(format!(
            "tls.key_file (--tls-key) {} with tls.cert_file (--tls-cert) {}: {}",
            key_file.display(),
            cert_file.display(),
            key_problem(&e)
        ))
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

/// A listener of TLS connections for `axum::serve`: a task accepts TCP connections and starts
/// one handshake task each; `accept` hands over the connections whose handshake succeeded.
/// Dropping it (axum does when shutdown begins) stops the accept task and closes the port;
/// handshakes still in flight are then dropped.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`; needs a Tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), ready_tx));
        Ok(Self { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task never ends while this receiver lives; should it panic, accept
            // nothing more rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts until the listener is dropped, starting a handshake task per connection.
async fn accept_loop(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        // axum's accept for TCP retries failed accepts (pausing on a shortage of descriptors).
        let (tcp, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, peer, &acceptor)).await {
                // The server stopped accepting (shutdown): the connection is dropped.
                Ok(Some(stream)) => drop(ready.send((stream, peer)).await),
                Ok(None) => {}
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The TLS handshake of one connection; a plain HTTP request is answered 400 instead.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
) -> Option<TlsStream<TcpStream>> {
    // A handshake is several small flights each way: Nagle would hold some of them back.
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) => {}
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        tracing::info!(%peer, "plain HTTP on the HTTPS port: answered 400");
        refuse_plain_http(tcp).await;
        return None;
    }
    match acceptor.accept(tcp).await {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            None
        }
    }
}

/// Answers plain HTTP with a 400 that says why. What the client sent is read first and the
/// connection drained after, since closing with unread data would reset the connection and
/// the client could lose the answer.
async fn refuse_plain_http(mut tcp: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tcp.try_read(&mut buf);
    if tcp.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let drain = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The HTTPS client a server sharing etcd talks to the others with, when its API speaks HTTPS:
/// their certificates are checked against `ca_file` (else `client_ca_file`), and it shows its
/// own certificate and key, as Consul's servers use one certificate both ways.
pub fn peer_client(config: &TlsConfig) -> Result<Option<reqwest::Client>, ConfigError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let ca_file = config
        .ca_file
        .as_ref()
        .or(config.client_ca_file.as_ref())
        .ok_or_else(|| {
            invalid(
                "servers sharing etcd over HTTPS check each other's certificates: give \
                 tls.ca_file (--tls-ca), the CA that signed them"
                    .into(),
            )
        })?;
    let read = |file: &std::path::Path, what: &str| {
        std::fs::read(file).map_err(|e| invalid(format!("{what}: file {}: {e}", file.display())))
    };
    let cas = reqwest::Certificate::from_pem_bundle(&read(ca_file, "tls.ca_file (--tls-ca)")?)
        .map_err(|e| invalid(format!("tls.ca_file (--tls-ca): {e}")))?;
    let mut identity = read(cert_file, "tls.cert_file (--tls-cert)")?;
    identity.push(b'\n');
    identity.extend(read(key_file, "tls.key_file (--tls-key)")?);
    let identity = reqwest::Identity::from_pem(&identity).map_err(|e| {
        invalid(format!(
            "tls.cert_file and tls.key_file as a client identity: {e}"
        ))
    })?;
    let builder = crate::cluster::peer_client_builder()
        .tls_built_in_root_certs(false)
        .identity(identity)
        .https_only(true);
    cas.into_iter()
        .fold(builder, |builder, ca| builder.add_root_certificate(ca))
        .build()
        .map(Some)
        .map_err(|e| invalid(format!("the HTTPS client between servers: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::path::{Path, PathBuf};

    /// A CA, a leaf it signed for localhost and the leaf's key, written into `dir`.
    struct Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
    }

    fn files(dir: &Path) -> Files {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Files {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", leaf.pem()),
            key: write("key.pem", key.serialize_pem()),
            other_key: write("other.key", KeyPair::generate().unwrap().serialize_pem()),
        }
    }

    fn tls(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> TlsConfig {
        TlsConfig {
            cert_file: cert.map(Path::to_path_buf),
            key_file: key.map(Path::to_path_buf),
            client_ca_file: ca.map(Path::to_path_buf),
            ca_file: None,
        }
    }

    fn error(config: &TlsConfig) -> String {
        match server_config(config) {
            Ok(_) => panic!("{config:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_files_make_https_settings_with_h2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert!(server_config(&TlsConfig::default()).unwrap().is_none());
        let config = server_config(&tls(Some(&f.cert), Some(&f.key), None))
            .unwrap()
            .expect("TLS on");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(
            server_config(&tls(Some(&f.cert), Some(&f.key), Some(&f.ca)))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn bad_files_are_one_line_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let missing = dir.path().join("missing.pem");
        let e = error(&tls(Some(&missing), Some(&f.key), None));
        assert!(e.contains("tls.cert_file (--tls-cert)"), "{e}");
        assert!(e.contains("missing.pem: cannot read it"), "{e}");
        // A key where the certificate should be: no certificate in it.
        let e = error(&tls(Some(&f.key), Some(&f.key), None));
        assert!(e.contains("key.pem: no certificate in it"), "{e}");
        let e = error(&tls(Some(&f.cert), Some(&f.cert), None));
        assert!(e.contains("tls.key_file (--tls-key)"), "{e}");
        assert!(e.contains("no private key in it"), "{e}");
        let e = error(&tls(Some(&f.cert), Some(&f.other_key), None));
        assert!(
            e.contains("the private key does not match the certificate"),
            "{e}"
        );
        assert!(e.contains("other.key"), "{e}");
        let e = error(&tls(Some(&f.cert), Some(&f.key), Some(&f.key)));
        assert!(e.contains("tls.client_ca_file (--tls-client-ca)"), "{e}");
        assert!(e.contains("no certificate in it"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn the_table_needs_a_certificate_and_key_together() {
        let p = Path::new("x.pem");
        for (config, want) in [
            (tls(Some(p), None, None), "needs tls.key_file"),
            (tls(None, Some(p), None), "needs tls.cert_file"),
            (tls(None, None, Some(p)), "needs TLS"),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        tls(Some(p), Some(p), Some(p)).validate().unwrap();
        tls(None, None, None).validate().unwrap();
        let peers_ca = TlsConfig {
            ca_file: Some(p.to_path_buf()),
            ..tls(None, None, None)
        };
        let e = peers_ca.validate().unwrap_err().to_string();
        assert!(e.contains("tls.ca_file (--tls-ca) needs TLS"), "{e}");
    }

    /// Between servers sharing etcd: plain HTTP without TLS; with TLS, HTTPS checked against
    /// the peers' CA (the client CA by default), and a clear error when there is none.
    #[test]
    fn the_client_between_servers_follows_the_tls_table() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert!(peer_client(&tls(None, None, None)).unwrap().is_none());
        let no_ca = peer_client(&tls(Some(&f.cert), Some(&f.key), None))
            .unwrap_err()
            .to_string();
        assert!(no_ca.contains("give tls.ca_file (--tls-ca)"), "{no_ca}");
        let with_client_ca = tls(Some(&f.cert), Some(&f.key), Some(&f.ca));
        assert!(peer_client(&with_client_ca).unwrap().is_some());
        let with_peers_ca = TlsConfig {
            ca_file: Some(f.ca.clone()),
            ..tls(Some(&f.cert), Some(&f.key), None)
        };
        assert!(peer_client(&with_peers_ca).unwrap().is_some());
        let missing = TlsConfig {
            ca_file: Some(dir.path().join("absent.pem")),
            ..with_peers_ca
        };
        let e = peer_client(&missing).unwrap_err().to_string();
        assert!(
            e.contains("tls.ca_file (--tls-ca): file") && e.contains("absent.pem"),
            "{e}"
        );
    }

    #[test]
    fn the_tls_table_parses_and_flags_override_it() {
        let config = crate::config::ServerConfig::from_toml(
            "[tls]\ncert_file = \"/etc/trellis/api.pem\"\nkey_file = \"/etc/trellis/api.key\"\n",
        )
        .unwrap();
        assert!(config.tls.enabled());
        assert_eq!(
            config.tls.key_file.as_deref(),
            Some(Path::new("/etc/trellis/api.key"))
        );
        config.validate().unwrap();
        let e = crate::config::ServerConfig::from_toml("[tls]\nverify_incoming = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `verify_incoming`"), "{e}");
        let only_cert =
            crate::config::ServerConfig::from_toml("[tls]\ncert_file = \"a.pem\"\n").unwrap();
        assert!(only_cert.validate().is_err());
        let mut overridden = only_cert.clone();
        crate::config::ConfigOverrides {
            tls_key_file: Some("b.key".into()),
            tls_client_ca_file: Some("ca.pem".into()),
            ..Default::default()
        }
        .apply(&mut overridden);
        overridden.validate().unwrap();
        assert_eq!(only_cert.differences(&overridden), ["tls"]);
        assert!(!crate::config::ServerConfig::default().tls.enabled());
    }

    /// A handshake that never starts times out on the server; a plain HTTP request gets the
    /// 400 that says why.
    #[tokio::test]
    async fn plain_http_is_answered_400_and_a_silent_client_holds_nothing_up() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let config = server_config(&tls(Some(&f.cert), Some(&f.key), None))
            .unwrap()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tls_listener = TlsListener::new(listener, config).unwrap();
        let addr = axum::serve::Listener::local_addr(&tls_listener).unwrap();
        // A client that connects and says nothing must not keep the next one from its answer.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut answer))
            .await
            .expect("answered before the handshake deadline")
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"),
            "{answer}"
        );
        // Neither reached the server.
        let nothing = tokio::time::timeout(
            Duration::from_millis(100),
            axum::serve::Listener::accept(&mut tls_listener),
        )
        .await;
        assert!(nothing.is_err());
    }
}
