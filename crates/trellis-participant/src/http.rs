//! The participant's HTTP routes: `POST /prepare`, `/commit` and `/abort`, with the body parsed
//! and bounded and each [`Answer`] sent as its status.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::protocol::{Answer, Branch, Participant, Phase};

/// Largest request body accepted; a larger one is answered 413 before it is buffered.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The three routes of the protocol for `participant`, to be nested under the base URL the
/// service announces to the coordinator: `Router::new().nest("/txn/transfer", router(p))`
/// serves `POST /txn/transfer/prepare` and so on.
///
/// Answers: 200 `{"result": ...}` (yes / done, see [`crate::Done`]), 409 `{"reason": ...}` (no),
/// 503 `{"reason": ...}` with `Retry-After: 1` (later), 400 for a malformed body, 413 for one
/// larger than [`BODY_LIMIT`].
pub fn router<P: Participant>(participant: P) -> Router {
    Router::new()
        .route("/prepare", post(prepare::<P>))
        .route("/commit", post(commit::<P>))
        .route("/abort", post(abort::<P>))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(participant))
}

async fn prepare<P: Participant>(
    State(participant): State<Arc<P>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&*participant, Phase::Prepare, body).await
}

async fn commit<P: Participant>(
    State(participant): State<Arc<P>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&*participant, Phase::Commit, body).await
}

async fn abort<P: Participant>(
    State(participant): State<Arc<P>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&*participant, Phase::Abort, body).await
}

async fn handle<P: Participant>(
    participant: &P,
    phase: Phase,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let branch = match parse(body) {
        Ok(branch) => branch,
        Err((status, why)) => return reason(status, why),
    };
    let (gid, branch_id) = (branch.gid.clone(), branch.branch_id.clone());
    let answer = participant.call(phase, branch).await;
    match &answer {
        Answer::Done(done) => {
            tracing::debug!(phase = phase.as_str(), %gid, %branch_id, ?done, "2pc branch call")
        }
        Answer::No(reason) => {
            tracing::info!(phase = phase.as_str(), %gid, %branch_id, %reason, "2pc branch: no")
        }
        Answer::Later(reason) => {
            tracing::debug!(phase = phase.as_str(), %gid, %branch_id, %reason, "2pc branch: later")
        }
    }
    respond(answer)
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<Branch, (StatusCode, String)> {
    let body = body.map_err(|rejection| (rejection.status(), rejection.body_text()))?;
    let branch: Branch = serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    match branch.invalid() {
        Some(why) => Err((StatusCode::BAD_REQUEST, why)),
        None => Ok(branch),
    }
}

fn respond(answer: Answer) -> Response {
    match answer {
        Answer::Done(done) => {
            (StatusCode::OK, axum::Json(json!({ "result": done }))).into_response()
        }
        Answer::No(why) => reason(StatusCode::CONFLICT, why),
        Answer::Later(why) => {
            let mut response = reason(StatusCode::SERVICE_UNAVAILABLE, why);
            response
                .headers_mut()
                .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            response
        }
    }
}

fn reason(status: StatusCode, why: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "reason": why.into() }))).into_response()
}
