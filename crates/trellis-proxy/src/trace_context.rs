//! Trace context in and out of a hop: W3C `traceparent`/`tracestate` (B3 single and multi
//! headers accepted when no valid `traceparent` is present), the parent-based sampling decision,
//! and the `traceparent` the hop sends on. Pure: randomness comes from the caller's generator.

use crate::headers::TRACEPARENT;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use rand::Rng;

pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Where an incoming context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3,
}

/// The caller's context as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's sampling decision; `None` when it deferred it (B3 without a sampled flag).
    pub sampled: Option<bool>,
    pub format: Format,
}

/// Parses a W3C `traceparent` (Trace Context §3.2): `version-traceid-parentid-flags`, lower-case
/// hex, ids not all zero, version `ff` invalid, version `00` exactly 55 characters, a higher
/// version allowed to carry more fields after a `-`.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let value = value.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let version = hex_u128(&value[0..2])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if version == 0 && value.len() != 55 {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = hex_u128(&value[3..35])?;
    let span_id = u64::try_from(hex_u128(&value[36..52])?).ok()?;
    let flags = hex_u128(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: Some(flags & 1 == 1),
        format: Format::W3c,
    })
}

/// Lower-case hex of at most 32 digits.
fn hex_u128(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    let mut value: u128 = 0;
    for &b in digits {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(nibble);
    }
    Some(value)
}

/// A B3 trace id: 16 or 32 hex digits (a 64-bit id is the low half of the 128-bit one), not zero.
/// B3 implementations send upper-case hex too, so it is accepted here.
fn b3_trace_id(text: &[u8]) -> Option<u128> {
    if text.len() != 16 && text.len() != 32 {
        return None;
    }
    hex_u128(&text.to_ascii_lowercase()).filter(|id| *id != 0)
}

fn b3_span_id(text: &[u8]) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    hex_u128(&text.to_ascii_lowercase())
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id != 0)
}

/// A B3 sampling state: `1`/`true`/`d` (debug) sampled, `0`/`false` not.
fn b3_sampled(text: &[u8]) -> Option<bool> {
    match text {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// Parses the single `b3` header: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`. A bare
/// sampling state (`b3: 0`) carries no ids and so starts a new trace with that decision, which
/// is returned as `Err(decision)`.
pub fn parse_b3_single(value: &[u8]) -> Result<Parent, Option<bool>> {
    let value = value.trim_ascii();
    let mut parts = value.split(|b| *b == b'-');
    let first = parts.next().unwrap_or_default();
    let Some(second) = parts.next() else {
        return Err(b3_sampled(first));
    };
    let (Some(trace_id), Some(span_id)) = (b3_trace_id(first), b3_span_id(second)) else {
        return Err(None);
    };
    let sampled = match parts.next() {
        None => None,
        Some(state) => match b3_sampled(state) {
            Some(decision) => Some(decision),
            None => return Err(None),
        },
    };
    if let Some(parent) = parts.next()
        && b3_span_id(parent).is_none()
    {
        return Err(None);
    }
    if parts.next().is_some() {
        return Err(None);
    }
    Ok(Parent {
        trace_id,
        span_id,
        sampled,
        format: Format::B3,
    })
}

/// Parses the multi-header B3 form (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`,
/// `X-B3-Flags: 1` for debug). Without ids, a sampling state alone is returned as
/// `Err(decision)`.
pub fn parse_b3_multi(headers: &HeaderMap) -> Result<Parent, Option<bool>> {
    let get = |name: HeaderName| headers.get(name).map(|v| v.as_bytes().trim_ascii());
    let debug = get(B3_FLAGS) == Some(b"1");
    let sampled = if debug {
        Some(true)
    } else {
        get(B3_SAMPLED).and_then(b3_sampled)
    };
    match (
        get(B3_TRACE_ID).and_then(b3_trace_id),
        get(B3_SPAN_ID).and_then(b3_span_id),
    ) {
        (Some(trace_id), Some(span_id)) => Ok(Parent {
            trace_id,
            span_id,
            sampled,
            format: Format::B3,
        }),
        _ => Err(sampled),
    }
}

/// What the request says about its caller: a valid `traceparent` first, else B3 (single header
/// first, then the multi-header form). `Err` carries a sampling decision made without ids
/// (B3's `b3: 0`), for the new trace the hop starts.
pub fn extract(headers: &HeaderMap) -> Result<Parent, Option<bool>> {
    if let Some(parent) = headers
        .get(TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
    {
        return Ok(parent);
    }
    // Most requests carry none of the B3 headers: avoid the lookups below for them.
    let mut decision = None;
    if let Some(single) = headers.get(B3) {
        match parse_b3_single(single.as_bytes()) {
            Ok(parent) => return Ok(parent),
            Err(d) => decision = d,
        }
    }
    if headers.contains_key(B3_TRACE_ID) || headers.contains_key(B3_SAMPLED) {
        match parse_b3_multi(headers) {
            Ok(parent) => return Ok(parent),
            Err(d) => decision = decision.or(d),
        }
    }
    Err(decision)
}

/// The root sampling decision (OpenTelemetry's `TraceIdRatioBased`): a trace is sampled when
/// the low 64 bits of its id fall below `ratio × 2^64`, so every hop that has to decide for the
/// same trace decides the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// 0 samples nothing, `u64::MAX` with `always` everything.
    bound: u64,
    always: bool,
}

impl Sampler {
    /// `ratio` is clamped to 0..=1.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            // The float-to-int cast saturates, which is what the top end needs.
            bound: (ratio * 18_446_744_073_709_551_616.0) as u64,
            always: ratio >= 1.0,
        }
    }

    /// A new trace's decision.
    pub fn root(&self, trace_id: u128) -> bool {
        self.always || (trace_id as u64) < self.bound
    }

    /// Parent-based: the caller's decision when it made one, else a root decision.
    pub fn decide(&self, trace_id: u128, parent: Option<bool>) -> bool {
        parent.unwrap_or_else(|| self.root(trace_id))
    }
}

/// The ids of the spans one hop records for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: u128,
    /// The caller's span (0: none, this hop starts the trace).
    pub parent_id: u64,
    /// The SERVER span (gateway and sidecar inbound), 0 when the hop records none.
    pub server_id: u64,
    /// The CLIENT span (gateway and sidecar outbound), 0 when the hop records none.
    pub client_id: u64,
}

/// Which spans a hop records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopSpans {
    pub server: bool,
    pub client: bool,
}

/// Reads the incoming context, decides sampling and writes the `traceparent` the request is
/// forwarded with. Returns the span ids when the request is to be recorded (`recording` and
/// sampled), `None` otherwise.
///
/// An unrecorded request with a valid `traceparent` is forwarded untouched (nothing to add, and
/// nothing costs less). Otherwise a `traceparent` is written: the caller's ids from B3, or a new
/// trace, with the sampling decision in its flags (`00` unsampled). A recorded request's
/// `traceparent` names the span of this hop the next hop is a child of: the CLIENT span when the
/// hop records one, else the SERVER span. `tracestate` travels unchanged with a valid W3C parent
/// and is dropped when the hop starts a trace (it belonged to another one).
pub fn propagate(
    headers: &mut HeaderMap,
    sampler: &Sampler,
    recording: bool,
    hop: HopSpans,
    rng: &mut impl Rng,
) -> Option<SpanIds> {
    let incoming = extract(headers);
    let (trace_id, parent_id, sampled, format) = match incoming {
        Ok(parent) => (
            parent.trace_id,
            parent.span_id,
            sampler.decide(parent.trace_id, parent.sampled),
            Some(parent.format),
        ),
        Err(decision) => {
            let trace_id = rng.random::<u128>().max(1);
            (trace_id, 0, sampler.decide(trace_id, decision), None)
        }
    };
    if format != Some(Format::W3c) {
        headers.remove(TRACESTATE);
    }
    if !(recording && sampled) {
        if format != Some(Format::W3c) {
            let span = if parent_id != 0 {
                parent_id
            } else {
                rng.random::<u64>().max(1)
            };
            headers.insert(TRACEPARENT, traceparent(trace_id, span, sampled));
        }
        return None;
    }
    let mut new_id = || rng.random::<u64>().max(1);
    let server_id = if hop.server { new_id() } else { 0 };
    let client_id = if hop.client { new_id() } else { 0 };
    let next_parent = if hop.client { client_id } else { server_id };
    headers.insert(TRACEPARENT, traceparent(trace_id, next_parent, true));
    Some(SpanIds {
        trace_id,
        parent_id,
        server_id,
        client_id,
    })
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    write_hex(&mut text[3..35], trace_id);
    text[35] = b'-';
    write_hex(&mut text[36..52], u128::from(span_id));
    text[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Writes the low `out.len()` nibbles of `value` as lower-case hex.
pub(crate) fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xF) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
    const SPAN: u64 = 0x00f0_67aa_0ba9_02b7;
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn w3c(trace_id: u128, span_id: u64, sampled: bool) -> Parent {
        Parent {
            trace_id,
            span_id,
            sampled: Some(sampled),
            format: Format::W3c,
        }
    }

    #[test]
    fn valid_traceparents_parse() {
        assert_eq!(
            parse_traceparent(TP.as_bytes()),
            Some(w3c(TRACE, SPAN, true))
        );
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            parse_traceparent(unsampled.as_bytes()),
            Some(w3c(TRACE, SPAN, false))
        );
        // Other flag bits do not matter; only bit 0 is "sampled".
        let flags = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        assert_eq!(
            parse_traceparent(flags.as_bytes()).unwrap().sampled,
            Some(true)
        );
        // A future version may append fields; surrounding spaces are ignored.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert_eq!(
            parse_traceparent(future.as_bytes()),
            Some(w3c(TRACE, SPAN, true))
        );
        assert!(parse_traceparent(format!(" {TP} ").as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-0000-bad-01",
            // upper case
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, and version 00 with extra fields
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            // wrong lengths or separators
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
            assert!(!crate::headers::is_valid_traceparent(bad), "{bad:?}");
        }
        assert!(crate::headers::is_valid_traceparent(TP));
    }

    #[test]
    fn b3_single_header_forms() {
        let full = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90";
        let b3 = |sampled| Parent {
            trace_id: TRACE,
            span_id: SPAN,
            sampled,
            format: Format::B3,
        };
        assert_eq!(parse_b3_single(full.as_bytes()), Ok(b3(Some(true))));
        assert_eq!(
            parse_b3_single(b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
            Ok(b3(None))
        );
        assert_eq!(
            parse_b3_single(b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
            Ok(b3(Some(false)))
        );
        assert_eq!(
            parse_b3_single(b"4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-d"),
            Ok(b3(Some(true)))
        );
        // A 64-bit trace id is the low half.
        let short = parse_b3_single(b"a3ce929d0e0e4736-00f067aa0ba902b7-1").unwrap();
        assert_eq!(short.trace_id, 0xa3ce_929d_0e0e_4736);
        // Sampling state alone, and garbage.
        assert_eq!(parse_b3_single(b"0"), Err(Some(false)));
        assert_eq!(parse_b3_single(b"1"), Err(Some(true)));
        for bad in [
            "",
            "xyz",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-2",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-bad",
            "00000000000000000000000000000000-00f067aa0ba902b7-1",
        ] {
            assert_eq!(parse_b3_single(bad.as_bytes()), Err(None), "{bad:?}");
        }
    }

    #[test]
    fn b3_multi_headers() {
        let h = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(
            parse_b3_multi(&h),
            Ok(Parent {
                trace_id: 0xa3ce_929d_0e0e_4736,
                span_id: SPAN,
                sampled: Some(true),
                format: Format::B3
            })
        );
        let h = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        assert_eq!(
            parse_b3_multi(&h).unwrap().sampled,
            Some(true),
            "debug wins"
        );
        let h = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        assert_eq!(parse_b3_multi(&h).unwrap().sampled, None);
        assert_eq!(
            parse_b3_multi(&headers(&[("x-b3-sampled", "0")])),
            Err(Some(false))
        );
        let bad = headers(&[("x-b3-traceid", "zz"), ("x-b3-spanid", "00f067aa0ba902b7")]);
        assert_eq!(parse_b3_multi(&bad), Err(None));
    }

    #[test]
    fn traceparent_wins_over_b3_and_b3_single_over_multi() {
        let h = headers(&[
            ("traceparent", TP),
            ("b3", "a3ce929d0e0e4736-1111111111111111-0"),
        ]);
        assert_eq!(extract(&h), Ok(w3c(TRACE, SPAN, true)));
        let h = headers(&[
            ("traceparent", "garbage"),
            ("b3", "a3ce929d0e0e4736-1111111111111111-0"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        let parent = extract(&h).unwrap();
        assert_eq!(
            (parent.span_id, parent.sampled),
            (0x1111_1111_1111_1111, Some(false))
        );
        let h = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        assert_eq!(extract(&h).unwrap().format, Format::B3);
        assert_eq!(extract(&HeaderMap::new()), Err(None));
        assert_eq!(extract(&headers(&[("b3", "0")])), Err(Some(false)));
    }

    #[test]
    fn sampling_is_parent_based_with_a_ratio_for_roots() {
        let always = Sampler::new(1.0);
        let never = Sampler::new(0.0);
        let half = Sampler::new(0.5);
        for id in [1u128, u128::from(u64::MAX), u128::MAX, TRACE] {
            assert!(always.root(id));
            assert!(!never.root(id));
            // The parent's decision wins either way.
            assert!(never.decide(id, Some(true)));
            assert!(!always.decide(id, Some(false)));
        }
        assert!(half.root(1));
        assert!(!half.root(u128::from(u64::MAX)));
        // About half of random roots, decided by the trace id alone (the same at every hop).
        let mut rng = StdRng::seed_from_u64(7);
        let n = 10_000;
        let sampled = (0..n).filter(|_| half.root(rng.random())).count();
        assert!((4_500..5_500).contains(&sampled), "{sampled}");
        assert_eq!(Sampler::new(f64::NAN), never);
        assert_eq!(Sampler::new(7.0), always);
    }

    fn hop(server: bool, client: bool) -> HopSpans {
        HopSpans { server, client }
    }

    #[test]
    fn a_recorded_hop_sends_its_own_span_as_the_parent() {
        let mut rng = StdRng::seed_from_u64(1);
        let sampler = Sampler::new(1.0);
        let mut h = headers(&[("traceparent", TP), ("tracestate", "k=v,x=y")]);
        let ids = propagate(&mut h, &sampler, true, hop(true, true), &mut rng).unwrap();
        assert_eq!((ids.trace_id, ids.parent_id), (TRACE, SPAN));
        assert!(ids.server_id != 0 && ids.client_id != 0 && ids.server_id != ids.client_id);
        let out = parse_traceparent(h["traceparent"].as_bytes()).unwrap();
        assert_eq!(out, w3c(TRACE, ids.client_id, true));
        assert_eq!(h["tracestate"], "k=v,x=y", "tracestate passes unchanged");

        // Server only (sidecar inbound): the next hop is the server span's child.
        let mut h = headers(&[("traceparent", TP)]);
        let ids = propagate(&mut h, &sampler, true, hop(true, false), &mut rng).unwrap();
        assert_eq!(ids.client_id, 0);
        let out = parse_traceparent(h["traceparent"].as_bytes()).unwrap();
        assert_eq!(out.span_id, ids.server_id);

        // A root: new trace, no parent.
        let mut h = headers(&[("tracestate", "stale=1")]);
        let ids = propagate(&mut h, &sampler, true, hop(false, true), &mut rng).unwrap();
        assert_eq!((ids.parent_id, ids.server_id), (0, 0));
        assert!(
            h.get("tracestate").is_none(),
            "tracestate of no trace is dropped"
        );
        let out = parse_traceparent(h["traceparent"].as_bytes()).unwrap();
        assert_eq!(out, w3c(ids.trace_id, ids.client_id, true));
    }

    #[test]
    fn unsampled_requests_still_propagate() {
        let mut rng = StdRng::seed_from_u64(2);
        let never = Sampler::new(0.0);
        // A new trace, flagged unsampled.
        let mut h = HeaderMap::new();
        assert_eq!(
            propagate(&mut h, &never, true, hop(true, true), &mut rng),
            None
        );
        let out = parse_traceparent(h["traceparent"].as_bytes()).unwrap();
        assert_eq!(out.sampled, Some(false));
        // An unsampled W3C parent goes on untouched, even with an always sampler.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut h = headers(&[("traceparent", unsampled), ("tracestate", "a=b")]);
        let always = Sampler::new(1.0);
        assert_eq!(
            propagate(&mut h, &always, true, hop(true, true), &mut rng),
            None
        );
        assert_eq!(h["traceparent"], unsampled);
        assert_eq!(h["tracestate"], "a=b");
        // Not recording (tracing off): a sampled parent is forwarded as it came.
        let mut h = headers(&[("traceparent", TP)]);
        assert_eq!(
            propagate(&mut h, &always, false, hop(true, true), &mut rng),
            None
        );
        assert_eq!(h["traceparent"], TP);
    }

    #[test]
    fn b3_input_becomes_a_traceparent() {
        let mut rng = StdRng::seed_from_u64(3);
        let always = Sampler::new(1.0);
        let never = Sampler::new(0.0);
        // Sampled B3: recorded, child of the B3 span.
        let mut h = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
        let ids = propagate(&mut h, &never, true, hop(true, false), &mut rng).unwrap();
        assert_eq!((ids.trace_id, ids.parent_id), (TRACE, SPAN));
        // Unsampled B3, not recorded: a traceparent carries the B3 ids with flag 00.
        let mut h = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        assert_eq!(
            propagate(&mut h, &always, true, hop(true, true), &mut rng),
            None
        );
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        // Deferred B3: the root sampler decides.
        let mut h = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")]);
        assert_eq!(
            propagate(&mut h, &never, true, hop(true, true), &mut rng),
            None
        );
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn traceparent_formats() {
        assert_eq!(traceparent(TRACE, SPAN, true), TP);
        assert_eq!(
            traceparent(1, 2, false),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }
}
