//! SQLite access shared by the services: safe for several processes on one file, and never
//! run on the async runtime's worker threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tracing::Instrument;
use tracing::field::Empty;

use crate::Error;

/// How long a statement waits for another process's write lock before failing. Writes are
/// single short statements, so a wait this long means real overload, not contention.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a service's database looks like.
pub(crate) struct Schema {
    /// Stored in `PRAGMA application_id` so that pointing one service at the other's file is
    /// an error at start-up instead of confusing 500s later.
    pub application_id: i32,
    pub service: &'static str,
    /// Idempotent DDL (`CREATE ... IF NOT EXISTS`), run on every start.
    pub ddl: &'static str,
    /// Brings a file made by an older version up to date (e.g. adds a column), after `ddl` and
    /// in the same transaction, on every start; it must be idempotent.
    pub migrate: Option<fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>>,
    /// Run once in the life of the file.
    pub seed: &'static str,
}

/// What a query does, for its span and its latency metric: the SQL verb and the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query {
    pub operation: &'static str,
    pub table: &'static str,
}

impl Query {
    pub(crate) const fn new(operation: &'static str, table: &'static str) -> Self {
        Self { operation, table }
    }

    /// `SELECT users`: the span's name, as OpenTelemetry's database conventions suggest.
    fn summary(self) -> String {
        format!("{} {}", self.operation, self.table)
    }
}

/// One connection per instance. A mutex is enough: the demo's load is tiny, and a single
/// connection keeps every write a plain autocommit statement.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub(crate) async fn open(path: &Path, schema: &'static Schema) -> Result<Self, Error> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || open_retrying(&path, schema)).await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f`, the query `query` describes, on a blocking thread; SQLite may wait up to
    /// [`BUSY_TIMEOUT`] for a lock. The query is a span (child of the request's) and its time
    /// goes to `trellis_db_query_duration_seconds`.
    pub(crate) async fn call<T, F>(&self, query: Query, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // Only inside a traced request: a query of its own (a health probe's) would otherwise
        // be a one-span trace.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            "query",
            otel.name = %query.summary(),
            otel.kind = "client",
            otel.status_code = Empty,
            db.system = "sqlite",
            db.system.name = "sqlite",
            db.operation = query.operation,
            db.operation.name = query.operation,
            db.collection.name = query.table,
            db.query.summary = %query.summary(),
            error.type = Empty,
            )
        };
        let conn = Arc::clone(&self.conn);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave the connection half-used: every
            // statement is self-contained, so a poisoned lock is still safe to use.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .instrument(span.clone())
        .await;
        crate::metrics::observe_query(query.operation, query.table, started.elapsed());
        let result = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => Error::from(e),
            Err(e) => Error::from(e),
        };
        span.record("otel.status_code", "ERROR");
        span.record(
            "error.type",
            if result.is_busy() { "busy" } else { "sqlite" },
        );
        Err(result)
    }
}

/// Opens with retries: when two processes open a fresh file at the same moment, switching it to
/// WAL or upgrading a lock can fail with SQLITE_BUSY at once, without the busy handler
/// waiting (SQLite refuses to wait where waiting could deadlock). Starting over is safe: the
/// whole open is idempotent.
fn open_retrying(path: &Path, schema: &Schema) -> Result<Connection, Error> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match open_blocking(path, schema) {
            Err(Error::OpenDb { source, .. })
                if is_busy(&source) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn open_blocking(path: &Path, schema: &Schema) -> Result<Connection, Error> {
    let fail = |source| Error::OpenDb {
        path: PathBuf::from(path),
        source,
    };
    let mut conn = Connection::open(path).map_err(fail)?;
    // Set before anything else so that even switching to WAL waits for a sibling instance
    // that is doing the same thing at the same moment.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some filesystems (network mounts) cannot do WAL; SQLite still locks correctly in
        // rollback mode, only with less read/write concurrency.
        tracing::warn!(path = %path.display(), %mode, "SQLite could not enable WAL mode");
    }
    // NORMAL is durable against process crashes in WAL mode, which is what a demo needs.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;

    // IMMEDIATE takes the write lock up front, so two instances starting together serialise
    // here and the second one sees that the first has already seeded.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let app_id: i32 = tx
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(fail)?;
    let version: i32 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail)?;
    if version != 0 && app_id != schema.application_id {
        return Err(Error::Config(format!(
            "{} is not a {} database",
            path.display(),
            schema.service
        )));
    }
    tx.execute_batch(schema.ddl).map_err(fail)?;
    if let Some(migrate) = schema.migrate {
        migrate(&tx).map_err(fail)?;
    }
    if version == 0 {
        tx.execute_batch(schema.seed).map_err(fail)?;
        tx.pragma_update(None, "application_id", schema.application_id)
            .map_err(fail)?;
        tx.pragma_update(None, "user_version", 1).map_err(fail)?;
    }
    tx.commit().map_err(fail)?;
    Ok(conn)
}

/// Opens a service's two-phase-commit participant on its database file: a connection of its own
/// (in WAL mode, `synchronous = FULL` so that a yes vote survives a power loss) next to the
/// service's [`Db`], and the participant library's barrier table. Open the [`Db`] first, so
/// that the schema exists.
pub(crate) async fn participant<H: trellis_participant::SqliteBranch>(
    path: &Path,
    handler: H,
) -> Result<trellis_participant::SqliteParticipant<H>, Error> {
    trellis_participant::SqliteParticipant::open(path, handler)
        .await
        .map_err(|e| match e {
            trellis_participant::Error::Sqlite(source) => Error::OpenDb {
                path: path.to_owned(),
                source,
            },
            trellis_participant::Error::Task(e) => Error::Task(e),
            other => Error::from(other),
        })
}
