//! The participant side of Trellis' two-phase commit: a service writes only the prepare, commit
//! and abort of its own data; this crate serves the protocol the coordinator in `trellis
//! server` speaks and makes every call safe to repeat.
//!
//! # The protocol
//!
//! The coordinator calls `POST <base>/prepare`, `<base>/commit` and `<base>/abort` with
//! `{"gid": ..., "branch_id": ..., "payload": ...}` ([`Branch`]). A participant answers 200
//! (yes / done), 409 `{"reason": ...}` (prepare votes no; the transaction aborts), or 503 (try
//! again later: database busy, lock timeout); 400 for a malformed body. Every call may come any
//! number of times, and an abort may come before its prepare, or without one: then the abort
//! succeeds as a no-op and a prepare that arrives later votes no. [`router`] serves the three
//! routes for any [`Participant`].
//!
//! # Two participants
//!
//! - [`SqliteParticipant`]: the service implements [`SqliteBranch`] (blocking; it runs on
//!   tokio's blocking threads) with `prepare`, `commit` and `abort`, each given the local
//!   transaction that also holds the call's row in the barrier table `trellis_barrier`. Prepare
//!   does the work and keeps what undoing it needs (reserve, freeze), commit makes it final,
//!   abort undoes it. The barrier guarantees each runs at most once per branch, commit and
//!   abort only after a successful prepare.
//! - [`PgParticipant`]: PostgreSQL's own two-phase commit. The service implements
//!   [`PgBranch`] with only `prepare`, run in a `tokio_postgres::Transaction` that the library
//!   then prepares (`PREPARE TRANSACTION`); commit and abort are `COMMIT PREPARED` and
//!   `ROLLBACK PREPARED`. The server needs `max_prepared_transactions > 0`. Call
//!   [`PgParticipant::resolve_in_doubt`] at start-up: it asks the coordinator
//!   (`GET /v1/trellis/txn/<gid>`) about every branch a crash left prepared and settles it.
//!
//! # Example
//!
//! A service whose branch moves money out of an account: prepare freezes the amount (or votes
//! no), commit takes it, abort unfreezes it.
//!
//! ```no_run
//! use rusqlite::{Transaction, params};
//! use serde::Deserialize;
//! use trellis_participant::{Branch, BranchError, SqliteBranch, SqliteParticipant, router};
//!
//! #[derive(Deserialize)]
//! struct Debit {
//!     account: String,
//!     amount: i64,
//! }
//!
//! struct Accounts;
//!
//! impl SqliteBranch for Accounts {
//!     fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
//!         let debit: Debit = branch.payload_as()?;
//!         let frozen = tx.execute(
//!             "UPDATE accounts SET frozen = frozen + ?2
//!              WHERE id = ?1 AND balance - frozen >= ?2",
//!             params![debit.account, debit.amount],
//!         )?;
//!         if frozen == 0 {
//!             return Err(BranchError::no("insufficient funds"));
//!         }
//!         Ok(())
//!     }
//!
//!     fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
//!         let debit: Debit = branch.payload_as()?;
//!         tx.execute(
//!             "UPDATE accounts SET balance = balance - ?2, frozen = frozen - ?2 WHERE id = ?1",
//!             params![debit.account, debit.amount],
//!         )?;
//!         Ok(())
//!     }
//!
//!     fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
//!         let debit: Debit = branch.payload_as()?;
//!         tx.execute(
//!             "UPDATE accounts SET frozen = frozen - ?2 WHERE id = ?1",
//!             params![debit.account, debit.amount],
//!         )?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let participant = SqliteParticipant::open("accounts.db", Accounts).await?;
//! // The coordinator is told the branch's base URL: http://<host>:<port>/txn/debit
//! let app = axum::Router::new().nest("/txn/debit", router(participant));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! On PostgreSQL the same service implements only prepare, and the database keeps the frozen
//! state for it (the prepared transaction holds the row lock until commit or abort):
//!
//! ```no_run
//! use tokio_postgres::Transaction;
//! use trellis_participant::{
//!     Branch, BranchError, Connector, PgBranch, PgOptions, PgParticipant, router,
//! };
//! # #[derive(serde::Deserialize)]
//! # struct Debit { account: String, amount: i64 }
//!
//! struct Accounts;
//!
//! impl PgBranch for Accounts {
//!     async fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
//!         let debit: Debit = branch.payload_as()?;
//!         let updated = tx
//!             .execute(
//!                 "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2",
//!                 &[&debit.account, &debit.amount],
//!             )
//!             .await?;
//!         if updated == 0 {
//!             return Err(BranchError::no("insufficient funds"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config: tokio_postgres::Config = "host=/run/postgresql dbname=bank".parse()?;
//! let connector = Connector::new(config, tokio_postgres::NoTls);
//! let participant = PgParticipant::connect(connector, PgOptions::default(), Accounts).await?;
//! let report = participant.resolve_in_doubt("http://127.0.0.1:8500").await?;
//! println!("in doubt at start: {report:?}");
//! let app = axum::Router::new().nest("/txn/debit", router(participant));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

mod error;
mod http;
mod pg;
mod protocol;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::Error;
pub use http::{BODY_LIMIT, router};
pub use pg::{Connector, InDoubt, InDoubtReport, PgBranch, PgOptions, PgParticipant, PooledClient};
pub use protocol::{Answer, Branch, BranchError, Done, MAX_ID_LEN, Participant, Phase};
pub use sqlite::{DEFAULT_BUSY_TIMEOUT, SqliteBranch, SqliteParticipant};
