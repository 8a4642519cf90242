//! The Trellis data plane: one hyper-1 proxy engine used by `trellis sidecar` and
//! `trellis gateway`.
//!
//! The engine ([`Proxy`]) is a plain async function from request to response so tests can drive
//! it without sockets; [`server`] puts it behind listeners, [`sidecar`] and [`gateway`] wire the
//! listeners, discovery and registration together for the two commands.

pub mod admin;
pub mod body;
pub mod client;
pub mod config;
pub mod discovery;
mod error;
pub mod flags;
pub mod forward;
pub mod gateway;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod reject;
pub mod runtime;
pub mod server;
pub mod sidecar;
pub mod upstream;

pub use error::{Error, Result};
pub use gateway::{GatewayArgs, run_gateway};
pub use proxy::{Mode, Proxy};
pub use sidecar::{SidecarArgs, run_sidecar};
/// The hyper crates the engine's types come from, for callers that drive it directly.
pub use {bytes, http_body_util, hyper, hyper_util};
