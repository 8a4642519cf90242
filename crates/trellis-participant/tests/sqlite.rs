//! The SQLite participant through its HTTP routes, on a real database file in a temp dir: the
//! happy paths, duplicates of every call, abort before prepare, no votes, failures and a busy
//! database, and prepare racing abort for the same branch across two connections.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use rusqlite::{Connection, Transaction, params};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Reply, call, call_until_settled, post, send};
use trellis_participant::{
    BODY_LIMIT, Branch, BranchError, SqliteBranch, SqliteParticipant, router,
};

/// Accounts with a frozen amount, TCC style; every hook also logs itself in `calls`, in the
/// same transaction, so the tests can see exactly which hooks ran.
#[derive(Default)]
struct Accounts {
    /// Fail the next prepare with an error that is not a vote.
    fail_next: AtomicBool,
}

#[derive(Deserialize)]
struct Debit {
    account: String,
    amount: i64,
}

fn log(tx: &Transaction<'_>, branch: &Branch, op: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO calls (gid, branch_id, op) VALUES (?1, ?2, ?3)",
        params![branch.gid, branch.branch_id, op],
    )?;
    Ok(())
}

impl SqliteBranch for Accounts {
    fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(BranchError::failed("injected failure"));
        }
        let debit: Debit = branch.payload_as()?;
        log(tx, branch, "prepare")?;
        let frozen = tx.execute(
            "UPDATE accounts SET frozen = frozen + ?2 WHERE id = ?1 AND balance - frozen >= ?2",
            params![debit.account, debit.amount],
        )?;
        if frozen == 0 {
            return Err(BranchError::no("insufficient funds"));
        }
        Ok(())
    }

    fn commit(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let debit: Debit = branch.payload_as()?;
        log(tx, branch, "commit")?;
        tx.execute(
            "UPDATE accounts SET balance = balance - ?2, frozen = frozen - ?2 WHERE id = ?1",
            params![debit.account, debit.amount],
        )?;
        Ok(())
    }

    fn abort(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let debit: Debit = branch.payload_as()?;
        log(tx, branch, "abort")?;
        tx.execute(
            "UPDATE accounts SET frozen = frozen - ?2 WHERE id = ?1",
            params![debit.account, debit.amount],
        )?;
        Ok(())
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, balance INTEGER NOT NULL, frozen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (gid TEXT, branch_id TEXT, op TEXT);
INSERT OR IGNORE INTO accounts VALUES ('alice', 100, 0);";

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    participant: SqliteParticipant<Accounts>,
    app: Router,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("accounts.db");
    Connection::open(&path)
        .expect("open")
        .execute_batch(SCHEMA)
        .expect("schema");
    let participant = SqliteParticipant::open(&path, Accounts::default())
        .await
        .expect("participant");
    let app = router(participant.clone());
    Fixture {
        _dir: dir,
        path,
        participant,
        app,
    }
}

fn debit(amount: i64) -> Value {
    json!({ "account": "alice", "amount": amount })
}

/// (balance, frozen) of alice, read on a connection of its own.
fn alice(path: &Path) -> (i64, i64) {
    Connection::open(path)
        .expect("open")
        .query_row(
            "SELECT balance, frozen FROM accounts WHERE id = 'alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("alice")
}

/// The hooks that ran for a gid, in order.
fn calls(path: &Path, gid: &str) -> Vec<String> {
    let conn = Connection::open(path).expect("open");
    let mut stmt = conn
        .prepare("SELECT op FROM calls WHERE gid = ?1 ORDER BY rowid")
        .expect("prepare");
    stmt.query_map([gid], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test]
async fn prepare_then_commit_and_every_duplicate() {
    let f = fixture().await;
    call(&f.app, "prepare", "g1", "b1", debit(30))
        .await
        .done("prepared");
    assert_eq!(alice(&f.path), (100, 30));
    call(&f.app, "prepare", "g1", "b1", debit(30))
        .await
        .done("already_prepared");
    assert_eq!(
        alice(&f.path),
        (100, 30),
        "a repeated prepare freezes nothing more"
    );

    call(&f.app, "commit", "g1", "b1", debit(30))
        .await
        .done("committed");
    assert_eq!(alice(&f.path), (70, 0));
    call(&f.app, "commit", "g1", "b1", debit(30))
        .await
        .done("already_committed");
    call(&f.app, "prepare", "g1", "b1", debit(30))
        .await
        .done("already_prepared");
    assert_eq!(alice(&f.path), (70, 0));
    assert_eq!(calls(&f.path, "g1"), ["prepare", "commit"]);

    // An abort after the commit is a coordinator bug: refused, nothing undone.
    call(&f.app, "abort", "g1", "b1", debit(30)).await.no();
    assert_eq!(alice(&f.path), (70, 0));
    assert_eq!(calls(&f.path, "g1"), ["prepare", "commit"]);
}

#[tokio::test]
async fn prepare_then_abort_runs_the_compensation_once() {
    let f = fixture().await;
    call(&f.app, "prepare", "g1", "b1", debit(40))
        .await
        .done("prepared");
    assert_eq!(alice(&f.path), (100, 40));
    call(&f.app, "abort", "g1", "b1", debit(40))
        .await
        .done("aborted");
    assert_eq!(alice(&f.path), (100, 0));
    call(&f.app, "abort", "g1", "b1", debit(40))
        .await
        .done("already_aborted");
    assert_eq!(alice(&f.path), (100, 0));

    // A prepare repeated after the abort (a late retry) votes no and freezes nothing.
    let late = call(&f.app, "prepare", "g1", "b1", debit(40)).await;
    late.no();
    assert_eq!(late.text(), "transaction already aborted");
    // A commit after an abort is a coordinator bug: refused.
    call(&f.app, "commit", "g1", "b1", debit(40)).await.no();
    assert_eq!(alice(&f.path), (100, 0));
    assert_eq!(calls(&f.path, "g1"), ["prepare", "abort"]);
}

#[tokio::test]
async fn abort_before_prepare_is_a_no_op_and_the_late_prepare_votes_no() {
    let f = fixture().await;
    call(&f.app, "abort", "g1", "b1", debit(10))
        .await
        .done("aborted_before_prepare");
    call(&f.app, "abort", "g1", "b1", debit(10))
        .await
        .done("already_aborted");
    call(&f.app, "prepare", "g1", "b1", debit(10)).await.no();
    call(&f.app, "prepare", "g1", "b1", debit(10)).await.no();
    assert_eq!(alice(&f.path), (100, 0));
    assert!(calls(&f.path, "g1").is_empty(), "no hook ran");
    // Other branches of the same transaction are not affected by this one's barrier.
    call(&f.app, "prepare", "g1", "b2", debit(10))
        .await
        .done("prepared");
}

#[tokio::test]
async fn a_no_vote_changes_nothing_and_its_abort_compensates_nothing() {
    let f = fixture().await;
    let no = call(&f.app, "prepare", "g1", "b1", debit(500)).await;
    no.no();
    assert_eq!(no.text(), "insufficient funds");
    assert_eq!(alice(&f.path), (100, 0));
    assert!(calls(&f.path, "g1").is_empty(), "the no vote rolled back");
    // The coordinator aborts: nothing was prepared, so nothing is undone.
    call(&f.app, "abort", "g1", "b1", debit(500))
        .await
        .done("aborted_before_prepare");
    call(&f.app, "prepare", "g1", "b1", debit(5)).await.no();
    assert_eq!(alice(&f.path), (100, 0));
    assert!(calls(&f.path, "g1").is_empty());
    // A payload the service cannot read is a no vote too.
    let bad = call(&f.app, "prepare", "g2", "b1", json!({ "amount": "lots" })).await;
    bad.no();
    assert!(bad.text().starts_with("invalid payload"), "{bad:?}");
}

#[tokio::test]
async fn a_failing_prepare_answers_503_and_its_retry_prepares() {
    let f = fixture().await;
    f.participant
        .handler()
        .fail_next
        .store(true, Ordering::SeqCst);
    let failed = call(&f.app, "prepare", "g1", "b1", debit(10)).await;
    failed.later();
    assert_eq!(
        failed.text(),
        "prepare failed",
        "no internals in the answer"
    );
    assert_eq!(alice(&f.path), (100, 0));
    let barrier_rows: i64 = f
        .participant
        .with_db(|db| db.query_row("SELECT count(*) FROM trellis_barrier", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(
        barrier_rows, 0_i64,
        "the barrier row was rolled back with the rest"
    );
    // So the retry runs the prepare.
    call(&f.app, "prepare", "g1", "b1", debit(10))
        .await
        .done("prepared");
    assert_eq!(alice(&f.path), (100, 10));
}

#[tokio::test]
async fn a_busy_database_answers_503_until_it_is_free() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("accounts.db");
    Connection::open(&path)
        .expect("open")
        .execute_batch(SCHEMA)
        .expect("schema");
    let conn = Connection::open(&path).expect("open");
    let participant =
        SqliteParticipant::with_connection(conn, Duration::from_millis(100), Accounts::default())
            .await
            .expect("participant");
    let app = router(participant);

    // Another process (here: connection) holds the write lock.
    let mut other = Connection::open(&path).expect("open");
    let holding = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("begin immediate");
    let busy = call(&app, "prepare", "g1", "b1", debit(10)).await;
    busy.later();
    assert_eq!(busy.text(), "database busy");
    call(&app, "abort", "g1", "b1", debit(10)).await.later();
    holding.rollback().expect("rollback");

    call(&app, "prepare", "g1", "b1", debit(10))
        .await
        .done("prepared");
    call(&app, "commit", "g1", "b1", debit(10))
        .await
        .done("committed");
    assert_eq!(alice(&path), (90, 0));
}

/// Two instances of the service (two connections to one file), one receiving the prepare and
/// the other the abort of the same branch at the same moment: whichever wins, the outcome is
/// consistent: nothing stays frozen, the compensation ran exactly when the prepare did, and
/// any later prepare votes no.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_racing_abort_of_the_same_branch_stays_consistent() {
    let f = fixture().await;
    let second = SqliteParticipant::open(&f.path, Accounts::default())
        .await
        .expect("second instance");
    let (app_a, app_b) = (Arc::new(f.app.clone()), Arc::new(router(second)));

    let rounds = 60;
    let mut tasks = Vec::new();
    for i in 0..rounds {
        let gid = format!("race-{i}");
        // Alternate which instance gets which call, and which is spawned first.
        let (prepare_app, abort_app) = if i % 2 == 0 {
            (Arc::clone(&app_a), Arc::clone(&app_b))
        } else {
            (Arc::clone(&app_b), Arc::clone(&app_a))
        };
        let g = gid.clone();
        let prepare = tokio::spawn(async move {
            call_until_settled(&prepare_app, "prepare", &g, "b", debit(1)).await
        });
        let g = gid.clone();
        let abort = tokio::spawn(async move {
            call_until_settled(&abort_app, "abort", &g, "b", debit(1)).await
        });
        tasks.push((gid, prepare, abort));
    }

    let (mut prepared_first, mut aborted_first) = (0, 0);
    for (gid, prepare, abort) in tasks {
        let (prepare, abort): (Reply, Reply) = (prepare.await.unwrap(), abort.await.unwrap());
        match (prepare.status, abort.text()) {
            (200, "aborted") => {
                prepared_first += 1;
                assert_eq!(calls(&f.path, &gid), ["prepare", "abort"], "{gid}");
            }
            (409, "aborted_before_prepare") => {
                aborted_first += 1;
                assert!(calls(&f.path, &gid).is_empty(), "{gid}");
            }
            other => panic!("{gid}: inconsistent outcome {other:?}: {prepare:?} {abort:?}"),
        }
        call(&f.app, "prepare", &gid, "b", debit(1)).await.no();
    }
    assert_eq!(alice(&f.path), (100, 0), "nothing left frozen");
    eprintln!("prepare first: {prepared_first}, abort first: {aborted_first}");
}

#[tokio::test]
async fn malformed_calls_are_answered_400_413_405() {
    let f = fixture().await;
    for (body, why) in [
        ("not json".to_string(), "invalid body"),
        (json!({ "branch_id": "b" }).to_string(), "invalid body"),
        (
            json!({ "gid": "", "branch_id": "b" }).to_string(),
            "gid must not be empty",
        ),
        (
            json!({ "gid": "g", "branch_id": "b".repeat(257) }).to_string(),
            "branch_id is longer than 256 bytes",
        ),
        (
            json!({ "gid": 7, "branch_id": "b" }).to_string(),
            "invalid body",
        ),
    ] {
        let reply = post(&f.app, "/prepare", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert!(reply.text().starts_with(why), "{body}: {reply:?}");
    }
    let huge = json!({ "gid": "g", "branch_id": "b", "payload": "x".repeat(BODY_LIMIT) });
    assert_eq!(post(&f.app, "/commit", huge.to_string()).await.status, 413);
    let get = Request::get("/abort").body(Body::empty()).unwrap();
    assert_eq!(send(&f.app, get).await.status, 405);
    // A missing payload is null, which this service reads as a no vote, not a 400.
    let reply = post(
        &f.app,
        "/prepare",
        json!({ "gid": "g", "branch_id": "b" }).to_string(),
    )
    .await;
    reply.no();
    assert_eq!(alice(&f.path), (100, 0));
}

/// The routes nested under a base path and served on a real socket on 127.0.0.1, as the
/// coordinator reaches them.
#[tokio::test]
async fn served_over_http_under_a_base_path() {
    let f = fixture().await;
    let app = Router::new().nest("/txn/debit", f.app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/txn/debit", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let body = json!({ "gid": "g1", "branch_id": "b1", "payload": debit(25) });
    for (phase, result) in [("prepare", "prepared"), ("commit", "committed")] {
        let response = http
            .post(format!("{base}/{phase}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer, json!({ "result": result }));
    }
    assert_eq!(alice(&f.path), (75, 0));
    server.abort();
}
