//! Fault-tolerance state machines for the data plane: retry budget, backoff, outlier
//! detection (per-endpoint circuit breaking), token-bucket rate limiting, and which methods
//! may be retried. The proxy's per-service policy configures them.
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
mod method;
mod outlier;
mod token_bucket;

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use method::is_idempotent_method;
pub use outlier::{EndpointState, Event, OutlierConfig, OutlierDetector};
pub use token_bucket::TokenBucket;
