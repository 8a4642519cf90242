//! Responses the proxy generates itself: each carries `x-trellis-error` naming the reason and a
//! short JSON body, so a caller can tell a proxy decision from an upstream answer.

use crate::body::{Body, full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

/// Header naming why the proxy answered instead of an upstream.
pub const ERROR_HEADER: &str = "x-trellis-error";

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The gateway has no route for the path.
    NoRoute,
    /// The outbound request names no usable service (no Host, invalid name).
    BadTarget,
    /// The service has no healthy endpoint (or the registry has not answered yet).
    NoEndpoints,
    /// Too many requests in flight for this service.
    ConcurrencyLimit,
    /// The token bucket is empty.
    RateLimited,
    /// The overall timeout (including retries) passed.
    Timeout,
    /// One attempt timed out and could not be retried.
    PerTryTimeout,
    /// No connection could be made to any endpoint tried.
    ConnectFailed,
    /// The connection broke while waiting for the response.
    UpstreamReset,
    /// The request body could not be read from the client.
    BadRequestBody,
    /// The proxy is shutting down.
    ShuttingDown,
    /// The caller presented no mesh identity to an inbound listener that requires one.
    MtlsRequired,
    /// An intention denies the calling service this service.
    IntentionDenied,
}

impl Reject {
    /// The value of `x-trellis-error`.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::BadTarget => "bad-target",
            Self::NoEndpoints => "no-endpoints",
            Self::ConcurrencyLimit => "concurrency-limit",
            Self::RateLimited => "rate-limited",
            Self::Timeout => "timeout",
            Self::PerTryTimeout => "per-try-timeout",
            Self::ConnectFailed => "connect-failed",
            Self::UpstreamReset => "upstream-reset",
            Self::BadRequestBody => "bad-request-body",
            Self::ShuttingDown => "shutting-down",
            // As the mesh's documentation names them.
            Self::MtlsRequired => "mtls required",
            Self::IntentionDenied => "intention denied",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadTarget | Self::BadRequestBody => StatusCode::BAD_REQUEST,
            Self::NoEndpoints | Self::ConcurrencyLimit | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout | Self::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectFailed | Self::UpstreamReset => StatusCode::BAD_GATEWAY,
            Self::MtlsRequired | Self::IntentionDenied => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NoRoute => "no route for this path",
            Self::BadTarget => "request does not name a service",
            Self::NoEndpoints => "no healthy endpoint for the service",
            Self::ConcurrencyLimit => "too many requests in flight",
            Self::RateLimited => "rate limit exceeded",
            Self::Timeout => "request timed out",
            Self::PerTryTimeout => "upstream did not answer in time",
            Self::ConnectFailed => "cannot connect to the service",
            Self::UpstreamReset => "upstream connection failed",
            Self::BadRequestBody => "cannot read the request body",
            Self::ShuttingDown => "proxy is shutting down",
            Self::MtlsRequired => "this listener takes only mutual TLS with a mesh certificate",
            Self::IntentionDenied => "an intention denies the calling service",
        }
    }

    /// The response for this reason; `subject` (a service name or path) is added to the body.
    pub fn response(self, subject: &str) -> Response<Body> {
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.message(),
            "target": subject,
        });
        let mut response = Response::new(full(format!("{body}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_say_why() {
        let response = Reject::RateLimited.response("orders");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[ERROR_HEADER], "rate-limited");
        assert_eq!(Reject::NoRoute.status(), 404);
        assert_eq!(Reject::Timeout.status(), 504);
        assert_eq!(Reject::ConcurrencyLimit.status(), 503);
    }
}
