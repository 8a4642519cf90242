//! Mutual TLS in the mesh, for any member (a sidecar, the gateway, the transaction
//! coordinator, an app joining natively): the rustls configurations made from the mesh's roots
//! and a member's leaf certificate (a server that takes only peers with a mesh certificate, a
//! client that talks only to the service it meant to call), and the SPIFFE identity a verified
//! certificate proves; and the connector a pooled hyper client dials mesh members with.
//! Fetching and renewing the certificate is the caller's business.

use crate::CaRoots;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Registered meta of an instance whose inbound listener takes only mutual TLS: members of
/// the mesh connect to it with TLS, others cannot reach it.
pub const MESH_META: &str = "trellis-mtls";

/// The suffix of the server name a connection asks for (`<service>.<suffix>`) when the
/// certificate must name that service: see [`server_name`].
const SERVER_NAME_SUFFIX: &str = "svc.mesh.trellis";

/// Why mesh TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("mesh TLS: {0}")]
pub struct MeshError(String);

fn error(what: &str) -> impl Fn(rustls::Error) -> MeshError + '_ {
    move |e| MeshError(format!("{what}: {e}"))
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<service>`.
    pub uri: String,
    pub service: String,
}

/// Splits a service identity into its trust domain and service name.
pub fn parse_spiffe(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (trust_domain, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let shape = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match shape {
        (Some("ns"), Some(ns), Some("dc"), Some(dc), Some("svc"), Some(service), None)
            if !trust_domain.is_empty()
                && !ns.is_empty()
                && !dc.is_empty()
                && !service.is_empty() =>
        {
            Some((trust_domain, service))
        }
        _ => None,
    }
}

/// The identity a certificate (DER) proves, if it is a mesh service identity in
/// `trust_domain` (the chain was verified by rustls before this is asked).
fn identity_of(cert: &CertificateDer<'_>, trust_domain: &str) -> Option<PeerIdentity> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    cert.valid_uri_names().find_map(|uri| {
        let (domain, service) = parse_spiffe(uri)?;
        domain
            .eq_ignore_ascii_case(trust_domain)
            .then(|| PeerIdentity {
                uri: uri.to_owned(),
                service: service.to_owned(),
            })
    })
}

/// The server name a connection to `service` asks for: the server's certificate must name
/// `service` (with [`MeshTls::client`]).
pub fn server_name(service: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(format!("{service}.{SERVER_NAME_SUFFIX}")).ok()
}

/// Which service a server must prove it is.
#[derive(Debug, Clone)]
enum Expect {
    /// The one named in the server name asked for ([`server_name`]).
    FromServerName,
    /// This one, whatever the connection asked for (a client that dials addresses).
    Service(String),
}

/// Verifies a server as the mesh's roots do, and that it is the service that was called: web
/// PKI's name check is replaced by the SPIFFE identity's.
#[derive(Debug)]
struct MeshServerVerifier {
    chain: Arc<WebPkiServerVerifier>,
    trust_domain: String,
    expect: Expect,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        requested: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The chain, validity and key usage are checked before the name: a name mismatch is
        // the only error that still means "a valid mesh certificate".
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            requested,
            ocsp_response,
            now,
        ) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let identity = identity_of(end_entity, &self.trust_domain).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
        )?;
        let expected = match &self.expect {
            Expect::FromServerName => {
                server_name(&identity.service).is_some_and(|name| &name == requested)
            }
            Expect::Service(service) => *service == identity.service,
        };
        if expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A member's TLS configurations, from the roots it trusts and its leaf certificate.
#[derive(Clone)]
pub struct MeshTls {
    pub trust_domain: String,
    /// Takes only clients with a certificate from the mesh's roots; offers h2 and HTTP/1.1.
    pub server: Arc<ServerConfig>,
    /// Presents the leaf and verifies the server as [`server_name`] asks.
    pub client: Arc<ClientConfig>,
    leaf: Arc<Leaf>,
}

/// What more client configurations are made from.
struct Leaf {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Leaf {
    fn client_config(&self, expect: Expect, alpn: Vec<Vec<u8>>) -> Result<ClientConfig, MeshError> {
        let provider = provider();
        let chain =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| MeshError(format!("server verifier: {e}")))?;
        let verifier = MeshServerVerifier {
            chain,
            trust_domain: self.trust_domain.clone(),
            expect,
        };
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(error("client protocol versions"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(error("the leaf certificate"))?;
        client.alpn_protocols = alpn;
        Ok(client)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl MeshTls {
    /// Configurations trusting every root in `roots` and presenting the leaf `cert_pem`
    /// (with its chain) and `key_pem`.
    pub fn new(roots: &CaRoots, cert_pem: &str, key_pem: &str) -> Result<Self, MeshError> {
        let mut store = RootCertStore::empty();
        for root in &roots.roots {
            for pem in std::iter::once(&root.root_cert).chain(&root.intermediate_certs) {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
                    store.add(cert).map_err(error("a root of the mesh CA"))?;
                }
            }
        }
        if store.is_empty() {
            return Err(MeshError("the mesh CA lists no root".into()));
        }
        let roots_store = Arc::new(store);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| MeshError(format!("the leaf certificate: {e}")))?;
        if chain.is_empty() {
            return Err(MeshError("the leaf holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| MeshError(format!("the leaf's key: {e}")))?;
        let provider = provider();
        let clients =
            WebPkiClientVerifier::builder_with_provider(roots_store.clone(), provider.clone())
                .build()
                .map_err(|e| MeshError(format!("client verifier: {e}")))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(error("server protocol versions"))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(error("the leaf certificate"))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let leaf = Leaf {
            roots: roots_store,
            trust_domain: roots.trust_domain.clone(),
            chain,
            key,
        };
        let client = leaf.client_config(Expect::FromServerName, vec![b"http/1.1".to_vec()])?;
        Ok(Self {
            trust_domain: roots.trust_domain.clone(),
            server: Arc::new(server),
            client: Arc::new(client),
            leaf: Arc::new(leaf),
        })
    }

    /// A client configuration that talks only to `service`, whatever address it dials (for
    /// clients such as hyper's or reqwest's that ask for the host they connect to).
    pub fn client_for(
        &self,
        service: &str,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<ClientConfig>, MeshError> {
        self.leaf
            .client_config(Expect::Service(service.to_owned()), alpn)
            .map(Arc::new)
    }

    /// Who the peer of an accepted connection is.
    pub fn peer_of(&self, connection: &rustls::ServerConnection) -> Option<PeerIdentity> {
        let cert = connection.peer_certificates()?.first()?;
        identity_of(cert, &self.trust_domain)
    }
}

/// Connects to `https://host:port` with the mesh's mutual TLS.
#[derive(Clone)]
pub struct MeshConnector {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl MeshConnector {
    /// Connects with `config` (from [`MeshTls::client_for`]), giving up on the TCP connect and
    /// on the handshake after `timeout` each.
    pub fn new(config: Arc<ClientConfig>, timeout: Duration) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(config),
            timeout,
        }
    }
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = TokioIo<MeshStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<MeshStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, timeout) = (self.tls.clone(), self.timeout);
        Box::pin(async move {
            let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad URI {uri}"));
            let host = uri.host().ok_or_else(invalid)?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(invalid)?;
            let tcp = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            let _ = tcp.set_nodelay(true);
            // The name is not what is verified (the certificate must name the service the
            // client is for), but TLS needs one.
            let name = ServerName::try_from(host).map_err(|_| invalid())?;
            let stream = tokio::time::timeout(timeout, tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(TokioIo::new(MeshStream(stream)))
        })
    }
}

/// A mutual-TLS connection to a participant.
pub struct MeshStream(tokio_rustls::client::TlsStream<TcpStream>);

impl Connection for MeshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_identities_parse() {
        assert_eq!(
            parse_spiffe("spiffe://abc.consul/ns/default/dc/dc1/svc/web"),
            Some(("abc.consul", "web"))
        );
        for bad in [
            "spiffe://abc.consul/ns/default/dc/dc1/svc/",
            "spiffe://abc.consul/ns/default/dc/dc1/svc/web/extra",
            "spiffe://abc.consul/ns/default/dc/dc1/agent/web",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "https://abc.consul/ns/default/dc/dc1/svc/web",
        ] {
            assert_eq!(parse_spiffe(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_names_carry_the_service() {
        assert!(server_name("orders").is_some());
        assert!(server_name("my_service").is_some());
    }
}
