//! The OTLP/HTTP trace receiver on its own listener: `POST /v1/traces` with a protobuf or JSON
//! `ExportTraceServiceRequest` (optionally gzip-compressed), answered as the OTLP/HTTP
//! specification says: 200 with an `ExportTraceServiceResponse` (partial success for refused
//! spans), 400 with a `google.rpc.Status` for a malformed body, 415 for another content type,
//! 413 beyond [`MAX_BODY`], and 429 with `Retry-After` (and a `Status` carrying a `RetryInfo`)
//! when the in-flight budget is spent (see `pressure.rs`).

use super::ingest::{Collector, MAX_BODY, Protocol};
use super::otlp::{self, Encoding};
use super::pressure::RETRY_DELAY;
use super::rpc::{INVALID_ARGUMENT, RpcStatus};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::io::Read;
use std::sync::Arc;

/// The receiver's routes.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(collector)
}

fn status_response(code: StatusCode, encoding: Encoding, status: &RpcStatus) -> Response {
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => status.to_json().to_string().into_bytes(),
    };
    (
        code,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn bad_request(encoding: Encoding, message: String) -> Response {
    let status = RpcStatus::new(INVALID_ARGUMENT, message);
    status_response(StatusCode::BAD_REQUEST, encoding, &status)
}

fn too_large(encoding: Encoding) -> Response {
    let status = RpcStatus::new(
        INVALID_ARGUMENT,
        format!("the body is larger than {MAX_BODY} bytes; export smaller batches"),
    );
    status_response(StatusCode::PAYLOAD_TOO_LARGE, encoding, &status)
}

/// 429 with `Retry-After` in whole seconds, as OTLP/HTTP exporters read it.
fn throttled(encoding: Encoding) -> Response {
    let status = RpcStatus::retry_after(
        "the trace collector is busy: too many spans in flight; retry later",
        RETRY_DELAY,
    );
    let mut response = status_response(StatusCode::TOO_MANY_REQUESTS, encoding, &status);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_DELAY.as_secs().max(1)),
    );
    response
}

/// The body, gunzipped if `Content-Encoding` says gzip; at most [`MAX_BODY`] bytes either way.
fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, String> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(format!(
            "unsupported Content-Encoding {encoding:?}; use gzip or none"
        ));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip body: {e}"))?;
    if out.len() > MAX_BODY {
        return Err(format!(
            "the decompressed body is larger than {MAX_BODY} bytes"
        ));
    }
    Ok(Bytes::from(out))
}

/// An `ExportTraceServiceResponse` in the OTLP JSON mapping: fields left out when unset, int64
/// as a decimal string.
fn json_response(response: &ExportTraceServiceResponse) -> Vec<u8> {
    let body = match &response.partial_success {
        None => serde_json::json!({}),
        Some(p) => serde_json::json!({"partialSuccess": {
            "rejectedSpans": p.rejected_spans.to_string(),
            "errorMessage": p.error_message,
        }}),
    };
    body.to_string().into_bytes()
}

async fn export(
    State(collector): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported Content-Type {content_type:?}; OTLP/HTTP takes \
                 application/x-protobuf or application/json\n"
            ),
        )
            .into_response();
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return too_large(encoding);
    }
    // Reserve before reading when the size is known, so a throttled body is never buffered.
    let early = match declared {
        Some(n) => match collector.admit(n, Protocol::Http) {
            Some(permit) => Some(permit),
            None => return throttled(encoding),
        },
        None => None,
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(error) => {
            let limited = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if limited {
                return too_large(encoding);
            }
            collector.malformed(Protocol::Http);
            return bad_request(encoding, format!("cannot read the body: {error}"));
        }
    };
    let mut permit = match early {
        Some(permit) => permit,
        None => match collector.admit(body.len(), Protocol::Http) {
            Some(permit) => permit,
            None => return throttled(encoding),
        },
    };
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err(message) => {
            collector.malformed(Protocol::Http);
            return bad_request(encoding, message);
        }
    };
    if !collector.grow(&mut permit, body.len(), Protocol::Http) {
        return throttled(encoding);
    }
    let request = match otlp::decode(encoding, &body) {
        Ok(request) => request,
        Err(message) => {
            collector.malformed(Protocol::Http);
            return bad_request(encoding, message);
        }
    };
    drop(body);
    let response = collector.export(request, Protocol::Http);
    drop(permit);
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => json_response(&response),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}
