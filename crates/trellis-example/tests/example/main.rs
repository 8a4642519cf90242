//! Integration tests: real users and orders servers on 127.0.0.1:0 with temporary databases.

// Test helpers outside #[test] functions are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod instances;
mod orders;
mod users;
