//! TLS for clients of the registry's HTTP API (`https://` addresses): which CA to trust, the
//! client certificate to present, the name to verify the server as, read from options or from
//! the environment as Consul's CLI does; and PEM files read with errors that name the file.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The TLS settings of a client of the registry, as Consul's CLI takes them (`-ca-file`,
/// `-client-cert`, `-client-key`, `-tls-server-name`). Empty (the default) verifies an
/// `https://` registry against the system's trust store and presents no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) to trust instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the certificate (chain) to present when the server asks for one; needs
    /// `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM file of `client_cert`'s private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// The name the server's certificate must carry, instead of the address's host (for a
    /// registry reached by IP address, or by a name its certificate does not list).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// The settings from the environment, each `TRELLIS_*` variable before its `CONSUL_*` one:
    /// `TRELLIS_CACERT`/`CONSUL_CACERT`, `TRELLIS_CLIENT_CERT`/`CONSUL_CLIENT_CERT`,
    /// `TRELLIS_CLIENT_KEY`/`CONSUL_CLIENT_KEY`, `TRELLIS_TLS_SERVER_NAME`/
    /// `CONSUL_TLS_SERVER_NAME`. A variable that is set but blank counts as unset.
    pub fn from_env() -> Self {
        Self {
            ca_file: env_pair("TRELLIS_CACERT", "CONSUL_CACERT").map(PathBuf::from),
            client_cert: env_pair("TRELLIS_CLIENT_CERT", "CONSUL_CLIENT_CERT").map(PathBuf::from),
            client_key: env_pair("TRELLIS_CLIENT_KEY", "CONSUL_CLIENT_KEY").map(PathBuf::from),
            server_name: env_pair("TRELLIS_TLS_SERVER_NAME", "CONSUL_TLS_SERVER_NAME"),
        }
    }

    /// These settings, each one unset taken from `fallback` (flags over the environment).
    pub fn or(self, fallback: TlsOptions) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.or(fallback.ca_file),
            client_cert: self.client_cert.or(fallback.client_cert),
            client_key: self.client_key.or(fallback.client_key),
            server_name: self.server_name.or(fallback.server_name),
        }
    }

    /// Nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The first of two environment variables that is set and not blank, trimmed.
fn env_pair(preferred: &str, consul: &str) -> Option<String> {
    [preferred, consul]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| v.trim().to_owned())
}

/// The rustls settings of a registry client: HTTP/1.1 (the client speaks nothing else), the
/// CA file's certificates or the system's trust store, the client certificate if given, and
/// verification against `server_name` if given. The error says which setting is wrong.
pub fn client_config(options: &TlsOptions) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &options.ca_file {
        Some(path) => Arc::new(roots_from_file(path)?),
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &options.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| format!("invalid TLS server name {name:?}"))?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("cannot verify servers: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyAs { inner, name }))
        }
    };
    let mut config = match (&options.client_cert, &options.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certs_from_pem_file(cert).map_err(|e| format!("client {e}"))?;
            let key = key_from_pem_file(key).map_err(|e| format!("client {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "client certificate {} with key: {}",
                    cert.display(),
                    key_problem(&e)
                )
            })?
        }
        (Some(_), None) => {
            return Err(
                "a client certificate needs its key (--client-key, TRELLIS_CLIENT_KEY)".into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "a client key needs its certificate (--client-cert, TRELLIS_CLIENT_CERT)".into(),
            );
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What is wrong with a certificate and key pair, in words.
pub fn key_problem(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate".to_owned()
        }
        other => other.to_string(),
    }
}

/// The system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` point elsewhere, as for OpenSSL),
/// read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            // Stores often hold a few certificates webpki cannot parse; the rest still count.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// A trust store of the certificates in a PEM file.
fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let certs = certs_from_pem_file(path).map_err(|e| format!("CA {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "CA file {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The certificates of a PEM file, in order (a leaf first, then its chain). The error, such as
/// `file /etc/x.pem: no certificate in it ...`, names the file.
pub fn certs_from_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("file {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "file {}: no certificate in it (expected PEM, \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key_from_pem_file(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "key file {}: no private key in it (expected PEM, \"-----BEGIN PRIVATE KEY-----\", \
             \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
            path.display()
        ),
        e => format!("key file {}: not valid PEM: {e}", path.display()),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("file {}: cannot read it: {e}", path.display()))
}

/// Verifies the server's certificate as `name` rather than the address's host: Consul's
/// `TLSServerName`. (SNI still carries the address's host; the registry serves one certificate
/// whatever SNI says.)
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS failure behind a transport error, if it is one: a rustls error anywhere in the
/// chain, bare or inside I/O errors (tokio-rustls wraps it in one, reqwest's connector in
/// another). An I/O error's `source` skips the error it wraps, so those are opened by hand.
pub(crate) fn tls_failure<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

/// A TLS failure in words, with what usually fixes it.
pub(crate) fn explain_tls(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError};
    let hint = match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            "the server's certificate is not signed by a CA this client trusts; give its CA \
             with --ca-file or TRELLIS_CACERT"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's certificate is not for this host; give a name it carries with \
             --tls-server-name or TRELLIS_TLS_SERVER_NAME"
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "the server's certificate is outside its validity period",
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::HandshakeFailure
            | AlertDescription::DecryptError,
        ) => {
            "the server refused this client's certificate or its absence; give one its CA \
             signed with --client-cert and --client-key (or TRELLIS_CLIENT_CERT and \
             TRELLIS_CLIENT_KEY)"
        }
        rustls::Error::InvalidMessage(_) => {
            "the server does not speak TLS there; use an http:// address"
        }
        _ => "",
    };
    if hint.is_empty() {
        format!("TLS failed: {error}")
    } else {
        format!("TLS failed: {error} ({hint})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_field_by_field() {
        let flags = TlsOptions {
            ca_file: Some("flag-ca.pem".into()),
            ..TlsOptions::default()
        };
        let env = TlsOptions {
            ca_file: Some("env-ca.pem".into()),
            server_name: Some("registry.internal".into()),
            ..TlsOptions::default()
        };
        let merged = flags.or(env);
        assert_eq!(merged.ca_file.as_deref(), Some(Path::new("flag-ca.pem")));
        assert_eq!(merged.server_name.as_deref(), Some("registry.internal"));
        assert!(merged.client_cert.is_none());
        assert!(TlsOptions::default().is_empty());
        assert!(!merged.is_empty());
    }

    #[test]
    fn bad_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&TlsOptions {
            ca_file: Some(missing.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("missing.pem: cannot read it"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = client_config(&TlsOptions {
            ca_file: Some(empty.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("empty.pem: no certificate in it"), "{e}");
        let e = client_config(&TlsOptions {
            client_cert: Some(empty.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("needs its key"), "{e}");
        let e = key_from_pem_file(&empty).unwrap_err();
        assert!(e.contains("no private key in it"), "{e}");
        let e = client_config(&TlsOptions {
            server_name: Some("not a name!".into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("invalid TLS server name"), "{e}");
    }
}
