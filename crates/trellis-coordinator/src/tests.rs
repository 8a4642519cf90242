//! Every transition, timeout and duplicate message of the engine, with an injected clock.

use crate::engine::Stats;
use crate::*;
use std::sync::Arc;

const T0: Millis = 1_000_000;

fn engine() -> Engine {
    Engine::new(Config::default(), 7)
}

fn url(n: u32) -> Target {
    Target::Url(format!("http://127.0.0.1:{}/txn", 9000 + n))
}

fn payload(text: &str) -> Arc<str> {
    Arc::from(text)
}

/// Begins `gid` with branches `a` and `b` and takes the effects of doing so.
fn begin_two(engine: &mut Engine, gid: &str) -> Effects {
    engine.begin(gid, None, T0).expect("begin");
    engine
        .add_branch(gid, "a", url(1), payload(r#"{"n":1}"#))
        .expect("a");
    engine
        .add_branch(gid, "b", url(2), payload(r#"{"n":2}"#))
        .expect("b");
    engine.take_effects()
}

fn sends(effects: &Effects) -> Vec<(String, Phase, u32)> {
    effects
        .sends
        .iter()
        .map(|m| (m.branch.clone(), m.phase, m.attempt))
        .collect()
}

fn state(engine: &Engine, gid: &str) -> TxnState {
    engine.get(gid).expect("txn").state
}

fn branch_state(engine: &Engine, gid: &str, branch: &str) -> BranchState {
    engine
        .get(gid)
        .and_then(|txn| txn.branch(branch))
        .expect("branch")
        .state
}

#[test]
fn begin_is_durable_and_idempotent() {
    let mut engine = engine();
    let first = engine.begin("g", Some(500), T0).expect("begin").clone();
    let effects = engine.take_effects();
    assert!(effects.persist.contains("g"));
    assert!(effects.sends.is_empty());
    assert_eq!(first.state, TxnState::Open);
    assert_eq!(first.deadline(), T0 + 500);

    let again = engine
        .begin("g", Some(9_999), T0 + 10)
        .expect("again")
        .clone();
    assert_eq!(again, first, "a second begin changes nothing");
    assert!(engine.take_effects().is_empty());
    assert_eq!(engine.stats().begun, 1);
}

#[test]
fn the_first_trace_id_is_kept_and_written() {
    let mut engine = engine();
    engine.begin("g", None, T0).expect("begin");
    engine.take_effects();
    engine.set_trace_id("g", "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(engine.take_effects().persist.contains("g"));
    engine.set_trace_id("g", "00000000000000000000000000000001");
    assert!(
        engine.take_effects().is_empty(),
        "a second trace changes nothing"
    );
    assert_eq!(
        engine.get("g").and_then(|t| t.trace_id.as_deref()),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    engine.set_trace_id("unknown", "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(engine.take_effects().is_empty());
}

#[test]
fn timeouts_are_cut_to_the_maximum() {
    let mut engine = Engine::new(
        Config {
            max_timeout_ms: 1_000,
            ..Config::default()
        },
        1,
    );
    let txn = engine.begin("g", Some(1 << 40), T0).expect("begin");
    assert_eq!(txn.timeout_ms, 1_000);
}

#[test]
fn all_yes_votes_commit_and_every_ack_finishes() {
    let mut engine = engine();
    let effects = begin_two(&mut engine, "g");
    assert!(
        effects.persist.contains("g"),
        "branch registration is durable"
    );

    assert_eq!(engine.commit("g", T0 + 1), Ok(TxnState::Preparing));
    let effects = engine.take_effects();
    assert_eq!(
        sends(&effects),
        vec![
            ("a".into(), Phase::Prepare, 1),
            ("b".into(), Phase::Prepare, 1)
        ]
    );
    assert_eq!(effects.sends[0].payload.as_ref(), r#"{"n":1}"#);

    engine.on_response("g", "a", Phase::Prepare, Response::Ok, T0 + 2);
    assert_eq!(state(&engine, "g"), TxnState::Preparing);
    assert!(engine.take_effects().sends.is_empty());

    engine.on_response("g", "b", Phase::Prepare, Response::Ok, T0 + 3);
    let effects = engine.take_effects();
    assert_eq!(state(&engine, "g"), TxnState::Committing);
    assert!(
        effects.persist.contains("g"),
        "the decision is written in the same batch as the commit messages"
    );
    assert_eq!(effects.decided, vec![Arc::<str>::from("g")]);
    assert_eq!(
        sends(&effects),
        vec![
            ("a".into(), Phase::Commit, 1),
            ("b".into(), Phase::Commit, 1)
        ]
    );
    assert_eq!(engine.get("g").expect("g").decided_at, Some(T0 + 3));
    assert_eq!(engine.in_doubt_branches(), 2);

    engine.on_response("g", "a", Phase::Commit, Response::Ok, T0 + 4);
    assert_eq!(state(&engine, "g"), TxnState::Committing);
    engine.on_response("g", "b", Phase::Commit, Response::Ok, T0 + 5);
    let effects = engine.take_effects();
    assert_eq!(state(&engine, "g"), TxnState::Committed);
    assert_eq!(effects.finished, vec![Arc::<str>::from("g")]);
    assert!(effects.persist.contains("g"));
    let txn = engine.get("g").expect("g");
    assert_eq!(txn.finished_at, Some(T0 + 5));
    assert_eq!(txn.prepare_started_at, Some(T0 + 1));
    assert_eq!(engine.active(), 0);
    assert_eq!(engine.in_doubt_branches(), 0);
    assert_eq!(engine.timers(), 0, "the timeout went with the decision");
    assert_eq!(
        engine.stats(),
        Stats {
            begun: 1,
            committed: 1,
            ..Stats::default()
        }
    );
}

#[test]
fn a_no_vote_aborts_and_tells_every_branch() {
    let mut engine = engine();
    begin_two(&mut engine, "g");
    engine.commit("g", T0).expect("commit");
    engine.take_effects();

    engine.on_response(
        "g",
        "b",
        Phase::Prepare,
        Response::Refused("insufficient funds".into()),
        T0 + 1,
    );
    let effects = engine.take_effects();
    assert_eq!(state(&engine, "g"), TxnState::Aborting);
    let txn = engine.get("g").expect("g");
    assert_eq!(
        txn.cause,
        Some(AbortCause {
            branch: Some("b".into()),
            reason: "insufficient funds".into()
        })
    );
    assert_eq!(
        txn.branch("b").expect("b").last_error.as_deref(),
        Some("insufficient funds")
    );
    assert!(effects.persist.contains("g"));
    assert_eq!(
        sends(&effects),
        vec![("a".into(), Phase::Abort, 1), ("b".into(), Phase::Abort, 1)],
        "a's prepare may have succeeded, and b's abort is harmless"
    );

    // a's prepare answer arrives late: it is for a phase a is no longer in.
    engine.on_response("g", "a", Phase::Prepare, Response::Ok, T0 + 2);
    assert_eq!(branch_state(&engine, "g", "a"), BranchState::Aborting);
    assert!(engine.take_effects().sends.is_empty());

    engine.on_response("g", "a", Phase::Abort, Response::Ok, T0 + 3);
    engine.on_response("g", "b", Phase::Abort, Response::Ok, T0 + 4);
    assert_eq!(state(&engine, "g"), TxnState::Aborted);
    assert_eq!(engine.stats().aborted, 1);
}

#[test]
fn duplicate_and_stray_answers_change_nothing() {
    let mut engine = engine();
    begin_two(&mut engine, "g");
    engine.commit("g", T0).expect("commit");
    engine.on_response("g", "a", Phase::Prepare, Response::Ok, T0 + 1);
    engine.on_response("g", "a", Phase::Prepare, Response::Ok, T0 + 2);
    engine.on_response(
        "g",
        "a",
        Phase::Prepare,
        Response::Refused("late".into()),
        T0 + 2,
    );
    assert_eq!(state(&engine, "g"), TxnState::Preparing);
    assert_eq!(branch_state(&engine, "g", "a"), BranchState::Prepared);

    engine.on_response("g", "b", Phase::Prepare, Response::Ok, T0 + 3);
    engine.take_effects();
    engine.on_response("g", "b", Phase::Prepare, Response::Ok, T0 + 4);
    assert!(engine.take_effects().sends.is_empty(), "no second decision");
    assert_eq!(engine.stats().committed, 1);

    engine.on_response("g", "a", Phase::Commit, Response::Ok, T0 + 5);
    engine.on_response("g", "a", Phase::Commit, Response::Ok, T0 + 6);
    engine.on_response("g", "a", Phase::Abort, Response::Ok, T0 + 6);
    engine.on_response("nobody", "a", Phase::Commit, Response::Ok, T0 + 6);
    engine.on_response("g", "nobody", Phase::Commit, Response::Ok, T0 + 6);
    assert_eq!(state(&engine, "g"), TxnState::Committing);
    engine.on_response("g", "b", Phase::Commit, Response::Ok, T0 + 7);
    assert_eq!(state(&engine, "g"), TxnState::Committed);
    let finished = engine.take_effects().finished;
    engine.on_response("g", "b", Phase::Commit, Response::Ok, T0 + 8);
    assert_eq!(finished.len(), 1);
    assert!(engine.take_effects().finished.is_empty());
}

#[test]
fn failed_prepares_are_retried_with_backoff_until_the_timeout_aborts() {
    let mut engine = engine();
    engine.begin("g", Some(1_000), T0).expect("begin");
    engine
        .add_branch("g", "a", url(1), payload("{}"))
        .expect("a");
    engine.commit("g", T0).expect("commit");
    engine.take_effects();

    engine.on_response(
        "g",
        "a",
        Phase::Prepare,
        Response::Failed("connection refused".into()),
        T0 + 1,
    );
    assert_eq!(
        engine
            .get("g")
            .and_then(|t| t.branch("a"))
            .and_then(|b| b.last_error.clone())
            .as_deref(),
        Some("connection refused")
    );
    let retry_at = engine.next_deadline().expect("a retry is due");
    // Equal jitter: the first retry waits between half and all of the 50 ms base.
    assert!((T0 + 26..=T0 + 51).contains(&retry_at), "{retry_at}");
    engine.tick(retry_at - 1);
    assert!(
        engine.take_effects().sends.is_empty(),
        "not before its time"
    );
    engine.tick(retry_at);
    assert_eq!(
        sends(&engine.take_effects()),
        vec![("a".into(), Phase::Prepare, 2)]
    );
    assert_eq!(engine.stats().prepare_retries, 1);

    // Keep failing: the timeout decides.
    let mut now = retry_at;
    while !state(&engine, "g").is_decided() {
        engine.on_response(
            "g",
            "a",
            Phase::Prepare,
            Response::Failed("503".into()),
            now,
        );
        now = engine.next_deadline().expect("timer");
        engine.tick(now);
    }
    assert!(
        now <= T0 + 1_000 + 1,
        "aborted at its deadline, not later: {now}"
    );
    let txn = engine.get("g").expect("g");
    assert_eq!(txn.state, TxnState::Aborting);
    let cause = txn.cause.clone().expect("cause");
    assert_eq!(cause.branch.as_deref(), Some("a"));
    assert_eq!(
        cause.reason,
        "timed out after 1000 ms before every branch voted (its last error: 503)"
    );
    let last = engine.take_effects();
    assert!(sends(&last).contains(&("a".into(), Phase::Abort, 1)));
}

#[test]
fn phase_two_is_retried_forever_with_a_capped_backoff() {
    let mut engine = engine();
    engine.begin("g", None, T0).expect("begin");
    engine
        .add_branch("g", "a", url(1), payload("{}"))
        .expect("a");
    engine.commit("g", T0).expect("commit");
    engine.on_response("g", "a", Phase::Prepare, Response::Ok, T0);
    engine.take_effects();

    let mut now = T0;
    let mut longest = 0;
    for attempt in 1..=200 {
        let error = if attempt % 2 == 0 {
            Response::Refused("409 is no answer to a commit".into())
        } else {
            Response::Failed("participant down".into())
        };
        engine.on_response("g", "a", Phase::Commit, error, now);
        let next = engine.next_deadline().expect("a retry");
        longest = longest.max(next - now);
        now = next;
        engine.tick(now);
        let effects = engine.take_effects();
        assert_eq!(
            sends(&effects),
            vec![("a".into(), Phase::Commit, attempt + 1)]
        );
    }
    assert!(longest <= 5_000, "capped at 5 s: {longest}");
    assert!(longest >= 2_500, "the cap is reached: {longest}");
    assert_eq!(engine.stats().phase2_retries, 200);
    engine.on_response("g", "a", Phase::Commit, Response::Ok, now);
    assert_eq!(state(&engine, "g"), TxnState::Committed);
}

#[test]
fn an_open_transaction_times_out_without_messages() {
    let mut engine = engine();
    begin_two(&mut engine, "g");
    engine.tick(T0 + 9_999);
    assert_eq!(state(&engine, "g"), TxnState::Open);
    engine.tick(T0 + 10_000);
    let effects = engine.take_effects();
    assert_eq!(
        state(&engine, "g"),
        TxnState::Aborted,
        "no branch heard of it"
    );
    assert!(effects.sends.is_empty());
    assert!(effects.persist.contains("g"));
    assert_eq!(
        engine
            .get("g")
            .and_then(|t| t.cause.clone())
            .map(|c| c.reason),
        Some("timed out after 10000 ms before commit was requested".into())
    );
    assert_eq!(engine.commit("g", T0 + 10_001), Ok(TxnState::Aborted));
}

#[test]
fn abort_by_request() {
    let mut engine = engine();
    begin_two(&mut engine, "open");
    engine.abort("open", T0).expect("abort open");
    assert_eq!(state(&engine, "open"), TxnState::Aborted);
    engine.abort("open", T0).expect("aborting twice is fine");

    begin_two(&mut engine, "preparing");
    engine.commit("preparing", T0).expect("commit");
    engine.take_effects();
    engine.abort("preparing", T0 + 1).expect("abort preparing");
    assert_eq!(state(&engine, "preparing"), TxnState::Aborting);
    assert_eq!(sends(&engine.take_effects()).len(), 2);
    assert_eq!(
        engine
            .get("preparing")
            .and_then(|t| t.cause.clone())
            .map(|c| c.reason),
        Some("aborted by request".into())
    );

    begin_two(&mut engine, "decided");
    engine.commit("decided", T0).expect("commit");
    engine.on_response("decided", "a", Phase::Prepare, Response::Ok, T0);
    engine.on_response("decided", "b", Phase::Prepare, Response::Ok, T0);
    assert_eq!(
        engine.abort("decided", T0),
        Err(CoordinatorError::AlreadyCommitted("decided".into()))
    );
    assert_eq!(
        engine.abort("missing", T0),
        Err(CoordinatorError::UnknownTransaction("missing".into()))
    );
}

#[test]
fn branches_are_added_only_while_open() {
    let mut engine = Engine::new(
        Config {
            max_branches: 2,
            ..Config::default()
        },
        3,
    );
    begin_two(&mut engine, "g");
    engine
        .add_branch("g", "a", url(1), payload(r#"{"n":1}"#))
        .expect("the same branch again is fine");
    assert!(matches!(
        engine.add_branch("g", "a", url(1), payload(r#"{"n":9}"#)),
        Err(CoordinatorError::BranchConflict { .. })
    ));
    assert!(matches!(
        engine.add_branch("g", "c", url(3), payload("{}")),
        Err(CoordinatorError::TooManyBranches { max: 2, .. })
    ));
    engine.commit("g", T0).expect("commit");
    assert_eq!(
        engine.add_branch("g", "c", url(3), payload("{}")),
        Err(CoordinatorError::NotOpen {
            gid: "g".into(),
            state: "preparing"
        })
    );
    engine
        .add_branch("g", "b", url(2), payload(r#"{"n":2}"#))
        .expect("a client retrying its one-shot submit");
    assert!(matches!(
        engine.add_branch("x", "a", url(1), payload("{}")),
        Err(CoordinatorError::UnknownTransaction(_))
    ));
}

#[test]
fn commit_without_branches_commits_at_once_and_commit_is_idempotent() {
    let mut engine = engine();
    engine.begin("g", None, T0).expect("begin");
    assert_eq!(engine.commit("g", T0), Ok(TxnState::Committed));
    assert_eq!(engine.commit("g", T0), Ok(TxnState::Committed));
    assert!(engine.take_effects().sends.is_empty());

    begin_two(&mut engine, "h");
    assert_eq!(engine.commit("h", T0), Ok(TxnState::Preparing));
    assert_eq!(engine.take_effects().sends.len(), 2);
    assert_eq!(engine.commit("h", T0), Ok(TxnState::Preparing));
    assert!(
        engine.take_effects().sends.is_empty(),
        "no second round of prepares"
    );
}

#[test]
fn restore_aborts_the_undecided_and_finishes_the_decided() {
    let mut before = engine();
    begin_two(&mut before, "open");
    begin_two(&mut before, "preparing");
    before.commit("preparing", T0).expect("commit");
    before.on_response("preparing", "a", Phase::Prepare, Response::Ok, T0);
    begin_two(&mut before, "committing");
    before.commit("committing", T0).expect("commit");
    before.on_response("committing", "a", Phase::Prepare, Response::Ok, T0);
    before.on_response("committing", "b", Phase::Prepare, Response::Ok, T0);
    before.on_response("committing", "a", Phase::Commit, Response::Ok, T0);
    begin_two(&mut before, "done");
    before.abort("done", T0).expect("abort");
    let index = before.index();
    // What the log holds: the records as JSON, as the runtime writes them.
    let log: Vec<Txn> = before
        .transactions()
        .map(|txn| {
            serde_json::from_str(&serde_json::to_string(txn).expect("encode")).expect("decode")
        })
        .collect();

    let mut after = engine();
    after.restore(log, index, T0 + 50);
    let effects = after.take_effects();
    assert!(after.index() > index, "indexes never go back");
    for gid in ["open", "preparing"] {
        assert_eq!(state(&after, gid), TxnState::Aborting, "{gid}");
        assert!(
            effects.persist.contains(gid),
            "{gid}'s abort is durable before it is sent"
        );
    }
    let mut sent: Vec<(String, String, Phase)> = effects
        .sends
        .iter()
        .map(|m| (m.gid.to_string(), m.branch.clone(), m.phase))
        .collect();
    sent.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    assert_eq!(
        sent,
        vec![
            ("committing".into(), "b".into(), Phase::Commit),
            ("open".into(), "a".into(), Phase::Abort),
            ("open".into(), "b".into(), Phase::Abort),
            ("preparing".into(), "a".into(), Phase::Abort),
            ("preparing".into(), "b".into(), Phase::Abort),
        ]
    );
    assert_eq!(state(&after, "done"), TxnState::Aborted);
    assert_eq!(after.active(), 3);
    after.on_response("committing", "b", Phase::Commit, Response::Ok, T0 + 60);
    assert_eq!(state(&after, "committing"), TxnState::Committed);
}

#[test]
fn finished_transactions_beyond_retention_are_forgotten() {
    let mut engine = Engine::new(
        Config {
            retained_done: 2,
            ..Config::default()
        },
        5,
    );
    for gid in ["t1", "t2", "t3"] {
        engine.begin(gid, None, T0).expect("begin");
        engine.commit(gid, T0).expect("commit");
    }
    let effects = engine.take_effects();
    assert!(engine.get("t1").is_none());
    assert!(engine.get("t3").is_some());
    assert!(effects.persist.contains("t1"), "its record is deleted too");
    assert_eq!(engine.active(), 0);
}

#[test]
fn begin_is_refused_beyond_the_active_limit() {
    let mut engine = Engine::new(
        Config {
            max_active: 1,
            ..Config::default()
        },
        5,
    );
    engine.begin("g", None, T0).expect("first");
    assert_eq!(
        engine.begin("h", None, T0).map(|_| ()),
        Err(CoordinatorError::Overloaded(1))
    );
    engine
        .begin("g", None, T0)
        .expect("the existing one is still idempotent");
    engine.commit("g", T0).expect("commit");
    engine
        .begin("h", None, T0)
        .expect("room again once g finished");
}

#[test]
fn tick_stops_at_its_budget() {
    let mut engine = Engine::new(
        Config {
            tick_budget: 2,
            ..Config::default()
        },
        5,
    );
    for n in 0..5 {
        engine.begin(&format!("g{n}"), Some(10), T0).expect("begin");
    }
    engine.tick(T0 + 10);
    assert_eq!(
        engine.transactions().filter(|t| t.state.is_done()).count(),
        2
    );
    assert!(engine.next_deadline().expect("more due") <= T0 + 10);
    engine.tick(T0 + 10);
    engine.tick(T0 + 10);
    assert_eq!(
        engine.transactions().filter(|t| t.state.is_done()).count(),
        5
    );
    assert_eq!(engine.next_deadline(), None);
}

#[test]
fn states_have_stable_names() {
    for state in [
        TxnState::Open,
        TxnState::Preparing,
        TxnState::Committing,
        TxnState::Aborting,
        TxnState::Committed,
        TxnState::Aborted,
    ] {
        assert_eq!(TxnState::parse(state.as_str()), Some(state));
        assert_eq!(
            serde_json::to_value(state).expect("encode"),
            serde_json::Value::String(state.as_str().into())
        );
    }
    assert_eq!(TxnState::parse("bogus"), None);
}
