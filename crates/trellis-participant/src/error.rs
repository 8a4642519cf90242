//! The crate's error type, for setting a participant up and resolving branches in doubt; the
//! answers to the coordinator's calls are [`crate::Answer`]s, never errors.

/// Everything that can go wrong outside of answering one call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQLite database could not be opened or its barrier table created.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL connection or statement failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL server cannot prepare transactions.
    #[error(
        "the PostgreSQL server has max_prepared_transactions = 0; set it above 0 (at least \
         max_connections is the usual advice) and restart it"
    )]
    PreparedTransactionsDisabled,
    /// No PostgreSQL connection could be had in time (all in use, or connecting hangs).
    #[error("no PostgreSQL connection available within {0:?}")]
    PoolTimeout(std::time::Duration),
    /// The coordinator's URL is not usable.
    #[error("invalid coordinator URL {url:?}: {reason}")]
    CoordinatorUrl { url: String, reason: String },
    /// The HTTP client for the coordinator could not be built.
    #[error("building HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// A blocking database task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
