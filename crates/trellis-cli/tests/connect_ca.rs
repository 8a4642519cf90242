//! The certificate authority: its roots are published, a leaf for a service is signed by the
//! active one (checked with rustls's WebPKI verifier, as a peer sidecar would), carries the
//! service's SPIFFE identity, lives `--leaf-cert-ttl`, and needs `service:write`; the roots
//! survive a restart. An operator's CA (`--ca-cert`, `--ca-key`) signs instead of a root made
//! here, and a bad one stops the server at start; `PUT /v1/connect/ca/configuration` rotates
//! the root while the old one stays trusted, waking blocking readers, until its last leaf has
//! expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Server, fails_to_start, http, index_of};

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    call(server, Method::GET, path, token, None).await
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http().request(method, server.url(path));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A GET answered with its `X-Consul-Index`.
async fn get_indexed(server: &Server, path: &str) -> (u64, Value) {
    let response = http().get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let index = index_of(&response);
    (index, response.json().await.unwrap())
}

/// An operator's CA: a self-signed ECDSA P-384 certificate (a CA if `ca`) and its PKCS#8 key,
/// PEM.
fn operator_ca(name: &str, ca: bool) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    params.distinguished_name.push(DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// Writes an operator CA's two files into `dir`; answers their paths.
fn write_ca(dir: &std::path::Path, (cert, key): &(String, String)) -> (String, String) {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (
        cert_path.to_str().unwrap().to_owned(),
        key_path.to_str().unwrap().to_owned(),
    )
}

/// The DER of a PEM certificate.
fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The roots' IDs, and the active one's PEM.
fn roots_of(roots: &Value) -> (Vec<String>, String) {
    let list = roots["Roots"].as_array().unwrap();
    let ids = list
        .iter()
        .map(|r| r["ID"].as_str().unwrap().to_owned())
        .collect();
    let active: Vec<&Value> = list.iter().filter(|r| r["Active"] == true).collect();
    assert_eq!(active.len(), 1, "one active root: {roots}");
    assert_eq!(active[0]["ID"], roots["ActiveRootID"]);
    (ids, active[0]["RootCert"].as_str().unwrap().to_owned())
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

#[tokio::test]
async fn an_operator_ca_signs_the_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let ca = operator_ca("Example Root CA", true);
    let (cert, key) = write_ca(dir.path(), &ca);
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let server = Server::start(&["--data-dir", data, "--ca-cert", &cert, "--ca-key", &key]);
    let (_, roots) = get(&server, "/v1/connect/ca/roots", None).await;
    let (ids, active_pem) = roots_of(&roots);
    assert_eq!(ids.len(), 1, "{roots}");
    assert_eq!(
        der(&active_pem),
        der(&ca.0),
        "the operator's certificate is published"
    );
    assert_eq!(roots["Roots"][0]["Name"], "Example Root CA");
    assert_eq!(roots["Roots"][0]["PrivateKeyBits"], 384);

    let (status, leaf) = get(&server, "/v1/agent/connect/ca/leaf/web", None).await;
    assert_eq!(status, 200, "{leaf}");
    let cert_pem = leaf["CertPEM"].as_str().unwrap();
    assert!(
        verifies(&ca.0, cert_pem),
        "the leaf verifies against the operator's CA"
    );
    let trust_domain = roots["TrustDomain"].as_str().unwrap();
    assert_eq!(
        leaf["ServiceURI"],
        format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/web")
    );
    let (status, config) = get(&server, "/v1/connect/ca/configuration", None).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["Provider"], "consul");
    assert_eq!(config["Config"]["PrivateKeyType"], "ec");
    assert!(
        config["Config"].get("PrivateKey").is_none(),
        "the key is never shown"
    );

    // Started again with the same files: the same single root.
    server.terminate();
    let server = Server::start(&["--data-dir", data, "--ca-cert", &cert, "--ca-key", &key]);
    let (_, again) = get(&server, "/v1/connect/ca/roots", None).await;
    assert_eq!(roots_of(&again).0, ids);
}

#[test]
fn a_bad_operator_ca_stops_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_ca(dir.path(), &operator_ca("Not a CA", false));
    let stderr = fails_to_start(&["--dev", "--ca-cert", &cert, "--ca-key", &key]);
    assert!(
        stderr.contains("not a CA certificate (basicConstraints CA is not set)"),
        "{stderr}"
    );

    let other = tempfile::tempdir().unwrap();
    let (cert, _) = write_ca(dir.path(), &operator_ca("Root", true));
    let (_, other_key) = write_ca(other.path(), &operator_ca("Another root", true));
    let stderr = fails_to_start(&["--dev", "--ca-cert", &cert, "--ca-key", &other_key]);
    assert!(stderr.contains("is not the certificate's key"), "{stderr}");

    let stderr = fails_to_start(&["--dev", "--ca-cert", &cert]);
    assert!(
        stderr.contains("needs connect.ca_key_file (--ca-key)"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.pem");
    let stderr = fails_to_start(&[
        "--dev",
        "--ca-cert",
        missing.to_str().unwrap(),
        "--ca-key",
        &other_key,
    ]);
    assert!(
        stderr.contains("cannot read the CA certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_rotation_keeps_the_old_root_trusted_and_wakes_blocking_readers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let server = Server::start(&["--data-dir", data, "--leaf-cert-ttl", "10m"]);
    let (index, roots) = get_indexed(&server, "/v1/agent/connect/ca/roots").await;
    let (first_ids, first_pem) = roots_of(&roots);
    assert_eq!(roots["Roots"][0]["ModifyIndex"], index);
    let (_, old_leaf) = get(&server, "/v1/agent/connect/ca/leaf/web", None).await;
    let old_leaf = old_leaf["CertPEM"].as_str().unwrap().to_owned();
    let (_, config) = get(&server, "/v1/connect/ca/configuration", None).await;
    assert_eq!(config["Config"]["LeafCertTTL"], "10m");

    // A sidecar's blocking roots query and leaf query, both at the current index.
    let url = server.url(&format!(
        "/v1/agent/connect/ca/roots?index={index}&wait=60s"
    ));
    let roots_waiter = tokio::spawn(async move {
        let response = http().get(url).send().await.unwrap();
        (index_of(&response), response.json::<Value>().await.unwrap())
    });
    let url = server.url(&format!(
        "/v1/agent/connect/ca/leaf/web?index={index}&wait=60s"
    ));
    let leaf_waiter = tokio::spawn(async move {
        let response = http().get(url).send().await.unwrap();
        (index_of(&response), response.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!roots_waiter.is_finished(), "nothing changed yet");

    // Rotate to a new root made by the server, with a new leaf lifetime.
    let started = Instant::now();
    let body = json!({"Provider": "consul", "Config": {"LeafCertTTL": "1h"}});
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/v1/connect/ca/configuration",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (woke_at, woken) = roots_waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "woken at once");
    assert!(woke_at > index);
    let (ids, active_pem) = roots_of(&woken);
    assert_eq!(ids.len(), 2, "old and new roots: {woken}");
    assert!(ids.contains(&first_ids[0]), "the old root is still trusted");
    assert_ne!(woken["ActiveRootID"].as_str().unwrap(), first_ids[0]);
    let (leaf_index, leaf) = leaf_waiter.await.unwrap();
    assert_eq!(leaf_index, woke_at);
    let new_leaf = leaf["CertPEM"].as_str().unwrap();
    assert!(verifies(&active_pem, new_leaf), "new leaves: the new root");
    assert!(!verifies(&first_pem, new_leaf));
    assert!(verifies(&first_pem, &old_leaf), "old leaves still verify");
    let lifetime = seconds(leaf["ValidBefore"].as_str().unwrap())
        - seconds(leaf["ValidAfter"].as_str().unwrap());
    assert_eq!(lifetime, 61 * 60, "{leaf}");
    let (config_index, config) = get_indexed(&server, "/v1/connect/ca/configuration").await;
    assert_eq!(config["Config"]["LeafCertTTL"], "1h");
    assert_eq!(config["ModifyIndex"], config_index);
    assert!(config_index > config["CreateIndex"].as_u64().unwrap());

    // Then to an operator's CA given in the request.
    let ca = operator_ca("Rotated-to Root", true);
    let body = json!({"Provider": "consul", "Config": {"RootCert": ca.0, "PrivateKey": ca.1}});
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/v1/connect/ca/configuration",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (third_index, third) = get_indexed(&server, "/v1/connect/ca/roots").await;
    assert!(third_index > woke_at);
    let (third_ids, third_pem) = roots_of(&third);
    assert_eq!(third_ids.len(), 3);
    assert_eq!(der(&third_pem), der(&ca.0));
    let (_, leaf) = get(&server, "/v1/agent/connect/ca/leaf/web", None).await;
    assert!(verifies(&ca.0, leaf["CertPEM"].as_str().unwrap()));
    let (status, chain) = get(&server, "/v1/connect/ca/roots?pem=true", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        chain.as_str().unwrap().matches("BEGIN CERTIFICATE").count(),
        3
    );

    // Bad requests are refused with the reason, and change nothing.
    let not_ca = operator_ca("Not a CA", false);
    for (body, reason) in [
        (
            json!({"Config": {"RootCert": not_ca.0, "PrivateKey": not_ca.1}}),
            "basicConstraints",
        ),
        (
            json!({"Config": {"RootCert": ca.0}}),
            "needs Config.PrivateKey",
        ),
        (json!({"Provider": "vault", "Config": {}}), "not supported"),
        (
            json!({"Config": {"LeafCertTTL": "10s"}}),
            "between 1m and 8760h",
        ),
    ] {
        let (status, answer) = call(
            &server,
            Method::PUT,
            "/v1/connect/ca/configuration",
            None,
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.as_str().unwrap().contains(reason), "{answer}");
    }
    let (unchanged, _) = get_indexed(&server, "/v1/connect/ca/roots").await;
    assert_eq!(unchanged, third_index);

    // All of it survives a restart (the lifetime set through the API wins over the flag).
    server.terminate();
    let server = Server::start(&["--data-dir", data, "--leaf-cert-ttl", "10m"]);
    let (again_index, again) = get_indexed(&server, "/v1/connect/ca/roots").await;
    assert_eq!(again_index, third_index);
    assert_eq!(roots_of(&again), (third_ids, third_pem));
    let (_, config) = get(&server, "/v1/connect/ca/configuration", None).await;
    assert_eq!(config["Config"]["LeafCertTTL"], "1h");
}

#[tokio::test]
async fn changing_the_ca_is_an_operators_right() {
    let server = Server::start(&["--dev", "--acl-default-policy", "deny"]);
    let management = support::bootstrap_acl(server.url.trim_end_matches('/')).await;
    let reader = operator_token(&server, &management, "operator = \"read\"").await;
    let path = "/v1/connect/ca/configuration";
    let rotate = || Some(json!({"Config": {}}));
    assert_eq!(get(&server, path, None).await.0, 403);
    assert_eq!(get(&server, path, Some(&reader)).await.0, 200);
    let put = |token| call(&server, Method::PUT, path, token, rotate());
    assert_eq!(put(None).await.0, 403);
    assert_eq!(put(Some(&reader)).await.0, 403);
    assert_eq!(put(Some(&management)).await.0, 200);
    let (_, roots) = get(&server, "/v1/connect/ca/roots", None).await;
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 2);
}

/// A token whose one policy has `rules`.
async fn operator_token(server: &Server, management: &str, rules: &str) -> String {
    let policy = json!({"Name": "ca-reader", "Rules": rules});
    let (status, answer) = call(
        server,
        Method::PUT,
        "/v1/acl/policy",
        Some(management),
        Some(policy),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let token = json!({"Policies": [{"Name": "ca-reader"}]});
    let (status, token) = call(
        server,
        Method::PUT,
        "/v1/acl/token",
        Some(management),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    token["SecretID"].as_str().unwrap().to_owned()
}

/// Takes two minutes: the shortest leaf lifetime (1m) and the clock skew allowed after it (1m)
/// pass before the old root goes; the test waits on a blocking query, not a sleep.
#[tokio::test]
async fn an_old_root_is_retired_once_its_last_leaf_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let server = Server::start(&["--data-dir", data, "--leaf-cert-ttl", "1m"]);
    let (_, before) = get(&server, "/v1/connect/ca/roots", None).await;
    let old_id = before["ActiveRootID"].as_str().unwrap().to_owned();
    let path = "/v1/connect/ca/configuration";
    let (status, _) = call(
        &server,
        Method::PUT,
        path,
        None,
        Some(json!({"Config": {}})),
    )
    .await;
    assert_eq!(status, 200);
    let rotated_at = Instant::now();
    let (mut index, roots) = get_indexed(&server, "/v1/connect/ca/roots").await;
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 2);
    let new_id = roots["ActiveRootID"].as_str().unwrap().to_owned();
    let retired = loop {
        assert!(
            rotated_at.elapsed() < Duration::from_secs(200),
            "never retired"
        );
        let url = format!("/v1/connect/ca/roots?index={index}&wait=30s");
        let (next, roots) = get_indexed(&server, &url).await;
        if roots["Roots"].as_array().unwrap().len() == 1 {
            break roots;
        }
        index = next;
    };
    let after = rotated_at.elapsed();
    assert!(after >= Duration::from_secs(115), "retired after {after:?}");
    assert_eq!(retired["Roots"][0]["ID"], new_id.as_str());
    assert_ne!(new_id, old_id);
    // And it stays retired across a restart.
    server.terminate();
    let server = Server::start(&["--data-dir", data, "--leaf-cert-ttl", "1m"]);
    let (_, roots) = get(&server, "/v1/connect/ca/roots", None).await;
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 1, "{roots}");
}
