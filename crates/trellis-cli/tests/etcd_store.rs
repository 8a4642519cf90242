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

/// A server that loses its etcd cluster keeps answering reads from what it has, saying that
/// no leader is known (`X-Consul-KnownLeader: false`, a growing `X-Consul-LastContact`), refuses
/// writes with 503 and the reason (a write whose commit failed is never read), and, once etcd
/// is back, takes writes again without a restart and with every acknowledged write.
#[tokio::test]
async fn losing_the_cluster_refuses_writes_keeps_reads_and_recovers_when_it_returns() {
    let mut member = EtcdProcess::start();
    let data = tempfile::tempdir().unwrap();
    let server = etcd_server(&member, "/t/", data.path());
    let client = http();
    let register = |id: &str| {
        client
            .put(server.url("/v1/agent/service/register"))
            .json(&json!({"ID": id, "Name": "web", "Port": 80}))
            .send()
    };
    support::eventually(
        std::time::Duration::from_secs(10),
        "the server leads",
        || async { register("web-1").await.unwrap().status() == 200 },
    )
    .await;
    let flag = client
        .put(server.url("/v1/kv/app/flag"))
        .body("old")
        .send()
        .await
        .unwrap();
    assert_eq!(flag.text().await.unwrap(), "true");
    member.kill();
    // The server still believes it leads (its lease has not run out), but a consistent read
    // asks the quorum first, and there is none.
    let consistent = client
        .get(server.url("/v1/catalog/service/web?consistent"))
        .send()
        .await
        .unwrap();
    assert_eq!(consistent.status(), 503);
    let reason = consistent.text().await.unwrap();
    assert!(reason.contains("leadership"), "{reason}");
    // The first write after the loss is applied to the leader's catalog before its commit
    // fails: it is taken back out before any reader can see it.
    let refused = client
        .put(server.url("/v1/kv/app/flag"))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("No cluster leader"), "{reason}");
    let flag = client
        .get(server.url("/v1/kv/app/flag?raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (flag.status().as_u16(), flag.text().await.unwrap()),
        (200, "old".to_owned()),
        "a write that was refused is never read"
    );
    let refused = register("web-2").await.unwrap();
    assert_eq!(refused.status(), 503);
    let reason = refused.text().await.unwrap();
    assert!(reason.contains("No cluster leader"), "{reason}");
    // Reads go on, and say no leader is known once the lease's TTL (2 s) has passed.
    let known = || async {
        let answer = client
            .get(server.url("/v1/catalog/service/web"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let header = |name: &str| answer.headers()[name].to_str().unwrap().to_owned();
        let (known, contact) = (
            header("x-consul-knownleader"),
            header("x-consul-lastcontact"),
        );
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body[0]["ServiceID"], "web-1");
        (known, contact.parse::<u64>().unwrap())
    };
    support::eventually(
        std::time::Duration::from_secs(10),
        "reads say no leader is known",
        || async { known().await.0 == "false" },
    )
    .await;
    let (_, first) = known().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, later) = known().await;
    assert!(later > first, "LastContact grows: {first} then {later}");
    member.restart();
    support::eventually(
        std::time::Duration::from_secs(20),
        "writes taken again",
        || async { register("web-3").await.unwrap().status() == 200 },
    )
    .await;
    support::eventually(
        std::time::Duration::from_secs(5),
        "reads say a leader is known again",
        || async { known().await.0 == "true" },
    )
    .await;
    let services = get_json(&server.url("/v1/catalog/service/web?consistent")).await;
    let ids: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ServiceID"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"web-1") && ids.contains(&"web-3"), "{ids:?}");
    assert!(!ids.contains(&"web-2"), "a refused write: {ids:?}");
}

/// The node named in the store's lock (its value is JSON: the node and its HTTP address).
fn lock_holder(member: &EtcdProcess, prefix: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(&member.value(&format!("{prefix}lock"))).unwrap();
    value["Node"].as_str().unwrap().to_owned()
}

/// Starts a server process on `http` that shares `prefix` with others.
fn spawn_member(
    member: &EtcdProcess,
    prefix: &str,
    http: &str,
    name: &str,
    data: &std::path::Path,
) -> std::process::Child {
    let log = std::process::Stdio::inherit();
    spawn_member_with(member, prefix, http, name, data, &[], log)
}

/// [`spawn_member`] with `extra` flags, its log (warnings and errors, on stderr) going to
/// `log`.
fn spawn_member_with(
    member: &EtcdProcess,
    prefix: &str,
    http: &str,
    name: &str,
    data: &std::path::Path,
    extra: &[&str],
    log: std::process::Stdio,
) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["server", "--http", http, "--node-name", name])
        .args(etcd_flags(member, prefix, data))
        .args(extra)
        .args(["--otlp", "off", "--otlp-grpc", "off"])
        .env("TRELLIS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(http).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{name} never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// The `X-Consul-Index` and `X-Consul-KnownLeader` of a read.
async fn read_headers(url: &str) -> (u64, String) {
    let answer = http().get(url).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{url}");
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (
        header("x-consul-index").parse().unwrap(),
        header("x-consul-knownleader"),
    )
}

/// Two servers on one prefix: both serve at once, the follower from a replica fed by etcd's
/// watch. A write sent to the follower is forwarded to the leader and readable on the follower
/// as soon as it is answered; both show the same indexes, etcd's revisions; a blocking query on the follower
/// wakes for a write made on the leader; an ACL token made on one works on the other. When the
/// leader is killed, the follower takes over within the lease's TTL with its replica (no load),
/// and clients that list both servers carry on.
#[tokio::test]
async fn followers_serve_and_forward_and_one_takes_over_from_a_killed_leader() {
    let member = EtcdProcess::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let (http_a, http_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));
    let mut leader = spawn_member(&member, "/ha/", &http_a, "server-a", data_a.path());
    support::eventually(
        std::time::Duration::from_secs(10),
        "server-a leads",
        || async { member.value("/ha/lock").contains("server-a") },
    )
    .await;
    let mut follower = spawn_member(&member, "/ha/", &http_b, "server-b", data_b.path());
    assert_eq!(lock_holder(&member, "/ha/"), "server-a");

    let client = http();
    // Written through the follower: forwarded, and readable there once answered.
    let registered = client
        .put(format!("http://{http_b}/v1/agent/service/register"))
        .json(&json!({"ID": "web-1", "Name": "web", "Port": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let on_b = get_json(&format!("http://{http_b}/v1/catalog/service/web")).await;
    assert_eq!(
        on_b[0]["ServiceID"], "web-1",
        "read-your-writes on the follower"
    );
    let (index_a, known_a) = read_headers(&format!("http://{http_a}/v1/catalog/service/web")).await;
    let (index_b, known_b) = read_headers(&format!("http://{http_b}/v1/catalog/service/web")).await;
    assert_eq!(index_a, index_b, "the same index on both servers");
    assert_eq!((known_a.as_str(), known_b.as_str()), ("true", "true"));
    let put = client
        .put(format!("http://{http_b}/v1/kv/app/color?cas=0"))
        .body("blue")
        .send()
        .await
        .unwrap();
    assert_eq!(put.text().await.unwrap(), "true");
    let consistent = get_json(&format!("http://{http_b}/v1/kv/app/color?consistent")).await;
    assert_eq!(consistent[0]["Key"], "app/color");
    // Indexes are etcd's revisions, the same on both servers: a record's are its key's, the
    // service's is the revision of the commit that changed it.
    let (created, modified) = member.revisions("/ha/instances/web-1");
    assert_eq!(index_a, modified, "the registration's revision");
    assert_eq!(
        (&on_b[0]["CreateIndex"], &on_b[0]["ModifyIndex"]),
        (&json!(created), &json!(modified))
    );
    let (created, modified) = member.revisions("/ha/kv/app/color");
    for http in [&http_a, &http_b] {
        let entry = get_json(&format!("http://{http}/v1/kv/app/color")).await;
        assert_eq!(
            (&entry[0]["CreateIndex"], &entry[0]["ModifyIndex"]),
            (&json!(created), &json!(modified)),
            "on {http}"
        );
    }

    // A watcher on the follower wakes for a write made on the leader.
    let (index, _) = read_headers(&format!("http://{http_b}/v1/health/service/api")).await;
    let watcher = tokio::spawn({
        let url = format!("http://{http_b}/v1/health/service/api?index={index}&wait=20s");
        async move {
            let started = std::time::Instant::now();
            let body = get_json(&url).await;
            (started.elapsed(), body)
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let registered = client
        .put(format!("http://{http_a}/v1/agent/service/register"))
        .json(&json!({"ID": "api-0", "Name": "api", "Port": 81}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let (waited, body) = watcher.await.unwrap();
    assert_eq!(body[0]["Service"]["ID"], "api-0");
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");

    // A sidecar that lists both servers, in front of an app that accepts connections.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app.local_addr().unwrap().port();
    let registries = format!("http://{http_a},http://{http_b}");
    let _sidecar = support::sidecar(&registries, "api", app_port, &["--id", "api-1"], None);
    let sdk = trellis_client::Client::new(&format!("{http_a},{http_b}")).unwrap();
    // The ACL state is in etcd too: a token made through the follower works on both.
    let bootstrap: serde_json::Value = client
        .put(format!("http://{http_b}/v1/acl/bootstrap"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = bootstrap["SecretID"].as_str().unwrap().to_owned();
    support::eventually(
        std::time::Duration::from_secs(5),
        "the token known to the follower",
        || async {
            http()
                .get(format!("http://{http_b}/v1/acl/token/self"))
                .header("X-Consul-Token", &secret)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        },
    )
    .await;

    let killed = std::time::Instant::now();
    leader.kill().unwrap();
    leader.wait().unwrap();
    // Reads never stop: the follower answers them throughout.
    let services = sdk.services().await.unwrap();
    assert!(services.value.contains_key("web"), "{:?}", services.value);
    let read_after = killed.elapsed();
    let takeover = loop {
        let put = client
            .put(format!("http://{http_b}/v1/kv/after-takeover"))
            .body("x")
            .send()
            .await
            .unwrap();
        if put.status() == 200 {
            break killed.elapsed();
        }
        assert_eq!(put.status(), 503);
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(30),
            "no takeover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(sdk.base_url(), format!("http://{http_b}"));
    assert_eq!(lock_holder(&member, "/ha/"), "server-b");
    let again = client
        .put(format!("http://{http_b}/v1/acl/bootstrap"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403, "bootstrapped once, whichever server");
    eprintln!(
        "after SIGKILL of the leader: reads served in {read_after:?}, writes after {takeover:?} \
         (lease TTL 2s)"
    );
    // The sidecar moved to server-b and keeps its instance passing there: past the check's
    // 3 s TTL, only its heartbeats reaching server-b keep it passing.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    support::eventually(
        std::time::Duration::from_secs(5),
        "api-1 passing on server-b",
        || async {
            let passing = get_json(&format!("http://{http_b}/v1/health/service/api?passing")).await;
            passing
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["Service"]["ID"] == "api-1"))
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
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A leader stopped cleanly gives the store up at once: its follower takes writes without
/// waiting for the lease to run out.
#[test]
fn a_clean_stop_hands_the_store_over_at_once() {
    let took = handover_after("/handover/", |active| {
        assert!(active.terminate().success());
    });
    eprintln!("handover after a clean stop: {took:?}");
}

/// A leader killed outright gives nothing up, but its address then refuses connections: the
/// follower it no longer answers ends its lease, and takes writes without waiting for the
/// lease to run out.
#[test]
fn a_killed_leader_is_deposed_at_once() {
    let took = handover_after("/deposed/", |mut active| {
        active.child.kill().unwrap();
        active.child.wait().unwrap();
    });
    eprintln!("takeover after SIGKILL of the leader, lease 10 s: {took:?}");
}

/// Starts a leader and a follower under `prefix` with a 10 s lease, stops the leader with
/// `stop`, and gives the time until the follower takes a write: under 5 s, so not by the
/// lease's expiry (which would take at least two thirds of its 10 s).
fn handover_after(prefix: &str, stop: impl FnOnce(Server)) -> std::time::Duration {
    let member = EtcdProcess::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut flags = etcd_flags(&member, prefix, data_a.path());
    flags[7] = "10s"; // --etcd-lease-ttl
    let active = Server::start(&flags);
    let http_b = format!("127.0.0.1:{}", support::free_port());
    let mut standby = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["server", "--http", &http_b, "--etcd-lease-ttl", "10s"])
        .args(&etcd_flags(&member, prefix, data_b.path())[..6])
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
    while std::net::TcpStream::connect(&http_b).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stopped = std::time::Instant::now();
    stop(active);
    let write = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(["kv", "put", "--addr", &http_b, "handover", "x"])
            .output()
            .unwrap()
            .status
            .success()
    };
    while !write() {
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(5),
            "the follower waited for the lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let took = stopped.elapsed();
    let _ = standby.kill();
    let _ = standby.wait();
    took
}

/// Active probes shared out among the servers: each HTTP check is probed by exactly one live
/// server (rendezvous hashing over the members in etcd), a follower's results reach the leader
/// (every check turns critical when its target goes, about half of them probed by the
/// follower), and when a server is killed its share moves to the survivor.
#[tokio::test]
async fn active_probes_are_shared_out_among_the_servers_and_move_when_one_dies() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const CHECKS: usize = 16;
    let member = EtcdProcess::start();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (http_a, http_b) = (
        format!("127.0.0.1:{}", support::free_port()),
        format!("127.0.0.1:{}", support::free_port()),
    );
    let mut leader = spawn_member(&member, "/probes/", &http_a, "server-a", data_a.path());
    support::eventually(
        std::time::Duration::from_secs(10),
        "server-a leads",
        || async { member.value("/probes/lock").contains("server-a") },
    )
    .await;
    let mut follower = spawn_member(&member, "/probes/", &http_b, "server-b", data_b.path());
    support::eventually(
        std::time::Duration::from_secs(10),
        "both servers are members",
        || async { member.keys("/probes/members/").len() == 2 },
    )
    .await;

    // The checks' target: counts probes per check, and can be turned off.
    let hits: std::sync::Arc<Vec<AtomicUsize>> =
        std::sync::Arc::new((0..CHECKS).map(|_| AtomicUsize::new(0)).collect());
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/health/{n}",
        axum::routing::get({
            let (hits, up) = (hits.clone(), up.clone());
            move |axum::extract::Path(n): axum::extract::Path<usize>| async move {
                hits[n].fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(target, app).await });
    let client = http();
    for n in 0..CHECKS {
        let answer = client
            .put(format!("http://{http_a}/v1/agent/service/register"))
            .json(&json!({"ID": format!("api-{n}"), "Name": "api", "Port": 80,
                "Check": {"HTTP": format!("http://127.0.0.1:{target_port}/health/{n}"),
                          "Interval": "1s"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let passing = |server: String| async move {
        get_json(&format!("http://{server}/v1/health/service/api?passing"))
            .await
            .as_array()
            .unwrap()
            .len()
    };
    support::eventually(
        std::time::Duration::from_secs(15),
        "every check passing",
        || async { passing(http_b.clone()).await == CHECKS },
    )
    .await;
    // Exactly one server probes each check: about one probe a second, not two.
    let before: Vec<usize> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for (n, hit) in hits.iter().enumerate() {
        let probes = hit.load(Ordering::SeqCst) - before[n];
        assert!(
            (3..=7).contains(&probes),
            "check {n}: {probes} probes in 5 s"
        );
    }
    // Both servers probe: the follower its share, the leader the rest.
    let probes = |server: String| async move {
        let text = support::get_text(&format!("http://{server}/metrics")).await;
        text.lines()
            .find_map(|l| l.strip_prefix("trellis_check_probes_total "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize)
    };
    let (by_a, by_b) = (probes(http_a.clone()).await, probes(http_b.clone()).await);
    assert!(
        by_a > 0 && by_b > 0,
        "probes by server-a {by_a}, by server-b {by_b}"
    );
    // The target goes: every check turns critical, the follower's through the leader.
    up.store(false, Ordering::SeqCst);
    support::eventually(
        std::time::Duration::from_secs(15),
        "every check critical on both servers",
        || async { passing(http_a.clone()).await == 0 && passing(http_b.clone()).await == 0 },
    )
    .await;
    // The follower dies: its share moves to the leader, which sees them recover.
    follower.kill().unwrap();
    follower.wait().unwrap();
    up.store(true, Ordering::SeqCst);
    support::eventually(
        std::time::Duration::from_secs(20),
        "every check passing again with the follower gone",
        || async { passing(http_a.clone()).await == CHECKS },
    )
    .await;
    let _ = leader.kill();
    let _ = leader.wait();
}

/// A follower paused while etcd compacts past the changes it had not yet seen (its watch
/// cancelled with the compaction) loads the store's state again and goes on serving and
/// following, rather than stopping. Also: an idle follower sleeps (its writer once spun on
/// deadlines that only a leader's ticks move).
#[tokio::test]
async fn a_follower_behind_the_compaction_loads_the_state_again() {
    use base64::Engine;
    use trellis_etcd::testing::etcdctl;
    let member = EtcdProcess::start();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("follower.log");
    let follower_log = std::fs::File::create(&log).unwrap().into();
    let mut pair = leader_and_follower(&member, "/cmp/", &[], follower_log).await;
    let (http_a, http_b) = (pair.leader_http.clone(), pair.follower_http.clone());
    let started = std::time::Instant::now();
    let client = support::http_with_timeout(std::time::Duration::from_secs(10));
    let register = |at: &str, id: &str| {
        client
            .put(format!("http://{at}/v1/agent/service/register"))
            .json(&json!({"ID": id, "Name": "web", "Port": 80}))
            .send()
    };
    assert_eq!(register(&http_a, "web-1").await.unwrap().status(), 200);
    let ids = |at: String| async move {
        get_json(&format!("http://{at}/v1/catalog/service/web"))
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ServiceID"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    support::eventually(
        std::time::Duration::from_secs(10),
        "the follower has web-1",
        || async { ids(http_b.clone()).await == ["web-1"] },
    )
    .await;

    // Paused, the follower reads nothing, and etcd holds back its watch's events: more
    // changes under the prefix than the stream buffers (2,000 puts of 10 kB), after which the
    // compaction cancels the watch.
    let pid = pair.follower.0.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let filler = b64(&[b'x'; 10_000]);
    for i in 0..2000 {
        let put = client
            .post(format!("{}/v3/kv/put", member.client_url))
            .json(&json!({"key": b64(format!("/cmp/zz-filler/{i}").as_bytes()), "value": filler}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    assert_eq!(register(&http_a, "web-2").await.unwrap().status(), 200);
    let status = etcdctl(&member.client_url, &["endpoint", "status", "-w", "json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    etcdctl(&member.client_url, &["compact", &revision.to_string()]).unwrap();
    signal("-CONT");

    support::eventually(
        std::time::Duration::from_secs(30),
        "the follower has web-2",
        || async { ids(http_b.clone()).await == ["web-1", "web-2"] },
    )
    .await;
    assert!(
        pair.follower.0.try_wait().unwrap().is_none(),
        "the follower stopped"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("fell behind etcd's compaction"),
        "the reload path was not taken:\n{said}"
    );
    // Still following: a write through it is forwarded and read back there.
    support::eventually(
        std::time::Duration::from_secs(10),
        "a write through the follower",
        || async { register(&http_b, "web-3").await.unwrap().status() == 200 },
    )
    .await;
    assert_eq!(ids(http_b.clone()).await, ["web-1", "web-2", "web-3"]);

    // Idle past the writer's 10 s housekeeping period, the follower uses next to no CPU.
    tokio::time::sleep(std::time::Duration::from_secs(12).saturating_sub(started.elapsed())).await;
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime, in clock ticks (fields 14 and 15 of proc(5)).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu_ticks();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let used = cpu_ticks() - before;
    assert!(
        used < 150,
        "an idle follower used {used} ticks of CPU in 3 s"
    );
}

/// Two servers on `prefix` with `extra` flags: server-a, which leads (waited for), and
/// server-b following it, its log going to `follower_log`. Both are killed when dropped.
struct Pair {
    leader: KillOnDrop,
    follower: KillOnDrop,
    leader_http: String,
    follower_http: String,
    _data: [tempfile::TempDir; 2],
}

async fn leader_and_follower(
    member: &EtcdProcess,
    prefix: &str,
    extra: &[&str],
    follower_log: std::process::Stdio,
) -> Pair {
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let http = || format!("127.0.0.1:{}", support::free_port());
    let (leader_http, follower_http) = (http(), http());
    let inherit = std::process::Stdio::inherit();
    let leader = KillOnDrop(spawn_member_with(
        member,
        prefix,
        &leader_http,
        "server-a",
        data[0].path(),
        extra,
        inherit,
    ));
    let lock = format!("{prefix}lock");
    support::eventually(
        std::time::Duration::from_secs(10),
        "server-a leads",
        || async { member.value(&lock).contains("server-a") },
    )
    .await;
    let follower = KillOnDrop(spawn_member_with(
        member,
        prefix,
        &follower_http,
        "server-b",
        data[1].path(),
        extra,
        follower_log,
    ));
    Pair {
        leader,
        follower,
        leader_http,
        follower_http,
        _data: data,
    }
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A participant for the coordinator: votes yes to every prepare, and answers each commit or
/// abort with the status in `phase_two` (503 keeps a decided transaction committing).
#[derive(Clone, Default)]
struct Participant {
    phase_two: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Every call: (branch, phase).
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Participant {
    /// Serves on a loopback port; answers the participant's base URL.
    async fn serve(&self) -> String {
        use axum::extract::{Path, State};
        async fn answer(
            State(p): State<Participant>,
            Path(phase): Path<String>,
            body: axum::Json<serde_json::Value>,
        ) -> axum::http::StatusCode {
            let branch = body["branch_id"].as_str().unwrap_or_default().to_owned();
            p.calls.lock().unwrap().push((branch, phase.clone()));
            let status = match phase.as_str() {
                "prepare" => 200,
                _ => p.phase_two.load(std::sync::atomic::Ordering::SeqCst),
            };
            axum::http::StatusCode::from_u16(status).unwrap()
        }
        let app = axum::Router::new()
            .route("/txn/{phase}", axum::routing::post(answer))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/txn")
    }

    fn phases(&self, branch: &str) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(b, _)| b == branch)
            .map(|(_, phase)| phase.clone())
            .collect()
    }
}

/// The coordinator's decisions live in etcd: when the leader is killed with a committed
/// transaction whose phase 2 has not got through and another only begun, the server that takes
/// over finishes the first (commit) and aborts the second (presumed abort), as one server does
/// after a restart.
#[tokio::test]
async fn a_surviving_server_finishes_the_transactions_of_a_killed_leader() {
    use std::sync::atomic::Ordering;
    let member = EtcdProcess::start();
    let mut pair = leader_and_follower(&member, "/2pc/", &[], std::process::Stdio::inherit()).await;
    let http_b = pair.follower_http.clone();
    let participant = Participant::default();
    participant.phase_two.store(503, Ordering::SeqCst);
    let url = participant.serve().await;
    let client = http();
    let submit = |body: serde_json::Value| {
        client
            .post(format!("http://{http_b}/v1/trellis/txn"))
            .json(&body)
            .send()
    };
    // Sent to the follower, which forwards it to the leader.
    let decided = submit(json!({"gid": "decided", "commit": true,
        "branches": [{"branch_id": "d", "url": url, "payload": 0}]}))
    .await
    .unwrap();
    assert_eq!(decided.status(), 200);
    let decided: serde_json::Value = decided.json().await.unwrap();
    assert_eq!(decided["state"], "committing", "{decided}");
    let begun = submit(json!({"gid": "undecided",
        "branches": [{"branch_id": "u", "url": url, "payload": 0}]}))
    .await
    .unwrap();
    assert_eq!(begun.status(), 200);

    pair.leader.0.kill().unwrap();
    pair.leader.0.wait().unwrap();
    participant.phase_two.store(200, Ordering::SeqCst);
    let state = |gid: &'static str| {
        let url = format!("http://{http_b}/v1/trellis/txn/{gid}");
        async move {
            let answer = http().get(url).send().await.unwrap();
            if answer.status() != 200 {
                return String::new();
            }
            let txn: serde_json::Value = answer.json().await.unwrap();
            txn["state"].as_str().unwrap_or_default().to_owned()
        }
    };
    support::eventually(
        std::time::Duration::from_secs(20),
        "server-b finishes the decided transaction",
        || async { state("decided").await == "committed" },
    )
    .await;
    support::eventually(
        std::time::Duration::from_secs(10),
        "server-b aborts the undecided one",
        || async { state("undecided").await == "aborted" },
    )
    .await;
    assert_eq!(
        participant.phases("d").first().map(String::as_str),
        Some("prepare")
    );
    assert_eq!(
        participant.phases("d").last().map(String::as_str),
        Some("commit")
    );
    assert_eq!(
        participant.phases("u"),
        ["abort"],
        "presumed abort tells the branch"
    );
}

/// Servers with HTTPS (and client certificates required) forward to each other over HTTPS:
/// the leader's lock says its API speaks TLS, and a follower checks the leader's certificate
/// against the CA (`--tls-client-ca` standing in for `--tls-ca`) and shows its own.
#[tokio::test]
async fn servers_with_tls_forward_to_each_other_over_https() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let member = EtcdProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "servers");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    );
    let tls = [
        "--tls-cert",
        cert_file.as_str(),
        "--tls-key",
        key_file.as_str(),
        "--tls-client-ca",
        ca_file.as_str(),
    ];
    let pair = leader_and_follower(&member, "/tls/", &tls, std::process::Stdio::inherit()).await;
    let lock: serde_json::Value = serde_json::from_str(&member.value("/tls/lock")).unwrap();
    assert_eq!(lock["TLS"], true, "{lock}");
    let http_b = pair.follower_http.clone();
    let mut identity = cert.pem().into_bytes();
    identity.extend(key.serialize_pem().into_bytes());
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    // Written through the follower: forwarded over HTTPS, and readable there once answered.
    let registered = client
        .put(format!("https://{http_b}/v1/agent/service/register"))
        .json(&json!({"ID": "web-1", "Name": "web", "Port": 80}))
        .send()
        .await
        .unwrap();
    let status = registered.status();
    assert_eq!(status, 200, "{}", registered.text().await.unwrap());
    let read = client
        .get(format!("https://{http_b}/v1/catalog/service/web"))
        .send()
        .await
        .unwrap();
    let services: serde_json::Value = read.json().await.unwrap();
    assert_eq!(services[0]["ServiceID"], "web-1", "{services}");
    // A plain-HTTP client cannot reach either.
    assert!(
        http()
            .get(format!("http://{http_b}/v1/catalog/service/web"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 400)
    );
}

/// etcd's revision: how many writes it has taken.
fn revision(member: &EtcdProcess) -> u64 {
    let out =
        trellis_etcd::testing::etcdctl(&member.client_url, &["get", "/", "-w", "json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["header"]["revision"].as_u64().unwrap()
}

/// TTL checks among three servers: each check's expiry is owned by one of them (rendezvous, as
/// active probes), heartbeats sent to any server reach the owner and write nothing while they
/// change nothing, and a check whose heartbeats stop turns critical on every server within
/// about its TTL, whichever server owns it (the leader's own catalog expires none). When a
/// server is killed, heartbeats that were handed to it go to the survivors, so no check that
/// is heartbeated turns critical, and the checks it owned whose heartbeats stopped with it
/// still expire.
#[tokio::test]
async fn ttl_checks_are_expired_by_their_owner_and_move_when_it_dies() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Enough that the half that stops beating is owned by more than one server (all twelve
    // on one of three: odds of 1 in 177,000).
    const CHECKS: usize = 24;
    let member = EtcdProcess::start();
    let data: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let https: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    let mut servers = Vec::new();
    for (n, name) in ["server-a", "server-b", "server-c"].iter().enumerate() {
        let server = spawn_member(&member, "/ttl/", &https[n], name, data[n].path());
        servers.push(KillOnDrop(server));
        if n == 0 {
            support::eventually(
                std::time::Duration::from_secs(10),
                "server-a leads",
                || async { member.value("/ttl/lock").contains("server-a") },
            )
            .await;
        }
    }
    support::eventually(
        std::time::Duration::from_secs(10),
        "three members",
        || async { member.keys("/ttl/members/").len() == 3 },
    )
    .await;
    let client = http();
    for n in 0..CHECKS {
        let answer = client
            .put(format!("http://{}/v1/agent/service/register", https[1]))
            .json(&json!({"ID": format!("api-{n}"), "Name": "api", "Port": 80,
                "Check": {"TTL": "2s", "Status": "passing"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    // Heartbeats to server-c, every 300 ms, for the checks still `beating`.
    let beating: std::sync::Arc<Vec<AtomicBool>> =
        std::sync::Arc::new((0..CHECKS).map(|_| AtomicBool::new(true)).collect());
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let heartbeats = tokio::spawn({
        let (beating, refused, to) = (beating.clone(), refused.clone(), https[2].clone());
        async move {
            let client = http();
            loop {
                for n in (0..CHECKS).filter(|n| beating[*n].load(Ordering::SeqCst)) {
                    let url = format!("http://{to}/v1/agent/check/pass/service:api-{n}");
                    match client.put(&url).send().await {
                        Ok(answer) if answer.status() == 200 => {}
                        _ => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
    });
    let passing_on = |server: String| async move {
        let checks = get_json(&format!("http://{server}/v1/health/checks/api")).await;
        let mut passing = [false; CHECKS];
        for check in checks.as_array().unwrap() {
            let n: usize = check["ServiceID"].as_str().unwrap()["api-".len()..]
                .parse()
                .unwrap();
            passing[n] = check["Status"] == "passing";
        }
        passing
    };
    // Past several TTLs, everything is passing, and unchanged heartbeats wrote nothing.
    let before = revision(&member);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        revision(&member),
        before,
        "heartbeats that change nothing write nothing"
    );
    for server in &https {
        assert_eq!(passing_on(server.clone()).await, [true; CHECKS], "{server}");
    }
    // Half the checks stop beating: they turn critical on every server, whoever owns them.
    for beat in &beating[..CHECKS / 2] {
        beat.store(false, Ordering::SeqCst);
    }
    let half: [bool; CHECKS] = std::array::from_fn(|n| n >= CHECKS / 2);
    support::eventually(
        std::time::Duration::from_secs(6),
        "the checks whose heartbeats stopped are critical everywhere",
        || async {
            for server in &https {
                if passing_on(server.clone()).await != half {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // Each server expired its own share: the leader's catalog expires none by itself.
    let mut expired = Vec::new();
    for server in &https {
        let text = support::get_text(&format!("http://{server}/metrics")).await;
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("trellis_check_ttl_expired_total "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize);
        expired.push(count);
    }
    assert_eq!(
        expired.iter().sum::<usize>(),
        CHECKS / 2,
        "expiries by server: {expired:?}"
    );
    assert!(
        expired.iter().filter(|n| **n > 0).count() >= 2,
        "expiries by server: {expired:?}"
    );
    // Heartbeats again for all: every check passes (a write each, the status changes).
    for beat in beating.iter() {
        beat.store(true, Ordering::SeqCst);
    }
    support::eventually(
        std::time::Duration::from_secs(5),
        "every check passing again",
        || async { passing_on(https[0].clone()).await == [true; CHECKS] },
    )
    .await;
    // server-b dies, and with it the applications of half the checks: their heartbeats stop
    // at that moment. Those server-b owned expire on a survivor once it takes them over (a
    // full TTL from then); the other half, still beating through server-c, is never critical.
    for beat in &beating[..CHECKS / 2] {
        beat.store(false, Ordering::SeqCst);
    }
    servers[1].0.kill().unwrap();
    servers[1].0.wait().unwrap();
    let killed = std::time::Instant::now();
    let mut stopped_critical = false;
    while killed.elapsed() < std::time::Duration::from_secs(6) || !stopped_critical {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(12),
            "the stopped checks never all turned critical after server-b died"
        );
        stopped_critical = true;
        for server in [&https[0], &https[2]] {
            let passing = passing_on(server.clone()).await;
            assert!(
                passing[CHECKS / 2..].iter().all(|p| *p),
                "a heartbeated check went critical on {server} after server-b died"
            );
            stopped_critical &= passing[..CHECKS / 2].iter().all(|p| !*p);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "no heartbeat was refused"
    );
    // Every heartbeat stops: the two survivors expire every check.
    heartbeats.abort();
    support::eventually(
        std::time::Duration::from_secs(6),
        "every check critical on both survivors",
        || async {
            passing_on(https[0].clone()).await == [false; CHECKS]
                && passing_on(https[2].clone()).await == [false; CHECKS]
        },
    )
    .await;
}

/// Sessions among servers sharing a store are etcd leases: a session with a TTL is bound to
/// one (twice its TTL, as Consul waits), any server renews it in etcd with no write, and when
/// its renewals stop the lease ends in etcd and the leader of the time invalidates it, here a
/// server that took over from the leader that created it: the lock it held is released.
#[tokio::test]
async fn sessions_are_etcd_leases_renewed_anywhere_and_their_end_releases_their_locks() {
    let member = EtcdProcess::start();
    let inherit = std::process::Stdio::inherit();
    let mut pair = leader_and_follower(&member, "/sess/", &[], inherit).await;
    let (http_a, http_b) = (pair.leader_http.clone(), pair.follower_http.clone());
    let client = http();
    let created: serde_json::Value = client
        .put(format!("http://{http_b}/v1/session/create"))
        .json(&json!({"TTL": "10s", "LockDelay": "0s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["ID"].as_str().unwrap().to_owned();
    let acquired = client
        .put(format!("http://{http_b}/v1/kv/held?acquire={id}"))
        .body("x")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(acquired.trim(), "true");
    // The session's key is bound to a lease of its own.
    let out = trellis_etcd::testing::etcdctl(
        &member.client_url,
        &["get", &format!("/sess/sessions/{id}"), "-w", "json"],
    )
    .unwrap();
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(got["kvs"][0]["lease"].as_i64().unwrap_or(0), 0, "{got}");

    // Renewed on the follower past twice its TTL, with no write.
    let before = revision(&member);
    let renewing = std::time::Instant::now();
    let mut last_renew = renewing;
    while renewing.elapsed() < std::time::Duration::from_secs(24) {
        let answer = client
            .put(format!("http://{http_b}/v1/session/renew/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "renewed while alive");
        let renewed: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(renewed[0]["ID"], id);
        last_renew = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    }
    assert_eq!(revision(&member), before, "renewals write nothing");
    let info = get_json(&format!("http://{http_a}/v1/session/info/{id}")).await;
    assert_eq!(info.as_array().unwrap().len(), 1, "alive on the leader too");

    // The leader goes, the renewals stop: the lease ends in etcd, and the new leader
    // invalidates the session and releases its lock.
    pair.leader.0.kill().unwrap();
    pair.leader.0.wait().unwrap();
    // Not before its TTL, even with the leader replaced meanwhile.
    tokio::time::sleep_until((last_renew + std::time::Duration::from_secs(12)).into()).await;
    let info = get_json(&format!("http://{http_b}/v1/session/info/{id}")).await;
    assert_eq!(
        info.as_array().unwrap().len(),
        1,
        "alive 12 s after its last renewal"
    );
    let gone = || async {
        let info = get_json(&format!("http://{http_b}/v1/session/info/{id}")).await;
        let entry = get_json(&format!("http://{http_b}/v1/kv/held")).await;
        info.as_array().unwrap().is_empty() && entry[0].get("Session").is_none()
    };
    support::eventually(
        std::time::Duration::from_secs(30),
        "the session ended and its lock was released",
        gone,
    )
    .await;
    let answer = client
        .put(format!("http://{http_b}/v1/session/renew/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404, "an ended session cannot be renewed");
}

/// Among servers sharing a store the mesh's CA is the store's (`<prefix>ca/records/`, written by
/// the leader): the root the first leader made and a rotation sent through a follower are what
/// the next leader has after the first is killed, so leaves signed before the failover stay
/// trusted after it and no sidecar has to change its certificate.
#[tokio::test]
async fn the_mesh_ca_lives_in_the_store_and_survives_the_leader() {
    let member = EtcdProcess::start();
    let inherit = std::process::Stdio::inherit();
    let mut pair = leader_and_follower(&member, "/mesh/", &[], inherit).await;
    let (http_a, http_b) = (pair.leader_http.clone(), pair.follower_http.clone());
    let roots_on = |server: String| async move {
        get_json(&format!("http://{server}/v1/connect/ca/roots")).await
    };
    let first = roots_on(http_b.clone()).await;
    let (root, domain) = (
        first["ActiveRootID"].as_str().unwrap().to_owned(),
        first["TrustDomain"].as_str().unwrap().to_owned(),
    );
    support::eventually(
        std::time::Duration::from_secs(10),
        "the leader wrote the CA to the store",
        || async {
            let stored = member.keys("/mesh/ca/records/");
            stored.iter().any(|k| k.ends_with("roots.json"))
                && stored.iter().any(|k| k.ends_with(".key"))
        },
    )
    .await;
    // Every server has the store's CA.
    let on_a = roots_on(http_a.clone()).await;
    assert_eq!(on_a["ActiveRootID"], root.as_str());
    // A rotation through the follower (forwarded to the leader, written to the store).
    let answer = http()
        .put(format!("http://{http_b}/v1/connect/ca/configuration"))
        .json(&json!({"Config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let rotated = roots_on(http_b.clone()).await;
    let new_root = rotated["ActiveRootID"].as_str().unwrap().to_owned();
    assert_ne!(new_root, root);
    let leaf = get_json(&format!("http://{http_b}/v1/agent/connect/ca/leaf/web")).await;
    assert!(
        leaf["CertPEM"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    pair.leader.0.kill().unwrap();
    pair.leader.0.wait().unwrap();
    support::eventually(
        std::time::Duration::from_secs(15),
        "server-b leads",
        || async { member.value("/mesh/lock").contains("server-b") },
    )
    .await;
    let after = roots_on(http_b.clone()).await;
    assert_eq!(after["ActiveRootID"], new_root.as_str(), "{after}");
    assert_eq!(after["TrustDomain"], domain.as_str());
    let ids: Vec<&str> = after["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&root.as_str()) && ids.contains(&new_root.as_str()),
        "{ids:?}"
    );
    let leaf = get_json(&format!("http://{http_b}/v1/agent/connect/ca/leaf/web")).await;
    assert!(
        leaf["CertPEM"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
}
