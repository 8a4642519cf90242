//! `trellis traces search|show` against a real `trellis server` collecting the spans of real
//! example services (`trellis users`, `trellis orders`) exported over OTLP/HTTP: the order's
//! request, its call to users and users' request under it, and the database queries, in one
//! trace found by the CLI.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::Collector;

/// An example service (`trellis users|orders ...`), killed when the test ends.
struct Service {
    child: Child,
    addr: String,
}

impl Service {
    /// Starts `trellis ARGS` and waits for its `listening on ADDR` line.
    fn start(args: &[&str]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .env("TRELLIS_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("trellis {args:?} exited before listening"))
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Service { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `trellis traces ARGS --addr API`: its stdout, after checking it succeeded.
fn traces(api: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("traces")
        .args(args)
        .args(["--addr", api])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "trellis traces {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The trace ids of the search table's rows whose root is `root`.
fn ids_with_root(table: &str, root: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| l.contains(root))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// Depth of a waterfall line: tree prefixes are three characters per level.
fn depth(line: &str) -> usize {
    let prefix: String = line
        .chars()
        .take_while(|c| matches!(c, ' ' | '│' | '├' | '└' | '─'))
        .collect();
    prefix.chars().count() / 3
}

#[tokio::test]
async fn traces_of_the_example_services_are_searched_and_shown() {
    let server = Collector::start();
    let api = server.proc.addr("API");
    let otlp = server.otlp.clone();
    let dir = tempfile::tempdir().unwrap();
    let db = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let users = Service::start(&[
        "users",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db("users.db"),
        "--otlp-endpoint",
        &otlp,
    ]);
    let orders = Service::start(&[
        "orders",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db("orders.db"),
        "--users-url",
        &users.url(""),
        "--coordinator",
        &format!("http://{api}"),
        "--otlp-endpoint",
        &otlp,
    ]);

    let http = support::http_with_timeout(Duration::from_secs(30));
    // A known user: the check succeeds, then the transaction is submitted (the coordinator
    // cannot reach the branches, which are not registered, so it does not commit).
    let placed = http
        .post(orders.url("/orders"))
        .json(&json!({"user_id": 1, "product": "Product A", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_ne!(placed.status(), 422);
    // An unknown user: users answers 404, orders 422; the call is an error in the trace.
    let unknown = http
        .post(orders.url("/orders"))
        .json(&json!({"user_id": 999, "product": "Product A", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    // Health probes and scrapes are not traced.
    assert_eq!(
        http.get(users.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Both traces, each with users' part, arrive within the batch delay.
    let search = format!("http://{api}/api/traces?service=users");
    support::eventually(Duration::from_secs(15), "two traces of users", || {
        let http = http.clone();
        let search = search.clone();
        async move {
            let Ok(answer) = http.get(&search).send().await else {
                return false;
            };
            let found: Value = answer.json().await.unwrap_or_default();
            let traces = found["data"].as_array().cloned().unwrap_or_default();
            traces.len() == 2
                && traces.iter().all(|t| {
                    // orders' request and call, users' request
                    t["spans"].as_array().map_or(0, Vec::len) >= 3
                })
        }
    })
    .await;
    // ... and orders' last spans (the coordinator call ends after users' spans).
    let table = loop {
        let table = traces(&api, &["search", "--service", "orders"]);
        if ids_with_root(&table, "orders: POST /orders").len() == 2 {
            break table;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(table.starts_with("TRACE ID"), "{table}");
    assert!(
        table.lines().next().unwrap().contains("ROOT")
            && table.lines().next().unwrap().contains("SPANS"),
        "{table}"
    );

    // Errors only: the unknown user's trace.
    let errors = traces(&api, &["search", "--service", "orders", "--errors"]);
    let error_ids = ids_with_root(&errors, "orders: POST /orders");
    assert!(!error_ids.is_empty(), "{errors}");
    // By operation and duration, and an empty result.
    let by_op = traces(
        &api,
        &[
            "search",
            "--service",
            "users",
            "--operation",
            "GET /users/{id}",
            "--limit",
            "5",
        ],
    );
    assert_eq!(
        ids_with_root(&by_op, "orders: POST /orders").len(),
        2,
        "{by_op}"
    );
    let slow = traces(
        &api,
        &["search", "--service", "users", "--min-duration", "1h"],
    );
    assert_eq!(slow, "no traces found\n");

    // The successful order's trace, in full.
    let all = ids_with_root(&table, "orders: POST /orders");
    let ok_id = all
        .iter()
        .find(|id| !error_ids.contains(id))
        .unwrap_or_else(|| panic!("a trace without errors in\n{table}\n{errors}"));
    let waterfall = traces(&api, &["show", ok_id, "--width", "30"]);
    let lines: Vec<&str> = waterfall.lines().collect();
    assert!(
        lines[0].starts_with(&format!("trace {ok_id}  ")),
        "{waterfall}"
    );
    assert!(lines[0].contains("orders, users"), "{waterfall}");
    let line = |what: &str| {
        *lines
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in\n{waterfall}"))
    };
    let request = line("POST /orders ");
    let call = line("GET users /users/{id}");
    let served = lines
        .iter()
        .find(|l| l.contains("GET /users/{id}") && !l.contains("GET users"))
        .unwrap();
    let query = line("SELECT users");
    let submit = line("POST coordinator /v1/trellis/txn");
    assert_eq!(depth(request), 0, "{waterfall}");
    assert!(request.contains("orders") && request.contains("POST /orders"));
    assert_eq!(depth(call), 1, "{waterfall}");
    assert!(call.contains("→ users") && call.contains(" 200"), "{call}");
    assert_eq!(depth(served), 2, "{waterfall}");
    assert!(
        served.contains("users") && served.contains("GET /users/{id} 200"),
        "{served}"
    );
    assert_eq!(depth(query), 3, "{waterfall}");
    assert!(query.contains("sqlite: SELECT users"), "{query}");
    assert_eq!(depth(submit), 1, "{waterfall}");
    assert!(submit.contains("gid=order-"), "{submit}");
    // Bars: the request spans the whole trace.
    assert!(
        request.contains(&format!("|{}|", "█".repeat(30))),
        "{waterfall}"
    );

    // The same parentage in the API's JSON: users' request span is the child of orders' call.
    let json: Value = serde_json::from_str(&traces(&api, &["show", ok_id, "--json"])).unwrap();
    let spans = json["spans"].as_array().unwrap();
    let span = |name: &str| {
        spans
            .iter()
            .find(|s| s["operationName"] == json!(name))
            .unwrap_or_else(|| panic!("no span {name}: {json}"))
    };
    let call = span("GET users /users/{id}");
    let served = span("GET /users/{id}");
    assert_eq!(served["references"][0]["spanID"], call["spanID"], "{json}");
    let kind = |s: &Value| {
        s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "span.kind")
            .map(|t| t["value"].clone())
    };
    assert_eq!(kind(call), Some(json!("client")));
    assert_eq!(kind(served), Some(json!("server")));
    assert_eq!(kind(span("POST /orders")), Some(json!("server")));
    let process = &json["processes"][served["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], json!("users"));
    assert!(
        process["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "service.instance.id", "type": "string", "value": "users-1"})),
        "{process}"
    );

    // The error trace: the call to users is marked.
    let error_id = &error_ids[0];
    let failed = traces(&api, &["show", error_id]);
    let call = failed
        .lines()
        .find(|l| l.contains("GET users /users/{id}"))
        .unwrap();
    assert!(call.contains("ERROR") && call.contains("404"), "{failed}");

    // The services' metrics include the database query latency.
    let metrics = support::get_text(&users.url("/metrics")).await;
    assert!(
        metrics.contains("# TYPE trellis_db_query_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"trellis_db_query_duration_seconds_count{operation="SELECT",table="users"} "#
        ),
        "{metrics}"
    );

    // An unknown trace, and no server.
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "traces",
            "show",
            "0000000000000000000000000000abcd",
            "--addr",
            &api,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "traces",
            "search",
            "--service",
            "orders",
            "--http-addr",
            &api,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no server at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
