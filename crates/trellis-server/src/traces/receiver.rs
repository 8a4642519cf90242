//! The OTLP/HTTP trace receiver on its own listener: `POST /v1/traces` with a protobuf or JSON
//! `ExportTraceServiceRequest` (optionally gzip-compressed), answered as the OTLP/HTTP
//! specification says: 200 with an `ExportTraceServiceResponse` (partial success for refused
//! spans), 400 with a `google.rpc.Status` for a malformed body, 415 for another content type.

use super::TraceStore;
use super::otlp::{self, Encoding};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use std::io::Read;

/// Largest request body, compressed and decompressed: 16 MiB.
pub const MAX_BODY: usize = 16 << 20;

/// The receiver's routes.
pub fn router(store: TraceStore) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(store)
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer (its `details` left out).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC's INVALID_ARGUMENT, the code of a malformed request.
const INVALID_ARGUMENT: i32 = 3;

fn bad_request(encoding: Encoding, message: String) -> Response {
    let status = RpcStatus {
        code: INVALID_ARGUMENT,
        message,
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
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

async fn export(State(store): State<TraceStore>, headers: HeaderMap, body: Bytes) -> Response {
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
    let body = match decompress(&headers, body) {
        Ok(body) => body,
        Err(message) => return bad_request(encoding, message),
    };
    let request = match otlp::decode(encoding, &body) {
        Ok(request) => request,
        Err(message) => return bad_request(encoding, message),
    };
    // Convert outside the lock; only the insert holds it.
    let converted = otlp::convert(request);
    let inserted = store.lock().insert(converted.spans);
    let invalid = converted.rejected_invalid + inserted.rejected_invalid;
    let too_large = inserted.rejected_too_large;
    let mut reasons = Vec::new();
    if invalid > 0 {
        reasons.push(format!(
            "{invalid} spans with an invalid trace, span or parent span id"
        ));
    }
    if too_large > 0 {
        reasons.push(format!(
            "{too_large} spans larger than the span store (--trace-store-bytes)"
        ));
    }
    let response = ExportTraceServiceResponse {
        partial_success: (!reasons.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: (invalid + too_large) as i64,
            error_message: reasons.join("; "),
        }),
    };
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
