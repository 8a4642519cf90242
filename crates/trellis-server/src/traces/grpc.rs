//! The OTLP/gRPC trace receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! on its own listener (HTTP/2 without TLS), served by axum with tonic's unary call handling
//! (framing, gzip, status trailers) and the same ingest path as OTLP/HTTP.
//!
//! The one method is routed by hand rather than through opentelemetry-proto's generated server,
//! which needs tonic's client channel and transport stack; here tonic only brings its codec and
//! server plumbing. Answers: OK with an `ExportTraceServiceResponse` (partial success for
//! refused spans), INVALID_ARGUMENT for an undecodable message, RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo` when the in-flight budget is spent (retryable, see `pressure.rs`),
//! RESOURCE_EXHAUSTED without one for a message over [`MAX_BODY`] (not retryable), and
//! UNIMPLEMENTED for any other method.

use super::ingest::{Collector, MAX_BODY, Protocol};
use super::pressure::RETRY_DELAY;
use super::rpc::RpcStatus;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::sync::Arc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::server::Grpc;
use tonic::{Code, Status};
use tonic_prost::ProstEncoder;

/// The path of `TraceService/Export`.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The receiver's routes.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route(EXPORT_PATH, post(export))
        .fallback(unimplemented)
        .with_state(collector)
}

async fn unimplemented(request: Request) -> Response {
    let status = Status::unimplemented(format!(
        "no method {}; this listener serves {EXPORT_PATH}",
        request.uri().path()
    ));
    status.into_http::<Body>()
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` detail, which OTLP exporters retry after its delay.
fn throttled() -> Response {
    let message = "the trace collector is busy: too many spans in flight; retry later";
    let details = RpcStatus::retry_after(message, RETRY_DELAY).encode_to_vec();
    Status::with_details(Code::ResourceExhausted, message, details.into()).into_http::<Body>()
}

/// Protobuf messages in, as tonic's prost codec, except that an undecodable message is the
/// client's INVALID_ARGUMENT (and counted), not the INTERNAL tonic would answer.
struct OtlpCodec {
    collector: Arc<Collector>,
}

struct OtlpDecoder {
    collector: Arc<Collector>,
}

impl Codec for OtlpCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = ExportTraceServiceRequest;
    type Encoder = ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = OtlpDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder {
            collector: self.collector.clone(),
        }
    }
}

impl Decoder for OtlpDecoder {
    type Item = ExportTraceServiceRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceRequest::decode(src)
            .map(Some)
            .map_err(|e| {
                self.collector.malformed(Protocol::Grpc);
                Status::invalid_argument(format!("invalid protobuf ExportTraceServiceRequest: {e}"))
            })
    }
}

async fn export(State(collector): State<Arc<Collector>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // gRPC frames the message behind a 5-byte prefix.
    let limit = MAX_BODY + 5;
    let too_large = || {
        Status::resource_exhausted(format!(
            "the message is larger than {MAX_BODY} bytes; export smaller batches"
        ))
        .into_http::<Body>()
    };
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    // Reserve before reading when the size is known (gRPC clients seldom send it).
    let early = match declared {
        Some(n) => match collector.admit(n, Protocol::Grpc) {
            Some(permit) => Some(permit),
            None => return throttled(),
        },
        None => None,
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(error) => {
            let limited = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if limited {
                return too_large();
            }
            return Status::cancelled(format!("cannot read the request: {error}"))
                .into_http::<Body>();
        }
    };
    let mut permit = match early {
        Some(permit) => permit,
        None => match collector.admit(body.len(), Protocol::Grpc) {
            Some(permit) => permit,
            None => return throttled(),
        },
    };
    let compressed = parts.headers.contains_key("grpc-encoding");
    let service = {
        let collector = collector.clone();
        tower::service_fn(move |request: tonic::Request<ExportTraceServiceRequest>| {
            let request = request.into_inner();
            // A compressed message is bigger decoded: account for its real size.
            let result = if compressed
                && !collector.grow(&mut permit, request.encoded_len(), Protocol::Grpc)
            {
                let message = "the trace collector is busy: too many spans in flight";
                let details = RpcStatus::retry_after(message, RETRY_DELAY).encode_to_vec();
                Err(Status::with_details(
                    Code::ResourceExhausted,
                    message,
                    details.into(),
                ))
            } else {
                Ok(tonic::Response::new(
                    collector.export(request, Protocol::Grpc),
                ))
            };
            std::future::ready(result)
        })
    };
    let mut grpc = Grpc::new(OtlpCodec {
        collector: collector.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_BODY);
    let request = axum::http::Request::from_parts(parts, Full::new(body));
    grpc.unary(service, request).await.map(Body::new)
}
