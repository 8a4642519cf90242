//! Integration tests: real users, orders and inventory servers on 127.0.0.1:0 with temporary
//! databases, and a minimal coordinator for the transaction that places an order.

// Test helpers outside #[test] functions are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod coordinator;
mod instances;
mod inventory;
mod orders;
mod placing;
mod users;
