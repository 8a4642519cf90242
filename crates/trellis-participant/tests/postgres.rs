//! The PostgreSQL participant against a real PostgreSQL server started by each test (see
//! `trellis_participant::testing`): prepared transactions, duplicates, abort before prepare, no
//! votes, lock waits, prepare racing abort, recovery of branches in doubt through a fake
//! coordinator, and prepared transactions surviving a crash of the server.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::Router;
use serde::Deserialize;
use serde_json::{Value, json};
use support::coordinator::{FakeCoordinator, Reply as Coord};
use support::{call, call_until_settled};
use tokio_postgres::Transaction;
use trellis_participant::testing::PgServer;
use trellis_participant::{
    Branch, BranchError, Connector, Error, InDoubt, PgBranch, PgOptions, PgParticipant, router,
};

struct Accounts;

#[derive(Deserialize)]
struct Debit {
    account: String,
    amount: i64,
}

impl PgBranch for Accounts {
    async fn prepare(&self, tx: &Transaction<'_>, branch: &Branch) -> Result<(), BranchError> {
        let debit: Debit = branch.payload_as()?;
        let updated = tx
            .execute(
                "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2",
                &[&debit.account, &debit.amount],
            )
            .await?;
        if updated == 0 {
            return Err(BranchError::no("insufficient funds"));
        }
        Ok(())
    }
}

fn debit(amount: i64) -> Value {
    json!({ "account": "alice", "amount": amount })
}

fn options() -> PgOptions {
    PgOptions {
        lock_timeout: Duration::from_millis(200),
        ..PgOptions::default()
    }
}

async fn participant(pg: &PgServer) -> PgParticipant<Accounts> {
    PgParticipant::connect(
        Connector::new(pg.config(), tokio_postgres::NoTls),
        options(),
        Accounts,
    )
    .await
    .expect("participant")
}

/// A server with alice's account (100) and the participant's routes.
async fn setup() -> (PgServer, tokio_postgres::Client, Router) {
    let pg = PgServer::start();
    let client = pg.connect().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts VALUES ('alice', 100);",
        )
        .await
        .unwrap();
    let app = router(participant(&pg).await);
    (pg, client, app)
}

async fn balance(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT balance FROM accounts WHERE id = 'alice'", &[])
        .await
        .unwrap()
        .get(0)
}

async fn prepared(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT gid FROM pg_prepared_xacts ORDER BY gid", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn prepare_then_commit_and_every_duplicate() {
    let (_pg, client, app) = setup().await;
    call(&app, "prepare", "g1", "b1", debit(30))
        .await
        .done("prepared");
    assert_eq!(prepared(&client).await, ["trellis:g1:b1"]);
    assert_eq!(balance(&client).await, 100, "not visible before the commit");
    // Returns at once, without waiting for the barrier row its own prepared transaction holds.
    call(&app, "prepare", "g1", "b1", debit(30))
        .await
        .done("already_prepared");

    call(&app, "commit", "g1", "b1", debit(30))
        .await
        .done("committed");
    assert_eq!(balance(&client).await, 70);
    assert!(prepared(&client).await.is_empty());
    call(&app, "commit", "g1", "b1", debit(30))
        .await
        .done("already_committed");
    call(&app, "prepare", "g1", "b1", debit(30))
        .await
        .done("already_prepared");
    assert_eq!(balance(&client).await, 70);
    assert!(
        prepared(&client).await.is_empty(),
        "the repeat prepared nothing"
    );

    // An abort after the commit is a coordinator bug: refused, nothing undone or marked.
    call(&app, "abort", "g1", "b1", debit(30)).await.no();
    call(&app, "commit", "g1", "b1", debit(30))
        .await
        .done("already_committed");
    assert_eq!(balance(&client).await, 70);
}

#[tokio::test]
async fn prepare_then_abort_rolls_back_and_a_late_prepare_votes_no() {
    let (_pg, client, app) = setup().await;
    call(&app, "prepare", "g1", "b1", debit(40))
        .await
        .done("prepared");
    call(&app, "abort", "g1", "b1", debit(40))
        .await
        .done("aborted");
    assert!(prepared(&client).await.is_empty());
    assert_eq!(balance(&client).await, 100);
    call(&app, "abort", "g1", "b1", debit(40))
        .await
        .done("already_aborted");

    let late = call(&app, "prepare", "g1", "b1", debit(40)).await;
    late.no();
    assert_eq!(late.text(), "transaction already aborted");
    assert!(prepared(&client).await.is_empty());
    call(&app, "commit", "g1", "b1", debit(40)).await.no();
    assert_eq!(balance(&client).await, 100);
}

#[tokio::test]
async fn abort_before_prepare_and_no_votes() {
    let (_pg, client, app) = setup().await;
    call(&app, "abort", "g1", "b1", debit(10))
        .await
        .done("aborted_before_prepare");
    call(&app, "abort", "g1", "b1", debit(10))
        .await
        .done("already_aborted");
    call(&app, "prepare", "g1", "b1", debit(10)).await.no();
    call(&app, "prepare", "g1", "b1", debit(10)).await.no();
    assert!(prepared(&client).await.is_empty());
    assert_eq!(balance(&client).await, 100);
    call(&app, "prepare", "g1", "b2", debit(10))
        .await
        .done("prepared");

    let no = call(&app, "prepare", "g2", "b1", debit(500)).await;
    no.no();
    assert_eq!(no.text(), "insufficient funds");
    assert_eq!(prepared(&client).await, ["trellis:g1:b2"]);
    call(&app, "abort", "g2", "b1", debit(500))
        .await
        .done("aborted_before_prepare");
    call(&app, "prepare", "g2", "b1", debit(5)).await.no();
    call(&app, "commit", "g2", "b1", debit(5)).await.no();
    call(&app, "abort", "g1", "b2", debit(10))
        .await
        .done("aborted");
    assert!(prepared(&client).await.is_empty());
    assert_eq!(balance(&client).await, 100);
}

/// A prepared branch keeps its row locks: a second branch on the same row waits at most
/// `lock_timeout` and is answered 503, then prepares once the first commits.
#[tokio::test]
async fn a_lock_held_by_a_prepared_branch_answers_503_until_released() {
    let (_pg, client, app) = setup().await;
    call(&app, "prepare", "g1", "b1", debit(10))
        .await
        .done("prepared");
    let waited = call(&app, "prepare", "g2", "b1", debit(10)).await;
    waited.later();
    assert_eq!(waited.text(), "database busy");
    assert_eq!(prepared(&client).await, ["trellis:g1:b1"]);
    call(&app, "commit", "g1", "b1", debit(10))
        .await
        .done("committed");
    call(&app, "prepare", "g2", "b1", debit(10))
        .await
        .done("prepared");
    call(&app, "commit", "g2", "b1", debit(10))
        .await
        .done("committed");
    assert_eq!(balance(&client).await, 80);
}

/// Prepare and abort of one branch at the same moment, on separate connections: whichever
/// wins, no prepared transaction survives the abort's 200, nothing is debited, and any later
/// prepare votes no. (When the prepare is mid-flight the abort waits on its barrier row and
/// gets 503, then rolls the prepared transaction back on the retry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_racing_abort_of_the_same_branch_stays_consistent() {
    let (pg, client, app) = setup().await;
    let second = router(participant(&pg).await);
    let rounds = 30;
    let mut tasks = Vec::new();
    for i in 0..rounds {
        let gid = format!("race-{i}");
        let (a, b) = if i % 2 == 0 {
            (app.clone(), second.clone())
        } else {
            (second.clone(), app.clone())
        };
        let g = gid.clone();
        let prepare =
            tokio::spawn(async move { call_until_settled(&a, "prepare", &g, "b", debit(1)).await });
        let g = gid.clone();
        let abort =
            tokio::spawn(async move { call_until_settled(&b, "abort", &g, "b", debit(1)).await });
        tasks.push((gid, prepare, abort));
    }
    let (mut prepared_first, mut aborted_first) = (0, 0);
    for (gid, prepare, abort) in tasks {
        let (prepare, abort) = (prepare.await.unwrap(), abort.await.unwrap());
        match (prepare.status, abort.text()) {
            (200, "aborted") => prepared_first += 1,
            (409, "aborted_before_prepare") => aborted_first += 1,
            // The prepare went through but its answer was "later" (503: no connection in the
            // prepares' share of the pool in time, or the abort holding the barrier row), the
            // abort rolled it back, and the prepare's retry was refused: a no vote, consistent.
            (409, "aborted") => prepared_first += 1,
            other => panic!("{gid}: inconsistent outcome {other:?}: {prepare:?} {abort:?}"),
        }
        call(&app, "prepare", &gid, "b", debit(1)).await.no();
    }
    assert!(
        prepared(&client).await.is_empty(),
        "a prepared transaction outlived its abort"
    );
    assert_eq!(balance(&client).await, 100);
    eprintln!("prepare first: {prepared_first}, abort first: {aborted_first}");
}

/// Branches prepared before a crash of PostgreSQL are still prepared after it, and
/// `resolve_in_doubt` settles each by the fake coordinator's answer.
#[tokio::test]
async fn prepared_branches_survive_a_crash_and_are_resolved_by_the_coordinator() {
    let (mut pg, client, app) = setup().await;
    client
        .batch_execute(
            "INSERT INTO accounts VALUES ('committed', 100), ('committing', 100),
             ('aborted', 100), ('aborting', 100), ('forgotten', 100), ('preparing', 100),
             ('unreachable', 100), ('long', 100);",
        )
        .await
        .unwrap();
    let long_branch = format!("branch:{}", "x".repeat(200));
    let branches = [
        ("committed", "b1"),
        ("committing", "b1"),
        ("aborted", "b1"),
        ("aborting", "b1"),
        ("forgotten", "b1"),
        ("preparing", "b1"),
        ("unreachable", "b1"),
        ("long", long_branch.as_str()),
    ];
    for (account, branch) in branches {
        let payload = json!({ "account": account, "amount": 10 });
        call(&app, "prepare", &format!("gid-{account}"), branch, payload)
            .await
            .done("prepared");
    }
    // A second branch of one transaction, to see the coordinator asked once per gid.
    client
        .batch_execute("INSERT INTO accounts VALUES ('committed-2', 100)")
        .await
        .unwrap();
    call(
        &app,
        "prepare",
        "gid-committed",
        "b2",
        json!({ "account": "committed-2", "amount": 10 }),
    )
    .await
    .done("prepared");
    drop((client, app));

    pg.restart_after_crash();
    let client = pg.connect().await;
    let before = prepared(&client).await;
    assert_eq!(before.len(), 9, "{before:?}");
    assert!(before.contains(&"trellis:gid-committed:b1".to_string()));
    assert_eq!(
        before.iter().filter(|x| x.starts_with("trellis:#")).count(),
        1,
        "the long branch id has a hashed name: {before:?}"
    );

    let coordinator = FakeCoordinator::start(&[
        ("gid-committed", Coord::State("committed")),
        ("gid-committing", Coord::State("committing")),
        ("gid-aborted", Coord::State("aborted")),
        ("gid-aborting", Coord::State("aborting")),
        ("gid-preparing", Coord::State("preparing")),
        ("gid-unreachable", Coord::Status(500)),
        ("gid-long", Coord::State("aborted")),
        // gid-forgotten: 404, presumed abort.
    ])
    .await;
    let participant = participant(&pg).await;
    let report = participant
        .resolve_in_doubt(&format!("{}/", coordinator.url))
        .await
        .expect("resolve");

    let gids = |list: &[InDoubt]| {
        let mut gids: Vec<String> = list
            .iter()
            .map(|x| format!("{}/{}", x.gid, x.branch_id))
            .collect();
        gids.sort();
        gids
    };
    assert_eq!(
        gids(&report.committed),
        ["gid-committed/b1", "gid-committed/b2", "gid-committing/b1"]
    );
    assert_eq!(
        gids(&report.aborted),
        [
            "gid-aborted/b1".to_string(),
            "gid-aborting/b1".into(),
            "gid-forgotten/b1".into(),
            format!("gid-long/{long_branch}")
        ]
    );
    assert_eq!(gids(&report.left), ["gid-preparing/b1"]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0.gid, "gid-unreachable");
    assert!(report.failed[0].1.contains("500"), "{report:?}");
    let mut asked = coordinator.asked();
    asked.sort();
    assert_eq!(
        asked,
        [
            "gid-aborted",
            "gid-aborting",
            "gid-committed",
            "gid-committing",
            "gid-forgotten",
            "gid-long",
            "gid-preparing",
            "gid-unreachable"
        ],
        "one question per gid"
    );

    let balances: Vec<(String, i64)> = client
        .query(
            "SELECT id, balance FROM accounts WHERE id <> 'alice' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expect = |id: &str, balance: i64| (id.to_string(), balance);
    assert_eq!(
        balances,
        [
            expect("aborted", 100),
            expect("aborting", 100),
            expect("committed", 90),
            expect("committed-2", 90),
            expect("committing", 90),
            expect("forgotten", 100),
            expect("long", 100),
            expect("preparing", 100),
            expect("unreachable", 100),
        ]
    );
    assert_eq!(
        prepared(&client).await,
        ["trellis:gid-preparing:b1", "trellis:gid-unreachable:b1"]
    );

    // What recovery rolled back is marked: a prepare still on its way votes no; the
    // coordinator's own calls for what it settled are no-ops.
    let app = router(participant.clone());
    let payload = |account: &str| json!({ "account": account, "amount": 10 });
    call(&app, "prepare", "gid-aborted", "b1", payload("aborted"))
        .await
        .no();
    call(&app, "prepare", "gid-long", &long_branch, payload("long"))
        .await
        .no();
    call(&app, "prepare", "gid-forgotten", "b1", payload("forgotten"))
        .await
        .no();
    call(&app, "abort", "gid-aborting", "b1", payload("aborting"))
        .await
        .done("already_aborted");
    call(
        &app,
        "commit",
        "gid-committing",
        "b1",
        payload("committing"),
    )
    .await
    .done("already_committed");
    // What was left is settled by the coordinator's calls as usual.
    call(&app, "prepare", "gid-preparing", "b1", payload("preparing"))
        .await
        .done("already_prepared");
    call(&app, "commit", "gid-preparing", "b1", payload("preparing"))
        .await
        .done("committed");
    call(
        &app,
        "abort",
        "gid-unreachable",
        "b1",
        payload("unreachable"),
    )
    .await
    .done("aborted");
    assert!(prepared(&client).await.is_empty());

    // A second run finds nothing to do.
    let again = participant
        .resolve_in_doubt(&coordinator.url)
        .await
        .unwrap();
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn a_server_that_cannot_prepare_transactions_is_refused_at_start() {
    let pg = PgServer::start_with(&[("max_prepared_transactions", "0")]);
    let result = PgParticipant::connect(
        Connector::new(pg.config(), tokio_postgres::NoTls),
        options(),
        Accounts,
    )
    .await;
    match result {
        Err(e @ Error::PreparedTransactionsDisabled) => {
            assert!(e.to_string().contains("max_prepared_transactions"))
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("connected to a server without prepared transactions"),
    }
}
