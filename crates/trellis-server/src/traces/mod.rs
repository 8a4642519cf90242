//! The trace collector's adapters around the pure span store (`trellis-traces`): the shared
//! store handle, the OTLP/HTTP receiver on its own listener (`receiver.rs`, converting with
//! `otlp.rs`) and Jaeger's query API on the HTTP API's port (`jaeger.rs`).

pub mod jaeger;
pub mod otlp;
pub mod receiver;

use parking_lot::Mutex;
use std::sync::Arc;
use trellis_traces::SpanStore;

/// The span store shared by the receiver and the query API. Requests convert outside the lock
/// and only insert or query under it.
pub type TraceStore = Arc<Mutex<SpanStore>>;

/// An empty store bounded by `max_bytes`.
pub fn new_store(max_bytes: usize) -> TraceStore {
    Arc::new(Mutex::new(SpanStore::new(max_bytes)))
}
