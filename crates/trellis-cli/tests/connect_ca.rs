//! The built-in certificate authority: its root is published, a leaf for a service is signed by
//! it (checked with rustls's WebPKI verifier, as a peer sidecar would), carries the service's
//! SPIFFE identity, lives `--leaf-cert-ttl`, and needs `service:write`; the root survives a
//! restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use std::sync::Arc;
use support::{Server, http};

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(server.url(path));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (days from the civil date, as in
/// Howard Hinnant's algorithm).
fn seconds(rfc3339: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| rfc3339[range].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Whether `leaf_pem` verifies as a client certificate against `root_pem` now.
fn verifies(root_pem: &str, leaf_pem: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).unwrap();
    verifier
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .is_ok()
}

#[tokio::test]
async fn leaves_are_signed_by_the_published_root_and_carry_the_spiffe_identity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(&["--data-dir", &data, "--leaf-cert-ttl", "10m"]);
    let (status, roots) = get(&server, "/v1/agent/connect/ca/roots", None).await;
    assert_eq!(status, 200);
    let trust_domain = roots["TrustDomain"].as_str().unwrap().to_owned();
    assert!(trust_domain.ends_with(".consul"), "{roots}");
    let root = &roots["Roots"][0];
    assert_eq!(root["Active"], true);
    assert_eq!(root["ID"], roots["ActiveRootID"]);
    let root_pem = root["RootCert"].as_str().unwrap().to_owned();

    let (status, leaf) = get(&server, "/v1/agent/connect/ca/leaf/web", None).await;
    assert_eq!(status, 200, "{leaf}");
    assert_eq!(
        leaf["ServiceURI"],
        format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/web")
    );
    let cert_pem = leaf["CertPEM"].as_str().unwrap();
    assert!(
        leaf["PrivateKeyPEM"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert!(
        verifies(&root_pem, cert_pem),
        "the leaf verifies against the root"
    );
    // The URI SAN is in the certificate itself.
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let uri = format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/web");
    assert!(der.windows(uri.len()).any(|w| w == uri.as_bytes()));
    // Valid for the configured ten minutes (and a minute before now, for clock skew).
    let lifetime = seconds(leaf["ValidBefore"].as_str().unwrap())
        - seconds(leaf["ValidAfter"].as_str().unwrap());
    assert_eq!(lifetime, 11 * 60, "{leaf}");

    // Another CA's root does not verify it.
    let other = tempfile::tempdir().unwrap();
    let other_server = Server::start(&["--data-dir", other.path().to_str().unwrap()]);
    let (_, other_roots) = get(&other_server, "/v1/connect/ca/roots", None).await;
    let other_root = other_roots["Roots"][0]["RootCert"].as_str().unwrap();
    assert!(!verifies(other_root, cert_pem));
    drop(other_server);

    // The root survives a restart: leaves issued before still verify.
    server.terminate();
    let server = Server::start(&["--data-dir", &data]);
    let (_, again) = get(&server, "/v1/connect/ca/roots", None).await;
    assert_eq!(again["Roots"][0]["RootCert"].as_str().unwrap(), root_pem);
    assert_eq!(again["TrustDomain"].as_str().unwrap(), trust_domain);
    assert!(verifies(&root_pem, cert_pem));
    let (status, bad) = get(&server, "/v1/agent/connect/ca/leaf/not%20a%20name", None).await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn a_leaf_needs_write_on_its_service() {
    let server = Server::start(&["--dev", "--acl-default-policy", "deny"]);
    let management = support::bootstrap_acl(server.url.trim_end_matches('/')).await;
    let management = management.as_str();
    let (status, _) = get(&server, "/v1/agent/connect/ca/leaf/web", None).await;
    assert_eq!(status, 403, "the anonymous token may not write web");
    let (status, _) = get(&server, "/v1/agent/connect/ca/leaf/web", Some(management)).await;
    assert_eq!(status, 200);
    let (status, _) = get(&server, "/v1/connect/ca/roots", None).await;
    assert_eq!(status, 200, "the roots are public, as in Consul");
}
