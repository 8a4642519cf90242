//! The trace collector's adapters around the pure span store (`trellis-traces`): the shared
//! store handle; the OTLP receivers on their own listeners, OTLP/HTTP (`receiver.rs`) and
//! OTLP/gRPC (`grpc.rs`), both through `ingest.rs` (admission by `pressure.rs`, conversion by
//! `otlp.rs`, the insert, metrics, partial success; `google.rpc` answers from `rpc.rs`); and on
//! the HTTP API's port Jaeger's query API (`jaeger.rs`) and Trellis's dependency graph with call
//! statistics (`graph.rs`).

pub mod graph;
pub mod grpc;
pub mod ingest;
pub mod jaeger;
pub mod otlp;
pub mod pressure;
pub mod receiver;
pub mod rpc;

use parking_lot::Mutex;
use std::sync::Arc;
use trellis_traces::SpanStore;

/// The span store shared by the receivers and the query APIs. Requests convert outside the
/// lock and only insert or query under it.
pub type TraceStore = Arc<Mutex<SpanStore>>;

/// An empty store bounded by `max_bytes`.
pub fn new_store(max_bytes: usize) -> TraceStore {
    Arc::new(Mutex::new(SpanStore::new(max_bytes)))
}
