//! `trellis server --store etcd`: the catalog kept in a real etcd member, surviving a restart of
//! the server, readable with `etcdctl`, and the configuration mistakes refused in one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{Server, fails_to_start, get_json, http};
use trellis_etcd::testing::EtcdProcess;

fn etcd_server(member: &EtcdProcess, prefix: &str, data: &std::path::Path) -> Server {
    Server::start(&etcd_flags(member, prefix, data))
}

/// A server's flags for `member` under `prefix`, with a short lease so takeovers are quick.
fn etcd_flags<'a>(
    member: &'a EtcdProcess,
    prefix: &'a str,
    data: &'a std::path::Path,
) -> Vec<&'a str> {
    vec![
        "--store",
        "etcd",
        "--etcd",
        &member.client_url,
        "--etcd-prefix",
        prefix,
        "--etcd-lease-ttl",
        "2s",
        "--data-dir",
        data.to_str().unwrap(),
        "--dns",
        "off",
    ]
}

#[tokio::test]
async fn the_catalog_lives_in_etcd_and_survives_a_restart_of_the_server() {
    let member = EtcdProcess::start();
    let data = tempfile::tempdir().unwrap();
    let server = etcd_server(&member, "/shop/", data.path());
    let client = http();
    let registered = client
        .put(server.url("/v1/agent/service/register"))
        .json(
            &json!({"ID": "web-1", "Name": "web", "Port": 80, "Tags": ["v1"],
                      "Check": {"CheckID": "web-alive", "TTL": "30s"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let put = client
        .put(server.url("/v1/kv/app/db/host"))
        .body("db.local")
        .send()
        .await
        .unwrap();
    assert_eq!(put.text().await.unwrap(), "true");
    let before: serde_json::Value = get_json(&server.url("/v1/catalog/service/web")).await;

    // What an operator sees with etcdctl.
    let keys = member.keys("/shop/");
    for key in [
        "/shop/index",
        "/shop/instances/web-1",
        "/shop/checks/web-1/web-alive",
        "/shop/kv/app/db/host",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }

    // A new server process on the same cluster (and a fresh data directory) has it all.
    server.terminate();
    let data = tempfile::tempdir().unwrap();
    let server = etcd_server(&member, "/shop", data.path());
    let after: serde_json::Value = get_json(&server.url("/v1/catalog/service/web")).await;
    assert_eq!(after[0]["ServiceID"], "web-1");
    assert_eq!(after[0]["ModifyIndex"], before[0]["ModifyIndex"]);
    assert_eq!(after[0]["ServiceTags"], json!(["v1"]));
    let value = client
        .get(server.url("/v1/kv/app/db/host?raw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(value, "db.local");
    // Another prefix is another catalog.
    let other = etcd_server(&member, "/other/", data.path().join("other").as_path());
    let empty: serde_json::Value = get_json(&other.url("/v1/catalog/services")).await;
    assert!(empty.get("web").is_none(), "{empty}");
}

#[test]
fn etcd_settings_are_checked_before_the_server_starts() {
    let stderr = fails_to_start(&["--store", "etcd"]);
    assert!(
        stderr.contains("--store etcd needs the cluster: --etcd URL"),
        "{stderr}"
    );
    let stderr = fails_to_start(&["--etcd", "http://127.0.0.1:2379"]);
    assert!(stderr.contains("add --store etcd"), "{stderr}");
    let stderr = fails_to_start(&["--store", "etcd", "--etcd", "127.0.0.1:2379"]);
    assert!(stderr.contains("must be http://HOST:PORT"), "{stderr}");
    let stderr = fails_to_start(&["--store", "etcd", "--dev", "--etcd", "http://127.0.0.1:1"]);
    assert!(stderr.contains("--dev"), "{stderr}");
    let stderr = fails_to_start(&["--store", "bolt"]);
    assert!(stderr.contains("want embedded or etcd"), "{stderr}");
}

#[test]
fn an_unreachable_cluster_stops_the_start_with_the_reason() {
    let port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let stderr = fails_to_start(&[
        "--store",
        "etcd",
        "--etcd",
        &url,
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(stderr.contains(&format!("etcd at {url}")), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

/// Until servers keep a replica fed by etcd's watch, a server that loses its cluster in the
/// middle of a commit stops (with the reason) rather than answer from a catalog it cannot
/// make durable; restarted once etcd is back, it has every acknowledged write.
#[tokio::test]
async fn losing_the_cluster_stops_the_server_and_loses_no_acknowledged_write() {
    let mut member = EtcdProcess::start();
    let data = tempfile::tempdir().unwrap();
    let mut server = etcd_server(&member, "/t/", data.path());
    let client = http();
    let register = |id: &str| {
        client
            .put(server.url("/v1/agent/service/register"))
            .json(&json!({"ID": id, "Name": "web", "Port": 80}))
            .send()
    };
    assert_eq!(register("web-1").await.unwrap().status(), 200);
    member.kill();
    // Refused, unless the server was already stopping and did not answer at all.
    if let Ok(answer) = register("web-2").await {
        assert!(answer.status().is_server_error(), "{}", answer.status());
    }
    let status = server.child.wait().unwrap();
    assert!(!status.success());
    member.restart();
    let server = etcd_server(&member, "/t/", data.path());
    let services: serde_json::Value = get_json(&server.url("/v1/catalog/service/web")).await;
    let ids: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ServiceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-1"]);
}

/// Active and standby on one cluster: the standby takes the store over once the active server
/// is killed, within the lease's TTL, and a client that lists both servers carries on.
#[tokio::test]
async fn a_standby_takes_over_from_a_killed_server_and_clients_fail_over_to_it() {
    let member = EtcdProcess::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let (http_a, http_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    let spawn = |http: &str, name: &str, data: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(["server", "--http", http, "--node-name", name])
            .args(etcd_flags(&member, "/ha/", data))
            .args(["--otlp", "off", "--otlp-grpc", "off"])
            .env("TRELLIS_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let serving = |http: &str| std::net::TcpStream::connect(http).is_ok();
    let mut active = spawn(&http_a, "server-a", data_a.path());
    let started = std::time::Instant::now();
    while !serving(&http_a) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "server-a never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(member.value("/ha/lock"), "server-a");

    // The standby: started, but serving nothing while it waits for the store.
    let mut standby = spawn(&http_b, "server-b", data_b.path());
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!serving(&http_b), "the standby serves");

    // A sidecar that lists both servers, in front of an app that accepts connections.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app.local_addr().unwrap().port();
    let registries = format!("http://{http_a},http://{http_b}");
    let _sidecar = support::sidecar(&registries, "api", app_port, &["--id", "api-1"], None);

    let client = trellis_client::Client::new(&format!("{http_a},{http_b}")).unwrap();
    let web = trellis_types::ServiceRegistration::from_json(
        json!({"ID": "web-1", "Name": "web", "Port": 80}),
    )
    .unwrap();
    client.register(&web).await.unwrap();
    // The ACL state is in etcd too: a token made on the active server works on its successor.
    let http = http();
    let bootstrap: serde_json::Value = http
        .put(format!("http://{http_a}/v1/acl/bootstrap"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = bootstrap["SecretID"].as_str().unwrap().to_owned();

    let killed = std::time::Instant::now();
    active.kill().unwrap();
    active.wait().unwrap();
    let takeover = loop {
        if let Ok(services) = client.services().await {
            assert!(services.value.contains_key("web"), "{:?}", services.value);
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(30),
            "no takeover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(client.base_url(), format!("http://{http_b}"));
    assert_eq!(member.value("/ha/lock"), "server-b");
    let me = http
        .get(format!("http://{http_b}/v1/acl/token/self"))
        .header("X-Consul-Token", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "the token made on server-a");
    let again = http
        .put(format!("http://{http_b}/v1/acl/bootstrap"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403, "bootstrapped once, whichever server");
    eprintln!("takeover after SIGKILL of the active server: {takeover:?} (lease TTL 2s)");
    // The sidecar moved to server-b and keeps its instance passing there: past the check's
    // 3 s TTL, only its heartbeats reaching server-b keep it passing.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    support::eventually(
        std::time::Duration::from_secs(5),
        "api-1 passing on server-b",
        || async {
            let passing = get_json(&format!("http://{http_b}/v1/health/service/api?passing")).await;
            passing.as_array().is_some_and(|a| a.len() == 1)
        },
    )
    .await;
    // The CLI takes the same list.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["services", "--addr", &format!("{http_a},{http_b}")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("web"),
        "{listed:?}"
    );
    let _ = standby.kill();
    let _ = standby.wait();
}

/// A server stopped cleanly gives the store up at once: its standby does not wait for the
/// lease to run out.
#[test]
fn a_clean_stop_hands_the_store_over_at_once() {
    let member = EtcdProcess::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut flags = etcd_flags(&member, "/handover/", data_a.path());
    flags[7] = "10s"; // --etcd-lease-ttl: a takeover by expiry would take 10 s
    let active = Server::start(&flags);
    let http_b = format!("127.0.0.1:{}", support::free_port());
    let mut standby = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["server", "--http", &http_b, "--etcd-lease-ttl", "10s"])
        .args(&etcd_flags(&member, "/handover/", data_b.path())[..6])
        .args([
            "--data-dir",
            data_b.path().to_str().unwrap(),
            "--dns",
            "off",
        ])
        .args(["--otlp", "off", "--otlp-grpc", "off"])
        .env("TRELLIS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stopped = std::time::Instant::now();
    assert!(active.terminate().success());
    while std::net::TcpStream::connect(&http_b).is_err() {
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(5),
            "the standby waited for the lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!("handover after a clean stop: {:?}", stopped.elapsed());
    let _ = standby.kill();
    let _ = standby.wait();
}
