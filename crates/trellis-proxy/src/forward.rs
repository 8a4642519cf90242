//! Sends one request to an upstream service: pick an endpoint, send, classify the outcome,
//! retry within the budget with back-off, all under per-try and overall timeouts.

use crate::body::{Body, empty, full};
use crate::client::{SendError, UpstreamBody, UpstreamClient};
use crate::config::ServicePolicy;
use crate::outcome::{Attempted, Outcome, classify};
use crate::reject::Reject;
use crate::spans::{AttemptLog, Retry, RetryReason};
use crate::upstream::{EndpointKey, Upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body as _, Frame};
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
    /// Cloned for each attempt but the last, which takes them (saving a copy on the common
    /// single-attempt path).
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

/// Forwards `request` (origin-form URI) to `upstream` and returns the response to give the
/// client. Every failure is turned into a response saying why. A recorded request passes `log`,
/// which gets the attempts, the chosen endpoint and each retry's reason.
pub async fn forward(
    client: &UpstreamClient,
    upstream: &Upstream,
    request: Request<Body>,
    log: Option<&mut AttemptLog>,
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
        log,
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
    mut log: Option<&mut AttemptLog>,
) -> Outcome<Response<UpstreamBody>> {
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
    let read = tokio::time::timeout_at(deadline.into(), RequestBody::read(body)).await;
    let mut body = match read.unwrap_or(Err(Reject::Timeout)) {
        Ok(body) => body,
        Err(reject) => return Outcome::Failed(reject),
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
    let mut last: Option<Outcome<Response<UpstreamBody>>> = None;
    loop {
        let Some(attempt_body) = body.take() else {
            // Not reached: an attempt with a streamed body is always the last one.
            return last.unwrap_or(Outcome::Failed(Reject::UpstreamReset));
        };
        // A retry avoids the endpoint that just failed whenever another one is eligible; with
        // a single eligible endpoint it goes to that one again (see `Upstream::pick`).
        let now = Instant::now();
        let Some(endpoint) = upstream.pick(now, hash_key.as_deref(), avoid.as_ref()) else {
            return last.unwrap_or(Outcome::Failed(Reject::NoEndpoints));
        };
        if let Some(log) = log.as_deref_mut() {
            log.attempts += 1;
            if log.endpoint.as_ref() != Some(&endpoint) {
                log.instance = upstream.instance_of(&endpoint);
                log.endpoint = Some(endpoint.clone());
            }
        }
        let last_attempt = !body.replayable() || retries >= policy.max_retries;
        let request = template.build(attempt_body, last_attempt);
        let sent = Instant::now();
        let per_try = policy
            .per_try_timeout
            .min(deadline.saturating_duration_since(sent));
        let transport = upstream.transport_of(&endpoint);
        let result =
            tokio::time::timeout(per_try, client.send_to(&endpoint, transport, request)).await;
        let done = Instant::now();
        let attempted = match result {
            Ok(Ok(response)) => Attempted::Answered {
                status: response.status().as_u16(),
                response,
            },
            Ok(Err(SendError::Connect)) => Attempted::ConnectFailed,
            Ok(Err(SendError::Reset)) => Attempted::Reset,
            Err(_elapsed) => Attempted::TimedOut,
        };
        let connect_failure = matches!(attempted, Attempted::ConnectFailed);
        let verdict = classify(attempted, idempotent, policy, done >= deadline);
        upstream.finish(&endpoint, done - sent, verdict.success, done);
        let retry = verdict.retryable && !last_attempt && upstream.try_retry(done);
        if !retry {
            if verdict.success && retries > 0 {
                tracing::debug!(service = %upstream.name(), retries, took_ms = start.elapsed().as_millis() as u64, "succeeded after retries");
            }
            return verdict.outcome;
        }
        retries += 1;
        upstream.metrics().retry(upstream.name());
        if let Some(log) = log.as_deref_mut() {
            log.retries.push(Retry {
                at: done,
                reason: match &verdict.outcome {
                    Outcome::Response(response) => RetryReason::Status(response.status().as_u16()),
                    Outcome::Failed(reject) => RetryReason::Failed(*reject),
                },
                endpoint: endpoint.clone(),
            });
        }
        avoid = Some(endpoint);
        last = Some(verdict.outcome);
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

/// A request body as far as sending it again is concerned.
enum RequestBody {
    /// Small and read into memory: every attempt sends a copy.
    Replayable {
        data: Bytes,
        /// Trailers that came with it (rare in a small body, but they must not be lost).
        trailers: Option<HeaderMap>,
    },
    /// Streamed straight through (large, or of unknown size): sent once.
    Streaming(Body),
    /// The streamed body went with an earlier attempt.
    Consumed,
}

impl RequestBody {
    /// Reads the body into memory when it is known to be small, so it can be replayed.
    async fn read(body: Body) -> Result<Self, Reject> {
        if body.is_end_stream() {
            return Ok(Self::Replayable {
                data: Bytes::new(),
                trailers: None,
            });
        }
        match body.size_hint().exact() {
            Some(n) if n <= MAX_REPLAY_BODY => match body.collect().await {
                Ok(collected) => {
                    let trailers = collected.trailers().cloned();
                    Ok(Self::Replayable {
                        data: collected.to_bytes(),
                        trailers,
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read request body");
                    Err(Reject::BadRequestBody)
                }
            },
            _ => Ok(Self::Streaming(body)),
        }
    }

    /// Whether an attempt after the next one could still send the body.
    fn replayable(&self) -> bool {
        matches!(self, Self::Replayable { .. })
    }

    /// The body for the next attempt; `None` once a streamed body has been sent.
    fn take(&mut self) -> Option<Body> {
        match self {
            Self::Replayable {
                data,
                trailers: None,
            } if data.is_empty() => Some(empty()),
            Self::Replayable {
                data,
                trailers: None,
            } => Some(full(data.clone())),
            Self::Replayable {
                data,
                trailers: Some(trailers),
            } => {
                let frames = [Frame::data(data.clone()), Frame::trailers(trailers.clone())];
                let stream = futures_util::stream::iter(frames.map(Ok::<_, hyper::Error>));
                Some(StreamBody::new(stream).boxed())
            }
            Self::Streaming(_) => match std::mem::replace(self, Self::Consumed) {
                Self::Streaming(body) => Some(body),
                _ => None,
            },
            Self::Consumed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed() -> Body {
        let frames = vec![Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"x")))];
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn small_bodies_replay_and_streams_are_sent_once() {
        let mut small = RequestBody::read(full("hello")).await.unwrap();
        assert!(small.replayable());
        for _ in 0..3 {
            let body = small.take().unwrap();
            assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        }
        let mut none = RequestBody::read(empty()).await.unwrap();
        assert!(none.replayable());
        assert!(none.take().unwrap().is_end_stream());

        let mut stream = RequestBody::read(streamed()).await.unwrap();
        assert!(!stream.replayable());
        assert!(stream.take().is_some());
        assert!(stream.take().is_none(), "consumed");
        assert!(!stream.replayable());

        let big = full(vec![0u8; MAX_REPLAY_BODY as usize + 1]);
        assert!(!RequestBody::read(big).await.unwrap().replayable());
    }

    #[tokio::test]
    async fn a_small_body_with_trailers_replays_with_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        /// Data of a known length, then trailers (as an HTTP/2 request with content-length).
        struct Sized(Vec<Frame<Bytes>>);
        impl hyper::body::Body for Sized {
            type Data = Bytes;
            type Error = hyper::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
                let next = (!self.0.is_empty()).then(|| Ok(self.0.remove(0)));
                std::task::Poll::Ready(next)
            }
            fn size_hint(&self) -> hyper::body::SizeHint {
                hyper::body::SizeHint::with_exact(3)
            }
        }
        let body = Sized(vec![
            Frame::data(Bytes::from_static(b"abc")),
            Frame::trailers(trailers),
        ])
        .boxed();
        let mut replay = RequestBody::read(body).await.unwrap();
        assert!(replay.replayable());
        for _ in 0..2 {
            let collected = replay.take().unwrap().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            assert_eq!(collected.to_bytes(), "abc");
        }
    }
}
