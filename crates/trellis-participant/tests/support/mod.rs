//! Test support: calling a participant's routes in-process (no socket) and a fake coordinator
//! on 127.0.0.1 ([`coordinator`]). The real PostgreSQL server per test is
//! `trellis_participant::testing` (the crate's `testing` feature).

#![allow(dead_code)]

pub mod coordinator;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// An answer of the participant's routes: status, JSON body, `Retry-After`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Reply {
    /// `body.result` of a 200, `body.reason` otherwise.
    pub fn text(&self) -> &str {
        let field = if self.status == 200 {
            "result"
        } else {
            "reason"
        };
        self.body[field].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn done(&self, result: &str) {
        assert_eq!((self.status, self.text()), (200, result), "{self:?}");
    }

    #[track_caller]
    pub fn no(&self) {
        assert_eq!(self.status, 409, "{self:?}");
    }

    #[track_caller]
    pub fn later(&self) {
        assert_eq!(self.status, 503, "{self:?}");
        assert_eq!(self.retry_after.as_deref(), Some("1"), "{self:?}");
    }
}

/// `POST /<phase>` with a branch body.
pub async fn call(app: &Router, phase: &str, gid: &str, branch_id: &str, payload: Value) -> Reply {
    let body = json!({ "gid": gid, "branch_id": branch_id, "payload": payload }).to_string();
    post(app, &format!("/{phase}"), body).await
}

/// Like [`call`], repeated while the answer is 503 (as the coordinator does), at most ~10 s.
pub async fn call_until_settled(
    app: &Router,
    phase: &str,
    gid: &str,
    branch_id: &str,
    payload: Value,
) -> Reply {
    for _ in 0..400 {
        let reply = call(app, phase, gid, branch_id, payload.clone()).await;
        if reply.status != 503 {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{phase} of {gid}/{branch_id} still answered 503 after ~10 s");
}

pub async fn post(app: &Router, path: &str, body: impl Into<Body>) -> Reply {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request");
    send(app, request).await
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        body,
        retry_after,
    }
}
