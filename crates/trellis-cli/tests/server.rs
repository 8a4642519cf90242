//! Integration tests of `trellis server`: the real binary on a free port, driven over HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, eventually, http, index_of};

async fn put(c: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    c.put(url).json(&body).send().await.unwrap()
}

async fn get_json(c: &reqwest::Client, url: String) -> (Value, u64) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let index = index_of(&r);
    (r.json().await.unwrap(), index)
}

#[tokio::test]
async fn consul_compatible_registration_and_reads() {
    let s = Server::dev();
    let c = http();
    let r = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"name": "web", "id": "web-1", "address": "10.0.0.1", "port": 8080,
               "tags": ["v1", "blue"], "meta": {"Version": "1"},
               "checks": [{"ttl": "30s"}, {"name": "second", "ttl": "1m", "status": "passing"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (health, index) = get_json(&c, s.url("/v1/health/service/web")).await;
    assert!(index > 0);
    let entry = &health[0];
    assert_eq!(entry["Service"]["Port"], 8080, "ports are JSON numbers");
    assert_eq!(entry["Service"]["Weights"]["Passing"], 1);
    assert_eq!(entry["Service"]["Meta"]["Version"], "1");
    assert_eq!(entry["Node"]["TaggedAddresses"]["lan"], "127.0.0.1");
    let ids: Vec<&str> = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["serfHealth", "service:web-1:1", "service:web-1:2"]);
    assert_eq!(
        entry["Checks"][1]["Status"], "critical",
        "initial status is critical"
    );
    assert_eq!(entry["Checks"][2]["Status"], "passing");
    // ?passing leaves out the instance with a critical check; a TTL pass brings it back.
    let (passing, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(passing.as_array().unwrap().len(), 0);
    let r = c
        .put(s.url("/v1/agent/check/pass/service:web-1:1?note=ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (passing, _) = get_json(
        &c,
        s.url("/v1/health/service/web?passing=1&tag=v1&tag=blue"),
    )
    .await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    assert_eq!(passing[0]["Checks"][1]["Output"], "ok");
    let (none, _) = get_json(&c, s.url("/v1/health/service/web?tag=v2")).await;
    assert_eq!(none, json!([]));
    let (catalog, _) = get_json(&c, s.url("/v1/catalog/service/web")).await;
    assert_eq!(catalog[0]["ServiceID"], "web-1");
    assert_eq!(catalog[0]["ServicePort"], 8080);
    assert_eq!(catalog[0]["ServiceAddress"], "10.0.0.1");
    let (services, _) = get_json(&c, s.url("/v1/catalog/services")).await;
    // With the server's own `consul` service, as every Consul server lists itself.
    assert_eq!(services, json!({"consul": [], "web": ["blue", "v1"]}));
    let (agent, _) = get_json(&c, s.url("/v1/agent/services")).await;
    assert_eq!(agent["web-1"]["Service"], "web");
    let (checks, _) = get_json(&c, s.url("/v1/agent/checks")).await;
    assert_eq!(checks["service:web-1:2"]["Name"], "second");
    let (me, _) = get_json(&c, s.url("/v1/agent/self")).await;
    assert!(
        me.as_object().unwrap().values().all(Value::is_object),
        "every top-level value is an object"
    );
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert!(me["Config"]["NodeName"].is_string() && me["Config"]["Version"].is_string());
    let (leader, _) = get_json(&c, s.url("/v1/status/leader")).await;
    assert!(leader.as_str().unwrap().ends_with(":8300"));
    let (nodes, _) = get_json(&c, s.url("/v1/catalog/nodes")).await;
    assert_eq!(nodes[0]["Datacenter"], "dc1");
    let (hc, _) = get_json(&c, s.url("/v1/health/checks/web")).await;
    assert_eq!(hc.as_array().unwrap().len(), 2, "service checks only");
    // Update through the JSON body form.
    let r = put(
        &c,
        s.url("/v1/agent/check/update/service:web-1:2"),
        json!({"status": "warning", "output": "slow"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (health, _) = get_json(&c, s.url("/v1/health/service/web")).await;
    assert_eq!(health[0]["Checks"][2]["Status"], "warning");
    // Deregister.
    let r = c
        .put(s.url("/v1/agent/service/deregister/web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (health, _) = get_json(&c, s.url("/v1/health/service/web")).await;
    assert_eq!(health, json!([]));
    let r = c
        .put(s.url("/v1/agent/service/deregister/web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn every_read_has_consul_headers() {
    let s = Server::dev();
    let c = http();
    for path in [
        "/v1/health/service/none",
        "/v1/catalog/services",
        "/v1/kv/missing",
        "/v1/agent/self",
        "/v1/status/leader",
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert!(index_of(&r) >= 1, "{path}: index never 0");
        assert_eq!(r.headers()["x-consul-knownleader"], "true", "{path}");
        assert_eq!(r.headers()["x-consul-lastcontact"], "0", "{path}");
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        }
    }
}

#[tokio::test]
async fn blocking_queries_follow_the_index_rules() {
    let s = Server::dev();
    let c = http();
    put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "web", "ID": "w1"}),
    )
    .await;
    put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "db", "ID": "d1"}),
    )
    .await;
    let (_, index) = get_json(&c, s.url("/v1/health/service/web")).await;

    // Timeout: the same index comes back.
    let started = Instant::now();
    let r = c
        .get(s.url(&format!("/v1/health/service/web?index={index}&wait=300ms")))
        .send()
        .await
        .unwrap();
    assert_eq!(index_of(&r), index);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // An index that differs (older or newer) returns at once.
    for other in [index - 1, index + 1000] {
        let r = c
            .get(s.url(&format!("/v1/health/service/web?index={other}&wait=10s")))
            .send()
            .await
            .unwrap();
        assert_eq!(index_of(&r), index);
    }

    // A change to another service does not wake the waiter; a change to this one does.
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/health/service/web?index={index}&wait=20s"));
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let index = index_of(&r);
            let body: Value = r.json().await.unwrap();
            (index, body)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "db", "ID": "d2"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "a change to db woke a web watcher");
    put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "web", "ID": "w2"}),
    )
    .await;
    let (new_index, body) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(new_index > index);
    assert_eq!(body.as_array().unwrap().len(), 2);

    // KV blocking on a key.
    let r = c.put(s.url("/v1/kv/cfg/a")).body("1").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let r = c.get(s.url("/v1/kv/cfg/a")).send().await.unwrap();
    let kv_index = index_of(&r);
    let kv_waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/kv/cfg/a?index={kv_index}&wait=20s"));
        tokio::spawn(async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.put(s.url("/v1/kv/cfg/other"))
        .body("x")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !kv_waiter.is_finished(),
        "a write to another key woke a KV watcher"
    );
    c.put(s.url("/v1/kv/cfg/a")).body("2").send().await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), kv_waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body[0]["Value"], "Mg==");
}

#[tokio::test]
async fn kv_store_semantics() {
    let s = Server::dev();
    let c = http();
    let put_kv = |path: &str, body: &'static str| {
        let c = c.clone();
        let url = s.url(path);
        async move {
            c.put(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put_kv("/v1/kv/app/db/host?flags=42", "db.local").await,
        "true"
    );
    assert_eq!(put_kv("/v1/kv/app/db/port", "5432").await, "true");
    assert_eq!(put_kv("/v1/kv/app/name", "shop").await, "true");
    let (one, _) = get_json(&c, s.url("/v1/kv/app/db/host")).await;
    assert_eq!(one[0]["Flags"], 42);
    assert_eq!(one[0]["Value"], "ZGIubG9jYWw=");
    let raw = c.get(s.url("/v1/kv/app/db/host?raw")).send().await.unwrap();
    assert_eq!(raw.text().await.unwrap(), "db.local");
    let (all, _) = get_json(&c, s.url("/v1/kv/app?recurse")).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let (keys, _) = get_json(&c, s.url("/v1/kv/app/?keys&separator=/")).await;
    assert_eq!(keys, json!(["app/db/", "app/name"]));
    // CAS.
    let modify = one[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        put_kv(&format!("/v1/kv/app/db/host?cas={}", modify + 99), "x").await,
        "false"
    );
    assert_eq!(
        put_kv(&format!("/v1/kv/app/db/host?cas={modify}"), "y").await,
        "true"
    );
    assert_eq!(put_kv("/v1/kv/app/db/host?cas=0", "z").await, "false");
    // Delete, recurse delete, 404 with an index.
    let r = c.delete(s.url("/v1/kv/app/name")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let r = c.delete(s.url("/v1/kv/app?recurse")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let r = c.get(s.url("/v1/kv/app?recurse")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) > 1);
    // The SDK keeps a missing key's index, so a blocking read can start from it.
    let sdk = trellis_client::Client::new(&s.url).unwrap();
    let missing = sdk.kv_get("app/name", None).await.unwrap();
    assert!(missing.value.is_none());
    assert!(
        missing.index > 1,
        "index of a missing key: {}",
        missing.index
    );
    // Values up to 512 KiB are accepted; larger ones are refused with 413.
    let big = vec![b'a'; 512 * 1024];
    let r = c.put(s.url("/v1/kv/big")).body(big).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(s.url("/v1/kv/big"))
        .body(vec![b'a'; 512 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_reason_and_the_server_stays_up() {
    let s = Server::dev();
    let c = http();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/v1/agent/service/register",
            b"{not json".to_vec(),
            "invalid JSON",
        ),
        ("/v1/agent/service/register", b"".to_vec(), "missing"),
        (
            "/v1/agent/service/register",
            br#"{"Port": 80}"#.to_vec(),
            "Name",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name": "bad\u0001name", "ID": "x"}"#.to_vec(),
            "invalid service name",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name": "x", "Check": {"TTL": "ten"}}"#.to_vec(),
            "TTL",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name": "x", "Check": {"TTL": "10s", "Interval": "5s"}}"#.to_vec(),
            "both TTL and Interval",
        ),
        (
            "/v1/agent/service/register",
            br#"{"Name": "x", "Port": 99999}"#.to_vec(),
            "Port",
        ),
        (
            "/v1/agent/service/register",
            br#"[1,2,3]"#.to_vec(),
            "object",
        ),
        (
            "/v1/agent/check/register",
            br#"{"TTL": "5s"}"#.to_vec(),
            "Name",
        ),
        (
            "/v1/agent/check/update/nope",
            br#"{"Status": "passing"}"#.to_vec(),
            "unknown check",
        ),
        (
            "/v1/agent/check/update/nope",
            br#"{"Status": "great"}"#.to_vec(),
            "status",
        ),
    ];
    for (path, body, reason) in cases {
        let r = c.put(s.url(path)).body(body.clone()).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.is_client_error(),
            "{path} {:?} answered {status}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            text.to_lowercase().contains(&reason.to_lowercase()),
            "{path}: {text:?} lacks {reason:?}"
        );
        assert!(text.len() < 300, "reasons are short: {text}");
    }
    let r = c
        .put(s.url("/v1/agent/service/register"))
        .body(vec![b' '; 600 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .get(s.url("/v1/health/service/web?filter=Service.Port%20%3D%3D"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "an incomplete filter is refused with its position"
    );
    assert!(r.text().await.unwrap().contains("invalid filter: 1:16"));
    let r = c
        .get(s.url("/v1/health/service/web?index=1&wait=forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(s.url("/v1/health/service/web?dc=mars"))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success());
    // Still up and serving.
    let r = c.get(s.url("/v1/status/leader")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let s = Server::durable(dir.path());
    for i in 0..50 {
        let r = put(&c, s.url("/v1/agent/service/register"), json!({"Name": "api", "ID": format!("api-{i}"), "Port": 9000 + i, "Check": {"TTL": "1h", "DeregisterCriticalServiceAfter": "2h"}})).await;
        assert_eq!(r.status(), 200);
    }
    put(&c, s.url("/v1/agent/service/deregister/api-0"), json!(null)).await;
    c.put(s.url("/v1/kv/config/x"))
        .body("42")
        .send()
        .await
        .unwrap();
    let (_, before) = get_json(&c, s.url("/v1/health/service/api")).await;
    s.kill9();

    let s = Server::durable(dir.path());
    let (health, after) = get_json(&c, s.url("/v1/health/service/api")).await;
    assert_eq!(health.as_array().unwrap().len(), 49);
    assert!(
        after >= before,
        "indexes do not go backwards across a restart"
    );
    assert_eq!(health[0]["Checks"][1]["Type"], "ttl");
    let raw = c.get(s.url("/v1/kv/config/x?raw")).send().await.unwrap();
    assert_eq!(raw.text().await.unwrap(), "42");
    assert!(s.terminate().success(), "SIGTERM exits cleanly");
}

/// A tiny HTTP server answering every request with `status`.
async fn http_app(status: std::sync::Arc<std::sync::atomic::AtomicU16>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let code = status.load(std::sync::atomic::Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_and_tcp_checks_with_hysteresis_and_reaper() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let s = Server::dev();
    let c = http();
    let status = std::sync::Arc::new(AtomicU16::new(200));
    let app = http_app(status.clone()).await;
    let r = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "app", "ID": "app-1", "Checks": [
            {"CheckID": "http", "HTTP": format!("http://{app}/health"), "Interval": "50ms", "Timeout": "1s",
             "SuccessBeforePassing": 2, "FailuresBeforeCritical": 3},
            {"CheckID": "tcp", "TCP": app.to_string(), "Interval": "50ms"}
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let check_status = |id: &'static str| {
        let c = c.clone();
        let url = s.url("/v1/agent/checks");
        async move {
            let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v[id]["Status"].as_str().unwrap_or("").to_owned()
        }
    };
    eventually(Duration::from_secs(10), "http check passing", || async {
        check_status("http").await == "passing"
    })
    .await;
    eventually(Duration::from_secs(10), "tcp check passing", || async {
        check_status("tcp").await == "passing"
    })
    .await;
    let (checks, _) = get_json(&c, s.url("/v1/agent/checks")).await;
    assert!(checks["http"]["Output"].as_str().unwrap().contains("200"));
    status.store(500, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "http check critical", || async {
        check_status("http").await == "critical"
    })
    .await;
    // 429 means "too busy": warning, not critical (after the same 3 failures in a row).
    status.store(429, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "http check warning", || async {
        check_status("http").await == "warning"
    })
    .await;
    status.store(200, Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "http check passing again",
        || async { check_status("http").await == "passing" },
    )
    .await;

    // Reaper: a TTL check that goes critical deregisters its service after the configured time.
    let r = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "ghost", "ID": "ghost-1", "Check": {"TTL": "200ms", "Status": "passing", "DeregisterCriticalServiceAfter": "300ms"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(10), "ghost reaped", || async {
        let v: Value = c
            .get(s.url("/v1/agent/services"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.get("ghost-1").is_none()
    })
    .await;
}

#[tokio::test]
async fn streaming_watch_sends_the_set_now_and_after_each_change() {
    use futures_util::StreamExt;
    let s = Server::dev();
    let c = http();
    let client = trellis_client::Client::new(&s.url).unwrap();
    let mut events = client.watch("pay").await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert!(first.instances.is_empty());
    put(&c, s.url("/v1/agent/service/register"), json!({"Name": "pay", "ID": "pay-1", "Port": 1, "Check": {"TTL": "1m", "Status": "passing"}})).await;
    let second = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.instances.len(), 1);
    assert!(second.index > first.index);
    c.put(s.url("/v1/agent/check/fail/service:pay-1"))
        .send()
        .await
        .unwrap();
    let third = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        third.instances.is_empty(),
        "critical instances leave the routable set"
    );
    // Server-Sent Events on request.
    let r = c
        .get(s.url("/v1/trellis/watch/pay"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let chunk = body.next().await.unwrap().unwrap();
    assert!(chunk.starts_with(b"data: {"));
}

#[tokio::test]
async fn metrics_are_exposed() {
    let s = Server::dev();
    let c = http();
    put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "m", "ID": "m1"}),
    )
    .await;
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "trellis_http_requests_total",
        "trellis_http_request_duration_seconds_bucket",
        "trellis_services 1",
        "trellis_instances{health=\"passing\"} 1",
        "trellis_watchers",
        "trellis_store_commit_duration_seconds",
        "trellis_store_batch_size",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[test]
fn client_commands_print_tables_and_json() {
    let s = Server::dev();
    let bin = env!("CARGO_BIN_EXE_trellis");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.json");
    std::fs::write(
        &file,
        r#"{"service": {"name": "cli", "id": "cli-1", "port": 7000, "tags": ["x"]}}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("TRELLIS_HTTP_ADDR", &s.url)
            .env_remove("CONSUL_HTTP_ADDR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["register", file.to_str().unwrap()]).contains("cli-1"));
    let table = run(&["services"]);
    assert!(table.starts_with("SERVICE") && table.contains("cli"));
    let json: Value = serde_json::from_str(&run(&["services", "--json"])).unwrap();
    assert_eq!(json["cli"], json!(["x"]));
    let instances = run(&["instances", "cli"]);
    assert!(
        instances.contains("cli-1") && instances.contains(":7000"),
        "{instances}"
    );
    run(&["kv", "put", "greeting", "hello"]);
    assert_eq!(run(&["kv", "get", "greeting"]).trim(), "hello");
    run(&["kv", "delete", "greeting"]);
    run(&["deregister", "cli-1"]);
    let out = std::process::Command::new(bin)
        .args(["kv", "get", "greeting"])
        .env("TRELLIS_HTTP_ADDR", &s.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // CONSUL_HTTP_ADDR is honoured when TRELLIS_HTTP_ADDR is not set.
    let out = std::process::Command::new(bin)
        .args(["services", "--json"])
        .env_remove("TRELLIS_HTTP_ADDR")
        .env("CONSUL_HTTP_ADDR", s.url.trim_start_matches("http://"))
        .output()
        .unwrap();
    assert!(out.status.success());
}
