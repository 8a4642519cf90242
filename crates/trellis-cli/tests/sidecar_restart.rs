//! The sidecar keeps its registration true (anti-entropy): after the registry restarts without
//! its data, or an operator deregisters a healthy instance, the sidecar registers it again and
//! traffic through the gateway recovers. Real binaries, a real registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Proc, free_port};
use trellis_proxy::body::{Body, full};
use trellis_proxy::hyper::{Request, Response};
use trellis_proxy::server::{ShutdownTrigger, serve, shutdown_pair};

/// `trellis server --dev` on `port`; retried for a while in case the old process's port is not
/// free yet.
fn dev_server(port: u16) -> Proc {
    let http = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = Proc::try_start(&["server", "--dev", "--http", &http], 1, None) {
            return p;
        }
        assert!(Instant::now() < deadline, "cannot start a server on {http}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An in-process app answering 200 "users".
struct App {
    port: u16,
    _stop: ShutdownTrigger,
}

async fn app() -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, shutdown) = shutdown_pair();
    tokio::spawn(serve(
        listener,
        |_request: Request<Body>| async { Response::new(full("users")) },
        shutdown,
        Duration::from_secs(1),
    ));
    App { port, _stop: stop }
}

const ID: &str = "users-1";

fn sidecar(registry: &str, app_port: u16) -> Proc {
    support::sidecar(
        registry,
        "users",
        app_port,
        &["--id", ID],
        // Debug for the registration loop, to see its retries.
        Some("info,trellis_proxy::registration=debug"),
    )
}

fn gateway(registry: &str) -> Proc {
    Proc::start(
        &[
            "gateway",
            "--registry",
            registry,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--route",
            "/users=users",
            "--workers",
            "1",
        ],
        2,
        Some("info,trellis_proxy::discovery=debug"),
    )
}

fn http() -> reqwest::Client {
    support::http_with_timeout(Duration::from_secs(5))
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `bound`.
async fn eventually<F, Fut>(what: &str, bound: Duration, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    support::eventually(bound, what, check).await
}

/// The instance is registered and passing in the registry at `registry`.
async fn passing(registry: &str) -> bool {
    let Ok(r) = http()
        .get(format!("{registry}/v1/health/service/users?passing"))
        .send()
        .await
    else {
        return false;
    };
    let entries: serde_json::Value = r.json().await.unwrap_or_default();
    entries
        .as_array()
        .is_some_and(|a| a.len() == 1 && a[0]["Service"]["ID"] == ID)
}

/// The instance's `CreateIndex`, if it is registered: a new value means it was registered again.
async fn create_index(registry: &str) -> Option<u64> {
    let r = http()
        .get(format!("{registry}/v1/catalog/service/users"))
        .send()
        .await
        .ok()?;
    let entries: serde_json::Value = r.json().await.ok()?;
    entries.as_array()?.iter().find(|e| e["ServiceID"] == ID)?["CreateIndex"].as_u64()
}

async fn ready(sidecar: &Proc) -> bool {
    let url = format!("http://{}/ready", sidecar.addr("admin"));
    matches!(http().get(url).send().await, Ok(r) if r.status() == 200)
}

/// Requests through the gateway in a loop, recording when each answer came and its status.
struct Load {
    results: Arc<Mutex<Vec<(Instant, u16)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(url: String) -> Self {
        let results = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (results.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = http();
            while !s.load(Ordering::Relaxed) {
                let status = match client.get(&url).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                r.lock().unwrap().push((Instant::now(), status));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            results,
            stop,
            task,
        }
    }

    /// At least `n` answers after `since`, the last `n` of them all 200.
    fn healthy_since(&self, since: Instant, n: usize) -> bool {
        let results = self.results.lock().unwrap();
        let after: Vec<u16> = results
            .iter()
            .filter(|(at, _)| *at > since)
            .map(|(_, s)| *s)
            .collect();
        after.len() >= n && after[after.len() - n..].iter().all(|s| *s == 200)
    }

    async fn stop(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.results).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_recovers_after_the_registry_restarts_without_its_data() {
    let port = free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let registry = dev_server(port);
    let app = app().await;
    let car = sidecar(&registry_url, app.port);
    let gw = gateway(&registry_url);
    let base = format!("http://{}/users/x", gw.addr("gateway"));
    let bound = Duration::from_secs(15);
    eventually("traffic through the gateway", bound, || async {
        matches!(http().get(&base).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let load = Load::start(base.clone());
    eventually("load to run", bound, || async {
        load.healthy_since(registry.ready_at, 20)
    })
    .await;

    // kill -9; both proxies notice; then a new registry with nothing in it, on the same port.
    let reconnects = |gw: &Proc| gw.log().matches("registry watch reconnected").count();
    let reconnects_before = reconnects(&gw);
    registry.kill9();
    let killed_at = Instant::now();
    // Keep it down until both have retried a few times (with back-off), as a real restart
    // would take.
    eventually("the proxies to retry", bound, || async {
        car.log().matches("cannot report health; retrying").count() >= 3
            && gw.log().matches("cannot watch the registry yet").count() >= 3
    })
    .await;
    let registry = dev_server(port);
    let restarted = registry.ready_at;

    // The sidecar registers the instance again, the gateway's watch reconnects and routes to it.
    let registered = eventually("the instance to be passing again", bound, || {
        passing(&registry_url)
    })
    .await;
    let reconnected = eventually("the gateway to watch the new registry", bound, || async {
        reconnects(&gw) > reconnects_before
    })
    .await;
    let settled = restarted + registered.max(reconnected);
    eventually("traffic to recover", bound, || async {
        load.healthy_since(settled, 100)
    })
    .await;
    assert!(ready(&car).await, "the sidecar is ready again");
    let results = load.stop().await;

    let after: Vec<&(Instant, u16)> = results.iter().filter(|(at, _)| *at > restarted).collect();
    let failures = after.iter().filter(|(_, s)| *s != 200).count();
    let last_failure = after
        .iter()
        .rev()
        .find(|(_, s)| *s != 200)
        .map(|(at, _)| at.duration_since(restarted));
    let during_outage = results
        .iter()
        .filter(|(at, s)| *at > killed_at && *at <= restarted && *s != 200)
        .count();
    let recovered = last_failure.unwrap_or_default().max(registered);
    eprintln!(
        "registry down for {:?} ({during_outage} requests failed meanwhile); after the new \
         registry printed its address: instance passing at {registered:?}, gateway watching \
         it at {reconnected:?}, {failures} of {} requests failed, the last at \
         {last_failure:?}; recovered after {recovered:?}",
        restarted.duration_since(killed_at),
        after.len(),
    );
    assert!(
        recovered < bound,
        "traffic recovered {recovered:?} after the restart"
    );
    assert_eq!(
        during_outage, 0,
        "last known endpoints serve while the registry is away"
    );

    let log = car.log();
    assert_eq!(
        log.matches("registry unreachable").count(),
        1,
        "one warning per outage, not one per retry; sidecar log:\n{log}"
    );
    assert!(log.contains("registry is back"), "sidecar log:\n{log}");
    let log = gw.log();
    assert_eq!(
        log.matches("registry watch broke").count()
            + log.matches("cannot watch the registry;").count(),
        1,
        "one warning per outage; gateway log:\n{log}"
    );
    let log = car.log();
    assert!(
        log.contains("registration missing from the registry"),
        "sidecar log:\n{log}"
    );
    assert!(
        log.contains("reason=instance or check missing from the registry"),
        "sidecar log:\n{log}"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_deregistration_of_a_healthy_instance_is_undone() {
    let port = free_port();
    let registry_url = format!("http://127.0.0.1:{port}");
    let _registry = dev_server(port);
    let app = app().await;
    let car = sidecar(&registry_url, app.port);
    let bound = Duration::from_secs(15);
    eventually("the instance to be passing", bound, || {
        passing(&registry_url)
    })
    .await;

    let before = create_index(&registry_url)
        .await
        .expect("registered before the deregistration");
    let deregistered = Instant::now();
    let r = http()
        .put(format!("{registry_url}/v1/agent/service/deregister/{ID}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The sidecar may be back before a read could see the gap (it reports every 100 ms), so the
    // proof that the instance went away and came back is a newer CreateIndex.
    eventually("the instance to be registered again", bound, || {
        let url = registry_url.clone();
        async move { create_index(&url).await.is_some_and(|now| now > before) }
    })
    .await;
    eventually("the instance to be back", bound, || passing(&registry_url)).await;
    let took = deregistered.elapsed();
    eprintln!("re-registered {took:?} after the operator's deregistration");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eventually("the sidecar to be ready", bound, || ready(&car)).await;
    let log = car.log();
    assert!(
        log.contains("registration missing from the registry"),
        "sidecar log:\n{log}"
    );
}
