//! `trellis server --store etcd`: the catalog kept in a real etcd member, surviving a restart of
//! the server, readable with `etcdctl`, and the configuration mistakes refused in one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{Server, fails_to_start, http};
use trellis_etcd::testing::EtcdProcess;

fn etcd_server(member: &EtcdProcess, prefix: &str, data: &std::path::Path) -> Server {
    Server::start(&[
        "--store",
        "etcd",
        "--etcd",
        &member.client_url,
        "--etcd-prefix",
        prefix,
        "--data-dir",
        data.to_str().unwrap(),
        "--dns",
        "off",
    ])
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
    let before: serde_json::Value = client
        .get(server.url("/v1/catalog/service/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

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
    let after: serde_json::Value = client
        .get(server.url("/v1/catalog/service/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let empty: serde_json::Value = client
        .get(other.url("/v1/catalog/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let services: serde_json::Value = client
        .get(server.url("/v1/catalog/service/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ServiceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-1"]);
}
