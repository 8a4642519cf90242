//! The compact byte encoding of what a stored span carries besides its fixed fields: its
//! attributes, status message and events (and, with the same attribute encoding, a resource's
//! attributes). Keys and event names are interned ids; integers are varints.
//!
//! Layout: `attrs` `message` `events`, where `attrs` is a count then (key id, value) pairs;
//! `message` is 0 for none or its length + 1 then its bytes; `events` is a count then per event
//! its time relative to the span's start (zigzag), its name id and its `attrs`. A value is a tag
//! byte then: a length and UTF-8 bytes (string, array), nothing (false, true), a zigzag varint
//! (int), or 8 little-endian bytes (double).

use std::sync::Arc;

use crate::intern::Interner;
use crate::model::{AttrValue, Attributes, Event};

const STR: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const DOUBLE: u8 = 4;
const ARRAY: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends an attribute block.
pub(crate) fn put_attrs(out: &mut Vec<u8>, attrs: &[(Arc<str>, AttrValue)], names: &mut Interner) {
    put_varint(out, attrs.len() as u64);
    for (key, value) in attrs {
        put_varint(out, u64::from(names.intern(key)));
        match value {
            AttrValue::Str(s) => {
                out.push(STR);
                put_bytes(out, s.as_bytes());
            }
            AttrValue::Bool(false) => out.push(FALSE),
            AttrValue::Bool(true) => out.push(TRUE),
            AttrValue::Int(i) => {
                out.push(INT);
                put_varint(out, zigzag(*i));
            }
            AttrValue::Double(d) => {
                out.push(DOUBLE);
                out.extend_from_slice(&d.to_le_bytes());
            }
            AttrValue::Array(s) => {
                out.push(ARRAY);
                put_bytes(out, s.as_bytes());
            }
        }
    }
}

/// Encodes a span's attributes, status message and events.
pub(crate) fn encode_span_data(
    attrs: &[(Arc<str>, AttrValue)],
    message: Option<&str>,
    events: &[Event],
    start_ns: u64,
    names: &mut Interner,
) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64);
    put_attrs(&mut out, attrs, names);
    match message {
        None => out.push(0),
        Some(m) => {
            put_varint(&mut out, m.len() as u64 + 1);
            out.extend_from_slice(m.as_bytes());
        }
    }
    put_varint(&mut out, events.len() as u64);
    for e in events {
        put_varint(&mut out, zigzag(e.time_ns.wrapping_sub(start_ns) as i64));
        put_varint(&mut out, u64::from(names.intern(&e.name)));
        put_attrs(&mut out, &e.attributes, names);
    }
    out.into_boxed_slice()
}

/// A decoded value that borrows the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawValue<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a [u8]),
}

/// Reads an encoded buffer front to back.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.buf[self.pos];
        self.pos += 1;
        b
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = self.varint() as usize;
        let b = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        b
    }

    /// The count at the start of an attribute block.
    pub(crate) fn count(&mut self) -> u64 {
        self.varint()
    }

    /// One (key id, value) pair of an attribute block.
    pub(crate) fn attr(&mut self) -> (u32, RawValue<'a>) {
        let key = self.varint() as u32;
        let value = match self.byte() {
            STR => RawValue::Str(self.bytes()),
            FALSE => RawValue::Bool(false),
            TRUE => RawValue::Bool(true),
            INT => RawValue::Int(unzigzag(self.varint())),
            DOUBLE => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
                self.pos += 8;
                RawValue::Double(f64::from_le_bytes(b))
            }
            _ => RawValue::Array(self.bytes()),
        };
        (key, value)
    }

    fn attrs(&mut self, names: &Interner) -> Attributes {
        let n = self.count();
        (0..n)
            .map(|_| {
                let (key, value) = self.attr();
                (names.name(key).clone(), value.to_owned())
            })
            .collect()
    }
}

fn text(b: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(b))
}

impl RawValue<'_> {
    fn to_owned(self) -> AttrValue {
        match self {
            RawValue::Str(b) => AttrValue::Str(text(b)),
            RawValue::Bool(b) => AttrValue::Bool(b),
            RawValue::Int(i) => AttrValue::Int(i),
            RawValue::Double(d) => AttrValue::Double(d),
            RawValue::Array(b) => AttrValue::Array(text(b)),
        }
    }
}

/// Decodes what [`encode_span_data`] encoded: attributes, status message, events.
pub(crate) fn decode_span_data(
    buf: &[u8],
    start_ns: u64,
    names: &Interner,
) -> (Attributes, Option<Arc<str>>, Vec<Event>) {
    let mut r = Reader::new(buf);
    let attrs = r.attrs(names);
    let message = match r.varint() {
        0 => None,
        n => {
            let len = (n - 1) as usize;
            let b = &r.buf[r.pos..r.pos + len];
            r.pos += len;
            Some(text(b))
        }
    };
    let n = r.count();
    let events = (0..n)
        .map(|_| {
            let time_ns = start_ns.wrapping_add(unzigzag(r.varint()) as u64);
            let name = names.name(r.varint() as u32).clone();
            let attributes = r.attrs(names);
            Event {
                time_ns,
                name,
                attributes,
            }
        })
        .collect();
    (attrs, message, events)
}

/// A `key=value` search condition, with the value pre-parsed for each typed comparison.
#[derive(Debug)]
pub(crate) struct TagMatcher {
    /// `None` if no span ever had this key.
    pub(crate) key: Option<u32>,
    pub(crate) is_error_true: bool,
    text: Box<str>,
    int: Option<i64>,
    boolean: Option<bool>,
    double: Option<f64>,
}

impl TagMatcher {
    pub(crate) fn new(key: &str, value: &str, names: &Interner) -> Self {
        TagMatcher {
            key: names.get(key),
            is_error_true: key == "error" && value == "true",
            text: value.into(),
            int: value.parse().ok(),
            boolean: value.parse().ok(),
            double: value.parse().ok(),
        }
    }

    fn value_matches(&self, v: RawValue<'_>) -> bool {
        match v {
            RawValue::Str(b) | RawValue::Array(b) => b == self.text.as_bytes(),
            RawValue::Bool(b) => self.boolean == Some(b),
            RawValue::Int(i) => self.int == Some(i),
            RawValue::Double(d) => self.double == Some(d),
        }
    }

    /// Whether the attribute block at the start of `buf` holds this key with this value.
    pub(crate) fn matches_attrs(&self, buf: &[u8]) -> bool {
        let Some(key) = self.key else { return false };
        let mut r = Reader::new(buf);
        let n = r.count();
        for _ in 0..n {
            let (k, v) = r.attr();
            if k == key && self.value_matches(v) {
                return true;
            }
        }
        false
    }
}
