//! The crate's single error type, for start-up and storage failures.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong outside of answering a single request badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Arguments that make no sense; reported before any port is bound.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database file could not be opened or prepared.
    #[error("opening database {path}: {source}")]
    OpenDb {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an IO error.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    /// The HTTP client for the users service could not be built.
    #[error("building HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A blocking database task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The bank's two-phase-commit participant (its database, or asking the coordinator about
    /// branches in doubt) failed.
    #[error("bank: {0}")]
    Participant(trellis_participant::Error),
}

impl From<trellis_participant::Error> for Error {
    fn from(e: trellis_participant::Error) -> Self {
        Error::Participant(e)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Participant(trellis_participant::Error::Postgres(e))
    }
}

impl Error {
    /// True when SQLite gave up waiting for another connection's lock, which is a transient
    /// overload rather than a bug.
    pub(crate) fn is_busy(&self) -> bool {
        let source = match self {
            Error::Db(e) | Error::OpenDb { source: e, .. } => e,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
