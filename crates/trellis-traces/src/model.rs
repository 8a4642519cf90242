//! The span model: trace and span ids (lowercase hex, all-zero invalid as in W3C Trace Context),
//! [`Span`] with its kind, status, attributes, events and shared resource attributes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Key/value attributes, in the order they were given.
pub type Attributes = Vec<(Arc<str>, AttrValue)>;

/// A resource's attributes, shared by every span of one service instance.
pub type Resource = Arc<[(Arc<str>, AttrValue)]>;

/// Why an id did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseIdError {
    /// Not exactly the expected number of hex characters.
    Length { expected: usize, found: usize },
    /// A character that is not a hex digit.
    NotHex,
    /// All zeros, which W3C Trace Context reserves as invalid.
    AllZero,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseIdError::Length { expected, found } => {
                write!(f, "expected {expected} hex characters, found {found}")
            }
            ParseIdError::NotHex => f.write_str("not a hex digit"),
            ParseIdError::AllZero => f.write_str("an all-zero id is invalid"),
        }
    }
}

impl std::error::Error for ParseIdError {}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    f.write_str(std::str::from_utf8(&buf[..2 * bytes.len()]).map_err(|_| fmt::Error)?)
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseIdError> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return Err(ParseIdError::Length {
            expected: 2 * N,
            found: s.len(),
        });
    }
    fn nibble(c: u8) -> Result<u8, ParseIdError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseIdError::NotHex),
        }
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    if out.iter().all(|&b| b == 0) {
        return Err(ParseIdError::AllZero);
    }
    Ok(out)
}

/// A 16-byte trace id. Displays as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. Displays as 16 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Whether the id is valid (not all zeros).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }
}

impl SpanId {
    /// Whether the id is valid (not all zeros).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl FromStr for TraceId {
    type Err = ParseIdError;

    /// Exactly 32 hex characters (either case), not all zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s).map(TraceId)
    }
}

impl FromStr for SpanId {
    type Err = ParseIdError;

    /// Exactly 16 hex characters (either case), not all zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<8>(s).map(SpanId)
    }
}

/// OTLP's span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The name Jaeger's query API uses (`""` for unspecified).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// OTLP's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

/// A span's status: its code and an optional message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub code: StatusCode,
    pub message: Option<Arc<str>>,
}

/// An attribute value. Arrays (and anything else without a scalar form) are carried as their
/// string rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(Arc<str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Arc<str>),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) | AttrValue::Array(s) => f.write_str(s),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
        }
    }
}

/// A timed event inside a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ns: u64,
    pub name: Arc<str>,
    pub attributes: Attributes,
}

/// One span, as received and as returned by [`SpanStore::trace`](crate::SpanStore::trace).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub kind: SpanKind,
    /// Nanoseconds since the UNIX epoch.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub status: Status,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    /// The resource's attributes, shared by every span of one service instance.
    pub resource: Resource,
}
