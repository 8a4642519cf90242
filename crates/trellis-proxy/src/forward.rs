//! Sends one request to an upstream service: pick an endpoint, send, classify the outcome,
//! retry within the budget with back-off, all under per-try and overall timeouts.

use crate::body::{Body, empty, full};
use crate::client::{SendError, UpstreamBody, UpstreamClient};
use crate::config::ServicePolicy;
use crate::reject::Reject;
use crate::upstream::{EndpointKey, Upstream};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::http::uri::PathAndQuery;
use hyper::{HeaderMap, Method, Request, Response, Uri, Version};
use std::time::Instant;

/// Request bodies up to this size are buffered so the request can be retried; larger or
/// unsized (streaming) bodies pass straight through and are sent once.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// The parts of a request needed to send it again.
struct Template {
    method: Method,
    path: PathAndQuery,
    version: Version,
    /// Taken by the last attempt that can be made; cloned by the others.
    headers: Option<HeaderMap>,
}

impl Template {
    /// The request for one attempt, with an origin-form URI. `last` moves the headers out
    /// instead of copying them, when no further attempt can follow.
    fn build(&mut self, body: Body, last: bool) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = self.version;
        let headers = if last {
            self.headers.take()
        } else {
            self.headers.clone()
        };
        *request.headers_mut() = headers.unwrap_or_default();
        request
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "the response is the common case; boxing it would allocate on every request"
)]
enum Outcome {
    /// An answer to pass back (possibly a failure status that was not retried).
    Response(Response<UpstreamBody>),
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
    // Every wait inside is bounded by the deadline, so no separate overall timer is needed.
    match attempts(
        client,
        upstream,
        &admission.policy,
        request,
        start,
        deadline,
    )
    .await
    {
        Outcome::Response(response) => {
            let permit = admission.permit;
            // The request stays in flight, for the concurrency limit, until its body ends.
            response.map(|mut body| {
                body.hold(permit);
                body.into_body()
            })
        }
        Outcome::Failed(reject) => reject.response(upstream.name()),
    }
}

async fn attempts(
    client: &UpstreamClient,
    upstream: &Upstream,
    policy: &ServicePolicy,
    request: Request<Body>,
    start: Instant,
    deadline: Instant,
) -> Outcome {
    let (parts, body) = request.into_parts();
    let mut template = Template {
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        method: parts.method,
        version: parts.version,
        headers: Some(parts.headers),
    };
    let (replay, mut stream) = if body.is_end_stream() {
        (Some(Bytes::new()), None)
    } else {
        match tokio::time::timeout_at(deadline.into(), buffer_small(body)).await {
            Ok(Ok(Ok(bytes))) => (Some(bytes), None),
            Ok(Ok(Err(body))) => (None, Some(body)),
            Ok(Err(())) => return Outcome::Failed(Reject::BadRequestBody),
            Err(_) => return Outcome::Failed(Reject::Timeout),
        }
    };
    let idempotent = trellis_resilience::is_idempotent_method(template.method.as_str());
    let hash_key: Option<Vec<u8>> = policy
        .load_balancer
        .hash_header()
        .and_then(|h| template.headers.as_ref()?.get(h))
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
            (Some(bytes), _) if bytes.is_empty() => empty(),
            (Some(bytes), _) => full(bytes.clone()),
            (None, Some(body)) => body,
            // A streamed body can only be sent once; the retry checks below prevent this.
            (None, None) => return last.unwrap_or(Outcome::Failed(Reject::UpstreamReset)),
        };
        let last_attempt = replay.is_none() || retries >= policy.max_retries;
        let request = template.build(body, last_attempt);
        let sent = Instant::now();
        let per_try = policy
            .per_try_timeout
            .min(deadline.saturating_duration_since(sent));
        let result = tokio::time::timeout(per_try, client.send_to(&endpoint, request)).await;
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
            && !last_attempt
            && template.headers.is_some()
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
            let until = (Instant::now() + upstream.backoff(retries)).min(deadline);
            tokio::time::sleep_until(until.into()).await;
            if Instant::now() >= deadline {
                return Outcome::Failed(Reject::Timeout);
            }
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
