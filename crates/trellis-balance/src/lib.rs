//! Load balancers for the data plane: choose one upstream endpoint per request.
//!
//! The crate is pure: it never reads a clock, draws its own randomness or does IO.
//!
//! * **Time** is a [`std::time::Instant`] passed in by the caller (`now`), and latencies are
//!   [`std::time::Duration`]s. The crate never calls `Instant::now()`, so tests drive time by
//!   adding durations to one fixed origin. A `now` earlier than a previous one is tolerated (it
//!   counts as no time passing).
//! * **Randomness** is a `&mut R` where `R: rand::Rng + ?Sized`, so the proxy passes a fast
//!   thread-local generator and tests pass a seeded `rand::rngs::StdRng`.
//!
//! The proxy keeps one [`Balancer`] per upstream service, feeds it the endpoint set whenever
//! discovery or health changes ([`Balancer::set_endpoints`], [`Balancer::set_eligible`]), calls
//! [`Balancer::pick`] per request, and reports load with [`Balancer::on_start`] /
//! [`Balancer::on_end`].

mod balancer;
mod ewma;
mod hash;
mod policy;
mod ring;

pub use balancer::{Balancer, Endpoint, EndpointView};
pub use ewma::PeakEwmaConfig;
pub use policy::{DEFAULT_RING_HASH_HEADER, Policy};

/// Everything that can go wrong in this crate: only reading a policy from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The policy name is not one this crate knows.
    #[error(
        "unknown load-balancing policy {0:?}: expected one of random, round_robin, weighted, \
         least_request, peak_ewma, ring_hash or ring_hash:<header>"
    )]
    UnknownPolicy(String),
    /// `ring_hash` was given a header name that HTTP would not accept.
    #[error(
        "invalid ring_hash header name {0:?}: expected a non-empty HTTP token such as x-user-id"
    )]
    InvalidHeader(String),
}
