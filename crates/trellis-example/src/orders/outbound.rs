//! What the orders service's outgoing calls (to users, to the transaction coordinator) share:
//! the trace headers (this call's span as the parent, and the incoming request id), and
//! plain-HTTP URLs checked at start-up.

use axum::http::HeaderMap;
use reqwest::Url;
use tracing::Span;

use crate::Error;

/// `request`, made inside the CLIENT span `span`, with the trace headers that make one trace
/// and one request id span every service an order touches.
pub(crate) fn forward(
    request: reqwest::RequestBuilder,
    span: &Span,
    incoming: &HeaderMap,
) -> reqwest::RequestBuilder {
    request.headers(crate::telemetry::outgoing_headers(span, incoming))
}

/// reqwest is built without TLS here, so only plain HTTP can work; say so at start-up.
pub(crate) fn check_http(what: &str, url: &Url) -> Result<(), Error> {
    if url.scheme() == "http" && url.host().is_some() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {url} must be an http:// URL with a host"
        )))
    }
}
