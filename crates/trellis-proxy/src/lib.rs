//! The Trellis data plane: one hyper-1 proxy engine used by `trellis sidecar` and
//! `trellis gateway`.
//!
//! The engine ([`Proxy`]) is a plain async function from request to response so tests can drive
//! it without sockets; [`server`] puts it behind listeners, [`listeners`] serves a command's
//! listeners until shutdown, and [`sidecar`] and [`gateway`] wire listeners, discovery and
//! registration together for the two commands. The binary owns the runtime and the signals:
//! [`run_sidecar`] and [`run_gateway`] are async and stop when the future they are given resolves.

pub mod admin;
pub mod body;
pub mod client;
pub mod config;
pub mod discovery;
mod error;
pub mod exporter;
pub mod flags;
pub mod forward;
pub mod gateway;
pub mod headers;
pub mod intentions;
pub mod listeners;
pub mod mesh_tls;
pub mod metrics;
pub mod outcome;
pub mod proxy;
pub mod registration;
pub mod registry_tls;
pub mod reject;
pub mod routes;
pub mod server;
pub mod sidecar;
pub mod spans;
pub mod trace_context;
pub mod upstream;

pub use error::{Error, Result};
pub use flags::TracingArgs;
pub use gateway::{GatewayArgs, run_gateway};
pub use proxy::{Mode, Proxy};
pub use sidecar::{SidecarArgs, run_sidecar};
/// The hyper crates the engine's types come from, for callers that drive it directly.
pub use {bytes, http_body_util, hyper, hyper_util};
