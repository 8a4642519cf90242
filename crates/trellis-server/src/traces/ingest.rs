//! The path every OTLP request takes once read, whichever its transport: admission against the
//! in-flight budget, conversion outside the store's lock, the insert under it, the collector's
//! metrics, and the partial-success answer the OTLP specification asks for.

use super::TraceStore;
use super::otlp;
use super::pressure::{InFlight, Permit};
use crate::metrics::{ProtocolLabels, RejectLabels, TraceMetrics};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::Arc;

/// Largest request payload, compressed and decompressed, on both transports: 16 MiB.
pub const MAX_BODY: usize = 16 << 20;

/// The OTLP transports, as the `protocol` label of the collector's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    fn label(self) -> ProtocolLabels {
        ProtocolLabels {
            protocol: match self {
                Protocol::Http => "http",
                Protocol::Grpc => "grpc",
            },
        }
    }
}

/// The collector's ingest side: the store, the in-flight budget and the metrics, shared by the
/// HTTP and gRPC receivers.
#[derive(Debug)]
pub struct Collector {
    store: TraceStore,
    inflight: Arc<InFlight>,
    metrics: TraceMetrics,
}

impl Collector {
    /// A collector over `store` admitting at most `inflight_bytes` of payload at once.
    pub fn new(store: TraceStore, inflight_bytes: usize, metrics: TraceMetrics) -> Arc<Self> {
        let max = store.lock().max_bytes();
        metrics
            .store_max_bytes
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        Arc::new(Collector {
            store,
            inflight: InFlight::new(inflight_bytes, metrics.inflight_bytes.clone()),
            metrics,
        })
    }

    pub fn store(&self) -> &TraceStore {
        &self.store
    }

    /// Reserves `bytes` of the in-flight budget, or counts a throttled request.
    pub fn admit(&self, bytes: usize, protocol: Protocol) -> Option<Permit> {
        let permit = self.inflight.try_acquire(bytes);
        if permit.is_none() {
            self.throttled(protocol);
        }
        permit
    }

    /// Grows a reservation (to a payload's decompressed size), or counts a throttled request.
    pub fn grow(&self, permit: &mut Permit, bytes: usize, protocol: Protocol) -> bool {
        let grown = permit.grow_to(bytes);
        if !grown {
            self.throttled(protocol);
        }
        grown
    }

    fn throttled(&self, protocol: Protocol) {
        self.metrics
            .requests_throttled
            .get_or_create(&protocol.label())
            .inc();
    }

    /// Counts a request refused as unreadable.
    pub fn malformed(&self, protocol: Protocol) {
        self.metrics
            .requests_malformed
            .get_or_create(&protocol.label())
            .inc();
    }

    /// Stores a decoded request's spans and answers it: a partial success names the spans
    /// refused and why.
    pub fn export(
        &self,
        request: ExportTraceServiceRequest,
        protocol: Protocol,
    ) -> ExportTraceServiceResponse {
        // Convert outside the lock; only the insert holds it.
        let converted = otlp::convert(request);
        let received = converted.spans.len() + converted.rejected_invalid;
        let (inserted, bytes, spans, traces) = {
            let mut store = self.store.lock();
            let inserted = store.insert(converted.spans);
            (
                inserted,
                store.bytes(),
                store.span_count(),
                store.trace_count(),
            )
        };
        let m = &self.metrics;
        m.spans_received
            .get_or_create(&protocol.label())
            .inc_by(received as u64);
        m.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.store_spans.set(i64::try_from(spans).unwrap_or(i64::MAX));
        m.store_traces
            .set(i64::try_from(traces).unwrap_or(i64::MAX));
        m.evicted_traces.inc_by(inserted.evicted_traces as u64);
        let invalid = converted.rejected_invalid + inserted.rejected_invalid;
        let too_large = inserted.rejected_too_large;
        let protocol = protocol.label().protocol;
        let mut reasons = Vec::new();
        if invalid > 0 {
            m.spans_rejected
                .get_or_create(&RejectLabels {
                    protocol,
                    reason: "invalid_id",
                })
                .inc_by(invalid as u64);
            reasons.push(format!(
                "{invalid} spans with an invalid trace, span or parent span id"
            ));
        }
        if too_large > 0 {
            m.spans_rejected
                .get_or_create(&RejectLabels {
                    protocol,
                    reason: "too_large",
                })
                .inc_by(too_large as u64);
            reasons.push(format!(
                "{too_large} spans larger than the span store (--trace-store-bytes)"
            ));
        }
        ExportTraceServiceResponse {
            partial_success: (!reasons.is_empty()).then(|| ExportTracePartialSuccess {
                rejected_spans: (invalid + too_large) as i64,
                error_message: reasons.join("; "),
            }),
        }
    }
}
