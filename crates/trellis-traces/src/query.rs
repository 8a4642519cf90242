//! The queries Jaeger's query API needs, over a [`SpanStore`]: services, operations, one trace,
//! trace search ([`Query`]) and the service dependency graph.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::codec::TagMatcher;
use crate::model::{Span, SpanId, SpanKind, StatusCode, TraceId};
use crate::store::{SpanStore, StoredSpan};

/// Jaeger's default search limit.
pub const DEFAULT_LIMIT: usize = 20;

/// An operation of a service, with the kind of its spans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    pub name: Arc<str>,
    pub span_kind: SpanKind,
}

/// A trace search, as Jaeger's `/api/traces`: a trace matches if any of its spans of `service`
/// matches every condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Required, as in Jaeger.
    pub service: String,
    pub operation: Option<String>,
    /// Each must equal a span attribute or a resource attribute (compared as Jaeger does, by
    /// value: `200` matches the integer 200); `error=true` also matches an error status.
    pub tags: Vec<(String, String)>,
    pub min_duration_ns: Option<u64>,
    pub max_duration_ns: Option<u64>,
    /// The span's start must be in `start_ns..=end_ns`.
    pub start_ns: u64,
    pub end_ns: u64,
    /// At most this many traces; 0 means [`DEFAULT_LIMIT`].
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            service: String::new(),
            operation: None,
            tags: Vec::new(),
            min_duration_ns: None,
            max_duration_ns: None,
            start_ns: 0,
            end_ns: u64::MAX,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Query {
    /// A search of `service` with no other condition.
    pub fn service(service: impl Into<String>) -> Self {
        Query {
            service: service.into(),
            ..Query::default()
        }
    }
}

/// An edge of the service dependency graph: `parent` (the caller) called `child` (the callee)
/// `call_count` times in the window.
///
/// A call is a span of `child` whose parent span belongs to `parent`. Its latency is that child
/// span's duration: the callee's side of the call (usually its server span), which every
/// instrumented callee reports, whereas the caller's client span exists only when the caller is
/// instrumented for outbound calls too. Network time before the callee's span is not included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub parent: Arc<str>,
    pub child: Arc<str>,
    pub call_count: u64,
    /// Calls whose child span has an error status.
    pub error_count: u64,
    /// Median latency of the calls (nearest rank), nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile latency of the calls (nearest rank), nanoseconds.
    pub p99_ns: u64,
}

impl Dependency {
    /// The share of calls that failed, 0 to 1.
    pub fn error_rate(&self) -> f64 {
        error_rate(self.error_count, self.call_count)
    }
}

/// `errors` as a share of `calls`, 0 to 1 (0 for no calls).
fn error_rate(errors: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted `values`; 0 for none.
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as u64 * p).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

/// Requests to one service in a window (see [`SpanStore::service_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStats {
    pub service: Arc<str>,
    pub call_count: u64,
    /// Requests whose span has an error status.
    pub error_count: u64,
    /// Median latency (nearest rank), nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile latency (nearest rank), nanoseconds.
    pub p99_ns: u64,
}

impl ServiceStats {
    /// The share of requests that failed, 0 to 1.
    pub fn error_rate(&self) -> f64 {
        error_rate(self.error_count, self.call_count)
    }
}

/// What is gathered for one edge or service while walking the spans.
#[derive(Default)]
struct EdgeStats {
    errors: u64,
    durations: Vec<u64>,
}

impl EdgeStats {
    fn add(&mut self, span: &StoredSpan) {
        self.durations.push(span.duration_ns);
        if span.status == StatusCode::Error {
            self.errors += 1;
        }
    }

    /// (calls, errors, p50, p99 in nanoseconds).
    fn summary(mut self) -> (u64, u64, u64, u64) {
        self.durations.sort_unstable();
        (
            self.durations.len() as u64,
            self.errors,
            percentile(&self.durations, 50),
            percentile(&self.durations, 99),
        )
    }
}

impl SpanStore {
    /// The services with stored spans, sorted.
    pub fn services(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .services
            .keys()
            .map(|&id| self.names.name(id).clone())
            .collect();
        out.sort();
        out
    }

    /// The operations of `service` (of one span kind if given), sorted by name then kind.
    pub fn operations(&self, service: &str, span_kind: Option<SpanKind>) -> Vec<Operation> {
        let Some(index) = self
            .names
            .get(service)
            .and_then(|id| self.services.get(&id))
        else {
            return Vec::new();
        };
        let mut out: Vec<Operation> = index
            .operations
            .keys()
            .filter(|(_, kind)| span_kind.is_none_or(|k| k == *kind))
            .map(|&(op, kind)| Operation {
                name: self.names.name(op).clone(),
                span_kind: kind,
            })
            .collect();
        out.sort();
        out
    }

    /// Every stored span of a trace, in arrival order.
    pub fn trace(&self, trace_id: TraceId) -> Option<Vec<Span>> {
        let &seq = self.by_id.get(&trace_id)?;
        let trace = &self.traces[(seq - self.first_seq) as usize];
        Some(
            trace
                .spans
                .iter()
                .map(|s| self.materialize(trace_id, s))
                .collect(),
        )
    }

    /// The traces matching `query`, newest first (by the start of their newest matching span),
    /// at most `query.limit`.
    pub fn find_traces(&self, query: &Query) -> Vec<TraceId> {
        let limit = if query.limit == 0 {
            DEFAULT_LIMIT
        } else {
            query.limit
        };
        let Some(index) = self
            .names
            .get(&query.service)
            .and_then(|id| self.services.get(&id))
        else {
            return Vec::new();
        };
        let operation = match &query.operation {
            None => None,
            Some(op) => match self.names.get(op) {
                Some(id) if index.operations.keys().any(|&(o, _)| o == id) => Some(id),
                _ => return Vec::new(),
            },
        };
        let tags: Vec<TagMatcher> = query
            .tags
            .iter()
            .map(|(k, v)| TagMatcher::new(k, v, &self.names))
            .collect();
        if tags.iter().any(|t| t.key.is_none() && !t.is_error_true) {
            return Vec::new();
        }
        if query.start_ns > query.end_ns {
            return Vec::new();
        }
        // Resource sets are few: decide each tag on each of them once.
        let resource_matches: Vec<Vec<bool>> = tags
            .iter()
            .map(|t| self.resources.each(|r| t.matches_attrs(&r.encoded)))
            .collect();
        let min = query.min_duration_ns.unwrap_or(0);
        let max = query.max_duration_ns.unwrap_or(u64::MAX);
        let matches = |s: &StoredSpan| {
            s.duration_ns >= min
                && s.duration_ns <= max
                && tags.iter().zip(&resource_matches).all(|(t, resources)| {
                    (t.is_error_true && s.status == StatusCode::Error)
                        || resources[s.resource as usize]
                        || t.matches_attrs(&s.data)
                })
        };
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let range = (query.start_ns, 0, 0)..=(query.end_ns, u64::MAX, u32::MAX);
        for (&(_, seq, idx), &op) in index.by_start.range(range).rev() {
            if operation.is_some_and(|o| o != op) {
                continue;
            }
            // Most spans of a slow search do not match: test them before hashing their trace.
            if matches(self.span_at(seq, idx)) && seen.insert(seq) {
                found.push(self.traces[(seq - self.first_seq) as usize].trace_id);
                if found.len() == limit {
                    break;
                }
            }
        }
        found
    }

    /// The service dependency graph: one edge per (parent service, child service) pair of a
    /// parent span and its child span in a different service, counting child spans that started
    /// in `end_ns - lookback_ns..=end_ns`, with their errors and latency percentiles (see
    /// [`Dependency`]). Sorted by parent then child.
    pub fn dependencies(&self, end_ns: u64, lookback_ns: u64) -> Vec<Dependency> {
        let mut edges: BTreeMap<(u32, u32), EdgeStats> = BTreeMap::new();
        self.for_each_entry_span(end_ns, lookback_ns, |caller, span| {
            if let Some(parent_service) = caller {
                edges
                    .entry((parent_service, span.service))
                    .or_default()
                    .add(span);
            }
        });
        let mut out: Vec<Dependency> = edges
            .into_iter()
            .map(|((p, c), stats)| {
                let (call_count, error_count, p50_ns, p99_ns) = stats.summary();
                Dependency {
                    parent: self.names.name(p).clone(),
                    child: self.names.name(c).clone(),
                    call_count,
                    error_count,
                    p50_ns,
                    p99_ns,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
        out
    }

    /// Requests per service: the spans of each service that started in
    /// `end_ns - lookback_ns..=end_ns` and enter it (no parent, a parent not stored, or a
    /// parent in another service), with their errors and latency percentiles. Sorted by name.
    pub fn service_stats(&self, end_ns: u64, lookback_ns: u64) -> Vec<ServiceStats> {
        let mut services: BTreeMap<u32, EdgeStats> = BTreeMap::new();
        self.for_each_entry_span(end_ns, lookback_ns, |_, span| {
            services.entry(span.service).or_default().add(span);
        });
        let mut out: Vec<ServiceStats> = services
            .into_iter()
            .map(|(service, stats)| {
                let (call_count, error_count, p50_ns, p99_ns) = stats.summary();
                ServiceStats {
                    service: self.names.name(service).clone(),
                    call_count,
                    error_count,
                    p50_ns,
                    p99_ns,
                }
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }

    /// Calls `f` with every span that started in the window and enters its service, and the
    /// service of its parent span when that is stored and another service (`None` for a root
    /// or a span whose parent is not stored). Spans called from their own service are skipped.
    fn for_each_entry_span(
        &self,
        end_ns: u64,
        lookback_ns: u64,
        mut f: impl FnMut(Option<u32>, &StoredSpan),
    ) {
        let from = end_ns.saturating_sub(lookback_ns);
        let mut by_span: HashMap<SpanId, u32> = HashMap::new();
        for trace in &self.traces {
            if trace.max_start_ns < from || trace.min_start_ns > end_ns {
                continue;
            }
            by_span.clear();
            by_span.extend(trace.spans.iter().map(|s| (s.span_id, s.service)));
            for span in &trace.spans {
                if span.start_ns < from || span.start_ns > end_ns {
                    continue;
                }
                let caller = span.parent().and_then(|p| by_span.get(&p).copied());
                if caller != Some(span.service) {
                    f(caller, span);
                }
            }
        }
    }
}

#[cfg(test)]
mod percentile_tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v[..10], 99), 10);
        assert_eq!(percentile(&v[..10], 50), 5);
    }
}
