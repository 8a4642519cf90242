//! Tests of replicas: a leader that persists status changes runs a long script of commands and
//! ticks, and after each batch its writes, as mutations, are replicated into a follower, which
//! must then show readers exactly what the leader shows and wake them for the same changes. Also
//! the edges: echoes, the order within a commit, commits of several changes, status persistence
//! off, and timers rearmed when a follower takes over.

use super::*;
use crate::numbering::{Numbering, Revisions};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trellis_types::config_entry::decode_config_entry;
use trellis_types::session::session_from_create;
use trellis_types::{
    CheckDefinition, CheckStatus, ConfigEntry, KvOp, KvVerb, ServiceRegistration, Session,
};

/// Names a reader may ask about: registered ones (in two spellings), emptied ones, unknown.
const NAMES: [&str; 6] = ["web", "WEB", "frontend", "db", "cache", "never-registered"];
const PREFIXES: [&str; 8] = [
    "",
    "app/",
    "app/a",
    "cfg/",
    "locks/",
    "locks/db",
    "locks/cache",
    "missing/",
];
const KINDS: [&str; 2] = ["service-defaults", "proxy-defaults"];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A check as a reader sees it: its record and the service name it counts for.
type CheckSeen = (CheckRecord, Option<String>);

/// Everything a reader of a catalog sees: the derived indexes by what they index, and the
/// content (records keep their own indexes, so they are content).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    indexes: BTreeMap<String, u64>,
    views: BTreeMap<&'static str, ViewSeen>,
    service_names: BTreeMap<String, BTreeSet<String>>,
    health_counts: [(CheckStatus, usize); 3],
    summaries: Vec<ServiceSummary>,
    checks: Vec<CheckSeen>,
    kv: Vec<KvEntry>,
    sessions: Vec<Session>,
    config: Vec<ConfigEntry>,
}

/// A service view without its index (which is in `Seen::indexes`): its name and each instance
/// with its status and checks.
type ViewSeen = (String, Vec<(InstanceRecord, CheckStatus, Vec<CheckSeen>)>);

fn check_seen(check: &Check) -> CheckSeen {
    (check.record(), check.service_name.clone())
}

fn seen(c: &Catalog) -> Seen {
    let mut indexes = BTreeMap::from([
        ("index".to_owned(), c.index()),
        ("services".to_owned(), c.services_index()),
        ("kv store".to_owned(), c.kv_store_index()),
        ("sessions".to_owned(), c.sessions_index()),
        ("config".to_owned(), c.config_index()),
    ]);
    let mut views = BTreeMap::new();
    for name in NAMES {
        let view = c.service_view(name);
        indexes.insert(format!("service {name}"), c.service_index(name));
        assert_eq!(view.index, c.service_index(name));
        let instances = view
            .instances
            .iter()
            .map(|i| {
                let checks = i.checks.iter().map(|c| check_seen(c)).collect();
                ((*i.instance).clone(), i.status, checks)
            })
            .collect();
        views.insert(name, (view.name, instances));
    }
    for prefix in PREFIXES {
        indexes.insert(format!("kv {prefix:?}"), c.kv_index(prefix));
    }
    for kind in KINDS {
        indexes.insert(format!("config {kind}"), c.config_kind_index(kind));
    }
    Seen {
        indexes,
        views,
        service_names: c.service_names(),
        health_counts: c.health_counts(),
        summaries: c.service_summaries(),
        checks: c.checks().map(|c| check_seen(c)).collect(),
        kv: c.kv_range("").cloned().collect(),
        sessions: c.sessions().map(|s| (**s).clone()).collect(),
        config: c.config_entries(None).map(|e| (**e).clone()).collect(),
    }
}

/// Asserts that two catalogs show readers the same content, field by field (a readable
/// failure).
fn assert_same_content(step: &str, leader: &Seen, follower: &Seen) {
    assert_eq!(leader.views, follower.views, "{step}: service views");
    assert_eq!(
        leader.service_names, follower.service_names,
        "{step}: service names"
    );
    assert_eq!(
        leader.health_counts, follower.health_counts,
        "{step}: health counts"
    );
    assert_eq!(leader.summaries, follower.summaries, "{step}: summaries");
    assert_eq!(leader.checks, follower.checks, "{step}: checks");
    assert_eq!(leader.kv, follower.kv, "{step}: KV entries");
    assert_eq!(leader.sessions, follower.sessions, "{step}: sessions");
    assert_eq!(leader.config, follower.config, "{step}: config entries");
}

/// Asserts that two catalogs show readers the same content and the same indexes.
fn assert_same(step: &str, leader: &Seen, follower: &Seen) {
    assert_same_content(step, leader, follower);
    for (what, index) in &leader.indexes {
        assert_eq!(
            Some(index),
            follower.indexes.get(what),
            "{step}: {what} index"
        );
    }
}

/// What effects tell readers: everything but the writes, transitions by check (the leader
/// reports them as they happened, a replica per check).
fn wakes(fx: &Effects) -> Effects {
    let mut fx = fx.clone();
    fx.writes.clear();
    fx.transitions.sort_by(|a, b| a.check_id.cmp(&b.check_id));
    fx
}

/// The mutations a leader commits for a batch's effects.
fn mutations(leader: &Catalog, fx: &Effects) -> Vec<Mutation> {
    fx.writes.iter().map(|w| leader.mutation(w)).collect()
}

/// A leader persisting status changes, and a follower fed with its commits.
struct Pair {
    leader: Catalog,
    follower: Catalog,
}

impl Pair {
    fn new() -> Self {
        let mut leader = Catalog::new();
        leader.set_persist_status(true);
        Self {
            leader,
            follower: Catalog::new(),
        }
    }

    /// One batch of one command on the leader at `now`, committed and replicated.
    fn run(&mut self, step: &str, command: Command, now: Duration) -> Reply {
        let mut fx = Effects::default();
        let reply = self
            .leader
            .apply(command, now, &mut fx)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        self.commit(step, &fx, now);
        reply
    }

    /// One tick of the leader at `now`, committed and replicated; answers the leader's effects.
    fn tick(&mut self, step: &str, now: Duration) -> Effects {
        let mut fx = Effects::default();
        self.leader.tick(now, &mut fx);
        self.commit(step, &fx, now);
        fx
    }

    /// Replicates the leader's batch into the follower and checks that they agree.
    fn commit(&mut self, step: &str, fx: &Effects, now: Duration) {
        let mut replica_fx = Effects::default();
        let group = mutations(&self.leader, fx);
        self.follower
            .replicate(self.leader.index(), group, now, &mut replica_fx);
        assert!(replica_fx.writes.is_empty(), "{step}: a replica writes");
        assert_eq!(wakes(fx), wakes(&replica_fx), "{step}: effects");
        assert_same(step, &seen(&self.leader), &seen(&self.follower));
    }
}

fn reg(body: serde_json::Value) -> Command {
    Command::Register {
        registration: ServiceRegistration::from_json(body).expect("valid registration"),
        replace_existing_checks: false,
    }
}

fn reg_replacing_checks(body: serde_json::Value) -> Command {
    Command::Register {
        registration: ServiceRegistration::from_json(body).expect("valid registration"),
        replace_existing_checks: true,
    }
}

fn deregister(id: &str) -> Command {
    Command::Deregister {
        service_id: id.into(),
    }
}

fn check(body: serde_json::Value) -> Command {
    Command::RegisterCheck {
        check: CheckDefinition::from_json(body).expect("valid check"),
    }
}

fn ttl(check_id: &str, status: CheckStatus, output: &str) -> Command {
    Command::UpdateTtl {
        check_id: check_id.into(),
        status,
        output: output.into(),
    }
}

fn report(check_id: &str, result: CheckStatus, output: &str) -> Command {
    Command::ReportCheck {
        check_id: check_id.into(),
        result,
        output: output.into(),
    }
}

fn put(key: &str, value: &str, flags: u64, cas: Option<u64>) -> Command {
    Command::KvPut {
        key: key.into(),
        value: value.into(),
        flags,
        cas,
    }
}

fn del(key: &str, recurse: bool) -> Command {
    Command::KvDelete {
        key: key.into(),
        recurse,
        cas: None,
    }
}

fn lock(key: &str, value: &str, session: &str) -> Command {
    Command::KvLock {
        key: key.into(),
        value: value.into(),
        flags: 0,
        session: session.into(),
    }
}

fn unlock(key: &str, session: &str) -> Command {
    Command::KvUnlock {
        key: key.into(),
        value: Vec::new(),
        flags: 0,
        session: session.into(),
    }
}

fn op(verb: KvVerb, key: &str, value: &str, session: &str, index: u64) -> KvOp {
    KvOp {
        value: value.into(),
        session: session.into(),
        index,
        ..KvOp::new(verb, key)
    }
}

fn create_session(id: &str, body: serde_json::Value) -> Command {
    Command::SessionCreate {
        session: session_from_create(Some(body), id.into(), "node-1").expect("valid session"),
    }
}

fn destroy(id: &str) -> Command {
    Command::SessionDestroy { id: id.into() }
}

fn config_put(body: serde_json::Value, cas: Option<u64>) -> Command {
    Command::ConfigUpsert {
        entry: decode_config_entry(body).expect("valid config entry"),
        cas,
    }
}

fn config_delete(kind: &str, name: &str, cas: Option<u64>) -> Command {
    Command::ConfigDelete {
        kind: kind.into(),
        name: name.into(),
        cas,
    }
}

fn w1(name: &str, tag: &str) -> serde_json::Value {
    // Named checks: a rename keeps their definitions, so they follow it without being written.
    json!({"Name": name, "ID": "w1", "Tags": [tag], "Checks": [
        {"Name": "alive", "TTL": "300s", "Status": "passing"},
        {"Name": "http", "HTTP": "http://127.0.0.1:1/", "Interval": "10s"}]})
}

#[test]
fn a_follower_sees_what_the_leader_sees_after_every_commit() {
    let mut p = Pair::new();
    let t0 = secs(0);

    // Services, their checks, a node check and a check registered on its own.
    p.run("register w1", reg(w1("web", "v1")), t0);
    p.run(
        "register w2",
        reg(
            json!({"Name": "web", "ID": "w2", "Check": {"Name": "beat", "TTL": "5s",
            "Status": "passing", "DeregisterCriticalServiceAfter": "10s"}}),
        ),
        t0,
    );
    p.run(
        "register d1",
        reg(
            json!({"Name": "db", "ID": "d1", "Check": {"Name": "db alive", "TTL": "300s",
            "Status": "passing"}}),
        ),
        t0,
    );
    p.run(
        "node check",
        check(json!({"Name": "mem", "TTL": "30s", "Status": "passing"})),
        t0,
    );
    p.run(
        "service check",
        check(
            json!({"Name": "extra", "ID": "w1-extra", "ServiceID": "w1", "TTL": "300s",
            "Status": "warning"}),
        ),
        t0,
    );
    let before = p.leader.index();
    p.run("identical re-registration", reg(w1("web", "v1")), t0);
    assert_eq!(p.leader.index(), before, "nothing to replicate");
    p.run("rename", reg(w1("frontend", "v2")), t0);
    assert_eq!(
        p.follower
            .check("w1-extra")
            .unwrap()
            .service_name
            .as_deref(),
        Some("frontend"),
        "a check the leader did not write follows the renamed service"
    );

    // Heartbeats and probes: status changes are written, repeats are not.
    p.run(
        "ttl warning",
        ttl("service:w1:1", CheckStatus::Warning, "slow"),
        secs(1),
    );
    let before = p.leader.index();
    p.run(
        "same heartbeat",
        ttl("service:w1:1", CheckStatus::Warning, "slow"),
        secs(1),
    );
    assert_eq!(p.leader.index(), before);
    p.run(
        "probe passes",
        report("service:w1:2", CheckStatus::Passing, "200 OK"),
        secs(1),
    );
    p.run(
        "probe fails",
        report("service:w1:2", CheckStatus::Critical, "refused"),
        secs(1),
    );
    p.run(
        "probe passes again",
        report("service:w1:2", CheckStatus::Passing, "200 OK"),
        secs(1),
    );
    // Restarts the node check's TTL: it now runs out at 31 s.
    p.run(
        "node heartbeat",
        ttl("mem", CheckStatus::Passing, "fine"),
        secs(1),
    );

    // Sessions: one bound to a service check, one to the node check (deleting its locks), two
    // with a TTL (running out at 22 s unless renewed).
    let t2 = secs(2);
    p.run(
        "session s1",
        create_session(
            "s1",
            json!({"Checks": ["service:w1:1"], "LockDelay": "15s"}),
        ),
        t2,
    );
    p.run(
        "session s2",
        create_session("s2", json!({"NodeChecks": ["mem"], "Behavior": "delete"})),
        t2,
    );
    p.run(
        "session s3",
        create_session("s3", json!({"TTL": "10s"})),
        t2,
    );
    p.run(
        "session s4",
        create_session("s4", json!({"TTL": "10s"})),
        t2,
    );

    // KV: set, CAS, deletes, a tree delete, transactions.
    let t3 = secs(3);
    p.run("set app/a", put("app/a", "1", 0, None), t3);
    p.run("set app/b", put("app/b", "2", 7, None), t3);
    let a = p.leader.kv_get("app/a").unwrap().modify_index;
    assert_eq!(
        p.run("cas app/a", put("app/a", "3", 0, Some(a)), t3),
        Reply::Bool(true)
    );
    assert_eq!(
        p.run("stale cas", put("app/a", "4", 0, Some(a)), t3),
        Reply::Bool(false)
    );
    assert_eq!(
        p.run("create-only cas", put("cfg/new", "n", 0, Some(0)), t3),
        Reply::Bool(true)
    );
    p.run("delete app/b", del("app/b", false), t3);
    p.run("delete a missing key", del("app/missing", false), t3);
    p.run("set app/c", put("app/c", "5", 0, None), t3);
    p.run("delete tree app/", del("app/", true), t3);
    let Reply::Txn(outcome) = p.run(
        "transaction",
        Command::Txn {
            ops: vec![
                op(KvVerb::Set, "cfg/x", "x", "", 0),
                op(KvVerb::Set, "cfg/y", "y", "", 0),
                op(KvVerb::Lock, "locks/t", "t", "s4", 0),
                op(KvVerb::Delete, "cfg/new", "", "", 0),
            ],
        },
        t3,
    ) else {
        panic!("a transaction answers a transaction");
    };
    assert!(outcome.errors.is_empty(), "{outcome:?}");
    let Reply::Txn(outcome) = p.run(
        "failed transaction",
        Command::Txn {
            ops: vec![
                op(KvVerb::Set, "cfg/z", "z", "", 0),
                op(KvVerb::CheckIndex, "cfg/x", "", "", 1),
            ],
        },
        t3,
    ) else {
        panic!("a transaction answers a transaction");
    };
    assert!(!outcome.errors.is_empty());

    // Locks.
    assert_eq!(
        p.run("acquire", lock("locks/db", "one", "s1"), t3),
        Reply::Bool(true)
    );
    assert_eq!(
        p.run("acquire held", lock("locks/db", "two", "s2"), t3),
        Reply::Bool(false)
    );
    assert_eq!(
        p.run("release", unlock("locks/db", "s1"), t3),
        Reply::Bool(true)
    );
    assert_eq!(
        p.run("acquire again", lock("locks/db", "three", "s1"), t3),
        Reply::Bool(true)
    );
    assert_eq!(p.follower.kv_get("locks/db").unwrap().lock_index, 2);
    assert_eq!(
        p.run("acquire cache", lock("locks/cache", "c", "s2"), t3),
        Reply::Bool(true)
    );

    // A renewal is memory-only; a destroy is written.
    let before = p.leader.index();
    p.run(
        "renew s3",
        Command::SessionRenew { id: "s3".into() },
        secs(4),
    );
    assert_eq!(p.leader.index(), before);
    p.run("destroy s3", destroy("s3"), secs(4));

    // s1's check goes critical: the leader invalidates s1 and releases its lock, in one commit.
    p.run(
        "bound check critical",
        ttl("service:w1:1", CheckStatus::Critical, "dead"),
        secs(5),
    );
    assert!(p.follower.session("s1").is_none());
    assert_eq!(p.follower.kv_get("locks/db").unwrap().session, None);
    assert!(
        p.leader.lock_delayed("locks/db", secs(5)) && p.follower.lock_delayed("locks/db", secs(5)),
        "lock-delays are kept by every server"
    );

    // Time: a TTL running out, the reaper, a session's TTL, the node check running out.
    let fx = p.tick("w2's TTL runs out", secs(6));
    assert_eq!(fx.transitions.len(), 1);
    assert_eq!(
        p.follower.check("service:w2").unwrap().status,
        CheckStatus::Critical
    );
    p.tick("w2 reaped", secs(16));
    assert!(p.follower.instance("w2").is_none());
    p.tick("s4's TTL runs out", secs(22));
    assert!(p.follower.session("s4").is_none());
    assert_eq!(p.follower.kv_get("locks/t").unwrap().session, None);
    p.tick("mem runs out", secs(31));
    assert!(p.follower.session("s2").is_none());
    assert!(
        p.follower.kv_get("locks/cache").is_none(),
        "deleted with s2"
    );
    p.run(
        "node check back",
        ttl("mem", CheckStatus::Passing, "back"),
        secs(32),
    );

    // Config entries.
    let t33 = secs(33);
    let web =
        |protocol: &str| json!({"Kind": "service-defaults", "Name": "web", "Protocol": protocol});
    p.run("config upsert", config_put(web("http"), None), t33);
    p.run("config same", config_put(web("http"), None), t33);
    let m = p
        .leader
        .config_entry("service-defaults", "web")
        .unwrap()
        .modify_index;
    assert_eq!(
        p.run("config cas", config_put(web("grpc"), Some(m)), t33),
        Reply::Bool(true)
    );
    assert_eq!(
        p.run("config stale cas", config_put(web("http"), Some(m)), t33),
        Reply::Bool(false)
    );
    p.run(
        "config other",
        config_put(
            json!({"Kind": "service-defaults", "Name": "DB", "Protocol": "tcp"}),
            None,
        ),
        t33,
    );
    assert_eq!(
        p.run(
            "config stale delete",
            config_delete("service-defaults", "web", Some(m)),
            t33
        ),
        Reply::Bool(false)
    );
    p.run(
        "config delete",
        config_delete("service-defaults", "WEB", None),
        t33,
    );

    // A check moving to another instance, then going; checks replaced; the last instances go.
    let t34 = secs(34);
    p.run(
        "check moves",
        check(json!({"Name": "extra", "ID": "w1-extra", "ServiceID": "d1", "TTL": "300s"})),
        t34,
    );
    assert_eq!(
        p.follower.check("w1-extra").unwrap().service_id(),
        Some("d1")
    );
    p.run(
        "deregister check",
        Command::DeregisterCheck {
            check_id: "w1-extra".into(),
        },
        t34,
    );
    p.run(
        "replace d1's checks",
        reg_replacing_checks(json!({"Name": "db", "ID": "d1", "Check": {"Name": "ready",
            "ID": "db-ready", "TTL": "300s", "Status": "passing"}})),
        t34,
    );
    p.run(
        "register another spelling",
        reg(json!({"Name": "WEB", "ID": "w3", "Check": {"TTL": "300s", "Status": "passing"}})),
        t34,
    );
    p.run("deregister w1", deregister("w1"), t34);
    let frontend = p.follower.service_index("frontend");
    assert_eq!(frontend, p.follower.index());
    p.run("deregister d1", deregister("d1"), t34);
    assert_eq!(
        p.follower.service_index("frontend"),
        frontend,
        "an emptied name keeps its own index"
    );
    assert_eq!(p.follower.instance_count(), 1);
}

/// A leader with a service, a TTL check bound to a session holding a lock, a config entry:
/// answers it and a follower that replicated it.
fn setup() -> Pair {
    let mut p = Pair::new();
    p.run(
        "register",
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"Name": "beat", "TTL": "10s",
            "Status": "passing"}}),
        ),
        secs(0),
    );
    p.run(
        "register db",
        reg(json!({"Name": "db", "ID": "d1"})),
        secs(0),
    );
    p.run(
        "session",
        create_session("s1", json!({"Checks": ["service:w1"], "TTL": "10s"})),
        secs(0),
    );
    p.run("lock", lock("lock", "me", "s1"), secs(0));
    p.run("set", put("k", "v", 0, None), secs(0));
    p.run(
        "config",
        config_put(
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
            None,
        ),
        secs(0),
    );
    p
}

#[test]
fn replicating_a_commit_again_changes_nothing() {
    let mut p = setup();
    let mut fx = Effects::default();
    p.leader
        .apply(put("k", "w", 0, None), secs(1), &mut fx)
        .unwrap();
    let group = mutations(&p.leader, &fx);
    let mut first = Effects::default();
    p.follower
        .replicate(p.leader.index(), group.clone(), secs(1), &mut first);
    assert!(first.kv);
    let after = seen(&p.follower);
    let mut again = Effects::default();
    p.follower
        .replicate(p.leader.index(), group, secs(2), &mut again);
    assert!(again.is_empty(), "{again:?}");
    // An older commit arriving late is an echo too.
    let stale = vec![Mutation::DeleteKv("k".into())];
    p.follower
        .replicate(p.leader.index() - 1, stale, secs(2), &mut again);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(seen(&p.follower), after);
    assert_eq!(p.follower.kv_get("k").unwrap().value, b"w");
}

#[test]
fn a_replica_writes_nothing_and_decides_nothing() {
    let mut p = setup();
    // The leader's check goes critical: it invalidates s1 and releases the lock, one commit.
    let mut fx = Effects::default();
    p.leader
        .apply(
            ttl("service:w1", CheckStatus::Critical, "down"),
            secs(1),
            &mut fx,
        )
        .unwrap();
    let group = mutations(&p.leader, &fx);
    assert_eq!(
        group.len(),
        3,
        "the check, the session, the lock: {group:?}"
    );
    // Given the check's change alone, a replica keeps the session and its lock: the leader's
    // own mutations decide that.
    let check_only: Vec<Mutation> = group
        .iter()
        .filter(|m| matches!(m, Mutation::PutCheck(_)))
        .cloned()
        .collect();
    let mut alone = p.follower.clone();
    let mut alone_fx = Effects::default();
    alone.replicate(p.leader.index(), check_only, secs(1), &mut alone_fx);
    assert!(alone.session("s1").is_some());
    assert_eq!(alone.kv_get("lock").unwrap().session.as_deref(), Some("s1"));
    assert!(alone_fx.writes.is_empty() && !alone_fx.sessions && !alone_fx.kv);
    // With the leader's whole commit, the session and the lock go as on the leader.
    let mut replica_fx = Effects::default();
    p.follower
        .replicate(p.leader.index(), group, secs(1), &mut replica_fx);
    assert!(replica_fx.writes.is_empty());
    assert!(replica_fx.sessions && replica_fx.kv);
    assert!(p.follower.session("s1").is_none());
    assert!(
        p.follower.lock_delayed("lock", secs(1)),
        "the lock-delay the leader started, from the replica's clock"
    );
    assert_same("invalidated", &seen(&p.leader), &seen(&p.follower));
}

#[test]
fn transitions_are_reported_with_their_index() {
    let mut p = setup();
    let mut fx = Effects::default();
    p.leader
        .apply(
            ttl("service:w1", CheckStatus::Warning, "slow"),
            secs(1),
            &mut fx,
        )
        .unwrap();
    let mut replica_fx = Effects::default();
    p.follower.replicate(
        p.leader.index(),
        mutations(&p.leader, &fx),
        secs(1),
        &mut replica_fx,
    );
    assert_eq!(
        replica_fx.transitions,
        vec![CheckTransition {
            check_id: "service:w1".into(),
            name: "beat".into(),
            service_id: Some("w1".into()),
            service_name: Some("web".into()),
            from: Some(CheckStatus::Passing),
            to: CheckStatus::Warning,
            output: "slow".into(),
            index: p.leader.index(),
        }]
    );
    assert_eq!(replica_fx.transitions, fx.transitions);
    assert!(replica_fx.services.contains("web") && !replica_fx.services.contains("db"));
    assert!(
        replica_fx.checks.is_empty(),
        "a status change leaves the probing as it is"
    );
    // A new check is a transition from nothing, and its probing starts.
    let mut fx = Effects::default();
    p.leader
        .apply(
            check(json!({"Name": "disk", "HTTP": "http://127.0.0.1:1/", "Interval": "10s"})),
            secs(2),
            &mut fx,
        )
        .unwrap();
    let mut replica_fx = Effects::default();
    p.follower.replicate(
        p.leader.index(),
        mutations(&p.leader, &fx),
        secs(2),
        &mut replica_fx,
    );
    assert_eq!(replica_fx.transitions, fx.transitions);
    assert_eq!(replica_fx.transitions[0].from, None);
    assert_eq!(replica_fx.checks, BTreeSet::from(["disk".to_owned()]));
}

/// A batch of many commands, as the writer commits them: answers the leader's effects.
fn big_batch(leader: &mut Catalog) -> Effects {
    let mut fx = Effects::default();
    let now = secs(1);
    let commands = vec![
        reg(json!({"Name": "cache", "ID": "c1", "Checks": [
            {"Name": "a", "TTL": "10s", "Status": "passing"},
            {"Name": "b", "TTL": "10s", "Status": "warning"}]})),
        reg(json!({"Name": "frontend", "ID": "w1", "Check": {"Name": "beat", "TTL": "10s"}})),
        check(json!({"Name": "node", "TTL": "10s", "Status": "passing"})),
        check(json!({"Name": "moved", "ID": "service:w1", "ServiceID": "c1", "TTL": "10s"})),
        ttl("service:c1:1", CheckStatus::Critical, "down"),
        deregister("d1"),
        create_session("s2", json!({"NodeChecks": ["node"], "Behavior": "delete"})),
        lock("lock2", "x", "s2"),
        del("k", false),
        put("k2", "v", 0, None),
        config_delete("service-defaults", "web", None),
        config_put(
            json!({"Kind": "service-defaults", "Name": "cache", "Protocol": "tcp"}),
            None,
        ),
        ttl("node", CheckStatus::Critical, "full"),
    ];
    for command in commands {
        leader.apply(command, now, &mut fx).unwrap();
    }
    fx
}

#[test]
fn the_order_within_a_commit_does_not_matter() {
    let mut p = setup();
    let fx = big_batch(&mut p.leader);
    let group = mutations(&p.leader, &fx);
    assert!(group.len() > 10, "{group:?}");
    let orders: Vec<Vec<Mutation>> = vec![
        group.clone(),
        group.iter().rev().cloned().collect(),
        group
            .iter()
            .step_by(2)
            .chain(group.iter().skip(1).step_by(2))
            .cloned()
            .collect(),
        group
            .iter()
            .skip(5)
            .chain(group.iter().take(5))
            .cloned()
            .collect(),
    ];
    let mut results = Vec::new();
    for order in orders {
        let mut follower = p.follower.clone();
        let mut replica_fx = Effects::default();
        follower.replicate(p.leader.index(), order, secs(1), &mut replica_fx);
        assert!(replica_fx.writes.is_empty());
        results.push((seen(&follower), replica_fx));
    }
    for (n, result) in results.iter().enumerate().skip(1) {
        assert_eq!(result.0, results[0].0, "order {n}: what readers see");
        assert_eq!(
            result.1, results[0].1,
            "order {n}: effects, transitions in order"
        );
    }
    // The same content as the leader; indexes: see the next test.
    assert_ahead_never_behind("big batch", &seen(&p.leader), &results[0].0);
    assert_eq!(
        results[0].1.services, fx.services,
        "the same services are woken"
    );
    assert_eq!(results[0].1.checks, fx.checks);
}

/// Asserts that every index of `follower` is at least the leader's and at most the global one.
fn assert_ahead_never_behind(step: &str, leader: &Seen, follower: &Seen) {
    assert_same_content(step, leader, follower);
    let top = leader.indexes["index"];
    for (what, index) in &leader.indexes {
        let replica = follower.indexes[what];
        assert!(
            *index <= replica && replica <= top,
            "{step}: {what}: leader {index}, replica {replica}, top {top}"
        );
    }
}

/// In a commit of several changes at several indexes (a leader not numbering by batch), what
/// a commit changed takes the commit's index on the replica, which may be ahead of the
/// leader's (never behind); records keep their own indexes.
#[test]
fn a_commit_of_several_changes_may_leave_an_index_ahead_never_behind() {
    let mut p = setup();
    let mut fx = Effects::default();
    for command in [
        destroy("s1"),
        deregister("d1"),
        reg(json!({"Name": "web", "ID": "w2"})),
        config_put(
            json!({"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}),
            None,
        ),
        put("other", "v", 0, None),
    ] {
        p.leader.apply(command, secs(1), &mut fx).unwrap();
    }
    let mut replica_fx = Effects::default();
    p.follower.replicate(
        p.leader.index(),
        mutations(&p.leader, &fx),
        secs(1),
        &mut replica_fx,
    );
    let (leader, follower) = (seen(&p.leader), seen(&p.follower));
    assert_ahead_never_behind("batch", &leader, &follower);
    assert!(
        p.follower.service_index("db") > p.leader.service_index("db"),
        "deregistered before the last change of the commit"
    );
    assert!(p.follower.sessions_index() > p.leader.sessions_index());
    assert!(p.follower.services_index() > p.leader.services_index());
    // What a put changed takes the commit's index too.
    assert!(p.leader.service_index("web") < p.leader.index());
    assert_eq!(p.follower.service_index("web"), p.leader.index());
    assert_eq!(p.follower.config_index(), p.leader.index());

    // An instance that comes and goes within one commit leaves the replica nothing to find its
    // name by: that name's index stays (nothing a reader of it sees changed), and so does a
    // name the replica never saw (it falls back to the services index, which moves).
    let mut fx = Effects::default();
    for command in [
        reg(json!({"Name": "web", "ID": "brief"})),
        reg(json!({"Name": "new", "ID": "brief2"})),
        deregister("brief"),
        deregister("brief2"),
    ] {
        p.leader.apply(command, secs(2), &mut fx).unwrap();
    }
    let web = p.follower.service_index("web");
    p.follower.replicate(
        p.leader.index(),
        mutations(&p.leader, &fx),
        secs(2),
        &mut Effects::default(),
    );
    assert_eq!(p.follower.service_index("web"), web);
    assert!(p.leader.service_index("web") > web);
    assert_eq!(p.follower.service_index("new"), p.leader.index());
    assert_eq!(p.follower.services_index(), p.leader.services_index());
    assert_same_content("came and went", &seen(&p.leader), &seen(&p.follower));

    // A tick of several changes: a TTL running out invalidates a session (deleting its lock) at
    // one index, a session's own TTL runs out at the next.
    let mut p = Pair::new();
    p.run(
        "register",
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"Name": "beat", "TTL": "10s",
            "Status": "passing"}}),
        ),
        secs(0),
    );
    p.run(
        "bound",
        create_session(
            "bound",
            json!({"Checks": ["service:w1"], "Behavior": "delete"}),
        ),
        secs(0),
    );
    p.run("lock", lock("a/lock", "x", "bound"), secs(0));
    p.run("ttl", create_session("ttl", json!({"TTL": "10s"})), secs(5));
    let mut fx = Effects::default();
    p.leader.tick(secs(25), &mut fx);
    let mut replica_fx = Effects::default();
    p.follower.replicate(
        p.leader.index(),
        mutations(&p.leader, &fx),
        secs(25),
        &mut replica_fx,
    );
    assert_eq!(p.leader.session_count(), 0);
    assert_ahead_never_behind("tick", &seen(&p.leader), &seen(&p.follower));
    assert_eq!(wakes(&fx), wakes(&replica_fx));
    assert!(
        p.follower.kv_index("a/") > p.leader.kv_index("a/"),
        "the tombstone takes the commit's index"
    );
}

#[test]
fn without_persisted_status_heartbeats_stay_in_memory() {
    let mut c = Catalog::new();
    let mut fx = Effects::default();
    c.apply(
        reg(json!({"Name": "web", "ID": "w1", "Checks": [
            {"Name": "beat", "TTL": "10s", "Status": "passing"},
            {"Name": "http", "HTTP": "http://127.0.0.1:1/", "Interval": "10s"}]})),
        secs(0),
        &mut fx,
    )
    .unwrap();
    let before = c.index();
    let status_changes = [
        ttl("service:w1:1", CheckStatus::Warning, "slow"),
        report("service:w1:2", CheckStatus::Passing, "ok"),
    ];
    for command in status_changes.clone() {
        let mut fx = Effects::default();
        c.apply(command, secs(1), &mut fx).unwrap();
        assert!(fx.writes.is_empty(), "{fx:?}");
        assert_eq!(fx.transitions.len(), 1);
    }
    assert_eq!(c.index(), before + 2, "visible, numbered, not written");
    let mut fx = Effects::default();
    c.tick(secs(11), &mut fx);
    assert!(fx.writes.is_empty() && fx.transitions.len() == 1);

    // The same changes with persisted status are written.
    let mut c = Catalog::new();
    c.set_persist_status(true);
    c.apply(
        reg(json!({"Name": "web", "ID": "w1", "Checks": [
            {"Name": "beat", "TTL": "10s", "Status": "passing"},
            {"Name": "http", "HTTP": "http://127.0.0.1:1/", "Interval": "10s"}]})),
        secs(0),
        &mut Effects::default(),
    )
    .unwrap();
    for (command, id) in status_changes
        .into_iter()
        .zip(["service:w1:1", "service:w1:2"])
    {
        let mut fx = Effects::default();
        c.apply(command, secs(1), &mut fx).unwrap();
        let written = Write::Check {
            id: id.into(),
            owner: Some("w1".into()),
        };
        assert_eq!(fx.writes, BTreeSet::from([written]));
    }
    let mut fx = Effects::default();
    c.apply(
        Command::SessionCreate {
            session: session_from_create(Some(json!({"TTL": "10s"})), "s".into(), "n").unwrap(),
        },
        secs(1),
        &mut Effects::default(),
    )
    .unwrap();
    c.apply(Command::SessionRenew { id: "s".into() }, secs(2), &mut fx)
        .unwrap();
    assert!(fx.is_empty(), "renewals stay in memory");
    c.tick(secs(11), &mut fx);
    assert!(fx.writes.contains(&Write::Check {
        id: "service:w1:1".into(),
        owner: Some("w1".into()),
    }));
}

#[test]
fn a_probe_output_alone_stays_on_the_leader() {
    let mut p = Pair::new();
    p.run(
        "register",
        reg(json!({"Name": "web", "ID": "w1", "Check": {"Name": "http",
            "HTTP": "http://127.0.0.1:1/", "Interval": "10s", "Status": "passing",
            "FailuresBeforeCritical": 2}})),
        secs(0),
    );
    // One failure of two changes the output but not the status: no index, nothing written, so
    // the follower keeps the output of the last status change.
    let mut fx = Effects::default();
    p.leader
        .apply(
            report("service:w1", CheckStatus::Critical, "refused"),
            secs(1),
            &mut fx,
        )
        .unwrap();
    assert!(fx.writes.is_empty());
    assert_eq!(p.leader.check("service:w1").unwrap().output, "refused");
    assert_eq!(p.follower.check("service:w1").unwrap().output, "");
    // The second failure changes the status, and the follower gets both.
    p.run(
        "second failure",
        report("service:w1", CheckStatus::Critical, "refused"),
        secs(2),
    );
    assert_eq!(p.follower.check("service:w1").unwrap().output, "refused");
}

#[test]
fn a_check_without_its_instance_is_not_kept() {
    let mut p = setup();
    let mut record = p.leader.check_record("service:w1").unwrap();
    record.definition.service_id = Some("nowhere".into());
    record.modify_index = p.leader.index() + 1;
    let orphan = CheckRecord {
        definition: CheckDefinition {
            id: Some("orphan".into()),
            ..record.definition.clone()
        },
        ..record.clone()
    };
    let mut fx = Effects::default();
    p.follower.replicate(
        p.leader.index() + 1,
        vec![Mutation::PutCheck(record), Mutation::PutCheck(orphan)],
        secs(1),
        &mut fx,
    );
    assert!(p.follower.check("orphan").is_none());
    assert!(
        p.follower.check("service:w1").is_none(),
        "the copy under w1 cannot stay either"
    );
    // An instance whose checks were not deleted takes them with it.
    let mut p = setup();
    let mut fx = Effects::default();
    p.follower.replicate(
        p.leader.index() + 1,
        vec![Mutation::DeleteInstance("w1".into())],
        secs(1),
        &mut fx,
    );
    assert!(p.follower.check("service:w1").is_none());
    assert!(fx.checks.contains("service:w1") && fx.writes.is_empty());
    assert!(p.follower.service_view("web").instances.is_empty());
}

#[test]
fn rearmed_timers_give_a_full_ttl_from_now() {
    let p = setup();
    let mut follower = p.follower.clone();
    // Replicated at 0 s; heartbeats went to the leader since. Promoted at 8 s:
    follower.rearm_timers(secs(8));
    assert_eq!(follower.session_deadline("s1"), Some(secs(8 + 20)));
    assert_eq!(follower.next_deadline(), Some(secs(18)), "the check's TTL");
    let mut fx = Effects::default();
    follower.tick(secs(17), &mut fx);
    assert_eq!(
        follower.check("service:w1").unwrap().status,
        CheckStatus::Passing
    );
    follower.tick(secs(18), &mut fx);
    assert_eq!(
        follower.check("service:w1").unwrap().status,
        CheckStatus::Critical
    );
    assert!(
        follower.session("s1").is_none(),
        "the new leader decides again"
    );

    // Without rearming, the timers run from when the records were replicated.
    let mut stale = p.follower.clone();
    let mut fx = Effects::default();
    stale.tick(secs(10), &mut fx);
    assert_eq!(
        stale.check("service:w1").unwrap().status,
        CheckStatus::Critical
    );
}

#[test]
fn a_replica_keeps_the_lock_delays_of_the_sessions_it_saw_go() {
    let mut p = Pair::new();
    p.run(
        "session",
        create_session("s1", json!({"LockDelay": "10s"})),
        secs(0),
    );
    p.run(
        "quick",
        create_session("s2", json!({"LockDelay": "0s"})),
        secs(0),
    );
    p.run("lock a", lock("locks/a", "x", "s1"), secs(1));
    p.run("lock b", lock("locks/b", "x", "s2"), secs(1));
    p.run("destroy s1", destroy("s1"), secs(2));
    p.run("destroy s2", destroy("s2"), secs(2));
    // Promoted at 5 s, the follower refuses the lock its old leader would have refused.
    let mut follower = p.follower.clone();
    follower.rearm_timers(secs(5));
    let mut fx = Effects::default();
    follower
        .apply(create_session("s3", json!({})), secs(5), &mut fx)
        .unwrap();
    let locked = |c: &mut Catalog, key: &str, now: Duration| {
        let mut fx = Effects::default();
        c.apply(lock(key, "y", "s3"), now, &mut fx).unwrap() == Reply::Bool(true)
    };
    assert!(
        !locked(&mut follower, "locks/a", secs(5)),
        "within the delay"
    );
    assert!(locked(&mut follower, "locks/b", secs(5)), "no delay asked");
    assert!(locked(&mut follower, "locks/a", secs(12)), "delay over");
}

/// A store numbering commits as etcd does: one revision per transaction of at most `per_txn`
/// keys (the index key goes with the last), other writers' revisions in between, and each key's
/// create revision kept until the key is deleted.
struct EtcdLike {
    revision: u64,
    created: BTreeMap<String, u64>,
    per_txn: usize,
}

/// The key a mutation writes, as the etcd layout names it.
fn etcd_key(mutation: &Mutation) -> String {
    match mutation {
        Mutation::PutInstance(r) => format!("instances/{}", r.registration.id),
        Mutation::DeleteInstance(id) => format!("instances/{id}"),
        Mutation::PutCheck(r) => format!(
            "checks/{}/{}",
            r.definition.service_id.as_deref().unwrap_or_default(),
            r.definition.id.as_deref().unwrap_or_default()
        ),
        Mutation::DeleteCheck { id, owner } => {
            format!("checks/{}/{id}", owner.as_deref().unwrap_or_default())
        }
        Mutation::PutKv(e) => format!("kv/{}", e.key),
        Mutation::DeleteKv(key) => format!("kv/{key}"),
        Mutation::PutSession(s) => format!("sessions/{}", s.id),
        Mutation::DeleteSession(id) => format!("sessions/{id}"),
        Mutation::PutConfigEntry(e) => format!("config/{}/{}", e.kind, e.name.to_lowercase()),
        Mutation::DeleteConfigEntry { kind, name } => {
            format!("config/{kind}/{}", name.to_lowercase())
        }
    }
}

impl EtcdLike {
    /// Commits `mutations` after `others` revisions of other writers: the numbering, and the
    /// mutations as a replica's feed reads them (numbered with their keys' revisions).
    fn commit(&mut self, mutations: &[Mutation], others: u64) -> (Numbering, Vec<Mutation>) {
        self.revision += others;
        let finals: BTreeMap<String, bool> = mutations
            .iter()
            .map(|m| (etcd_key(m), m.is_put()))
            .collect();
        let finals: Vec<(String, bool)> = finals.into_iter().collect();
        let mut numbered = BTreeMap::new();
        for txn in finals.chunks(self.per_txn) {
            self.revision += 1;
            for (key, put) in txn {
                if *put {
                    let create = *self.created.entry(key.clone()).or_insert(self.revision);
                    numbered.insert(
                        key.clone(),
                        Revisions {
                            create,
                            modify: self.revision,
                        },
                    );
                } else {
                    self.created.remove(key);
                }
            }
        }
        if finals.is_empty() {
            // The index key alone.
            self.revision += 1;
        }
        let records = mutations
            .iter()
            .map(|m| m.is_put().then(|| numbered[&etcd_key(m)]))
            .collect::<Vec<_>>();
        let mut read = mutations.to_vec();
        for (mutation, revisions) in read.iter_mut().zip(&records) {
            if let Some(revisions) = revisions {
                mutation.set_indexes(*revisions);
            }
        }
        let numbering = Numbering {
            index: self.revision,
            records,
        };
        (numbering, read)
    }
}

/// A leader sharing etcd numbers each batch as one change and takes etcd's numbers once it is
/// committed; a replica reads them off the keys: every index, and every record's, is the same on
/// both after every batch (of many commands, split over several transactions, with other
/// writers' revisions in between, a key deleted and made again, a tick), and never goes back.
#[test]
fn numbered_by_etcd_every_server_shows_the_same_indexes() {
    let mut leader = Catalog::new();
    leader.set_persist_status(true);
    leader.set_ttl_expiry(false, secs(0));
    let mut follower = Catalog::new();
    let mut etcd = EtcdLike {
        revision: 40,
        created: BTreeMap::new(),
        per_txn: 4,
    };
    let mut last_index = 0;
    let mut batch =
        |step: &str,
         leader: &mut Catalog,
         follower: &mut Catalog,
         run: &mut dyn FnMut(&mut Catalog, &mut Effects) -> Vec<Reply>| {
            let tentative = leader.begin_batch();
            assert!(
                tentative > leader.index(),
                "{step}: above every index handed out"
            );
            let mut fx = Effects::default();
            let mut replies = run(leader, &mut fx);
            let group = mutations(leader, &fx);
            let (numbering, read) = etcd.commit(&group, 3);
            assert!(
                numbering.index >= tentative,
                "{step}: etcd's revision only rises"
            );
            leader.renumber(tentative, &group, &numbering, &mut fx);
            for reply in &mut replies {
                leader.renumber_reply(tentative, reply);
            }
            let mut replica_fx = Effects::default();
            follower.replicate(numbering.index, read, secs(1), &mut replica_fx);
            assert_same(step, &seen(leader), &seen(follower));
            assert_eq!(
                leader.index(),
                numbering.index,
                "{step}: the commit's revision"
            );
            assert!(leader.index() > last_index, "{step}: never backwards");
            last_index = leader.index();
            // The leader reports transitions as they happened, a replica each check's net change:
            // both numbered with the check's revision (the commit's, for a check gone since).
            for transition in fx.transitions.iter().chain(&replica_fx.transitions) {
                let check = leader.checks().find(|c| c.id() == transition.check_id);
                assert_eq!(
                    transition.index,
                    check.map_or(leader.index(), |c| c.modify_index),
                    "{step}: transition of {}",
                    transition.check_id
                );
            }
            assert_eq!(fx.services, replica_fx.services, "{step}: services woken");
            replies
        };
    let apply_all = |commands: Vec<Command>| {
        move |leader: &mut Catalog, fx: &mut Effects| {
            commands
                .iter()
                .map(|c| leader.apply(c.clone(), secs(1), fx).unwrap())
                .collect::<Vec<_>>()
        }
    };
    batch(
        "setup",
        &mut leader,
        &mut follower,
        &mut apply_all(vec![
            reg(
                json!({"Name": "web", "ID": "w1", "Check": {"Name": "beat", "TTL": "10s",
                "Status": "passing"}}),
            ),
            reg(json!({"Name": "db", "ID": "d1"})),
            create_session("s1", json!({"Checks": ["service:w1"], "TTL": "10s"})),
            lock("lock", "me", "s1"),
            put("k", "v", 0, None),
            config_put(
                json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
                None,
            ),
        ]),
    );
    batch(
        "many commands",
        &mut leader,
        &mut follower,
        &mut |leader, _fx| {
            let fx = big_batch(leader);
            *_fx = fx;
            Vec::new()
        },
    );
    let k_created = leader.kv_get("k2").unwrap().create_index;
    let replies = batch(
        "a key deleted and made again",
        &mut leader,
        &mut follower,
        &mut apply_all(vec![
            put("k2", "1", 0, None),
            del("k2", false),
            put("k2", "2", 0, None),
            Command::Txn {
                ops: vec![
                    op(KvVerb::Set, "t", "x", "", 0),
                    op(KvVerb::Get, "k2", "", "", 0),
                ],
            },
        ]),
    );
    // etcd saw one put of a key that was there: it keeps its create revision.
    let k = leader.kv_get("k2").unwrap();
    assert_eq!(
        (k.create_index, k.value.as_slice()),
        (k_created, b"2".as_slice())
    );
    let Reply::Txn(outcome) = &replies[3] else {
        panic!("{replies:?}")
    };
    for entry in &outcome.results {
        let now = leader.kv_get(&entry.key).unwrap();
        assert_eq!(
            (entry.create_index, entry.modify_index),
            (now.create_index, now.modify_index),
            "a transaction answers etcd's numbers"
        );
    }
    batch(
        "a status change",
        &mut leader,
        &mut follower,
        &mut apply_all(vec![ttl("service:w1", CheckStatus::Critical, "down")]),
    );
    batch("a tick", &mut leader, &mut follower, &mut |leader, fx| {
        leader.tick(secs(200), fx);
        Vec::new()
    });
}

/// A leader's batch whose commit failed is taken back out before anyone reads it: every record
/// as it was (sessions, their locks, checks moved, instances gone, config entries, KV keys
/// deleted and made), every index back at most at the index before the batch and never below
/// where it was. The catalog then goes on as if the batch had never been.
#[test]
fn a_batch_whose_commit_failed_is_taken_back_out() {
    let mut p = setup();
    let before = seen(&p.leader);
    let index = p.leader.index();
    p.leader.begin_batch();
    let mut fx = big_batch(&mut p.leader);
    for command in [
        destroy("s1"),
        put("k", "changed", 0, None),
        put("new/key", "v", 0, None),
        reg(
            json!({"Name": "web", "ID": "w1", "Port": 9, "Check": {"Name": "beat",
            "TTL": "10s", "Status": "critical"}}),
        ),
    ] {
        p.leader.apply(command, secs(1), &mut fx).unwrap();
    }
    p.leader.tick(secs(100), &mut fx);
    assert_ne!(seen(&p.leader).kv, before.kv, "the batch changed something");
    p.leader.undo_batch(secs(1));
    let after = seen(&p.leader);
    assert_same_content("undone", &before, &after);
    assert_eq!(p.leader.index(), index);
    for (what, was) in &before.indexes {
        let now = after.indexes[what];
        assert!(
            *was <= now && now <= index,
            "{what}: {was} before the batch, {now} after its undo, index {index}"
        );
    }
    // Nothing of the batch is left to number or to undo again; the leader goes on.
    p.leader.undo_batch(secs(1));
    assert_same_content("undone twice", &before, &seen(&p.leader));
    let mut fx = Effects::default();
    p.leader
        .apply(put("k", "after", 0, None), secs(2), &mut fx)
        .unwrap();
    assert_eq!(p.leader.kv_get("k").unwrap().modify_index, index + 1);
}
