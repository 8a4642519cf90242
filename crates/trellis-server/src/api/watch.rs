//! `GET /v1/trellis/watch/:service`: a long-lived stream of the routable instance set, sent at
//! once and after every change, as NDJSON (default) or Server-Sent Events
//! (`Accept: text/event-stream`).

use super::blocking::waiter_permit;
use super::error::ApiError;
use crate::published::RenderKey;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::convert::Infallible;
use std::time::Duration;

/// A keep-alive line when nothing changed, so dead peers and idle-timeout proxies show up.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub async fn watch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    trellis_types::registration::validate_registered_name(&name)?;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let permit = waiter_permit(&state)?;
    let slot = state.slot(&name)?;
    let mut rx = slot.tx.subscribe();
    drop(slot);
    let mut closing = state.closing();
    let node = state.node().clone();
    let stream = async_stream(move |tx| async move {
        let _permit = permit;
        let mut last_index = None;
        loop {
            let published = rx.borrow_and_update().clone();
            if last_index != Some(published.index()) {
                last_index = Some(published.index());
                let line = published.render(RenderKey::Watch, None, &node);
                let chunk = if sse { sse_event(&line) } else { line };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = closing.changed() => return,
                () = tokio::time::sleep(KEEPALIVE) => {
                    let ping = if sse { Bytes::from_static(b": keepalive\n\n") } else { Bytes::from_static(b"\n") };
                    if tx.send(ping).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn sse_event(line: &Bytes) -> Bytes {
    let json = line.strip_suffix(b"\n").unwrap_or(line);
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Runs `body` as a task feeding a bounded channel, exposed as a body stream; the task ends
/// when the client goes away (its sends fail).
fn async_stream<F, Fut>(body: F) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(body(tx));
    futures_util::stream::unfold((rx, AbortOnDrop(task)), |(mut rx, guard)| async move {
        rx.recv().await.map(|chunk| (Ok(chunk), (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
