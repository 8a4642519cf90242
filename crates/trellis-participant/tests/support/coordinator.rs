//! A fake coordinator on 127.0.0.1: answers `GET /v1/trellis/txn/{gid}` from a table the test
//! fills (a state, or a bare status), 404 for any other gid, and remembers what it was asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

#[derive(Clone)]
pub enum Reply {
    State(&'static str),
    Status(u16),
}

#[derive(Default)]
struct Book {
    replies: HashMap<String, Reply>,
    asked: Vec<String>,
}

pub struct FakeCoordinator {
    pub url: String,
    book: Arc<Mutex<Book>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCoordinator {
    pub async fn start(replies: &[(&str, Reply)]) -> FakeCoordinator {
        let book = Arc::new(Mutex::new(Book {
            replies: replies
                .iter()
                .map(|(gid, reply)| (gid.to_string(), reply.clone()))
                .collect(),
            asked: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/trellis/txn/{gid}", get(txn))
            .with_state(Arc::clone(&book));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        FakeCoordinator { url, book, task }
    }

    /// The gids asked about, in order.
    pub fn asked(&self) -> Vec<String> {
        self.book.lock().unwrap().asked.clone()
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn txn(State(book): State<Arc<Mutex<Book>>>, Path(gid): Path<String>) -> Response {
    let reply = {
        let mut book = book.lock().unwrap();
        book.asked.push(gid.clone());
        book.replies.get(&gid).cloned()
    };
    match reply {
        Some(Reply::State(state)) => {
            axum::Json(json!({ "gid": gid, "state": state, "branches": [] })).into_response()
        }
        Some(Reply::Status(status)) => StatusCode::from_u16(status)
            .expect("status")
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
