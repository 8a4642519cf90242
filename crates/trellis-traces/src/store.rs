//! [`SpanStore`]: spans in a compact stored form, grouped by trace in first-seen order, bounded by
//! an estimated byte size (whole oldest traces are evicted), with the indexes the queries use:
//! trace id → trace, and per service its operations (with span kinds) and its spans ordered by
//! start time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;

use crate::codec;
use crate::intern::Interner;
use crate::model::{AttrValue, Resource, Span, SpanId, SpanKind, Status, StatusCode, TraceId};

/// One span as stored: fixed fields, interned names, and the rest encoded in `data`
/// (see `codec.rs`). The trace id lives once in its [`TraceEntry`].
#[derive(Debug)]
pub(crate) struct StoredSpan {
    pub(crate) span_id: SpanId,
    /// All zeros for none (an all-zero id is invalid).
    pub(crate) parent: SpanId,
    pub(crate) start_ns: u64,
    pub(crate) duration_ns: u64,
    pub(crate) service: u32,
    pub(crate) operation: u32,
    pub(crate) resource: u32,
    pub(crate) kind: SpanKind,
    pub(crate) status: StatusCode,
    pub(crate) data: Box<[u8]>,
}

impl StoredSpan {
    pub(crate) fn parent(&self) -> Option<SpanId> {
        self.parent.is_valid().then_some(self.parent)
    }
}

/// One trace: its spans in arrival order.
#[derive(Debug)]
pub(crate) struct TraceEntry {
    pub(crate) trace_id: TraceId,
    pub(crate) spans: Vec<StoredSpan>,
    pub(crate) min_start_ns: u64,
    pub(crate) max_start_ns: u64,
    /// The bytes counted for this trace, given back when it is evicted.
    bytes: usize,
}

/// A position in a service's search index: (start time, trace sequence number, span index).
pub(crate) type SpanKey = (u64, u64, u32);

/// What the store knows of one service.
#[derive(Debug, Default)]
pub(crate) struct ServiceIndex {
    /// Its spans ordered by start time, each with its operation id (so that a search by
    /// operation skips the other spans without reading them).
    pub(crate) by_start: BTreeMap<SpanKey, u32>,
    /// (operation id, kind) → number of stored spans.
    pub(crate) operations: HashMap<(u32, SpanKind), u32>,
}

/// Resource attribute sets, interned by their encoding and reference-counted by spans.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    ids: HashMap<Box<[u8]>, u32>,
    slots: Vec<Option<ResourceSlot>>,
    free: Vec<u32>,
    bytes: usize,
    /// The last resource seen, by pointer, to skip re-encoding the shared `Arc` of a batch.
    last: Option<(Resource, u32)>,
}

#[derive(Debug)]
pub(crate) struct ResourceSlot {
    pub(crate) encoded: Box<[u8]>,
    pub(crate) decoded: Resource,
    refs: u32,
}

impl Resources {
    fn slot_bytes(encoded: &[u8], decoded: &[(Arc<str>, AttrValue)]) -> usize {
        // The encoding twice (map key and slot), the slot, the map entry and the decoded form.
        2 * encoded.len()
            + size_of::<Option<ResourceSlot>>()
            + size_of::<(Box<[u8]>, u32)>()
            + 16
            + decoded
                .iter()
                .map(|(_, v)| size_of::<(Arc<str>, AttrValue)>() + attr_heap(v))
                .sum::<usize>()
    }

    fn acquire(&mut self, resource: &Resource, names: &mut Interner) -> u32 {
        let id = match &self.last {
            Some((arc, id)) if Arc::ptr_eq(arc, resource) => *id,
            _ => {
                let mut encoded = Vec::new();
                codec::put_attrs(&mut encoded, resource, names);
                let id = match self.ids.get(encoded.as_slice()) {
                    Some(&id) => id,
                    None => {
                        let encoded: Box<[u8]> = encoded.into_boxed_slice();
                        self.bytes += Self::slot_bytes(&encoded, resource);
                        let slot = ResourceSlot {
                            encoded: encoded.clone(),
                            decoded: resource.clone(),
                            refs: 0,
                        };
                        let id = match self.free.pop() {
                            Some(id) => {
                                self.slots[id as usize] = Some(slot);
                                id
                            }
                            None => {
                                self.slots.push(Some(slot));
                                u32::try_from(self.slots.len() - 1)
                                    .expect("fewer than 2^32 resources")
                            }
                        };
                        self.ids.insert(encoded, id);
                        id
                    }
                };
                self.last = Some((resource.clone(), id));
                id
            }
        };
        if let Some(slot) = &mut self.slots[id as usize] {
            slot.refs += 1;
        }
        id
    }

    fn release(&mut self, id: u32) {
        let Some(slot) = &mut self.slots[id as usize] else {
            return;
        };
        slot.refs -= 1;
        if slot.refs == 0 {
            if let Some(slot) = self.slots[id as usize].take() {
                self.bytes -= Self::slot_bytes(&slot.encoded, &slot.decoded);
                self.ids.remove(&slot.encoded);
            }
            self.free.push(id);
            if matches!(&self.last, Some((_, last)) if *last == id) {
                self.last = None;
            }
        }
    }

    /// For each resource id, whether `f` holds for its slot (false for a free id).
    pub(crate) fn each(&self, f: impl Fn(&ResourceSlot) -> bool) -> Vec<bool> {
        self.slots
            .iter()
            .map(|slot| slot.as_ref().is_some_and(&f))
            .collect()
    }

    pub(crate) fn get(&self, id: u32) -> &ResourceSlot {
        self.slots[id as usize]
            .as_ref()
            .expect("a resource referenced by a stored span")
    }
}

fn attr_heap(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) | AttrValue::Array(s) => s.len() + 16,
        _ => 0,
    }
}

/// The estimated bytes of one span's entry in its service's search index (a B-tree key and
/// value, with the nodes' slack).
const INDEX_ENTRY_BYTES: usize = (size_of::<SpanKey>() + size_of::<u32>()) * 3 / 2;

/// The estimated bytes a trace costs besides its spans: its entry, and its slot in the id map.
const TRACE_BYTES: usize = size_of::<TraceEntry>() + (size_of::<(TraceId, u64)>() + 1) * 8 / 7;

/// What [`SpanStore::insert`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inserted {
    pub accepted: usize,
    /// Spans that alone (with their trace's overhead) exceed the store's bound.
    pub rejected_too_large: usize,
    /// Spans with an all-zero trace or span id.
    pub rejected_invalid: usize,
    /// Whole traces evicted to make room (their spans were accepted by earlier inserts).
    pub evicted_traces: usize,
}

/// The span store. See the module documentation.
#[derive(Debug)]
pub struct SpanStore {
    max_bytes: usize,
    /// Bytes of the traces, spans and index entries (names and resources are counted apart).
    span_bytes: usize,
    span_count: usize,
    pub(crate) names: Interner,
    pub(crate) resources: Resources,
    /// Traces in first-seen order; the trace with sequence number `s` is at `s - first_seq`.
    pub(crate) traces: VecDeque<TraceEntry>,
    pub(crate) first_seq: u64,
    pub(crate) by_id: HashMap<TraceId, u64>,
    /// By service name id.
    pub(crate) services: HashMap<u32, ServiceIndex>,
}

impl SpanStore {
    /// An empty store that keeps its estimated size at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        SpanStore {
            max_bytes,
            span_bytes: 0,
            span_count: 0,
            names: Interner::default(),
            resources: Resources::default(),
            traces: VecDeque::new(),
            first_seq: 0,
            by_id: HashMap::new(),
            services: HashMap::new(),
        }
    }

    /// The estimated heap size of everything stored: spans, traces, indexes, interned names and
    /// resource attribute sets.
    pub fn bytes(&self) -> usize {
        self.span_bytes + self.names.bytes() + self.resources.bytes
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn span_count(&self) -> usize {
        self.span_count
    }

    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// The estimated bytes one stored span costs: its stored form, its encoded data and its
    /// search index entry.
    fn span_bytes_of(data_len: usize) -> usize {
        size_of::<StoredSpan>() + data_len + INDEX_ENTRY_BYTES
    }

    /// Stores `spans`, evicting whole oldest traces (by first-seen order) while over the bound.
    pub fn insert(&mut self, spans: Vec<Span>) -> Inserted {
        let mut result = Inserted::default();
        // Spans still to come per trace, to size each trace's vector once.
        let mut pending: HashMap<TraceId, usize> = HashMap::new();
        for s in &spans {
            *pending.entry(s.trace_id).or_default() += 1;
        }
        for span in spans {
            if !span.trace_id.is_valid() || !span.span_id.is_valid() {
                result.rejected_invalid += 1;
                continue;
            }
            let data = codec::encode_span_data(
                &span.attributes,
                span.status.message.as_deref(),
                &span.events,
                span.start_ns,
                &mut self.names,
            );
            let bytes = Self::span_bytes_of(data.len());
            if bytes + TRACE_BYTES > self.max_bytes {
                result.rejected_too_large += 1;
                continue;
            }
            let service = self.names.intern(&span.service);
            let operation = self.names.intern(&span.operation);
            let resource = self.resources.acquire(&span.resource, &mut self.names);
            let stored = StoredSpan {
                span_id: span.span_id,
                parent: span.parent_span_id.unwrap_or(SpanId([0; 8])),
                start_ns: span.start_ns,
                duration_ns: span.duration_ns,
                service,
                operation,
                resource,
                kind: span.kind,
                status: span.status.code,
                data,
            };
            let seq = match self.by_id.get(&span.trace_id) {
                Some(&seq) => seq,
                None => {
                    let seq = self.first_seq + self.traces.len() as u64;
                    self.traces.push_back(TraceEntry {
                        trace_id: span.trace_id,
                        spans: Vec::new(),
                        min_start_ns: span.start_ns,
                        max_start_ns: span.start_ns,
                        bytes: TRACE_BYTES,
                    });
                    self.by_id.insert(span.trace_id, seq);
                    self.span_bytes += TRACE_BYTES;
                    seq
                }
            };
            let trace = &mut self.traces[(seq - self.first_seq) as usize];
            if let Some(n) = pending.remove(&span.trace_id) {
                if trace.spans.is_empty() {
                    trace.spans.reserve_exact(n);
                } else {
                    trace.spans.reserve(n);
                }
            }
            let idx = u32::try_from(trace.spans.len()).expect("fewer than 2^32 spans in a trace");
            trace.min_start_ns = trace.min_start_ns.min(span.start_ns);
            trace.max_start_ns = trace.max_start_ns.max(span.start_ns);
            trace.bytes += bytes;
            trace.spans.push(stored);
            let index = self.services.entry(service).or_default();
            index.by_start.insert((span.start_ns, seq, idx), operation);
            *index.operations.entry((operation, span.kind)).or_default() += 1;
            self.span_bytes += bytes;
            self.span_count += 1;
            result.accepted += 1;
            while self.bytes() > self.max_bytes && !self.traces.is_empty() {
                self.evict_oldest();
                result.evicted_traces += 1;
            }
        }
        result
    }

    /// Removes the oldest trace whole, with its index entries.
    fn evict_oldest(&mut self) {
        let Some(trace) = self.traces.pop_front() else {
            return;
        };
        let seq = self.first_seq;
        self.first_seq += 1;
        self.by_id.remove(&trace.trace_id);
        for (idx, span) in trace.spans.iter().enumerate() {
            if let Some(index) = self.services.get_mut(&span.service) {
                index.by_start.remove(&(span.start_ns, seq, idx as u32));
                if let Some(n) = index.operations.get_mut(&(span.operation, span.kind)) {
                    *n -= 1;
                    if *n == 0 {
                        index.operations.remove(&(span.operation, span.kind));
                    }
                }
                if index.by_start.is_empty() {
                    self.services.remove(&span.service);
                }
            }
            self.resources.release(span.resource);
        }
        self.span_bytes -= trace.bytes;
        self.span_count -= trace.spans.len();
    }

    /// The span bytes counted from scratch, to check the running count.
    #[cfg(test)]
    pub(crate) fn recount_span_bytes(&self) -> usize {
        self.traces
            .iter()
            .map(|t| {
                TRACE_BYTES
                    + t.spans
                        .iter()
                        .map(|s| Self::span_bytes_of(s.data.len()))
                        .sum::<usize>()
            })
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn span_bytes(&self) -> usize {
        self.span_bytes
    }

    /// The stored span at an index key's position.
    pub(crate) fn span_at(&self, seq: u64, idx: u32) -> &StoredSpan {
        &self.traces[(seq - self.first_seq) as usize].spans[idx as usize]
    }

    /// Rebuilds a [`Span`] from its stored form.
    pub(crate) fn materialize(&self, trace_id: TraceId, s: &StoredSpan) -> Span {
        let (attributes, message, events) =
            codec::decode_span_data(&s.data, s.start_ns, &self.names);
        Span {
            trace_id,
            span_id: s.span_id,
            parent_span_id: s.parent(),
            service: self.names.name(s.service).clone(),
            operation: self.names.name(s.operation).clone(),
            kind: s.kind,
            start_ns: s.start_ns,
            duration_ns: s.duration_ns,
            status: Status {
                code: s.status,
                message,
            },
            attributes,
            events,
            resource: self.resources.get(s.resource).decoded.clone(),
        }
    }
}
