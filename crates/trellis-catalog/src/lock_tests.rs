//! Unit tests of sessions, KV locks and transactions with an injected clock, and a property test
//! over random interleavings of lock operations, renewals, expiry, destroys and check failures.

use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_types::session::session_from_create;
use trellis_types::{CheckStatus, KvOp, KvVerb, ServiceRegistration, Session};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn session(id: &str, body: serde_json::Value) -> Session {
    session_from_create(Some(body), id.into(), "node-1").expect("valid session body")
}

fn run(c: &mut Catalog, command: Command, now: Duration) -> Result<Reply, CatalogError> {
    c.apply(command, now, &mut Effects::default())
}

fn ok(c: &mut Catalog, command: Command, now: Duration) -> Reply {
    run(c, command, now).expect("command applies")
}

fn create(c: &mut Catalog, id: &str, body: serde_json::Value, now: Duration) {
    ok(
        c,
        Command::SessionCreate {
            session: session(id, body),
        },
        now,
    );
}

fn acquire(c: &mut Catalog, key: &str, value: &str, id: &str, now: Duration) -> Reply {
    ok(
        c,
        Command::KvLock {
            key: key.into(),
            value: value.into(),
            flags: 0,
            session: id.into(),
        },
        now,
    )
}

fn release(c: &mut Catalog, key: &str, value: &str, id: &str, now: Duration) -> Reply {
    ok(
        c,
        Command::KvUnlock {
            key: key.into(),
            value: value.into(),
            flags: 0,
            session: id.into(),
        },
        now,
    )
}

fn destroy(c: &mut Catalog, id: &str, now: Duration) {
    ok(c, Command::SessionDestroy { id: id.into() }, now);
}

fn tick(c: &mut Catalog, now: Duration) -> Effects {
    let mut fx = Effects::default();
    c.tick(now, &mut fx);
    fx
}

fn holder(c: &Catalog, key: &str) -> Option<String> {
    c.kv_get(key).and_then(|e| e.session.clone())
}

fn register_ttl_service(c: &mut Catalog, id: &str, status: &str) {
    register_service_with_ttl(c, id, status, "10s");
}

fn register_service_with_ttl(c: &mut Catalog, id: &str, status: &str, ttl: &str) {
    let registration = ServiceRegistration::from_json(
        json!({"Name": "web", "ID": id, "Check": {"TTL": ttl, "Status": status}}),
    )
    .unwrap();
    ok(
        c,
        Command::Register {
            registration,
            replace_existing_checks: false,
        },
        secs(0),
    );
}

fn ttl_update(c: &mut Catalog, check: &str, status: CheckStatus, now: Duration) {
    ok(
        c,
        Command::UpdateTtl {
            check_id: check.into(),
            status,
            output: String::new(),
        },
        now,
    );
}

#[test]
fn create_numbers_the_session_and_checks_its_checks() {
    let mut c = Catalog::new();
    let before = c.index();
    let mut fx = Effects::default();
    c.apply(
        Command::SessionCreate {
            session: session("s1", json!({})),
        },
        secs(0),
        &mut fx,
    )
    .unwrap();
    let s = c.session("s1").unwrap();
    assert_eq!((s.create_index, s.modify_index), (before + 1, before + 1));
    assert_eq!(c.sessions_index(), before + 1);
    assert!(fx.sessions && fx.writes.contains(&Write::Session("s1".into())));
    // serfHealth is the server's own node check: always there, always passing.
    assert_eq!(s.check_ids().collect::<Vec<_>>(), ["serfHealth"]);

    let refused = |c: &mut Catalog, body: serde_json::Value| match run(
        c,
        Command::SessionCreate {
            session: session("s2", body),
        },
        secs(0),
    ) {
        Err(CatalogError::Invalid(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(&mut c, json!({"Checks": ["nope"]})),
        "Missing check 'nope' registration"
    );
    register_ttl_service(&mut c, "w1", "critical");
    assert_eq!(
        refused(&mut c, json!({"NodeChecks": ["service:w1"]})),
        "Check 'service:w1' is in critical state"
    );
    assert!(refused(&mut c, json!({"TTL": "9s"})).starts_with("Invalid Session TTL"));
    assert!(refused(&mut c, json!({"TTL": "86401s"})).starts_with("Invalid Session TTL"));
    // The failed creates took no index.
    let index = c.index();
    ttl_update(&mut c, "service:w1", CheckStatus::Passing, secs(1));
    assert!(c.index() > index);
    create(&mut c, "s2", json!({"NodeChecks": ["service:w1"]}), secs(1));
    assert!(c.session("s2").is_some());
    assert!(
        run(
            &mut c,
            Command::SessionCreate {
                session: session("s2", json!({}))
            },
            secs(1)
        )
        .is_err(),
        "IDs are unique"
    );
}

#[test]
fn acquire_and_release_follow_consul() {
    let mut c = Catalog::new();
    create(&mut c, "a", json!({}), secs(0));
    create(&mut c, "b", json!({}), secs(0));
    assert_eq!(acquire(&mut c, "k", "1", "a", secs(0)), Reply::Bool(true));
    let e = c.kv_get("k").unwrap().clone();
    assert_eq!((e.lock_index, e.session.as_deref()), (1, Some("a")));
    assert_eq!(e.value, b"1");
    assert_eq!(e.create_index, e.modify_index);
    // The holder updates the value; the LockIndex stays.
    assert_eq!(acquire(&mut c, "k", "2", "a", secs(0)), Reply::Bool(true));
    let e2 = c.kv_get("k").unwrap().clone();
    assert_eq!((e2.lock_index, e2.value.as_slice()), (1, &b"2"[..]));
    assert!(e2.modify_index > e.modify_index);
    // The same value again changes nothing.
    let index = c.index();
    assert_eq!(acquire(&mut c, "k", "2", "a", secs(0)), Reply::Bool(true));
    assert_eq!(c.index(), index);
    // Another session is refused, and so is its release.
    assert_eq!(acquire(&mut c, "k", "x", "b", secs(0)), Reply::Bool(false));
    assert_eq!(release(&mut c, "k", "x", "b", secs(0)), Reply::Bool(false));
    assert_eq!(c.index(), index, "refusals take no index");
    // A plain PUT keeps the holder (locks are advisory), and like Consul's resets LockIndex.
    ok(
        &mut c,
        Command::KvPut {
            key: "k".into(),
            value: b"3".to_vec(),
            flags: 0,
            cas: None,
        },
        secs(0),
    );
    let e3 = c.kv_get("k").unwrap().clone();
    assert_eq!((e3.session.as_deref(), e3.lock_index), (Some("a"), 0));
    // Release writes the body, clears the holder and keeps LockIndex.
    assert_eq!(
        release(&mut c, "k", "free", "a", secs(0)),
        Reply::Bool(true)
    );
    let e4 = c.kv_get("k").unwrap().clone();
    assert_eq!((e4.session, e4.lock_index), (None, 0));
    assert_eq!(e4.value, b"free");
    assert!(e4.modify_index > e3.modify_index);
    assert_eq!(release(&mut c, "k", "", "a", secs(0)), Reply::Bool(false));
    assert_eq!(
        release(&mut c, "missing", "", "a", secs(0)),
        Reply::Bool(false)
    );
    // Acquiring a free key counts one more acquisition.
    assert_eq!(acquire(&mut c, "k", "b", "b", secs(0)), Reply::Bool(true));
    assert_eq!(c.kv_get("k").unwrap().lock_index, 1);
    // Unknown or missing sessions are errors, as Consul's state store answers them.
    let error = |c: &mut Catalog, command| match run(c, command, secs(0)) {
        Err(CatalogError::Invalid(reason)) => reason,
        other => panic!("expected an error, got {other:?}"),
    };
    let lock = |session: &str| Command::KvLock {
        key: "j".into(),
        value: Vec::new(),
        flags: 0,
        session: session.into(),
    };
    assert_eq!(error(&mut c, lock("ghost")), "invalid session \"ghost\"");
    assert_eq!(error(&mut c, lock("")), "missing session");
    let unlock = Command::KvUnlock {
        key: "j".into(),
        value: Vec::new(),
        flags: 0,
        session: String::new(),
    };
    assert_eq!(error(&mut c, unlock), "missing session");
}

#[test]
fn destroy_releases_with_lock_delay_or_deletes() {
    let mut c = Catalog::new();
    create(&mut c, "a", json!({"LockDelay": "5s"}), secs(0));
    create(&mut c, "b", json!({}), secs(0));
    create(
        &mut c,
        "d",
        json!({"Behavior": "delete", "LockDelay": 0}),
        secs(0),
    );
    acquire(&mut c, "held/1", "v", "a", secs(0));
    acquire(&mut c, "held/2", "v", "a", secs(0));
    acquire(&mut c, "eph", "v", "d", secs(0));
    let before = c.kv_get("held/1").unwrap().clone();
    let sessions_index = c.sessions_index();

    let mut fx = Effects::default();
    c.apply(
        Command::SessionDestroy { id: "a".into() },
        secs(10),
        &mut fx,
    )
    .unwrap();
    assert!(c.session("a").is_none());
    assert!(c.sessions_index() > sessions_index);
    let after = c.kv_get("held/1").unwrap();
    assert_eq!(after.session, None);
    assert_eq!(after.lock_index, before.lock_index, "LockIndex is kept");
    assert_eq!(after.value, before.value);
    assert_eq!(
        after.modify_index,
        c.sessions_index(),
        "one index for it all"
    );
    assert_eq!(c.kv_get("held/2").unwrap().session, None);
    assert!(fx.kv && fx.sessions);
    assert!(fx.writes.contains(&Write::Kv("held/1".into())));
    // Within the lock-delay nobody may lock the keys; after it, anybody.
    assert!(c.lock_delayed("held/1", secs(14)));
    assert_eq!(
        acquire(&mut c, "held/1", "b", "b", secs(14)),
        Reply::Bool(false)
    );
    assert_eq!(
        acquire(&mut c, "held/1", "b", "b", secs(15)),
        Reply::Bool(true)
    );
    assert_eq!(
        c.kv_get("held/1").unwrap().lock_index,
        before.lock_index + 1
    );
    // Destroying again (or an unknown session) is fine and changes nothing.
    let index = c.index();
    destroy(&mut c, "a", secs(16));
    destroy(&mut c, "never", secs(16));
    assert_eq!(c.index(), index);
    // Behavior delete: the keys go, their prefix index moves forward; no lock-delay asked.
    let prefix = c.kv_index("eph");
    destroy(&mut c, "d", secs(16));
    assert!(c.kv_get("eph").is_none());
    assert!(c.kv_index("eph") > prefix);
    assert!(!c.lock_delayed("eph", secs(16)));
}

#[test]
fn lock_delay_is_at_most_a_minute() {
    let mut c = Catalog::new();
    create(&mut c, "a", json!({"LockDelay": "10m"}), secs(0));
    create(&mut c, "b", json!({}), secs(0));
    assert_eq!(
        c.session("a").unwrap().lock_delay,
        600_000_000_000,
        "kept as asked"
    );
    acquire(&mut c, "k", "", "a", secs(0));
    destroy(&mut c, "a", secs(100));
    assert!(c.lock_delayed("k", secs(159)));
    assert!(!c.lock_delayed("k", secs(160)));
    tick(&mut c, secs(160));
    assert_eq!(acquire(&mut c, "k", "", "b", secs(160)), Reply::Bool(true));
}

#[test]
fn ttl_sessions_expire_at_twice_their_ttl_after_the_last_renew() {
    let mut c = Catalog::new();
    create(&mut c, "t", json!({"TTL": "10s"}), secs(0));
    create(&mut c, "forever", json!({}), secs(0));
    acquire(&mut c, "k", "", "t", secs(0));
    assert_eq!(c.session_deadline("t"), Some(secs(20)));
    assert_eq!(c.session_deadline("forever"), None);
    assert_eq!(c.next_deadline(), Some(secs(20)), "the writer wakes for it");
    tick(&mut c, secs(19));
    assert!(c.session("t").is_some(), "not before 2 x TTL");
    let renewed = ok(&mut c, Command::SessionRenew { id: "t".into() }, secs(15));
    assert!(matches!(renewed, Reply::Session(Some(ref s)) if s.id == "t"));
    assert_eq!(c.session_deadline("t"), Some(secs(35)));
    assert_eq!(c.next_deadline(), Some(secs(35)));
    // Renewing is memory-only: no index, nothing to write.
    let mut fx = Effects::default();
    let index = c.index();
    c.apply(Command::SessionRenew { id: "t".into() }, secs(15), &mut fx)
        .unwrap();
    assert!(fx.is_empty() && c.index() == index);
    assert_eq!(
        ok(
            &mut c,
            Command::SessionRenew { id: "nope".into() },
            secs(15)
        ),
        Reply::Session(None)
    );
    tick(&mut c, secs(34));
    assert!(c.session("t").is_some());
    let fx = tick(&mut c, secs(35));
    assert!(
        c.session("t").is_none(),
        "expired at 2 x TTL after the renew"
    );
    assert_eq!(holder(&c, "k"), None);
    assert!(fx.writes.contains(&Write::Session("t".into())));
    assert!(fx.writes.contains(&Write::Kv("k".into())));
    assert!(
        c.lock_delayed("k", secs(36)),
        "the default lock-delay of 15 s"
    );
    assert!(c.session("forever").is_some());
}

#[test]
fn a_bound_check_going_critical_or_away_invalidates() {
    let mut c = Catalog::new();
    register_ttl_service(&mut c, "w1", "passing");
    register_ttl_service(&mut c, "w2", "passing");
    create(&mut c, "s1", json!({"Checks": ["service:w1"]}), secs(0));
    create(&mut c, "s2", json!({"NodeChecks": ["service:w2"]}), secs(0));
    create(
        &mut c,
        "s3",
        json!({"ServiceChecks": [{"ID": "service:w2"}]}),
        secs(0),
    );
    acquire(&mut c, "k1", "", "s1", secs(0));
    // Warning is not critical.
    ttl_update(&mut c, "service:w1", CheckStatus::Warning, secs(1));
    assert!(c.session("s1").is_some());
    // An update to critical invalidates at once, releasing the lock at the change's index.
    ttl_update(&mut c, "service:w1", CheckStatus::Critical, secs(2));
    assert!(c.session("s1").is_none());
    assert_eq!(holder(&c, "k1"), None);
    assert_eq!(c.kv_get("k1").unwrap().modify_index, c.index());
    // A TTL check running out invalidates in the tick.
    tick(&mut c, secs(11));
    assert_eq!(status(&c, "service:w2"), CheckStatus::Critical);
    assert!(c.session("s2").is_none() && c.session("s3").is_none());

    // Deregistering the check's service invalidates too.
    register_ttl_service(&mut c, "w3", "passing");
    create(
        &mut c,
        "s4",
        json!({"NodeChecks": ["service:w3"]}),
        secs(12),
    );
    ok(
        &mut c,
        Command::Deregister {
            service_id: "w3".into(),
        },
        secs(12),
    );
    assert!(c.session("s4").is_none());
}

fn status(c: &Catalog, check: &str) -> CheckStatus {
    c.check(check).unwrap().status
}

#[test]
fn restore_keeps_sessions_and_locks_and_restarts_timers() {
    let mut c = Catalog::new();
    register_ttl_service(&mut c, "w1", "critical");
    ttl_update(&mut c, "service:w1", CheckStatus::Passing, secs(0));
    create(&mut c, "ttl", json!({"TTL": "10s"}), secs(0));
    create(
        &mut c,
        "bound",
        json!({"NodeChecks": ["service:w1"]}),
        secs(0),
    );
    acquire(&mut c, "a", "1", "ttl", secs(0));
    acquire(&mut c, "b", "2", "bound", secs(0));
    let instances = c.instances().map(|i| (**i).clone()).collect();
    // The check's durable record still says critical: heartbeats are memory-only.
    let checks = c
        .checks()
        .map(|ch| {
            let mut r = ch.record();
            r.status = CheckStatus::Critical;
            r
        })
        .collect();
    let mut entries: Vec<KvEntry> = c.kv_range("").cloned().collect();
    entries.push(KvEntry {
        session: Some("gone".into()),
        lock_index: 1,
        ..entries[0].clone()
    });
    entries.last_mut().unwrap().key = "orphan".into();
    let sessions = c.sessions().map(|s| (**s).clone()).collect();
    let snapshot = KvSnapshot { entries, sessions };
    let mut r = Catalog::restore(
        c.index(),
        instances,
        checks,
        snapshot,
        Vec::new(),
        secs(100),
    );
    assert_eq!(r.sessions_index(), c.index());
    assert_eq!(holder(&r, "a").as_deref(), Some("ttl"));
    assert_eq!(holder(&r, "orphan"), None, "no lock outlives its session");
    assert_eq!(r.session_deadline("ttl"), Some(secs(120)), "timers restart");
    // A session bound to a check that came back critical goes at the first tick.
    assert!(r.session("bound").is_some());
    assert!(
        r.next_deadline().is_some_and(|d| d <= secs(100)),
        "due at once: the writer ticks right after a restore"
    );
    let fx = tick(&mut r, secs(100));
    assert!(r.session("bound").is_none());
    assert_eq!(holder(&r, "b"), None);
    assert!(fx.writes.contains(&Write::Session("bound".into())));
    assert!(r.session("ttl").is_some());
}

fn op(verb: KvVerb, key: &str) -> KvOp {
    KvOp::new(verb, key)
}

fn set(key: &str, value: &str) -> KvOp {
    KvOp {
        value: value.into(),
        ..op(KvVerb::Set, key)
    }
}

fn txn(c: &mut Catalog, ops: Vec<KvOp>, now: Duration) -> TxnOutcome {
    match ok(c, Command::Txn { ops }, now) {
        Reply::Txn(outcome) => outcome,
        other => panic!("not a transaction answer: {other:?}"),
    }
}

#[test]
fn transactions_apply_whole_at_one_index_or_not_at_all() {
    let mut c = Catalog::new();
    txn(&mut c, vec![set("x", "0")], secs(0));
    let x = c.kv_get("x").unwrap().modify_index;
    let before = c.index();
    let failed = txn(
        &mut c,
        vec![
            set("a", "1"),
            KvOp {
                index: x + 7,
                ..op(KvVerb::Cas, "x")
            },
            op(KvVerb::Get, "missing"),
        ],
        secs(0),
    );
    assert!(failed.results.is_empty());
    let errors: Vec<(usize, &str)> = failed
        .errors
        .iter()
        .map(|e| (e.op_index, e.what.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "failed to set key \"x\", index is stale"),
            (2, "key \"missing\" doesn't exist")
        ]
    );
    assert!(
        c.kv_get("a").is_none(),
        "nothing of a failed transaction applies"
    );
    assert_eq!(c.index(), before, "and it takes no index");

    let done = txn(
        &mut c,
        vec![
            set("a", "1"),
            set("b", "2"),
            op(KvVerb::Get, "a"),
            KvOp {
                index: x,
                ..op(KvVerb::CheckIndex, "x")
            },
            op(KvVerb::CheckNotExists, "c"),
            op(KvVerb::DeleteCas, "never-there"),
            op(KvVerb::Delete, "x"),
        ],
        secs(0),
    );
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    assert_eq!(c.index(), before + 1, "one index for the whole transaction");
    let a = c.kv_get("a").unwrap();
    assert_eq!(
        (a.modify_index, c.kv_get("b").unwrap().modify_index),
        (before + 1, before + 1)
    );
    // Writes answer their entry without the value; reads with it.
    let keys: Vec<(&str, &[u8])> = done
        .results
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(
        keys,
        [
            ("a", &b""[..]),
            ("b", &b""[..]),
            ("a", &b"1"[..]),
            ("x", &b""[..])
        ]
    );
    assert!(c.kv_get("x").is_none());

    // Operations see the ones before them; delete-tree and get-tree see the overlay.
    let seen = txn(
        &mut c,
        vec![
            set("t/1", "one"),
            op(KvVerb::DeleteTree, "t/"),
            set("t/2", "two"),
            op(KvVerb::GetTree, "t/"),
            KvOp {
                index: 0,
                ..op(KvVerb::Cas, "t/3")
            },
        ],
        secs(0),
    );
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    let tree: Vec<&str> = seen.results[2..3].iter().map(|e| e.key.as_str()).collect();
    assert_eq!(tree, ["t/2"]);
    assert!(c.kv_get("t/1").is_none() && c.kv_get("t/3").is_some());

    // Reads only: the same rules without the writer.
    let read = c.txn_read(&[op(KvVerb::Get, "a"), op(KvVerb::GetTree, "")]);
    assert!(read.errors.is_empty());
    assert_eq!(read.results.len(), 1 + 4);
    let bogus = c.txn_read(&[op(KvVerb::Unknown("frob".into()), "a")]);
    assert_eq!(bogus.errors[0].what, "unknown KV verb \"frob\"");
}

#[test]
fn transaction_locks_and_checks() {
    let mut c = Catalog::new();
    create(&mut c, "s", json!({"LockDelay": "5s"}), secs(0));
    create(&mut c, "o", json!({}), secs(0));
    let lock = |key: &str, session: &str| KvOp {
        session: session.into(),
        value: b"v".to_vec(),
        ..op(KvVerb::Lock, key)
    };
    let done = txn(&mut c, vec![lock("l", "s"), lock("m", "s")], secs(0));
    assert!(done.errors.is_empty());
    assert_eq!(done.results[0].session.as_deref(), Some("s"));
    assert_eq!(done.results[0].lock_index, 1);
    let check = |key: &str, session: &str| KvOp {
        session: session.into(),
        ..op(KvVerb::CheckSession, key)
    };
    let failed = txn(&mut c, vec![check("l", "o"), lock("l", "o")], secs(0));
    let what: Vec<&str> = failed.errors.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "failed session check for key \"l\", current session \"s\" != \"o\"",
            "failed to lock key \"l\", lock is already held"
        ]
    );
    let unlock = KvOp {
        session: "o".into(),
        ..op(KvVerb::Unlock, "l")
    };
    let failed = txn(&mut c, vec![unlock, lock("x", "nobody")], secs(0));
    let what: Vec<&str> = failed.errors.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "failed to unlock key \"l\", lock isn't held, or is held by another session",
            "invalid session \"nobody\""
        ]
    );
    destroy(&mut c, "s", secs(1));
    // The lock-delay fails the transaction before anything runs, as Consul's pre-check does.
    let failed = txn(&mut c, vec![set("y", "1"), lock("l", "o")], secs(2));
    assert_eq!(failed.errors.len(), 1);
    assert_eq!(failed.errors[0].op_index, 1);
    assert_eq!(
        failed.errors[0].what,
        "failed to lock key \"l\" due to lock delay"
    );
    assert!(c.kv_get("y").is_none());
    let empty = txn(&mut c, vec![op(KvVerb::Get, "")], secs(2));
    assert_eq!(empty.errors[0].what, "Must provide key");
}

#[test]
fn sessions_are_bounded() {
    let mut c = Catalog::new();
    let template = session("x", json!({"NodeChecks": []}));
    for n in 0..MAX_SESSIONS {
        let mut s = template.clone();
        s.id = format!("{n:08}");
        ok(&mut c, Command::SessionCreate { session: s }, secs(0));
    }
    let refused = run(
        &mut c,
        Command::SessionCreate { session: template },
        secs(0),
    );
    assert!(
        matches!(refused, Err(CatalogError::Invalid(ref r)) if r.contains("too many sessions")),
        "{refused:?}"
    );
}

/// A small deterministic PRNG (xorshift64*): the property test needs no crate and replays the
/// same interleavings on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Random interleavings of acquire, release, renew, time passing (TTL expiry), destroy, a bound
/// check going critical or passing, and a transaction. After every step: no key is held by a
/// session that does not exist, no session is bound to a check that is critical or gone, a key's
/// `LockIndex` never decreases while the key lives, and no index goes backwards.
#[test]
fn property_locks_never_outlive_their_sessions() {
    const KEYS: [&str; 5] = ["k/a", "k/b", "k/c", "l/a", "l/b"];
    const CHECKS: [&str; 3] = ["service:w0", "service:w1", "service:w2"];
    // How often the interesting things happened, so the test shows it exercised them.
    let (mut acquired, mut lost_with_locks, mut lost_to_checks) = (0, 0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut c = Catalog::new();
        for (n, _) in CHECKS.iter().enumerate() {
            // A TTL long enough, and heartbeats passing more often than not, that the checks
            // are mostly healthy: sessions bound to them get created, take locks, and then lose
            // them when a check fails (with a 10 s TTL and even odds the checks were critical
            // nearly all the time, and that happened twice in all the seeds).
            register_service_with_ttl(&mut c, &format!("w{n}"), "passing", "60s");
        }
        let mut now = Duration::ZERO;
        let mut ids: Vec<String> = Vec::new();
        let mut next_id = 0;
        let mut last_index = c.index();
        let mut last_sessions_index = c.sessions_index();
        let mut last_kv: BTreeMap<&str, (u64, u64)> = BTreeMap::new(); // (lock, modify)
        let mut last_prefix: BTreeMap<&str, u64> = BTreeMap::new();
        for step in 0..400 {
            let known = |rng: &mut Rng, ids: &[String]| {
                if ids.is_empty() || rng.below(8) == 0 {
                    "ghost".to_owned()
                } else {
                    rng.pick(ids).clone()
                }
            };
            let command = match rng.below(11) {
                0 | 1 => {
                    next_id += 1;
                    let id = format!("s{next_id}");
                    let mut body = json!({
                        "LockDelay": format!("{}s", rng.below(3)),
                        "Behavior": if rng.below(3) == 0 { "delete" } else { "release" },
                    });
                    if rng.below(2) == 0 {
                        body["TTL"] = json!(format!("{}s", 10 + rng.below(20)));
                    }
                    if rng.below(2) == 0 {
                        body["NodeChecks"] = json!([rng.pick(&CHECKS)]);
                    }
                    ids.push(id.clone());
                    Command::SessionCreate {
                        session: session(&id, body),
                    }
                }
                2 | 3 => Command::KvLock {
                    key: rng.pick(&KEYS).to_string(),
                    value: vec![rng.below(3) as u8],
                    flags: 0,
                    session: known(&mut rng, &ids),
                },
                4 => Command::KvUnlock {
                    key: rng.pick(&KEYS).to_string(),
                    value: Vec::new(),
                    flags: 0,
                    session: known(&mut rng, &ids),
                },
                5 => Command::SessionRenew {
                    id: known(&mut rng, &ids),
                },
                6 => Command::SessionDestroy {
                    id: known(&mut rng, &ids),
                },
                7 => Command::UpdateTtl {
                    check_id: rng.pick(&CHECKS).to_string(),
                    status: if rng.below(3) == 0 {
                        CheckStatus::Critical
                    } else {
                        CheckStatus::Passing
                    },
                    output: String::new(),
                },
                8 => Command::Txn {
                    ops: vec![
                        KvOp {
                            session: known(&mut rng, &ids),
                            ..op(KvVerb::Lock, KEYS[rng.below(KEYS.len() as u64) as usize])
                        },
                        KvOp {
                            session: known(&mut rng, &ids),
                            ..op(KvVerb::Unlock, KEYS[rng.below(KEYS.len() as u64) as usize])
                        },
                    ],
                },
                _ => {
                    now += Duration::from_millis(rng.below(12_000));
                    let mut fx = Effects::default();
                    c.tick(now, &mut fx);
                    Command::SessionRenew { id: "ghost".into() }
                }
            };
            let held: Vec<String> = c.kv_range("").filter_map(|e| e.session.clone()).collect();
            // Lock holders bound to a check of the test (not the synthesised serfHealth).
            let bound: Vec<(String, Vec<String>)> = held
                .iter()
                .filter_map(|id| c.session(id))
                .map(|s| {
                    let checks = s.check_ids().filter(|ch| CHECKS.contains(ch));
                    (s.id.clone(), checks.map(str::to_owned).collect::<Vec<_>>())
                })
                .filter(|(_, checks)| !checks.is_empty())
                .collect();
            let is_lock = matches!(command, Command::KvLock { .. });
            // Errors (an unknown session, a critical check at create) are answers too.
            let answer = c.apply(command, now, &mut Effects::default());
            if is_lock && answer == Ok(Reply::Bool(true)) {
                acquired += 1;
            }
            lost_with_locks += held.iter().filter(|id| c.session(id).is_none()).count();
            let failed = |check: &String| {
                c.check(check)
                    .is_none_or(|ch| ch.status == CheckStatus::Critical)
            };
            lost_to_checks += bound
                .iter()
                .filter(|(id, checks)| c.session(id).is_none() && checks.iter().any(failed))
                .count();
            ids.retain(|id| c.session(id).is_some());

            let at = format!("seed {seed} step {step}");
            for entry in c.kv_range("") {
                if let Some(holder) = &entry.session {
                    assert!(
                        c.session(holder).is_some(),
                        "{at}: {} held by gone {holder}",
                        entry.key
                    );
                }
            }
            for s in c.sessions() {
                for check in s.check_ids() {
                    let healthy = check == "serfHealth"
                        || c.check(check)
                            .is_some_and(|ch| ch.status != CheckStatus::Critical);
                    assert!(healthy, "{at}: {} bound to failed {check}", s.id);
                }
            }
            assert!(c.index() >= last_index, "{at}: global index went back");
            assert!(c.sessions_index() >= last_sessions_index, "{at}");
            last_index = c.index();
            last_sessions_index = c.sessions_index();
            for key in KEYS {
                let prefix = c.kv_index(key);
                assert!(prefix >= *last_prefix.get(key).unwrap_or(&0), "{at}: {key}");
                last_prefix.insert(key, prefix);
                match c.kv_get(key) {
                    Some(e) => {
                        if let Some((lock, modify)) = last_kv.get(key) {
                            assert!(e.lock_index >= *lock, "{at}: LockIndex of {key} fell");
                            assert!(e.modify_index >= *modify, "{at}: {key}");
                        }
                        assert!(e.modify_index <= c.index());
                        last_kv.insert(key, (e.lock_index, e.modify_index));
                    }
                    None => {
                        last_kv.remove(key);
                    }
                }
            }
        }
    }
    assert!(acquired > 500, "only {acquired} acquisitions");
    assert!(
        lost_with_locks > 200,
        "only {lost_with_locks} locks lost with their session"
    );
    assert!(
        lost_to_checks > 30,
        "only {lost_to_checks} lock holders lost to a failing check"
    );
}

/// Among servers sharing a store the leader's catalog keeps no TTL deadline: the server that
/// owns a check's expiry says when it ran out, with `ExpireTtl`, which does what a tick's expiry
/// does (critical, "TTL expired", one index, written, the check's sessions gone, the reaper's
/// clock started) and nothing to a check that is critical already or not a TTL check.
#[test]
fn without_ttl_expiry_only_expire_ttl_turns_a_ttl_check_critical() {
    let mut c = Catalog::new();
    c.set_ttl_expiry(false, secs(0));
    c.set_persist_status(true);
    let registration = ServiceRegistration::from_json(json!({"Name": "web", "ID": "w1",
        "Check": {"TTL": "10s", "Status": "passing", "DeregisterCriticalServiceAfter": "30s"}}))
    .unwrap();
    ok(
        &mut c,
        Command::Register {
            registration,
            replace_existing_checks: false,
        },
        secs(0),
    );
    create(&mut c, "s1", json!({"Checks": ["service:w1"]}), secs(0));
    create(&mut c, "s2", json!({"TTL": "10s"}), secs(0));
    assert_eq!(c.next_deadline(), None, "no TTL deadline, no session TTL");
    tick(&mut c, secs(60));
    let check = c.check("service:w1").unwrap();
    assert_eq!(
        check.status,
        CheckStatus::Passing,
        "the tick leaves TTLs alone"
    );

    let before = c.index();
    let mut fx = Effects::default();
    let expire = |id: &str| Command::ExpireTtl {
        check_id: id.into(),
    };
    c.apply(expire("service:w1"), secs(60), &mut fx).unwrap();
    let check = c.check("service:w1").unwrap();
    assert_eq!(
        (check.status, check.output.as_str(), check.modify_index),
        (CheckStatus::Critical, "TTL expired", before + 1)
    );
    assert!(fx.writes.contains(&Write::Check {
        id: "service:w1".into(),
        owner: Some("w1".into())
    }));
    assert!(c.session("s1").is_none(), "the check's session is gone");
    assert!(
        c.session("s2").is_some(),
        "a session's TTL runs out elsewhere"
    );
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(c.next_deadline(), Some(secs(90)), "the reaper's clock runs");

    let mut fx = Effects::default();
    c.apply(expire("service:w1"), secs(61), &mut fx).unwrap();
    c.apply(expire("no-such-check"), secs(61), &mut fx).unwrap();
    assert_eq!(
        (c.index(), fx.writes.len()),
        (before + 1, 0),
        "nothing again"
    );

    // A heartbeat brings it back; the catalog still sets no TTL deadline.
    ttl_update(&mut c, "service:w1", CheckStatus::Passing, secs(62));
    assert_eq!(c.next_deadline(), None);
    tick(&mut c, secs(90));
    assert!(c.instance("w1").is_some(), "not reaped once passing again");
}

#[test]
fn a_heartbeat_changes_the_check_only_with_a_new_status_or_output() {
    let mut c = Catalog::new();
    register_ttl_service(&mut c, "w1", "passing");
    let changes =
        |c: &Catalog, status, output: &str| c.ttl_heartbeat_changes("service:w1", status, output);
    assert!(!changes(&c, CheckStatus::Passing, "").unwrap());
    assert!(changes(&c, CheckStatus::Warning, "").unwrap());
    assert!(changes(&c, CheckStatus::Passing, "busy").unwrap());
    assert!(matches!(
        c.ttl_heartbeat_changes("nope", CheckStatus::Passing, ""),
        Err(CatalogError::NotFound(_))
    ));
    ok(
        &mut c,
        Command::RegisterCheck {
            check: serde_json::from_value(
                json!({"ID": "tcp", "Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s"}),
            )
            .unwrap(),
        },
        secs(0),
    );
    assert!(matches!(
        c.ttl_heartbeat_changes("tcp", CheckStatus::Passing, ""),
        Err(CatalogError::Invalid(_))
    ));
}

/// A session whose TTL ran out elsewhere (its etcd lease ended) goes as one whose TTL ran out
/// here: its locks released (or deleted), the lock-delay started, one index; nothing for a
/// session that is gone already.
#[test]
fn a_session_expired_elsewhere_is_invalidated_with_its_locks() {
    let mut c = Catalog::new();
    c.set_ttl_expiry(false, secs(0));
    create(
        &mut c,
        "s1",
        json!({"TTL": "10s", "LockDelay": "5s"}),
        secs(0),
    );
    create(
        &mut c,
        "s2",
        json!({"TTL": "10s", "Behavior": "delete"}),
        secs(0),
    );
    assert_eq!(
        acquire(&mut c, "held", "v", "s1", secs(1)),
        Reply::Bool(true)
    );
    assert_eq!(
        acquire(&mut c, "gone", "v", "s2", secs(1)),
        Reply::Bool(true)
    );
    assert_eq!(c.next_deadline(), None, "no session TTL runs here");
    let before = c.index();
    let mut fx = Effects::default();
    let expired = |id: &str| Command::SessionExpired { id: id.into() };
    c.apply(expired("s1"), secs(30), &mut fx).unwrap();
    c.apply(expired("s2"), secs(30), &mut fx).unwrap();
    assert!(c.session("s1").is_none() && c.session("s2").is_none());
    assert_eq!(holder(&c, "held"), None);
    assert!(c.kv_get("held").is_some() && c.kv_get("gone").is_none());
    assert_eq!(c.index(), before + 2);
    assert!(fx.writes.contains(&Write::Session("s1".into())));
    create(&mut c, "s3", json!({}), secs(31));
    assert_eq!(
        acquire(&mut c, "held", "v", "s3", secs(31)),
        Reply::Bool(false),
        "the lock-delay runs"
    );
    let index = c.index();
    c.apply(expired("s1"), secs(40), &mut Effects::default())
        .unwrap();
    assert_eq!(c.index(), index, "nothing for a session gone already");
}
