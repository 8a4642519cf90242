//! The sidecar and gateway as real processes in front of real apps, with the real registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{Proc, http};
use trellis_proxy::body::{Body, full};
use trellis_proxy::hyper::{Request, Response, StatusCode};
use trellis_proxy::server::{ShutdownTrigger, serve, shutdown_pair};

fn registry() -> (Proc, String) {
    let p = Proc::start(&["server", "--dev", "--http", "127.0.0.1:0"], 1, None);
    let url = format!("http://{}", p.addrs[0].1);
    (p, url)
}

/// An in-process app answering `status` with its name, counting hits.
struct App {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Option<ShutdownTrigger>,
}

async fn app(name: &str, status: u16) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop, shutdown) = shutdown_pair();
    let (h, name) = (hits.clone(), name.to_owned());
    tokio::spawn(serve(
        listener,
        move |request: Request<Body>| {
            h.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            async move {
                let mut response = Response::new(full(format!("{name} {}", request.uri().path())));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            }
        },
        shutdown,
        Duration::from_secs(1),
    ));
    App {
        port,
        hits,
        stop: Some(stop),
    }
}

fn sidecar(registry: &str, service: &str, app_port: u16, extra: &[&str]) -> Proc {
    support::sidecar(registry, service, app_port, extra, None)
}

/// Polls `check` until it returns true, failing after a generous bound.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    support::eventually(Duration::from_secs(20), what, check).await;
}

/// Instances of `service` as the sidecar at `admin` knows them.
async fn known(admin: &str, service: &str) -> usize {
    let Ok(r) = http().get(format!("http://{admin}/endpoints")).send().await else {
        return 0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["services"][service]["endpoints"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|e| e["state"] == "healthy").count())
}

async fn call(
    client: &reqwest::Client,
    outbound: &str,
    service: &str,
    path: &str,
) -> (u16, String) {
    let r = client
        .get(format!("http://{outbound}{path}"))
        .header("host", service)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Three `users` instances behind sidecars, and a caller sidecar whose outbound is used.
async fn three_users(
    registry: &str,
    status: u16,
    caller_args: &[&str],
) -> (Vec<App>, Vec<Proc>, Proc, App) {
    let mut apps = Vec::new();
    let mut cars = Vec::new();
    for i in 0..3 {
        let a = app(&format!("users-{i}"), status).await;
        cars.push(sidecar(registry, "users", a.port, &[]));
        apps.push(a);
    }
    let caller_app = app("caller", 200).await;
    let caller = sidecar(registry, "caller", caller_app.port, caller_args);
    let admin = caller.addr("admin");
    let outbound = caller.addr("outbound");
    // The first call starts the watch.
    let _ = call(&http(), &outbound, "users", "/").await;
    eventually("three healthy users", || {
        known(&admin, "users").map(|n| n == 3)
    })
    .await;
    (apps, cars, caller, caller_app)
}

use futures_util::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_balances_and_a_deregistered_instance_stops_receiving_traffic() {
    let (_registry, url) = registry();
    let (apps, cars, caller, _caller_app) = three_users(&url, 200, &["--lb", "round_robin"]).await;
    let outbound = caller.addr("outbound");
    let client = http();
    for _ in 0..60 {
        let (status, body) = call(&client, &outbound, "users", "/hello").await;
        assert_eq!(status, 200);
        assert!(
            body.starts_with("users-") && body.ends_with(" /hello"),
            "{body}"
        );
    }
    assert!(
        apps.iter().all(|a| a.hits.load(Ordering::SeqCst) > 0),
        "every instance used"
    );

    // Absolute-form (HTTP proxy) requests work too.
    let proxied = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{outbound}")).unwrap())
        .build()
        .unwrap();
    let r = proxied.get("http://users/via-proxy").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("/via-proxy"));

    // An operator's deregistration of a healthy instance through the registry is undone by
    // its sidecar (anti-entropy, as a Consul agent does): it is back in the caller's view.
    let registry = trellis_client::Client::new(&url).unwrap();
    let inbound0 = cars[0].addr("inbound");
    let id = format!("users-127.0.0.1-{}", inbound0.rsplit(':').next().unwrap());
    let start = Instant::now();
    registry.deregister(&id).await.unwrap();
    let admin = caller.addr("admin");
    eventually("the instance to come back", || async {
        let n = known(&admin, "users").await;
        let registered = registry
            .health_service("users", true, None)
            .await
            .is_ok_and(|r| r.value.iter().any(|e| e.service.id == id));
        n == 3 && registered
    })
    .await;
    eprintln!("deregistered instance back after {:?}", start.elapsed());

    // Graceful shutdown deregisters first: callers forget the instance and send it nothing.
    cars[1].signal("-TERM");
    eventually("instance 1 to deregister itself", || {
        known(&admin, "users").map(|n| n == 2)
    })
    .await;
    let before = apps[1].hits.load(Ordering::SeqCst);
    for _ in 0..200 {
        assert_eq!(call(&client, &outbound, "users", "/").await.0, 200);
    }
    assert_eq!(
        apps[1].hits.load(Ordering::SeqCst),
        before,
        "no traffic after deregistration"
    );
    assert!(apps[0].hits.load(Ordering::SeqCst) > 0);
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"trellis_requests_total{direction="outbound",service="users",code="200"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_instances_under_load_loses_no_requests() {
    let (_registry, url) = registry();
    let (mut apps, mut cars, caller, _caller_app) = three_users(&url, 200, &[]).await;
    let outbound = caller.addr("outbound");
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (outbound, done, failures) = (outbound.clone(), done.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let client = http();
            for _ in 0..500 {
                let (status, body) = call(&client, &outbound, "users", "/").await;
                if status != 200 {
                    failures.lock().unwrap().push(format!("{status} {body}"));
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    eventually("load to start", || {
        let n = done.load(Ordering::SeqCst);
        async move { n >= 300 }
    })
    .await;
    // SIGKILL the sidecar (and stop its app): no deregistration, no drain.
    cars[2].signal("-KILL");
    drop(apps[2].stop.take());
    for t in load {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of 2000 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    drop(cars.pop());
    drop(apps.pop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_extra_load_when_every_instance_fails() {
    let (_registry, url) = registry();
    let (apps, _cars, caller, _caller_app) = three_users(&url, 503, &[]).await;
    let outbound = caller.addr("outbound");
    let before: usize = apps.iter().map(|a| a.hits.load(Ordering::SeqCst)).sum();
    let requests = 600;
    let mut load = Vec::new();
    for _ in 0..4 {
        let outbound = outbound.clone();
        load.push(tokio::spawn(async move {
            let client = http();
            for _ in 0..requests / 4 {
                assert_eq!(call(&client, &outbound, "users", "/").await.0, 503);
            }
        }));
    }
    for t in load {
        t.await.unwrap();
    }
    let sent: usize = apps
        .iter()
        .map(|a| a.hits.load(Ordering::SeqCst))
        .sum::<usize>()
        - before;
    // 2 retries per request would triple the load (1800); the budget allows 20% + 10/s × 10 s.
    assert!(
        sent <= requests + requests / 5 + 100,
        "{sent} app requests for {requests} calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_grpc_with_trailers_passes_through_two_sidecars() {
    let (_registry, url) = registry();
    let (grpc_port, _grpc_app) = support::grpc_echo_app().await;
    let _server_car = sidecar(&url, "greeter", grpc_port, &[]);
    let caller_app = app("caller", 200).await;
    let caller = sidecar(&url, "caller", caller_app.port, &[]);
    let (body, trailers) = support::grpc_call(&caller.addr("outbound"), "greeter").await;
    assert_eq!(body.as_ref(), b"\0\0\0\0\x02hi");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "h2=true", "HTTP/2 end to end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_by_prefix_and_kv_policy_applies_live() {
    let (_registry, url) = registry();
    let users = app("users", 200).await;
    let orders = app("orders", 200).await;
    let _u = sidecar(&url, "users", users.port, &[]);
    let _o = sidecar(&url, "orders", orders.port, &[]);
    let gw = Proc::start(
        &[
            "gateway",
            "--registry",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--route",
            "/users=users",
            "--route",
            "/api/orders=orders",
            "--workers",
            "1",
        ],
        2,
        None,
    );
    let base = format!("http://{}", gw.addr("gateway"));
    let client = http();
    let get = |path: &str| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let error = r
                .headers()
                .get("x-trellis-error")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, error, r.text().await.unwrap())
        }
    };
    eventually("routes to work", || {
        get("/users/1").map(|(s, _, _)| s == 200)
    })
    .await;
    assert_eq!(get("/users/1").await.2, "users /1");
    eventually("orders route", || {
        get("/api/orders/9").map(|(s, _, _)| s == 200)
    })
    .await;
    assert_eq!(get("/api/orders/9").await.2, "orders /9");
    let (status, error, body) = get("/nope").await;
    assert_eq!((status, error.as_deref()), (404, Some("no-route")));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "no-route"
    );

    // A policy written to KV applies without a restart, and its removal too.
    let registry = trellis_client::Client::new(&url).unwrap();
    let policy = br#"{"rate_limit": {"per_second": 1, "burst": 1}}"#;
    registry
        .kv_put("trellis/config/users", policy, None)
        .await
        .unwrap();
    eventually("rate limit to apply", || async {
        let (a, b) = (get("/users/x").await, get("/users/x").await);
        a.1.as_deref() == Some("rate-limited") || b.1.as_deref() == Some("rate-limited")
    })
    .await;
    registry
        .kv_delete("trellis/config/users", false)
        .await
        .unwrap();
    eventually("rate limit to be lifted", || async {
        let mut ok = true;
        for _ in 0..5 {
            ok &= get("/users/x").await.0 == 200;
        }
        ok
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_logs_registration_health_invalid_policies_and_deregistration() {
    let (_registry, url) = registry();
    let users = app("users", 200).await;
    let mut car = support::sidecar(
        &url,
        "users",
        users.port,
        &["--id", "users-logged"],
        Some("info"),
    );
    let log_has = |needle: &'static str| {
        let log = car.log.clone();
        move || {
            let found = log.lock().unwrap().contains(needle);
            async move { found }
        }
    };
    eventually("the registration to be logged", log_has("registered")).await;
    let log = car.log();
    let line = log.lines().find(|l| l.contains("registered")).unwrap();
    let port = car.addr("inbound").rsplit(':').next().unwrap().to_owned();
    for field in [
        "id=users-logged",
        "address=127.0.0.1",
        &format!("port={port}"),
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    eventually(
        "the app's health to be logged",
        log_has("app health changed"),
    )
    .await;

    // An invalid policy is refused with the key and the reason; the previous one stays.
    let registry = trellis_client::Client::new(&url).unwrap();
    registry
        .kv_put("trellis/config/users", br#"{"max_retries": "lots"}"#, None)
        .await
        .unwrap();
    eventually(
        "the invalid policy warning",
        log_has("invalid policy in KV"),
    )
    .await;
    registry
        .kv_put("trellis/config/users", b"not json", None)
        .await
        .unwrap();
    eventually("the not-JSON warning", log_has("not JSON")).await;
    let log = car.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("invalid policy in KV"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    for line in &warnings {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("key=trellis/config/users"), "{line}");
        assert!(line.contains("previous policy stays in force"), "{line}");
    }
    assert!(
        warnings[0].contains("reason=invalid configuration: max_retries: invalid type"),
        "{}",
        warnings[0]
    );
    // The sidecar still serves.
    let inbound = car.addr("inbound");
    let r = http()
        .get(format!("http://{inbound}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The app goes away: critical, with the probe's output.
    drop(users);
    eventually("the app to turn critical", || {
        let log = car.log();
        async move {
            log.lines()
                .any(|l| l.contains("app health changed") && l.contains("to=critical"))
        }
    })
    .await;

    car.signal("-TERM");
    let status = car.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The log is read from the pipe by a thread, which may still be catching up on the last
    // lines when the process has exited.
    eventually("the deregistration in the log", || {
        let log = car.log();
        async move { log.contains("deregistered") }
    })
    .await;
}
