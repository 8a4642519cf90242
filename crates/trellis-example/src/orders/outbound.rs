//! What the orders service's outgoing calls (to users, to the transaction coordinator) share:
//! the trace headers copied from the incoming request, and plain-HTTP URLs checked at start-up.

use axum::http::HeaderMap;
use reqwest::Url;

use crate::Error;

/// Request headers copied from the incoming request onto every outgoing call, so that one trace
/// and one request id span every service an order touches.
const FORWARDED: [&str; 3] = ["traceparent", "tracestate", "x-request-id"];

/// `request` with the incoming request's trace headers.
pub(crate) fn forward(
    mut request: reqwest::RequestBuilder,
    incoming: &HeaderMap,
) -> reqwest::RequestBuilder {
    for name in FORWARDED {
        for value in incoming.get_all(name) {
            request = request.header(name, value);
        }
    }
    request
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
