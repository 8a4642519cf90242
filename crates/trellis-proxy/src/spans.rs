//! What a hop records about one sampled request (a compact struct filled on the request path)
//! and its translation into OTLP spans, done only by the exporter, off the request path.
//!
//! A hop's spans, following OpenTelemetry's HTTP semantic conventions:
//! - the gateway: a SERVER span for the request it received and a CLIENT span (its child) for
//!   the upstream call;
//! - the sidecar's inbound listener: a SERVER span (the call to the local app is part of it);
//! - the sidecar's outbound listener: a CLIENT span.
//!
//! The upstream call's details (attempts, retries with their reasons, the chosen endpoint)
//! go on the CLIENT span, or on the SERVER span of a hop that records no CLIENT span.

use crate::metrics::Direction;
use crate::reject::Reject;
use crate::trace_context::SpanIds;
use crate::upstream::EndpointKey;
use hyper::header::HeaderValue;
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Version};
use prost::encoding::encoded_len_varint;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Why an attempt was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The upstream answered with a status the policy retries.
    Status(u16),
    /// The attempt failed without an answer (connect failure, reset, per-try timeout).
    Failed(Reject),
}

/// One retry: when it was decided, why, and the endpoint that failed.
#[derive(Debug, Clone)]
pub struct Retry {
    pub at: Instant,
    pub reason: RetryReason,
    pub endpoint: EndpointKey,
}

/// How the upstream call went, filled in by the forwarding loop of a recorded request.
#[derive(Debug, Default)]
pub struct AttemptLog {
    /// Attempts sent (0 when the request was refused before any).
    pub attempts: u32,
    /// The endpoint of the last attempt.
    pub endpoint: Option<EndpointKey>,
    /// Its instance id in the registry (`local-app` for the sidecar's app).
    pub instance: Option<Arc<str>>,
    pub retries: Vec<Retry>,
}

/// Everything one hop records about one sampled request; turned into one or two spans.
#[derive(Debug)]
pub struct HopRecord {
    pub ids: SpanIds,
    pub direction: Direction,
    /// The caller's `tracestate`, kept as the spans' trace state.
    pub tracestate: Option<HeaderValue>,
    pub start: Instant,
    /// Wall-clock time of `start`, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// When the response head was ready.
    pub end: Instant,
    pub method: Method,
    /// The path as received.
    pub path: PathAndQuery,
    pub version: Version,
    /// The `Host` (or URI authority) the client addressed.
    pub host: Option<HeaderValue>,
    /// The client's socket address.
    pub peer: Option<SocketAddr>,
    /// The gateway route (prefix) that matched.
    pub route: Option<Arc<str>>,
    /// The upstream service, once routed.
    pub service: Option<Arc<String>>,
    /// The path as forwarded upstream, once routed.
    pub forwarded_path: Option<PathAndQuery>,
    /// When the upstream call started (once routed).
    pub call_start: Option<Instant>,
    pub status: u16,
    /// `x-trellis-error` of a response the proxy generated.
    pub proxy_error: Option<HeaderValue>,
    pub log: AttemptLog,
}

impl HopRecord {
    /// Spans this record becomes.
    pub fn span_count(&self) -> usize {
        usize::from(self.ids.server_id != 0) + usize::from(self.ids.client_id != 0)
    }

    fn unix(&self, at: Instant) -> u64 {
        let offset = at.saturating_duration_since(self.start).as_nanos();
        self.start_unix_nanos
            .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// Writes this record's spans into `out`.
    pub fn write_spans(&self, out: &mut Encoder) {
        let method = self.method.as_str();
        let trace_state = self
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let error = self.status >= 500;
        let status_message = match (&self.proxy_error, error) {
            (Some(code), true) => code.to_str().unwrap_or_default(),
            _ => "",
        };
        // Flags: sampled, and (OTLP 1.1) whether the parent is known to be remote or not.
        let flags = |remote_parent: bool| 0x01 | 0x100 | if remote_parent { 0x200 } else { 0 };
        let upstream_on_client = self.ids.client_id != 0;

        if self.ids.server_id != 0 {
            out.begin_span(&SpanHead {
                trace_id: self.ids.trace_id,
                span_id: self.ids.server_id,
                parent_id: self.ids.parent_id,
                trace_state,
                name: method,
                route: self.route.as_deref(),
                kind: KIND_SERVER,
                start: self.start_unix_nanos,
                end: self.unix(self.end),
                flags: flags(self.ids.parent_id != 0),
            });
            out.attr_str("http.request.method", method);
            out.attr_str("url.path", self.path.path());
            if let Some(query) = self.path.query() {
                out.attr_str("url.query", query);
            }
            if let Some(route) = &self.route {
                out.attr_str("http.route", route);
            }
            out.attr_int("http.response.status_code", i64::from(self.status));
            out.attr_str("network.protocol.version", protocol(self.version));
            if let Some((host, port)) = self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .and_then(split_authority)
            {
                out.attr_str("server.address", host);
                if let Some(port) = port {
                    out.attr_int("server.port", i64::from(port));
                }
            }
            if let Some(peer) = self.peer {
                out.attr_ip("network.peer.address", peer.ip());
                out.attr_int("network.peer.port", i64::from(peer.port()));
            }
            self.error_attributes(out);
            if !upstream_on_client {
                self.upstream_attributes(out);
            }
            out.end_span(error, status_message);
        }
        if upstream_on_client {
            // Parent: this hop's SERVER span (gateway), else the caller's span (sidecar outbound).
            let (parent_id, remote) = if self.ids.server_id != 0 {
                (self.ids.server_id, false)
            } else {
                (self.ids.parent_id, self.ids.parent_id != 0)
            };
            out.begin_span(&SpanHead {
                trace_id: self.ids.trace_id,
                span_id: self.ids.client_id,
                parent_id,
                trace_state,
                name: method,
                route: None,
                kind: KIND_CLIENT,
                start: self.unix(self.call_start.unwrap_or(self.start)),
                end: self.unix(self.end),
                flags: flags(remote),
            });
            out.attr_str("http.request.method", method);
            if let Some(endpoint) = &self.log.endpoint {
                let path = self.forwarded_path.as_ref().unwrap_or(&self.path);
                out.attr_concat("url.full", &["http://", endpoint, path.as_str()]);
                // The endpoint is an address: it is also the network peer, which is not
                // repeated as network.peer.*.
                if let Some((host, port)) = split_authority(endpoint) {
                    out.attr_str("server.address", host);
                    if let Some(port) = port {
                        out.attr_int("server.port", i64::from(port));
                    }
                }
            }
            out.attr_int("http.response.status_code", i64::from(self.status));
            self.error_attributes(out);
            self.upstream_attributes(out);
            out.end_span(error, status_message);
        }
    }

    fn error_attributes(&self, out: &mut Encoder) {
        let code = self.proxy_error.as_ref().and_then(|v| v.to_str().ok());
        if let Some(code) = code {
            out.attr_str("trellis.error", code);
        }
        if self.status >= 500 {
            match code {
                Some(code) => out.attr_str("error.type", code),
                None => out.attr_fmt("error.type", format_args!("{}", self.status)),
            }
        }
    }

    /// The upstream call: service, chosen endpoint, attempts and one event per retry.
    fn upstream_attributes(&self, out: &mut Encoder) {
        if let Some(service) = &self.service {
            out.attr_str("peer.service", service);
        }
        if let Some(endpoint) = &self.log.endpoint {
            out.attr_str("trellis.endpoint.address", endpoint);
        }
        if let Some(instance) = &self.log.instance {
            out.attr_str("trellis.endpoint.instance", instance);
        }
        out.attr_int("trellis.attempts", i64::from(self.log.attempts));
        if !self.log.retries.is_empty() {
            let resends = i64::try_from(self.log.retries.len()).unwrap_or(i64::MAX);
            out.attr_int("http.request.resend_count", resends);
        }
        for (n, retry) in self.log.retries.iter().enumerate() {
            let reason = match retry.reason {
                RetryReason::Status(status) => format!("status {status}"),
                RetryReason::Failed(reject) => reject.code().to_owned(),
            };
            out.event(
                self.unix(retry.at),
                "retry",
                &[
                    (
                        "trellis.retry",
                        Value::Int(i64::try_from(n + 1).unwrap_or(i64::MAX)),
                    ),
                    ("trellis.retry.reason", Value::Str(&reason)),
                    ("trellis.retry.endpoint", Value::Str(&retry.endpoint)),
                ],
            );
        }
    }
}

const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;

/// The fixed fields of a span.
pub struct SpanHead<'a> {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0: a root span.
    pub parent_id: u64,
    pub trace_state: &'a str,
    /// The span's name is `name`, or `name route` with a route.
    pub name: &'a str,
    pub route: Option<&'a str>,
    pub kind: u64,
    pub start: u64,
    pub end: u64,
    pub flags: u32,
}

/// An attribute value.
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// A protobuf varint, written straight into the buffer (prost's generic one goes through
/// `BufMut` a byte at a time: a third of the encoder's instructions).
#[inline]
fn encode_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[inline]
fn key(buf: &mut Vec<u8>, field: u64, wire: u64) {
    encode_varint((field << 3) | wire, buf);
}

#[inline]
fn len_field(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    key(buf, field, LEN);
    encode_varint(data.len() as u64, buf);
    buf.extend_from_slice(data);
}

/// The encoded size of a length-delimited field of `len` bytes with a one-byte key.
fn len_field_size(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// `KeyValue { key, value: AnyValue { string_value | int_value } }` as field `field`.
fn key_value(buf: &mut Vec<u8>, field: u64, k: &str, v: &Value<'_>) {
    let any = match v {
        Value::Str(s) => len_field_size(s.len()),
        // A negative int64 is ten bytes as a varint, as the cast to u64 gives.
        Value::Int(i) => 1 + encoded_len_varint(*i as u64),
    };
    let kv = len_field_size(k.len()) + len_field_size(any);
    key(buf, field, LEN);
    encode_varint(kv as u64, buf);
    len_field(buf, 1, k.as_bytes());
    key(buf, 2, LEN);
    encode_varint(any as u64, buf);
    match v {
        Value::Str(s) => len_field(buf, 1, s.as_bytes()),
        Value::Int(i) => {
            key(buf, 3, VARINT);
            encode_varint(*i as u64, buf);
        }
    }
}

/// Writes spans straight into OTLP protobuf (`ExportTraceServiceRequest`), without building
/// the message structs: one buffer per batch, reused, instead of a few dozen small allocations
/// per span. (The exporter's tests decode its output with opentelemetry-proto's messages.)
#[derive(Default)]
pub struct Encoder {
    /// Encoded `ScopeSpans.spans` fields so far.
    spans: Vec<u8>,
    /// The span being written.
    span: Vec<u8>,
    /// An event being written.
    nested: Vec<u8>,
    /// Formatted attribute values.
    scratch: String,
    count: usize,
}

impl Encoder {
    /// Spans written since the last [`Encoder::finish`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn begin_span(&mut self, head: &SpanHead<'_>) {
        let span = &mut self.span;
        span.clear();
        len_field(span, 1, &head.trace_id.to_be_bytes());
        len_field(span, 2, &head.span_id.to_be_bytes());
        if !head.trace_state.is_empty() {
            len_field(span, 3, head.trace_state.as_bytes());
        }
        if head.parent_id != 0 {
            len_field(span, 4, &head.parent_id.to_be_bytes());
        }
        match head.route {
            None => len_field(span, 5, head.name.as_bytes()),
            Some(route) => {
                key(span, 5, LEN);
                encode_varint((head.name.len() + 1 + route.len()) as u64, span);
                span.extend_from_slice(head.name.as_bytes());
                span.push(b' ');
                span.extend_from_slice(route.as_bytes());
            }
        }
        key(span, 6, VARINT);
        encode_varint(head.kind, span);
        key(span, 7, FIXED64);
        span.extend_from_slice(&head.start.to_le_bytes());
        key(span, 8, FIXED64);
        span.extend_from_slice(&head.end.to_le_bytes());
        key(span, 16, FIXED32);
        span.extend_from_slice(&head.flags.to_le_bytes());
    }

    pub fn attr_str(&mut self, k: &str, v: &str) {
        key_value(&mut self.span, 9, k, &Value::Str(v));
    }

    /// A string attribute formatted in place (no allocation once the scratch buffer grew).
    pub fn attr_fmt(&mut self, k: &str, v: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        self.scratch.clear();
        let _ = self.scratch.write_fmt(v);
        key_value(&mut self.span, 9, k, &Value::Str(&self.scratch));
    }

    /// A string attribute made of `parts` (no formatting machinery on the hot path).
    pub fn attr_concat(&mut self, k: &str, parts: &[&str]) {
        self.scratch.clear();
        for part in parts {
            self.scratch.push_str(part);
        }
        key_value(&mut self.span, 9, k, &Value::Str(&self.scratch));
    }

    /// An IP address attribute; IPv4 written digit by digit (`Display` costs more than the
    /// rest of the span).
    pub fn attr_ip(&mut self, k: &str, ip: std::net::IpAddr) {
        self.scratch.clear();
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.scratch.push('.');
                    }
                    if octet >= 100 {
                        self.scratch.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        self.scratch.push(char::from(b'0' + octet / 10 % 10));
                    }
                    self.scratch.push(char::from(b'0' + octet % 10));
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::fmt::Write;
                let _ = write!(self.scratch, "{v6}");
            }
        }
        key_value(&mut self.span, 9, k, &Value::Str(&self.scratch));
    }

    pub fn attr_int(&mut self, k: &str, v: i64) {
        key_value(&mut self.span, 9, k, &Value::Int(v));
    }

    pub fn event(&mut self, time: u64, name: &str, attributes: &[(&str, Value<'_>)]) {
        let event = &mut self.nested;
        event.clear();
        key(event, 1, FIXED64);
        event.extend_from_slice(&time.to_le_bytes());
        len_field(event, 2, name.as_bytes());
        for (k, v) in attributes {
            key_value(event, 3, k, v);
        }
        len_field(&mut self.span, 11, event);
    }

    /// Ends the span with status ERROR (and `message`) or UNSET.
    pub fn end_span(&mut self, error: bool, message: &str) {
        if error {
            let status = &mut self.nested;
            status.clear();
            if !message.is_empty() {
                len_field(status, 2, message.as_bytes());
            }
            key(status, 3, VARINT);
            encode_varint(STATUS_ERROR, status);
            len_field(&mut self.span, 15, status);
        } else {
            // An empty Status: code UNSET.
            len_field(&mut self.span, 15, &[]);
        }
        len_field(&mut self.spans, 2, &self.span);
        self.count += 1;
    }

    /// The request body with the spans written so far, under one resource with these
    /// attributes (`service.name` first) and this scope; the encoder is then empty.
    pub fn finish(&mut self, resource: &[(&str, &str)], scope: (&str, &str)) -> Vec<u8> {
        let mut resource_body = Vec::new();
        for (k, v) in resource {
            key_value(&mut resource_body, 1, k, &Value::Str(v));
        }
        let mut scope_body = Vec::new();
        len_field(&mut scope_body, 1, scope.0.as_bytes());
        len_field(&mut scope_body, 2, scope.1.as_bytes());
        let scope_spans_len = len_field_size(scope_body.len()) + self.spans.len();
        let resource_spans_len = len_field_size(resource_body.len())
            + 1
            + encoded_len_varint(scope_spans_len as u64)
            + scope_spans_len;
        let mut out = Vec::with_capacity(resource_spans_len + 16);
        key(&mut out, 1, LEN);
        encode_varint(resource_spans_len as u64, &mut out);
        len_field(&mut out, 1, &resource_body);
        key(&mut out, 2, LEN);
        encode_varint(scope_spans_len as u64, &mut out);
        len_field(&mut out, 1, &scope_body);
        out.extend_from_slice(&self.spans);
        self.spans.clear();
        self.count = 0;
        out
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `host[:port]`, IPv6 brackets removed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port.parse().ok())
        }
        _ => (authority, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_attributes_read_as_display_writes_them() {
        let mut encoder = Encoder::default();
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "192.168.100.1",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            encoder.attr_ip("network.peer.address", ip);
            assert_eq!(encoder.scratch, ip.to_string());
        }
        encoder.attr_concat("url.full", &["http://", "10.0.0.1:80", "/a?b=1"]);
        assert_eq!(encoder.scratch, "http://10.0.0.1:80/a?b=1");
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::{Span, status};
    use prost::Message;
    use std::time::Duration;

    /// The record's spans as a collector decodes them.
    fn spans_of(record: &HopRecord) -> Vec<Span> {
        let mut encoder = Encoder::default();
        record.write_spans(&mut encoder);
        assert_eq!(encoder.len(), record.span_count());
        let body = encoder.finish(&[("service.name", "svc")], ("scope", "1"));
        assert!(encoder.is_empty());
        let mut request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let mut resource_spans = request.resource_spans.remove(0);
        let resource = resource_spans.resource.unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope_spans = resource_spans.scope_spans.remove(0);
        assert_eq!(scope_spans.scope.unwrap().name, "scope");
        scope_spans.spans
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text(span: &Span, key: &str) -> String {
        match attr(span, key) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        }
    }

    fn record(server: u64, client: u64) -> HopRecord {
        let start = Instant::now();
        HopRecord {
            ids: SpanIds {
                trace_id: 0xabc,
                parent_id: 7,
                server_id: server,
                client_id: client,
            },
            direction: Direction::Gateway,
            tracestate: Some(HeaderValue::from_static("k=v")),
            start,
            start_unix_nanos: 1_000_000_000,
            end: start + Duration::from_millis(5),
            method: Method::GET,
            path: PathAndQuery::from_static("/orders/1?x=2"),
            version: Version::HTTP_11,
            host: Some(HeaderValue::from_static("shop.example:8080")),
            peer: Some("10.0.0.9:5555".parse().unwrap()),
            route: Some(Arc::from("/orders")),
            service: Some(Arc::new("orders".to_owned())),
            forwarded_path: Some(PathAndQuery::from_static("/1?x=2")),
            call_start: Some(start + Duration::from_millis(1)),
            status: 503,
            proxy_error: None,
            log: AttemptLog {
                attempts: 2,
                endpoint: Some(Arc::from("127.0.0.1:9001")),
                instance: Some(Arc::from("orders-2")),
                retries: vec![Retry {
                    at: start + Duration::from_millis(2),
                    reason: RetryReason::Failed(Reject::ConnectFailed),
                    endpoint: Arc::from("127.0.0.1:9000"),
                }],
            },
        }
    }

    #[test]
    fn a_gateway_hop_is_a_server_span_and_its_client_child() {
        let r = record(1, 2);
        assert_eq!(r.span_count(), 2);
        let spans = spans_of(&r);
        let [server, client] = spans.as_slice() else {
            panic!("{spans:?}")
        };
        assert_eq!(server.name, "GET /orders");
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.parent_span_id, 7u64.to_be_bytes());
        assert_eq!(server.trace_state, "k=v");
        assert_eq!(server.start_time_unix_nano, 1_000_000_000);
        assert_eq!(server.end_time_unix_nano, 1_005_000_000);
        assert_eq!(text(server, "url.path"), "/orders/1");
        assert_eq!(text(server, "url.query"), "x=2");
        assert_eq!(text(server, "http.route"), "/orders");
        assert_eq!(text(server, "server.address"), "shop.example");
        assert_eq!(text(server, "network.peer.address"), "10.0.0.9");
        assert!(
            attr(server, "trellis.attempts").is_none(),
            "on the client span"
        );
        assert_eq!(
            server.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );

        assert_eq!(client.name, "GET");
        assert_eq!(client.kind, SpanKind::Client as i32);
        assert_eq!(client.parent_span_id, 1u64.to_be_bytes());
        assert_eq!(client.span_id, 2u64.to_be_bytes());
        assert_eq!(client.start_time_unix_nano, 1_001_000_000);
        assert_eq!(text(client, "url.full"), "http://127.0.0.1:9001/1?x=2");
        assert_eq!(text(client, "server.address"), "127.0.0.1");
        assert_eq!(
            attr(client, "server.port"),
            Some(&any_value::Value::IntValue(9001))
        );
        assert_eq!(text(client, "peer.service"), "orders");
        assert_eq!(text(client, "trellis.endpoint.instance"), "orders-2");
        assert_eq!(
            attr(client, "trellis.attempts"),
            Some(&any_value::Value::IntValue(2))
        );
        assert_eq!(
            attr(client, "http.request.resend_count"),
            Some(&any_value::Value::IntValue(1))
        );
        assert_eq!(text(client, "error.type"), "503");
        assert_eq!(client.events.len(), 1);
        assert_eq!(client.events[0].name, "retry");
        assert_eq!(client.events[0].time_unix_nano, 1_002_000_000);
        let reason = &client.events[0].attributes[1];
        assert_eq!(reason.key, "trellis.retry.reason");
        assert_eq!(
            reason.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("connect-failed".into()))
        );
        assert_eq!(
            client.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
    }

    #[test]
    fn one_sided_hops_carry_the_upstream_call_themselves() {
        // Sidecar inbound: a SERVER span with the app call's details.
        let mut r = record(1, 0);
        r.direction = Direction::Inbound;
        r.route = None;
        r.status = 200;
        let spans = spans_of(&r);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "GET");
        assert_eq!(text(&spans[0], "trellis.endpoint.instance"), "orders-2");
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            status::StatusCode::Unset as i32
        );
        // Sidecar outbound: a CLIENT span whose parent is the caller's span.
        let mut r = record(0, 2);
        r.proxy_error = Some(HeaderValue::from_static("no-endpoints"));
        let spans = spans_of(&r);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id, 7u64.to_be_bytes());
        assert_eq!(spans[0].flags, 0x301);
        assert_eq!(text(&spans[0], "error.type"), "no-endpoints");
        assert_eq!(spans[0].status.as_ref().unwrap().message, "no-endpoints");
    }

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("a:80"), Some(("a", Some(80))));
        assert_eq!(split_authority("a"), Some(("a", None)));
        assert_eq!(split_authority("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_authority(""), None);
    }
}
