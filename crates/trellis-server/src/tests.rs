//! Tests of the server as a whole: storage failures, the writer's fatal error, binding.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trellis_store::{Mutation, Numbering, Snapshot};

/// Switches that make the store's commits and loads fail.
#[derive(Default)]
struct Faults {
    fail_commits: AtomicBool,
    fail_loads: AtomicBool,
}

/// A memory store that fails on demand.
struct Flaky {
    inner: MemoryStore,
    faults: Arc<Faults>,
}

fn broken(what: &str) -> StoreError {
    StoreError::Corrupt {
        key: what.into(),
        reason: "injected failure".into(),
    }
}

impl Store for Flaky {
    fn load(&self) -> Result<Snapshot, StoreError> {
        if self.faults.fail_loads.load(Ordering::SeqCst) {
            return Err(broken("load"));
        }
        self.inner.load()
    }

    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<Option<Numbering>, StoreError> {
        if self.faults.fail_commits.load(Ordering::SeqCst) {
            return Err(broken("commit"));
        }
        self.inner.commit(index, mutations)
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        dev: true,
        ..ServerConfig::default()
    }
}

async fn start_flaky(
    faults: &Arc<Faults>,
) -> (Running, String, reqwest::Client, oneshot::Sender<()>) {
    let store = Flaky {
        inner: MemoryStore::new(),
        faults: faults.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = start_with_store(config(), Box::new(store), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.local_addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    (running, base, client, stop)
}

async fn register(client: &reqwest::Client, base: &str, id: &str) -> reqwest::StatusCode {
    client
        .put(format!("{base}/v1/agent/service/register"))
        .body(format!(r#"{{"Name": "web", "ID": "{id}"}}"#))
        .send()
        .await
        .unwrap()
        .status()
}

async fn instance_ids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let listing: serde_json::Value = client
        .get(format!("{base}/v1/agent/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn a_failed_commit_answers_500_keeps_nothing_and_the_server_goes_on() {
    let store = Arc::new(Faults::default());
    let (running, base, client, stop) = start_flaky(&store).await;
    assert_eq!(register(&client, &base, "web-1").await, 200);
    // Somebody watches `web`, so its slot must be republished from the reloaded catalog.
    let health = format!("{base}/v1/health/service/web");
    assert_eq!(client.get(&health).send().await.unwrap().status(), 200);
    store.fail_commits.store(true, Ordering::SeqCst);
    assert_eq!(register(&client, &base, "web-2").await, 500);
    assert_eq!(instance_ids(&client, &base).await, ["web-1"]);
    let seen: serde_json::Value = client
        .get(&health)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1);
    store.fail_commits.store(false, Ordering::SeqCst);
    assert_eq!(register(&client, &base, "web-2").await, 200);
    assert_eq!(instance_ids(&client, &base).await, ["web-1", "web-2"]);
    stop.send(()).unwrap();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn when_the_store_cannot_be_reloaded_the_server_stops_with_the_error() {
    let store = Arc::new(Faults::default());
    let (running, base, client, _stop) = start_flaky(&store).await;
    assert_eq!(register(&client, &base, "web-1").await, 200);
    store.fail_commits.store(true, Ordering::SeqCst);
    store.fail_loads.store(true, Ordering::SeqCst);
    assert_eq!(register(&client, &base, "web-2").await, 500);
    // Nobody asked it to shut down: the writer's failure does.
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the server stops by itself");
    let error = stopped.unwrap_err();
    assert!(matches!(error, ServerError::Writer(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("could not be reloaded"), "{message}");
    assert!(std::error::Error::source(&error).is_none());
    assert!(
        client
            .get(format!("{base}/v1/agent/services"))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_taken_port_says_what_to_do_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = ServerConfig {
        http: addr.to_string().parse().unwrap(),
        ..config()
    };
    let Err(error) = start(config, std::future::pending()).await else {
        panic!("bound a taken port");
    };
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot listen on {addr}: address already in use")),
        "{message}"
    );
    assert!(message.contains("--http"), "{message}");
    assert!(!message.contains("os error"), "{message}");
    assert!(std::error::Error::source(&error).is_none());
}

#[tokio::test]
async fn a_host_name_is_resolved_and_bound() {
    let config = ServerConfig {
        http: "localhost:0".parse().unwrap(),
        ..config()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = start(config, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert!(running.local_addr.ip().is_loopback());
    assert_ne!(running.local_addr.port(), 0);
    stop.send(()).unwrap();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn an_unknown_host_is_one_line() {
    let config = ServerConfig {
        http: "no-such-host.invalid:8500".parse().unwrap(),
        ..config()
    };
    let Err(error) = start(config, std::future::pending()).await else {
        panic!("bound an unknown host");
    };
    let message = error.to_string();
    assert!(
        message.starts_with("cannot resolve no-such-host.invalid:8500: "),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test]
async fn a_locked_data_dir_names_the_directory_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let _first = RedbStore::open(dir.path()).unwrap();
    let Err(error) = start(config, std::future::pending()).await else {
        panic!("opened a locked store");
    };
    let message = error.to_string();
    assert_eq!(
        message,
        format!(
            "data directory {} is in use by another trellis server; stop it or choose another \
             --data-dir",
            dir.path().display()
        )
    );
}

/// Heartbeats change indexes without a commit, so the store's index lags behind what readers
/// saw; a reload after a failed commit must not move any index back below that.
#[tokio::test]
async fn a_reload_after_a_failed_commit_never_moves_an_index_backwards() {
    let store = Arc::new(Faults::default());
    let (running, base, client, stop) = start_flaky(&store).await;
    let body = r#"{"Name": "web", "ID": "web-1", "Check": {"TTL": "30s"}}"#;
    let answer = client
        .put(format!("{base}/v1/agent/service/register"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let health = format!("{base}/v1/health/service/web");
    let index = |r: &reqwest::Response| -> u64 {
        r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Memory-only status changes: each takes an index the store never sees.
    for status in ["pass", "fail", "pass", "fail"] {
        let url = format!("{base}/v1/agent/check/{status}/service:web-1");
        assert_eq!(client.put(url).send().await.unwrap().status(), 200);
    }
    let before = index(&client.get(&health).send().await.unwrap());
    store.fail_commits.store(true, Ordering::SeqCst);
    assert_eq!(register(&client, &base, "web-2").await, 500);
    let after = index(&client.get(&health).send().await.unwrap());
    assert!(after >= before, "index went back from {before} to {after}");
    stop.send(()).unwrap();
    running.wait().await.unwrap();
}
