//! OTLP trace requests to [`trellis_traces::Span`]s: decoding a body (protobuf or the OTLP JSON
//! mapping) and the pure conversion of its resource spans (the resource's `service.name` is the
//! service; kind, status, attributes and events carried over; links dropped).

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prost::Message;
use std::sync::Arc;
use trellis_traces::{
    AttrValue, Attributes, Event, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId,
};

/// The service of spans whose resource names none, as OpenTelemetry SDKs default it.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding of a `Content-Type` (parameters ignored), if OTLP/HTTP defines it.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Decodes an `ExportTraceServiceRequest`; the error is a one-line reason.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| format!("invalid protobuf ExportTraceServiceRequest: {e}")),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| format!("invalid JSON ExportTraceServiceRequest: {e}")),
    }
}

/// The spans of a request, and how many were refused before reaching the store.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Span>,
    /// Spans whose trace, span or parent span id is not a valid id of its size.
    pub rejected_invalid: usize,
}

/// Converts a request's spans. Pure: no clock, no IO.
pub fn convert(request: ExportTraceServiceRequest) -> Converted {
    let mut out = Converted::default();
    for resource_spans in request.resource_spans {
        let mut service: Option<Arc<str>> = None;
        let mut attrs: Vec<(Arc<str>, AttrValue)> = Vec::new();
        for kv in resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default()
        {
            if kv.key == "service.name" {
                if let Some(any_value::Value::StringValue(s)) =
                    kv.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    service = Some(Arc::from(s.as_str()));
                }
                continue;
            }
            attrs.push(attribute(kv));
        }
        let service = service.unwrap_or_else(|| Arc::from(UNKNOWN_SERVICE));
        let resource: Resource = Arc::from(attrs);
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                match convert_span(span, &service, &resource) {
                    Some(span) => out.spans.push(span),
                    None => out.rejected_invalid += 1,
                }
            }
        }
    }
    out
}

fn convert_span(span: otlp::Span, service: &Arc<str>, resource: &Resource) -> Option<Span> {
    let trace_id = TraceId(span.trace_id.as_slice().try_into().ok()?);
    let span_id = SpanId(span.span_id.as_slice().try_into().ok()?);
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    let parent_span_id = match span.parent_span_id.as_slice() {
        [] => None,
        bytes => {
            let id = SpanId(bytes.try_into().ok()?);
            // An all-zero parent means a root span, as an empty one does.
            id.is_valid().then_some(id)
        }
    };
    let kind = match otlp::span::SpanKind::try_from(span.kind) {
        Ok(otlp::span::SpanKind::Internal) => SpanKind::Internal,
        Ok(otlp::span::SpanKind::Server) => SpanKind::Server,
        Ok(otlp::span::SpanKind::Client) => SpanKind::Client,
        Ok(otlp::span::SpanKind::Producer) => SpanKind::Producer,
        Ok(otlp::span::SpanKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    };
    let status = span.status.map_or_else(Status::default, |s| Status {
        code: match otlp::status::StatusCode::try_from(s.code) {
            Ok(otlp::status::StatusCode::Ok) => StatusCode::Ok,
            Ok(otlp::status::StatusCode::Error) => StatusCode::Error,
            _ => StatusCode::Unset,
        },
        message: (!s.message.is_empty()).then(|| Arc::from(s.message)),
    });
    Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        service: service.clone(),
        operation: Arc::from(span.name),
        kind,
        start_ns: span.start_time_unix_nano,
        duration_ns: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        status,
        attributes: attributes(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|e| Event {
                time_ns: e.time_unix_nano,
                name: Arc::from(e.name),
                attributes: attributes(e.attributes),
            })
            .collect(),
        resource: resource.clone(),
    })
}

fn attributes(kvs: Vec<KeyValue>) -> Attributes {
    kvs.into_iter().map(attribute).collect()
}

fn attribute(kv: KeyValue) -> (Arc<str>, AttrValue) {
    let value = match kv.value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(Arc::from(s)),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(d),
        Some(any_value::Value::BytesValue(b)) => AttrValue::Str(Arc::from(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        Some(other) => AttrValue::Array(Arc::from(render(&Some(other)))),
        None => AttrValue::Str(Arc::from("")),
    };
    (Arc::from(kv.key), value)
}

/// A compound value (array, key/value list) as JSON text, as Jaeger shows OTLP arrays.
fn render(value: &Option<any_value::Value>) -> String {
    serde_json::to_string(&json_of(value)).unwrap_or_default()
}

fn json_of(value: &Option<any_value::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        None | Some(any_value::Value::StringValueStrindex(_)) => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => J::from(*d),
        Some(any_value::Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => J::Array(
            a.values
                .iter()
                .map(|v: &AnyValue| json_of(&v.value))
                .collect(),
        ),
        Some(any_value::Value::KvlistValue(l)) => J::Object(
            l.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().and_then(|v| v.value.clone());
                    (kv.key.clone(), json_of(&v))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn request() -> ExportTraceServiceRequest {
        let span = otlp::Span {
            trace_id: hex(TRACE),
            span_id: hex("b7ad6b7169203331"),
            parent_span_id: hex("00f067aa0ba902b7"),
            name: "GET /orders".into(),
            kind: otlp::span::SpanKind::Server as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_250_000_000,
            attributes: vec![
                kv("http.status_code", any_value::Value::IntValue(500)),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        }],
                    }),
                ),
            ],
            events: vec![otlp::span::Event {
                time_unix_nano: 1_100_000_000,
                name: "retry".into(),
                attributes: vec![kv("attempt", any_value::Value::IntValue(2))],
                ..Default::default()
            }],
            status: Some(otlp::Status {
                message: "boom".into(),
                code: otlp::status::StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        let bad = otlp::Span {
            trace_id: hex(TRACE),
            span_id: vec![1, 2, 3],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(OtlpResource {
                    attributes: vec![
                        kv(
                            "service.name",
                            any_value::Value::StringValue("orders".into()),
                        ),
                        kv("host.name", any_value::Value::StringValue("h1".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    spans: vec![span, bad],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn check(converted: &Converted) {
        assert_eq!(converted.rejected_invalid, 1);
        assert_eq!(converted.spans.len(), 1);
        let s = &converted.spans[0];
        assert_eq!(s.trace_id.to_string(), TRACE);
        assert_eq!(s.span_id.to_string(), "b7ad6b7169203331");
        assert_eq!(s.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
        assert_eq!(&*s.service, "orders");
        assert_eq!(&*s.operation, "GET /orders");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.start_ns, 1_000_000_000);
        assert_eq!(s.duration_ns, 250_000_000);
        assert_eq!(s.status.code, StatusCode::Error);
        assert_eq!(s.status.message.as_deref(), Some("boom"));
        assert_eq!(
            s.attributes[0],
            ("http.status_code".into(), AttrValue::Int(500))
        );
        assert_eq!(
            s.attributes[1],
            ("list".into(), AttrValue::Array("[1]".into()))
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(&*s.events[0].name, "retry");
        assert_eq!(s.events[0].time_ns, 1_100_000_000);
        assert_eq!(
            s.events[0].attributes,
            vec![("attempt".into(), AttrValue::Int(2))]
        );
        // service.name is the service, not a resource attribute.
        assert_eq!(
            &*s.resource,
            &[("host.name".into(), AttrValue::Str("h1".into()))]
        );
    }

    #[test]
    fn protobuf_round_trip_converts() {
        let body = request().encode_to_vec();
        let decoded = decode(Encoding::Protobuf, &body).unwrap();
        check(&convert(decoded));
    }

    #[test]
    fn otlp_json_converts() {
        // The OTLP JSON mapping: camelCase, hex ids, enums as ints, int64 as strings or numbers.
        let body = serde_json::json!({
            "resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "orders"}},
                    {"key": "host.name", "value": {"stringValue": "h1"}}
                ]},
                "scopeSpans": [{
                    "scope": {"name": "test"},
                    "spans": [{
                        "traceId": TRACE,
                        "spanId": "b7ad6b7169203331",
                        "parentSpanId": "00f067aa0ba902b7",
                        "name": "GET /orders",
                        "kind": 2,
                        "startTimeUnixNano": "1000000000",
                        "endTimeUnixNano": 1250000000u64,
                        "attributes": [
                            {"key": "http.status_code", "value": {"intValue": "500"}},
                            {"key": "list", "value": {"arrayValue": {"values": [{"intValue": 1}]}}}
                        ],
                        "events": [{
                            "timeUnixNano": "1100000000",
                            "name": "retry",
                            "attributes": [{"key": "attempt", "value": {"intValue": 2}}]
                        }],
                        "status": {"code": 2, "message": "boom"}
                    }, {
                        "traceId": TRACE,
                        "spanId": "010203",
                        "name": "short id"
                    }]
                }]
            }]
        });
        let decoded = decode(Encoding::Json, body.to_string().as_bytes()).unwrap();
        check(&convert(decoded));
    }

    #[test]
    fn defaults_and_refusals() {
        let mut req = request();
        req.resource_spans[0].resource = None;
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        spans[0].parent_span_id = vec![0; 8];
        spans[0].status = None;
        spans[0].end_time_unix_nano = 0;
        spans[1].span_id = vec![0; 8];
        let out = convert(req);
        assert_eq!(out.rejected_invalid, 1);
        let s = &out.spans[0];
        assert_eq!(&*s.service, UNKNOWN_SERVICE);
        assert_eq!(s.parent_span_id, None);
        assert_eq!(s.status, Status::default());
        assert_eq!(s.duration_ns, 0);
        assert!(decode(Encoding::Protobuf, b"\xff\xff\xff").is_err());
        assert!(decode(Encoding::Json, b"{\"resourceSpans\": 3}").is_err());
        assert!(decode(Encoding::Json, b"not json").is_err());
        assert_eq!(
            Encoding::from_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }
}
