//! Header handling shared by every direction: hop-by-hop headers are dropped (they describe one
//! connection, not the request) and trace context is propagated or created.

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};
use rand::Rng;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that apply to a single connection (RFC 9110 §7.6.1), plus the legacy proxy ones.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `te: trailers` is
/// kept because gRPC requires it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names instead of seven removals.
    if !headers
        .keys()
        .any(|name| name == header::TE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Makes sure the request carries a valid W3C `traceparent` and an `x-request-id`, creating
/// them when absent (or, for traceparent, malformed). Returns the request id.
pub fn ensure_trace_context(headers: &mut HeaderMap) -> HeaderValue {
    let valid = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_valid_traceparent);
    let mut rng = rand::rng();
    if !valid {
        let trace: u128 = rng.random::<u128>().max(1);
        let span: u64 = rng.random::<u64>().max(1);
        // 00-<32 hex trace id>-<16 hex span id>-01
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex(&mut text[3..35], trace);
        text[35] = b'-';
        hex(&mut text[36..52], u128::from(span));
        text[52..].copy_from_slice(b"-01");
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.insert(TRACEPARENT, value);
        }
    }
    ensure_request_id(headers)
}

/// Makes sure the request carries an `x-request-id`, creating one when absent. Returns it.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(REQUEST_ID).filter(|v| !v.is_empty()) {
        return id.clone();
    }
    let text = new_request_id(&mut rand::rng());
    // Two values built from the same text: cheaper than sharing one buffer between them.
    if let Ok(id) = HeaderValue::from_bytes(&text) {
        headers.insert(REQUEST_ID, id);
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Writes the low `out.len()` nibbles of `value` as lower-case hex.
fn hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xF) as usize];
        value >>= 4;
    }
}

/// A random UUID (version 4), as text.
fn new_request_id(rng: &mut impl Rng) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text);
    text
}

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero (W3C Trace Context §3.2).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags, ..] => {
            hex(version, 2)
                && *version != "ff"
                && (*version != "00" || parts.len() == 4)
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_but_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-private").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn existing_trace_context_is_propagated() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(tp));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_trace_context(&mut h), "abc");
        assert_eq!(h[TRACEPARENT], tp);
    }

    #[test]
    fn missing_or_invalid_trace_context_is_created() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("00-0000-bad-01"));
        let id = ensure_trace_context(&mut h);
        let parsed = uuid::Uuid::try_parse(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version(), Some(uuid::Version::Random));
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(parsed.hyphenated().to_string(), id.to_str().unwrap());
        let tp = h[TRACEPARENT].to_str().unwrap();
        assert!(is_valid_traceparent(tp), "{tp}");
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
    }
}
