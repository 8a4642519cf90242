//! A minimal two-phase-commit coordinator on 127.0.0.1 for these tests: the one-shot submit
//! (`POST /v1/trellis/txn` with `"commit": true`) over branches named by service, each service
//! mapped to an address by the test. It prepares every branch, then commits or aborts every
//! branch, and answers as `trellis server` does: 200 `committed` (or `committing` when a commit
//! was not acknowledged), 409 `aborted` with the cause. It remembers every submit.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::common::{client, spawn_fake};

#[derive(Default)]
struct Book {
    services: HashMap<String, SocketAddr>,
    /// Branches whose commit message is "lost": the submit answers `committing`.
    lost_commits: HashSet<String>,
    submits: Vec<(HeaderMap, Value)>,
}

#[derive(Clone)]
pub struct MiniCoordinator {
    pub url: String,
    book: Arc<Mutex<Book>>,
}

impl MiniCoordinator {
    pub async fn start() -> Self {
        let book = Arc::new(Mutex::new(Book::default()));
        let router = Router::new()
            .route("/v1/trellis/txn", post(submit))
            .with_state(Arc::clone(&book));
        let addr = spawn_fake(router).await;
        Self {
            url: format!("http://{addr}"),
            book,
        }
    }

    /// Where the branches naming `service` go.
    pub fn route(&self, service: &str, addr: SocketAddr) {
        self.book
            .lock()
            .unwrap()
            .services
            .insert(service.to_owned(), addr);
    }

    /// Commits of `branch_id` are never sent from now on.
    pub fn lose_commits_of(&self, branch_id: &str) {
        self.book
            .lock()
            .unwrap()
            .lost_commits
            .insert(branch_id.to_owned());
    }

    /// Every submit: its headers and body.
    pub fn submits(&self) -> Vec<(HeaderMap, Value)> {
        self.book.lock().unwrap().submits.clone()
    }
}

/// Sends one phase message; answers the status and the body.
pub async fn call(
    base: &str,
    phase: &str,
    gid: &str,
    branch: &str,
    payload: &Value,
) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/{phase}"))
        .json(&json!({"gid": gid, "branch_id": branch, "payload": payload}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn submit(
    State(book): State<Arc<Mutex<Book>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (services, lost) = {
        let mut book = book.lock().unwrap();
        book.submits.push((headers, body.clone()));
        (book.services.clone(), book.lost_commits.clone())
    };
    assert_eq!(body["commit"], true, "only the one-shot submit is served");
    let gid = body["gid"].as_str().unwrap().to_owned();
    let branches: Vec<(String, String, Value)> = body["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let service = b["service"].as_str().unwrap();
            let addr = services
                .get(service)
                .unwrap_or_else(|| panic!("no address for service {service}"));
            let base = format!("http://{addr}{}", b["path"].as_str().unwrap());
            (
                b["branch_id"].as_str().unwrap().to_owned(),
                base,
                b["payload"].clone(),
            )
        })
        .collect();

    let mut cause = None;
    for (id, base, payload) in &branches {
        let (status, answer) = call(base, "prepare", &gid, id, payload).await;
        if status != 200 {
            let reason = answer["reason"].as_str().unwrap_or("no vote").to_owned();
            cause = Some(json!({"branch": id, "reason": reason}));
            break;
        }
    }
    if let Some(cause) = cause {
        for (id, base, payload) in &branches {
            let (status, _) = call(base, "abort", &gid, id, payload).await;
            assert_eq!(status, 200, "abort of {id}");
        }
        let txn = json!({"gid": gid, "state": "aborted", "cause": cause});
        return (StatusCode::CONFLICT, Json(txn));
    }
    let mut state = "committed";
    for (id, base, payload) in &branches {
        if lost.contains(id) {
            state = "committing";
            continue;
        }
        let (status, _) = call(base, "commit", &gid, id, payload).await;
        if status != 200 {
            state = "committing";
        }
    }
    (StatusCode::OK, Json(json!({"gid": gid, "state": state})))
}
