//! Successful answers: JSON bodies with Consul's read headers (`X-Consul-Index` never 0).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A JSON answer with the Consul read headers.
pub fn json_response(index: u64, body: Bytes) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_index_headers(headers, index);
    response
}

/// `X-Consul-Index` (never 0) and the leader headers of a read.
pub fn add_index_headers(headers: &mut HeaderMap, index: u64) {
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    add_leader_headers(headers);
}

/// The leader headers of a read without an index (a read-only transaction): this server is
/// always the leader, in contact with itself.
pub fn add_leader_headers(headers: &mut HeaderMap) {
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
}

/// Consul's answer to a write that succeeds or fails without an error: a JSON `true`/`false`.
pub fn bool_response(value: bool) -> Response {
    let body = if value { "true" } else { "false" };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn to_json_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    // Serialising the API's own plain types cannot fail; `null` is the safe fallback.
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
}
