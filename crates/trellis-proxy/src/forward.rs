//! Sends one request to an upstream service: pick an endpoint, send, classify the outcome,
//! retry within the budget with back-off, all under per-try and overall timeouts.

use crate::body::{Body, full};
use crate::client::{SendError, UpstreamClient};
use crate::reject::Reject;
use crate::upstream::{EndpointKey, Upstream};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::http::uri::PathAndQuery;
use hyper::{HeaderMap, Method, Request, Response, Uri, Version};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// Request bodies up to this size are buffered so the request can be retried; larger or
/// unsized (streaming) bodies pass straight through and are sent once.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// The parts of a request needed to send it again.
struct Template {
    method: Method,
    path: PathAndQuery,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    fn build(&self, endpoint: &str, body: Body) -> Option<Request<Body>> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(endpoint)
            .path_and_query(self.path.clone())
            .build()
            .ok()?;
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        Some(request)
    }
}

enum Outcome {
    /// An answer to pass back (possibly a failure status that was not retried).
    Response(Response<hyper::body::Incoming>),
    Failed(Reject),
}

/// Forwards `request` (origin-form URI) to `upstream` and returns the response to give the
/// client. Every failure is turned into a response saying why.
pub async fn forward(
    client: &UpstreamClient,
    upstream: &Upstream,
    request: Request<Body>,
) -> Response<Body> {
    let start = Instant::now();
    let admission = match upstream.admit(start) {
        Ok(admission) => admission,
        Err((reject, retry_after)) => {
            let mut response = reject.response(upstream.name());
            if let Some(after) = retry_after
                && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
            {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            return response;
        }
    };
    let deadline = start + admission.policy.timeout;
    let attempts = attempts(client, upstream, request, start, deadline);
    let response = match tokio::time::timeout_at(deadline.into(), attempts).await {
        Ok(Outcome::Response(response)) => response.map(BodyExt::boxed),
        Ok(Outcome::Failed(reject)) => reject.response(upstream.name()),
        Err(_) => Reject::Timeout.response(upstream.name()),
    };
    match admission.permit {
        // The request stays in flight, for the concurrency limit, until its body ends.
        Some(permit) => response.map(|body| {
            PermitBody {
                inner: body,
                _permit: permit,
            }
            .boxed()
        }),
        None => response,
    }
}

async fn attempts(
    client: &UpstreamClient,
    upstream: &Upstream,
    request: Request<Body>,
    start: Instant,
    deadline: Instant,
) -> Outcome {
    let policy = upstream.policy();
    let (parts, body) = request.into_parts();
    let template = Template {
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        method: parts.method,
        version: parts.version,
        headers: parts.headers,
    };
    let (replay, mut stream) = match buffer_small(body).await {
        Ok(Ok(bytes)) => (Some(bytes), None),
        Ok(Err(body)) => (None, Some(body)),
        Err(()) => return Outcome::Failed(Reject::BadRequestBody),
    };
    let idempotent = matches!(
        template.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let hash_key: Option<Vec<u8>> = policy
        .load_balancer
        .hash_header()
        .and_then(|h| template.headers.get(h))
        .map(|v| v.as_bytes().to_vec());

    if !upstream.wait_resolved(deadline).await {
        return Outcome::Failed(Reject::NoEndpoints);
    }
    let mut retries = 0u32;
    let mut avoid: Option<EndpointKey> = None;
    let mut last: Option<Outcome> = None;
    loop {
        let now = Instant::now();
        let Some(endpoint) = upstream.pick(now, hash_key.as_deref(), avoid.as_ref()) else {
            return last.unwrap_or(Outcome::Failed(Reject::NoEndpoints));
        };
        let body = match (&replay, stream.take()) {
            (Some(bytes), _) => full(bytes.clone()),
            (None, Some(body)) => body,
            // A streamed body can only be sent once; the retry checks below prevent this.
            (None, None) => return last.unwrap_or(Outcome::Failed(Reject::UpstreamReset)),
        };
        let Some(request) = template.build(&endpoint, body) else {
            upstream.finish(&endpoint, now.elapsed(), true, now);
            return Outcome::Failed(Reject::BadTarget);
        };
        let sent = Instant::now();
        let per_try = policy
            .per_try_timeout
            .min(deadline.saturating_duration_since(sent));
        let result = tokio::time::timeout(per_try, client.send(request)).await;
        let done = Instant::now();
        let (outcome, success, retryable) = match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let retry = idempotent && policy.retry_statuses.contains(&status);
                (Outcome::Response(response), status < 500, retry)
            }
            Ok(Err(SendError::Connect)) => (Outcome::Failed(Reject::ConnectFailed), false, true),
            Ok(Err(SendError::Reset)) => {
                (Outcome::Failed(Reject::UpstreamReset), false, idempotent)
            }
            Err(_) => {
                let reject = if done >= deadline {
                    Reject::Timeout
                } else {
                    Reject::PerTryTimeout
                };
                (Outcome::Failed(reject), false, idempotent)
            }
        };
        upstream.finish(&endpoint, done - sent, success, done);
        let connect_failure = matches!(outcome, Outcome::Failed(Reject::ConnectFailed));
        let can_retry = retryable
            && replay.is_some()
            && retries < policy.max_retries
            && done < deadline
            && upstream.try_retry(done);
        if !can_retry {
            if success && retries > 0 {
                tracing::debug!(service = %upstream.name(), retries, took_ms = start.elapsed().as_millis() as u64, "succeeded after retries");
            }
            return outcome;
        }
        retries += 1;
        upstream.metrics().retry(upstream.name());
        avoid = Some(endpoint);
        last = Some(outcome);
        // Nothing reached the failed endpoint on a refused connect, so another endpoint can be
        // tried at once; other failures back off so a struggling service is not hammered.
        if !connect_failure {
            tokio::time::sleep(upstream.backoff(retries)).await;
        }
    }
}

/// Reads the body into memory when it is known to be small, so it can be replayed.
async fn buffer_small(body: Body) -> Result<Result<Bytes, Body>, ()> {
    if body.is_end_stream() {
        return Ok(Ok(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if n <= MAX_REPLAY_BODY => match body.collect().await {
            Ok(collected) => {
                // A body with trailers cannot be replayed as plain bytes.
                if collected.trailers().is_some() {
                    return Err(());
                }
                Ok(Ok(collected.to_bytes()))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read request body");
                Err(())
            }
        },
        _ => Ok(Err(body)),
    }
}

/// A response body that holds a concurrency permit until it is finished or dropped.
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl hyper::body::Body for PermitBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
