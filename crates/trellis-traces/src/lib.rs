//! The pure core of Trellis's trace collector: the span model, a store bounded by bytes that
//! evicts whole oldest traces, and the queries Jaeger's query API needs (services, operations,
//! a trace by id, trace search, service dependencies).
//!
//! No IO and no clock: times are nanoseconds since the UNIX epoch, carried by the spans or
//! passed in by the caller. The OTLP receiver and the Jaeger HTTP API are adapters on top.
//!
//! Inside the crate: `model.rs` — ids, [`Span`] and its parts; `codec.rs` — the compact byte
//! encoding of a stored span's attributes, status message and events; `intern.rs` — the string
//! interner (services, operations, attribute keys, event names); `store.rs` — [`SpanStore`]: the
//! stored form, the indexes, insertion and eviction; `query.rs` — the queries over it.

mod codec;
mod intern;
pub mod model;
pub mod query;
pub mod store;

#[cfg(test)]
mod tests;

pub use model::{
    AttrValue, Attributes, Event, ParseIdError, Resource, Span, SpanId, SpanKind, Status,
    StatusCode, TraceId,
};
pub use query::{DEFAULT_LIMIT, Dependency, Operation, Query, ServiceStats};
pub use store::{Inserted, SpanStore};
