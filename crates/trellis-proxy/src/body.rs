//! The one body type the engine passes around, and helpers to build small bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Request and response body inside the engine: upstream bodies stream through unchanged,
/// proxy-generated ones are small in-memory buffers.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body holding `data`.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body (zero-sized, so boxing it does not allocate).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}
