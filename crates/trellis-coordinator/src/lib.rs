//! The pure two-phase-commit coordinator engine: transactions and their branches, participants'
//! votes and acknowledgements, the decision (presumed abort), timeouts and phase-2 retries.
//!
//! No IO and no clock, in the shape of openraft's engine: the runtime feeds it requests,
//! participants' answers and the time ([`Engine::tick`]), and takes [`Effects`] out — which
//! transactions to write to the decision log and which messages to send. The one rule the
//! runtime must keep: **every message of a batch is sent only after every record of the same
//! batch is durable**, so a commit decision is on disk before any participant hears of it, and a
//! transaction is on disk before any branch is prepared.

mod engine;
mod error;
mod model;
mod timers;

pub use engine::{Config, Effects, Engine, Message, Stats};
pub use error::CoordinatorError;
pub use model::{AbortCause, Branch, BranchState, Millis, Phase, Response, Target, Txn, TxnState};

#[cfg(test)]
mod tests;
