//! Fault-tolerance state machines for the data plane: retry budget, backoff, outlier
//! detection (per-endpoint circuit breaking), token-bucket rate limiting, and the per-service
//! [`Policy`] that configures them.
//!
//! The crate is pure: it never reads a clock, draws its own randomness or does IO.
//!
//! * **Time** is a [`std::time::Instant`] passed in by the caller (`now`); spans are
//!   [`std::time::Duration`]s. Nothing here calls `Instant::now()`, so tests drive every
//!   transition by adding durations to one fixed origin. A `now` earlier than one seen before is
//!   tolerated and counts as no time passing.
//! * **Randomness** is a `&mut R` where `R: rand::Rng + ?Sized`, so the proxy passes a fast
//!   thread-local generator and tests pass a seeded `rand::rngs::StdRng`.
//!
//! The state machines take `&mut self`; the proxy owns one of each per upstream service (the
//! outlier detector covers all endpoints of a service) behind its own lock.

mod backoff;
mod budget;
mod outlier;
mod policy;
mod token_bucket;

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use outlier::{EndpointState, Event, OutlierConfig, OutlierDetector};
pub use policy::{Policy, is_idempotent_method};
pub use token_bucket::TokenBucket;

/// Everything that can go wrong in this crate: only a configuration that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A [`Policy`] field is out of range; `field` is its name in the config file.
    #[error("invalid resilience policy: {field}: {reason}")]
    InvalidPolicy { field: &'static str, reason: String },
}
