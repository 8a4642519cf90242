//! Unit tests of the catalog state machine with an injected clock.

use super::*;
use serde_json::json;
use std::time::Duration;
use trellis_types::{CheckDefinition, CheckStatus, ServiceRegistration};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn reg(body: serde_json::Value) -> Command {
    Command::Register {
        registration: ServiceRegistration::from_json(body).unwrap(),
        replace_existing_checks: false,
    }
}

fn apply(c: &mut Catalog, cmd: Command, now: Duration) -> Effects {
    let mut fx = Effects::default();
    c.apply(cmd, now, &mut fx).unwrap();
    fx
}

fn status_of(c: &Catalog, check: &str) -> CheckStatus {
    c.check(check).unwrap().status
}

/// `c` as a restart at `now` brings it back: every record it holds, restored at its index.
fn restart(c: &Catalog, now: Duration) -> Catalog {
    let instances = c.instances().map(|i| (**i).clone()).collect();
    let checks = c.checks().map(|ch| ch.record()).collect();
    let kv = KvSnapshot {
        entries: c.kv_range("").cloned().collect(),
        sessions: c.sessions().map(|s| (**s).clone()).collect(),
    };
    let config = c.config_entries(None).map(|e| (**e).clone()).collect();
    Catalog::restore(c.index(), instances, checks, kv, config, now)
}

#[test]
fn default_check_ids_and_initial_status() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(0),
    );
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    assert_eq!(c.check("service:w1").unwrap().name(), "Service 'web' check");
    apply(
        &mut c,
        reg(
            json!({"Name": "api", "ID": "a1", "Checks": [{"TTL": "10s", "Status": "passing"}, {"TTL": "5s"}]}),
        ),
        secs(0),
    );
    assert_eq!(status_of(&c, "service:a1:1"), CheckStatus::Passing);
    assert_eq!(status_of(&c, "service:a1:2"), CheckStatus::Critical);
}

#[test]
fn index_is_per_service() {
    let mut c = Catalog::new();
    apply(&mut c, reg(json!({"Name": "web", "ID": "w1"})), secs(0));
    apply(&mut c, reg(json!({"Name": "db", "ID": "d1"})), secs(0));
    let web = c.service_index("web");
    let db = c.service_index("db");
    assert!(db > web);
    let fx = apply(&mut c, reg(json!({"Name": "web", "ID": "w2"})), secs(0));
    assert!(fx.services.contains("web") && !fx.services.contains("db"));
    assert!(c.service_index("web") > web);
    assert_eq!(c.service_index("db"), db);
    assert!(c.index() >= c.service_index("web"));
}

#[test]
fn identical_reregistration_changes_nothing() {
    let mut c = Catalog::new();
    let body = json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}});
    apply(&mut c, reg(body.clone()), secs(0));
    let before = c.index();
    let fx = apply(&mut c, reg(body), secs(1));
    assert!(fx.is_empty());
    assert_eq!(c.index(), before);
}

#[test]
fn deregister_removes_checks_and_keeps_name_index() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(0),
    );
    let before = c.service_index("web");
    let fx = apply(
        &mut c,
        Command::Deregister {
            service_id: "w1".into(),
        },
        secs(0),
    );
    assert!(c.check("service:w1").is_none());
    assert!(fx.writes.contains(&Write::Instance("w1".into())));
    assert!(fx.writes.contains(&Write::Check {
        id: "service:w1".into(),
        owner: Some("w1".into())
    }));
    assert!(c.service_index("web") > before);
    assert!(c.service_view("web").instances.is_empty());
    let mut fx = Effects::default();
    assert!(matches!(
        c.apply(
            Command::Deregister {
                service_id: "w1".into()
            },
            secs(0),
            &mut fx
        ),
        Err(CatalogError::NotFound(_))
    ));
}

#[test]
fn ttl_pass_expire_and_status_changes() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(0),
    );
    let upd = |status| Command::UpdateTtl {
        check_id: "service:w1".into(),
        status,
        output: String::new(),
    };
    let fx = apply(&mut c, upd(CheckStatus::Passing), secs(1));
    assert!(fx.writes.is_empty(), "TTL updates are memory-only");
    assert!(fx.services.contains("web"));
    assert_eq!(
        c.service_view("web").instances[0].status,
        CheckStatus::Passing
    );
    // A heartbeat that changes nothing does not bump the index.
    let index = c.index();
    let fx = apply(&mut c, upd(CheckStatus::Passing), secs(5));
    assert!(fx.services.is_empty());
    assert_eq!(c.index(), index);
    // The TTL restarted at 5 s: still passing at 14 s, critical at 15 s.
    let mut fx = Effects::default();
    c.tick(secs(14), &mut fx);
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Passing);
    c.tick(secs(15), &mut fx);
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    assert_eq!(c.check("service:w1").unwrap().output, "TTL expired");
    apply(&mut c, upd(CheckStatus::Warning), secs(16));
    assert_eq!(
        c.service_view("web").instances[0].status,
        CheckStatus::Warning
    );
}

#[test]
fn update_of_non_ttl_or_unknown_check_is_refused() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"}})),
        secs(0),
    );
    let mut fx = Effects::default();
    let cmd = |id: &str| Command::UpdateTtl {
        check_id: id.into(),
        status: CheckStatus::Passing,
        output: String::new(),
    };
    assert!(matches!(
        c.apply(cmd("service:w1"), secs(0), &mut fx),
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        c.apply(cmd("nope"), secs(0), &mut fx),
        Err(CatalogError::NotFound(_))
    ));
}

#[test]
fn hysteresis_success_before_passing_and_failures_before_critical() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {
            "HTTP": "http://127.0.0.1:1/h", "Interval": "1s",
            "SuccessBeforePassing": 2, "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 3}})),
        secs(0),
    );
    let report = |result| Command::ReportCheck {
        check_id: "service:w1".into(),
        result,
        output: "x".into(),
    };
    apply(&mut c, report(CheckStatus::Passing), secs(1));
    assert_eq!(
        status_of(&c, "service:w1"),
        CheckStatus::Critical,
        "one success is not enough"
    );
    apply(&mut c, report(CheckStatus::Passing), secs(2));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Passing);
    apply(&mut c, report(CheckStatus::Critical), secs(3));
    assert_eq!(
        status_of(&c, "service:w1"),
        CheckStatus::Warning,
        "first failure warns"
    );
    apply(&mut c, report(CheckStatus::Critical), secs(4));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Warning);
    apply(&mut c, report(CheckStatus::Critical), secs(5));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    // A success in between resets the failure count.
    apply(&mut c, report(CheckStatus::Passing), secs(6));
    apply(&mut c, report(CheckStatus::Passing), secs(7));
    apply(&mut c, report(CheckStatus::Critical), secs(8));
    apply(&mut c, report(CheckStatus::Passing), secs(9));
    apply(&mut c, report(CheckStatus::Critical), secs(10));
    apply(&mut c, report(CheckStatus::Critical), secs(11));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Warning);
}

#[test]
fn default_thresholds_change_at_once() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"}})),
        secs(0),
    );
    let report = |result| Command::ReportCheck {
        check_id: "service:w1".into(),
        result,
        output: String::new(),
    };
    apply(&mut c, report(CheckStatus::Passing), secs(1));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Passing);
    apply(&mut c, report(CheckStatus::Warning), secs(2));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Warning);
    apply(&mut c, report(CheckStatus::Critical), secs(3));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
}

#[test]
fn reaper_deregisters_after_critical_period() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"TTL": "5s", "Status": "passing", "DeregisterCriticalServiceAfter": "30s"}}),
        ),
        secs(0),
    );
    let mut fx = Effects::default();
    c.tick(secs(5), &mut fx); // TTL expires: critical since 5 s
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    c.tick(secs(34), &mut fx);
    assert!(c.instance("w1").is_some());
    let mut fx = Effects::default();
    c.tick(secs(35), &mut fx);
    assert!(c.instance("w1").is_none());
    assert!(
        fx.writes.contains(&Write::Instance("w1".into())),
        "reaping is durable"
    );
}

#[test]
fn recovering_check_is_not_reaped() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"TTL": "5s", "DeregisterCriticalServiceAfter": "10s"}}),
        ),
        secs(0),
    );
    apply(
        &mut c,
        Command::UpdateTtl {
            check_id: "service:w1".into(),
            status: CheckStatus::Passing,
            output: String::new(),
        },
        secs(8),
    );
    let mut fx = Effects::default();
    c.tick(secs(12), &mut fx);
    assert!(c.instance("w1").is_some());
}

#[test]
fn replace_existing_checks() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Checks": [{"CheckID": "a", "TTL": "5s"}, {"CheckID": "b", "TTL": "5s"}]}),
        ),
        secs(0),
    );
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Checks": [{"CheckID": "a", "TTL": "5s"}]})),
        secs(0),
    );
    assert!(c.check("b").is_some(), "without replace, other checks stay");
    let cmd = Command::Register {
        registration: ServiceRegistration::from_json(
            json!({"Name": "web", "ID": "w1", "Checks": [{"CheckID": "a", "TTL": "5s"}]}),
        )
        .unwrap(),
        replace_existing_checks: true,
    };
    apply(&mut c, cmd, secs(0));
    assert!(c.check("b").is_none());
    assert!(c.check("a").is_some());
}

#[test]
fn node_checks_affect_every_service() {
    let mut c = Catalog::new();
    apply(&mut c, reg(json!({"Name": "web", "ID": "w1"})), secs(0));
    apply(&mut c, reg(json!({"Name": "db", "ID": "d1"})), secs(0));
    assert_eq!(
        c.service_view("db").instances[0].status,
        CheckStatus::Passing
    );
    let check = CheckDefinition::from_json(json!({"Name": "disk", "TTL": "10s"})).unwrap();
    let fx = apply(&mut c, Command::RegisterCheck { check }, secs(0));
    assert!(fx.services.contains("web") && fx.services.contains("db"));
    assert_eq!(
        c.service_view("db").instances[0].status,
        CheckStatus::Critical
    );
    assert_eq!(
        c.check("disk").unwrap().id(),
        "disk",
        "CheckID defaults to Name"
    );
    let bad = CheckDefinition::from_json(json!({"Name": "x", "TTL": "1s", "ServiceID": "ghost"}))
        .unwrap();
    let mut fx = Effects::default();
    assert!(matches!(
        c.apply(Command::RegisterCheck { check: bad }, secs(0), &mut fx),
        Err(CatalogError::Invalid(_))
    ));
}

#[test]
fn kv_cas_rules() {
    let mut c = Catalog::new();
    let put = |cas| Command::KvPut {
        key: "a/b".into(),
        value: b"1".to_vec(),
        flags: 7,
        cas,
    };
    let mut fx = Effects::default();
    assert_eq!(
        c.apply(put(Some(5)), secs(0), &mut fx),
        Ok(Reply::Bool(false)),
        "cas on a missing key"
    );
    assert_eq!(
        c.apply(put(Some(0)), secs(0), &mut fx),
        Ok(Reply::Bool(true)),
        "cas=0 creates"
    );
    assert_eq!(
        c.apply(put(Some(0)), secs(0), &mut fx),
        Ok(Reply::Bool(false)),
        "cas=0 only creates"
    );
    let entry = c.kv_get("a/b").unwrap().clone();
    assert_eq!(entry.flags, 7);
    assert_eq!(
        c.apply(put(Some(entry.modify_index + 1)), secs(0), &mut fx),
        Ok(Reply::Bool(false))
    );
    // Writing what is there succeeds and changes nothing, as in Consul: no index is taken.
    let before = c.index();
    assert_eq!(
        c.apply(put(Some(entry.modify_index)), secs(0), &mut fx),
        Ok(Reply::Bool(true))
    );
    assert_eq!((c.index(), c.kv_get("a/b").unwrap()), (before, &entry));
    let change = Command::KvPut {
        key: "a/b".into(),
        value: b"2".to_vec(),
        flags: 7,
        cas: Some(entry.modify_index),
    };
    assert_eq!(c.apply(change, secs(0), &mut fx), Ok(Reply::Bool(true)));
    let after = c.kv_get("a/b").unwrap();
    assert_eq!(after.create_index, entry.create_index);
    assert!(after.modify_index > entry.modify_index);
    let del = |cas| Command::KvDelete {
        key: "a/b".into(),
        recurse: false,
        cas,
    };
    assert_eq!(
        c.apply(del(Some(1)), secs(0), &mut fx),
        Ok(Reply::Bool(false))
    );
    let current = c.kv_get("a/b").unwrap().modify_index;
    assert_eq!(
        c.apply(del(Some(current)), secs(0), &mut fx),
        Ok(Reply::Bool(true))
    );
    assert!(c.kv_get("a/b").is_none());
}

#[test]
fn kv_prefix_index_survives_deletes() {
    let mut c = Catalog::new();
    for key in ["app/a", "app/b", "other/x"] {
        apply(
            &mut c,
            Command::KvPut {
                key: key.into(),
                value: vec![],
                flags: 0,
                cas: None,
            },
            secs(0),
        );
    }
    let app = c.kv_index("app/");
    apply(
        &mut c,
        Command::KvPut {
            key: "other/y".into(),
            value: vec![],
            flags: 0,
            cas: None,
        },
        secs(0),
    );
    assert_eq!(
        c.kv_index("app/"),
        app,
        "writes elsewhere do not move the prefix index"
    );
    let fx = apply(
        &mut c,
        Command::KvDelete {
            key: "app/".into(),
            recurse: true,
            cas: None,
        },
        secs(0),
    );
    assert_eq!(fx.writes.len(), 2);
    assert!(c.kv_range("app/").next().is_none());
    assert!(c.kv_index("app/") > app, "a delete moves the index forward");
    let missing = apply(
        &mut c,
        Command::KvDelete {
            key: "nothing".into(),
            recurse: false,
            cas: None,
        },
        secs(0),
    );
    assert!(missing.writes.is_empty());
}

#[test]
fn invalid_keys_are_refused() {
    let mut c = Catalog::new();
    let mut fx = Effects::default();
    for key in [String::new(), "x".repeat(600), "a\nb".into()] {
        let cmd = Command::KvPut {
            key,
            value: vec![],
            flags: 0,
            cas: None,
        };
        assert!(matches!(
            c.apply(cmd, secs(0), &mut fx),
            Err(CatalogError::Invalid(_))
        ));
    }
}

#[test]
fn restore_rebuilds_everything() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Tags": ["v1"], "Check": {"TTL": "10s", "Status": "passing"}}),
        ),
        secs(0),
    );
    apply(
        &mut c,
        Command::KvPut {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
            cas: None,
        },
        secs(0),
    );
    let restored = restart(&c, secs(100));
    assert_eq!(restored.index(), c.index());
    assert!(restored.service_index("web") >= c.service_index("web"));
    assert!(restored.kv_index("gone/") >= c.kv_index("gone/"));
    assert_eq!(
        restored.service_names()["web"].iter().collect::<Vec<_>>(),
        ["v1"]
    );
    assert_eq!(
        restored.check("service:w1").unwrap().status,
        CheckStatus::Passing
    );
    assert_eq!(restored.kv_get("k").unwrap().value, b"v");
    // The TTL restarts from the restore time.
    let mut restored = restored;
    let mut fx = Effects::default();
    restored.tick(secs(105), &mut fx);
    assert_eq!(
        restored.check("service:w1").unwrap().status,
        CheckStatus::Passing
    );
    restored.tick(secs(110), &mut fx);
    assert_eq!(
        restored.check("service:w1").unwrap().status,
        CheckStatus::Critical
    );
}

#[test]
fn renaming_an_instance_moves_it() {
    let mut c = Catalog::new();
    apply(&mut c, reg(json!({"Name": "web", "ID": "x1"})), secs(0));
    let fx = apply(&mut c, reg(json!({"Name": "api", "ID": "x1"})), secs(0));
    assert!(fx.services.contains("web") && fx.services.contains("api"));
    assert!(c.service_view("web").instances.is_empty());
    assert_eq!(c.service_view("api").instances.len(), 1);
}

#[test]
fn checks_expiring_in_one_tick_share_one_index() {
    let mut c = Catalog::new();
    for i in 0..50 {
        apply(
            &mut c,
            reg(
                json!({"Name": format!("s{}", i % 5), "ID": format!("i{i}"), "Check": {"TTL": "5s", "Status": "passing"}}),
            ),
            secs(0),
        );
    }
    let before = c.index();
    let mut fx = Effects::default();
    c.tick(secs(5), &mut fx);
    assert_eq!(c.index(), before + 1, "one bump for the whole tick");
    assert_eq!(fx.services.len(), 5);
    assert!((0..5).all(|n| c.service_index(&format!("s{n}")) == before + 1));
    assert!(
        c.checks()
            .all(|ch| ch.status == CheckStatus::Critical && ch.modify_index == before + 1)
    );
}

#[test]
fn tick_work_is_bounded_and_the_rest_stays_due() {
    let mut c = Catalog::new();
    let total = TICK_BUDGET + 100;
    for i in 0..total {
        apply(
            &mut c,
            reg(
                json!({"Name": "s", "ID": format!("i{i:06}"), "Check": {"TTL": "5s", "Status": "passing"}}),
            ),
            secs(0),
        );
    }
    let critical = |c: &Catalog| {
        c.checks()
            .filter(|ch| ch.status == CheckStatus::Critical)
            .count()
    };
    assert_eq!(c.next_deadline(), Some(secs(5)));
    let mut fx = Effects::default();
    c.tick(secs(5), &mut fx);
    assert_eq!(
        critical(&c),
        TICK_BUDGET,
        "one tick handles at most the budget"
    );
    assert!(
        c.next_deadline().is_some_and(|d| d <= secs(5)),
        "the rest is still due: the writer comes back at once"
    );
    c.tick(secs(5), &mut fx);
    assert_eq!(
        critical(&c),
        total,
        "the next tick takes the rest, each once"
    );
    assert_eq!(
        c.next_deadline(),
        None,
        "critical, and no reaper: nothing left"
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn heartbeat(check_id: &str) -> Command {
    Command::UpdateTtl {
        check_id: check_id.into(),
        status: CheckStatus::Passing,
        output: String::new(),
    }
}

#[test]
fn a_ttl_expires_exactly_at_its_deadline() {
    let mut c = Catalog::new();
    assert_eq!(c.next_deadline(), None);
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "100ms", "Status": "passing"}})),
        ms(1000),
    );
    assert_eq!(c.next_deadline(), Some(ms(1100)));
    let index = c.index();
    let mut fx = Effects::default();
    c.tick(ms(1100) - Duration::from_nanos(1), &mut fx);
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Passing);
    assert_eq!(c.index(), index, "a tick with nothing due takes no index");
    assert!(fx.services.is_empty() && fx.writes.is_empty());
    c.tick(ms(1100), &mut fx);
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    assert_eq!(c.index(), index + 1);
    assert!(fx.writes.is_empty(), "expiry is memory-only");
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_heartbeat_moves_the_deadline() {
    let mut c = Catalog::new();
    for (id, ttl) in [("a", "300ms"), ("b", "1s")] {
        apply(
            &mut c,
            reg(json!({"Name": "web", "ID": id, "Check": {"TTL": ttl, "Status": "passing"}})),
            ms(0),
        );
    }
    assert_eq!(c.next_deadline(), Some(ms(300)));
    apply(&mut c, heartbeat("service:a"), ms(200));
    assert_eq!(c.next_deadline(), Some(ms(500)));
    apply(&mut c, heartbeat("service:a"), ms(800));
    assert_eq!(c.next_deadline(), Some(ms(1000)), "now b is the soonest");
    let mut fx = Effects::default();
    c.tick(ms(1000), &mut fx);
    assert_eq!(status_of(&c, "service:a"), CheckStatus::Passing);
    assert_eq!(status_of(&c, "service:b"), CheckStatus::Critical);
    assert_eq!(c.next_deadline(), Some(ms(1100)));
    // A heartbeat on a critical check revives it and restarts its deadline.
    apply(&mut c, heartbeat("service:b"), ms(1050));
    assert_eq!(status_of(&c, "service:b"), CheckStatus::Passing);
    assert_eq!(c.next_deadline(), Some(ms(1100)));
    c.tick(ms(1100), &mut fx);
    assert_eq!(c.next_deadline(), Some(ms(2050)));
    // Deregistering takes the check's deadline with it.
    apply(
        &mut c,
        Command::Deregister {
            service_id: "b".into(),
        },
        ms(1200),
    );
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn the_reaper_runs_at_its_deadline() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"TTL": "1s", "Status": "passing", "DeregisterCriticalServiceAfter": "2s"}}),
        ),
        ms(0),
    );
    let mut fx = Effects::default();
    c.tick(ms(1000), &mut fx);
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Critical);
    assert_eq!(
        c.next_deadline(),
        Some(ms(3000)),
        "critical since 1 s, plus 2 s"
    );
    c.tick(ms(3000) - Duration::from_nanos(1), &mut fx);
    assert!(c.instance("w1").is_some());
    let mut fx = Effects::default();
    c.tick(ms(3000), &mut fx);
    assert!(c.instance("w1").is_none());
    assert!(
        fx.writes.contains(&Write::Instance("w1".into())),
        "reaping is durable"
    );
    assert_eq!(c.next_deadline(), None);
    // A probe result that goes critical starts the reaper's clock too; recovering stops it.
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w2", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "10s", "Status": "passing", "DeregisterCriticalServiceAfter": "5s"}}),
        ),
        ms(4000),
    );
    assert_eq!(c.next_deadline(), None);
    let report = |result| Command::ReportCheck {
        check_id: "service:w2".into(),
        result,
        output: String::new(),
    };
    apply(&mut c, report(CheckStatus::Critical), ms(4500));
    assert_eq!(c.next_deadline(), Some(ms(9500)));
    apply(&mut c, report(CheckStatus::Passing), ms(6000));
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_zero_reaper_delay_reaps_in_the_expiring_tick() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(
            json!({"Name": "web", "ID": "w1", "Check": {"TTL": "1s", "Status": "passing", "DeregisterCriticalServiceAfter": "0s"}}),
        ),
        ms(0),
    );
    let mut fx = Effects::default();
    c.tick(ms(1000), &mut fx);
    // Whether "0s" means "reap at once" or "no reaper", nothing may stay due.
    assert!(c.next_deadline().is_none_or(|d| d > ms(1000)));
}

#[test]
fn restore_rebuilds_the_deadlines() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s", "Status": "passing"}})),
        secs(0),
    );
    apply(
        &mut c,
        reg(
            json!({"Name": "db", "ID": "d1", "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "30s"}}),
        ),
        secs(0),
    );
    let mut restored = restart(&c, secs(100));
    assert_eq!(
        restored.next_deadline(),
        Some(secs(110)),
        "TTL restarts at restore"
    );
    let mut fx = Effects::default();
    restored.tick(secs(110), &mut fx);
    assert_eq!(
        restored.check("service:w1").unwrap().status,
        CheckStatus::Critical
    );
    assert_eq!(
        restored.next_deadline(),
        Some(secs(130)),
        "the critical check's reaper restarted at restore"
    );
    restored.tick(secs(130), &mut fx);
    assert!(restored.instance("d1").is_none());
    assert!(restored.instance("w1").is_some());
    assert_eq!(restored.next_deadline(), None);
}

fn put(key: &str, cas: Option<u64>) -> Command {
    Command::KvPut {
        key: key.into(),
        value: b"v".to_vec(),
        flags: 0,
        cas,
    }
}

fn del(key: &str, recurse: bool, cas: Option<u64>) -> Command {
    Command::KvDelete {
        key: key.into(),
        recurse,
        cas,
    }
}

#[test]
fn indexes_are_never_zero() {
    let c = Catalog::new();
    assert_eq!(c.index(), 1);
    assert_eq!(c.services_index(), 1);
    assert_eq!(c.service_index("never-seen"), 1);
    assert_eq!(c.kv_index(""), 1);
    assert_eq!(c.kv_index("missing/"), 1);
    assert_eq!(c.kv_store_index(), 1);
    let r = Catalog::restore(0, Vec::new(), Vec::new(), Vec::new(), Vec::new(), secs(0));
    assert_eq!(
        [
            r.index(),
            r.services_index(),
            r.service_index("x"),
            r.kv_index(""),
            r.kv_store_index()
        ],
        [1; 5]
    );
}

#[test]
fn emptied_service_keeps_its_own_index() {
    let mut c = Catalog::new();
    apply(&mut c, reg(json!({"Name": "web", "ID": "w1"})), secs(0));
    apply(
        &mut c,
        Command::Deregister {
            service_id: "w1".into(),
        },
        secs(0),
    );
    let web = c.service_index("web");
    assert_eq!(web, c.index(), "the departure is the service's last change");
    let fx = apply(&mut c, reg(json!({"Name": "db", "ID": "d1"})), secs(0));
    assert!(!fx.services.contains("web"));
    assert!(c.services_index() > web, "the services list moved");
    assert_eq!(
        c.service_index("web"),
        web,
        "an emptied service does not follow the services index"
    );
    assert_eq!(c.service_index("WEB"), web, "names match without case");
    let fx = apply(&mut c, reg(json!({"Name": "Web", "ID": "w2"})), secs(0));
    assert!(fx.services.contains("web"));
    assert!(c.service_index("web") > web);
}

#[test]
fn changes_that_change_nothing_take_no_index() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"}})),
        secs(0),
    );
    apply(&mut c, put("k", None), secs(0));
    let kv = c.kv_get("k").unwrap().modify_index;
    let disk = CheckDefinition::from_json(json!({"Name": "disk", "TTL": "10s"})).unwrap();
    apply(
        &mut c,
        Command::RegisterCheck {
            check: disk.clone(),
        },
        secs(0),
    );
    let before = (c.index(), c.service_index("web"), c.kv_store_index());
    let unchanged = [
        Command::RegisterCheck { check: disk },
        put("k", Some(kv + 1)), // failed CAS
        put("k", Some(0)),      // create-only on an existing key
        del("k", false, Some(kv + 1)),
        del("missing", false, None),
        del("missing/", true, None),
        Command::ReportCheck {
            check_id: "service:w1".into(),
            result: CheckStatus::Critical,
            output: "still down".into(),
        },
    ];
    for command in unchanged {
        let label = format!("{command:?}");
        let fx = apply(&mut c, command, secs(1));
        assert!(fx.is_empty(), "{label} had effects: {fx:?}");
        assert_eq!(
            (c.index(), c.service_index("web"), c.kv_store_index()),
            before,
            "{label} took an index"
        );
    }
    assert_eq!(
        c.check("service:w1").unwrap().output,
        "still down",
        "a probe's output is kept even when it takes no index"
    );
}

#[test]
fn kv_and_services_move_only_their_own_indexes() {
    let mut c = Catalog::new();
    apply(&mut c, reg(json!({"Name": "web", "ID": "w1"})), secs(0));
    let web = c.service_index("web");
    let fx = apply(&mut c, put("a/1", None), secs(0));
    assert!(fx.services.is_empty() && !fx.services_list);
    assert_eq!(c.service_index("web"), web);
    assert_eq!(c.kv_store_index(), c.index());
    assert_eq!(c.kv_index("a/"), c.index());
    let kv = c.kv_store_index();
    apply(&mut c, reg(json!({"Name": "db", "ID": "d1"})), secs(0));
    assert_eq!(c.kv_store_index(), kv, "a registration does not move KV");
    // Put, delete, put again: the prefix index only moves forward.
    let mut last = c.kv_index("a/");
    for command in [
        del("a/1", false, None),
        put("a/1", None),
        del("a/", true, None),
    ] {
        apply(&mut c, command, secs(0));
        let now = c.kv_index("a/");
        assert!(now > last, "{now} after {last}");
        assert_eq!(now, c.index());
        assert_eq!(c.kv_store_index(), c.index());
        last = now;
    }
}

#[test]
fn restore_never_moves_an_index_backwards() {
    let mut c = Catalog::new();
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(0),
    );
    apply(&mut c, reg(json!({"Name": "gone", "ID": "g1"})), secs(0));
    apply(&mut c, put("app/a", None), secs(0));
    apply(&mut c, put("app/b", None), secs(0));
    apply(&mut c, del("app/b", false, None), secs(0));
    apply(
        &mut c,
        Command::Deregister {
            service_id: "g1".into(),
        },
        secs(0),
    );
    // A memory-only change after the last durable one: the persisted index includes it only if
    // a later commit carried it, so restore is given the global index here.
    apply(
        &mut c,
        Command::UpdateTtl {
            check_id: "service:w1".into(),
            status: CheckStatus::Passing,
            output: String::new(),
        },
        secs(1),
    );
    let mut r = restart(&c, secs(100));
    let top = c.index();
    assert_eq!(r.index(), top);
    assert_eq!(r.services_index(), top);
    assert_eq!(r.kv_store_index(), top);
    for name in ["web", "gone", "never"] {
        assert!(r.service_index(name) >= c.service_index(name), "{name}");
        assert_eq!(r.service_index(name), top, "{name}");
    }
    for prefix in ["", "app/", "app/b", "app/a"] {
        assert!(r.kv_index(prefix) >= c.kv_index(prefix), "{prefix:?}");
    }
    // A restore given a stale index still resumes above every record.
    let instances = c.instances().map(|i| (**i).clone()).collect();
    let stale = Catalog::restore(1, instances, Vec::new(), Vec::new(), Vec::new(), secs(0));
    assert_eq!(stale.index(), c.instance("w1").unwrap().modify_index);
    // The next change is numbered above everything restored.
    apply(&mut r, put("app/c", None), secs(100));
    assert_eq!(r.index(), top + 1);
    assert_eq!(r.kv_index("app/"), top + 1);
}

/// Micro-benchmark of the heartbeat path (`cargo test -p trellis-catalog --release -- --ignored
/// --nocapture heartbeat_cost`): 100k TTL checks, 1M heartbeats spread over them, each moving
/// its check's deadline, with a tick every 1,000 heartbeats as the writer would run. Only
/// `apply` and `tick` are timed: each batch of 1,000 commands (their check IDs formatted) is
/// built before its clock starts.
#[test]
#[ignore = "micro-benchmark; run in release with --ignored --nocapture"]
fn heartbeat_cost() {
    let mut c = Catalog::new();
    let n = 100_000;
    for i in 0..n {
        apply(
            &mut c,
            reg(
                json!({"Name": format!("s{}", i % 100), "ID": format!("i{i:06}"), "Check": {"TTL": "30s", "Status": "passing"}}),
            ),
            secs(0),
        );
    }
    let beats = 1_000_000u64;
    let batch = 1_000u64;
    let mut timed = Duration::ZERO;
    let mut fx = Effects::default();
    for first in (0..beats).step_by(batch as usize) {
        let commands: Vec<(Duration, Command)> = (first..first + batch)
            .map(|k| {
                let command = Command::UpdateTtl {
                    check_id: format!("service:i{:06}", (k * 7919) % n as u64),
                    status: CheckStatus::Passing,
                    output: String::new(),
                };
                (Duration::from_micros(k * 10), command)
            })
            .collect();
        let started = std::time::Instant::now();
        for (now, command) in commands {
            c.apply(command, now, &mut fx).unwrap();
        }
        c.tick(Duration::from_micros((first + batch - 1) * 10), &mut fx);
        timed += started.elapsed();
    }
    assert!(
        fx.is_empty(),
        "repeated passing heartbeats change nothing visible"
    );
    let per = timed / beats as u32;
    eprintln!("heartbeat_cost: {per:?} per heartbeat over {n} checks");
}

#[test]
fn probed_checks_have_timeouts_and_scripts_default_to_thirty_seconds() {
    let mut c = Catalog::new();
    let body = json!({"Name": "web", "ID": "web-1", "Checks": [
        {"Args": ["/bin/true"], "Interval": "10s"},
        {"HTTP": "http://127.0.0.1:1/", "Interval": "10s"},
        {"TTL": "10s"},
    ]});
    let registration = Command::Register {
        registration: ServiceRegistration::from_agent_json(body).unwrap(),
        replace_existing_checks: false,
    };
    apply(&mut c, registration, secs(0));
    let script = c.check("service:web-1:1").unwrap();
    let http = c.check("service:web-1:2").unwrap();
    let ttl = c.check("service:web-1:3").unwrap();
    assert_eq!(script.timeout(), DEFAULT_SCRIPT_TIMEOUT);
    assert_eq!(http.timeout(), DEFAULT_CHECK_TIMEOUT);
    assert!(script.is_active() && http.is_active() && !ttl.is_active());
}

#[test]
fn a_redefined_passing_check_starts_its_reaper_clock_when_it_goes_critical() {
    let mut c = Catalog::new();
    let body = |notes: &str| {
        json!({"Name": "web", "ID": "w1", "Check": {"TTL": "60s", "Status": "passing",
            "Notes": notes, "DeregisterCriticalServiceAfter": "10s"}})
    };
    apply(&mut c, reg(body("a")), secs(0));
    // A changed definition without a status keeps the passing status.
    let mut redefined = body("b");
    redefined["Check"].as_object_mut().unwrap().remove("Status");
    apply(&mut c, reg(redefined), secs(5));
    assert_eq!(status_of(&c, "service:w1"), CheckStatus::Passing);
    apply(
        &mut c,
        Command::UpdateTtl {
            check_id: "service:w1".into(),
            status: CheckStatus::Critical,
            output: String::new(),
        },
        secs(30),
    );
    assert_eq!(
        c.next_deadline(),
        Some(secs(40)),
        "critical since 30 s, plus 10 s"
    );
    c.tick(secs(30), &mut Effects::default());
    assert!(c.instance("w1").is_some(), "not reaped before its time");
}

fn config_put(body: serde_json::Value, cas: Option<u64>) -> Command {
    Command::ConfigUpsert {
        entry: trellis_types::config_entry::decode_config_entry(body).unwrap(),
        cas,
    }
}

fn answer(c: &mut Catalog, cmd: Command) -> (Reply, Effects) {
    let mut fx = Effects::default();
    let reply = c.apply(cmd, secs(0), &mut fx).unwrap();
    (reply, fx)
}

#[test]
fn config_entries_follow_the_index_rules() {
    let mut c = Catalog::new();
    let web = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"});
    let (reply, fx) = answer(&mut c, config_put(web.clone(), None));
    assert_eq!(reply, Reply::Bool(true));
    assert!(fx.config);
    assert!(fx.writes.contains(&Write::ConfigEntry {
        kind: "service-defaults".into(),
        name: "web".into()
    }));
    let created = c.index();
    assert_eq!(c.config_index(), created);
    assert_eq!(c.config_kind_index("service-defaults"), created);
    let entry = c.config_entry("service-defaults", "WEB").unwrap();
    assert_eq!((entry.create_index, entry.modify_index), (created, created));
    // Writing what is there takes no index, whatever the cas (as Consul skips it).
    let (reply, fx) = answer(&mut c, config_put(web.clone(), Some(0)));
    assert_eq!(reply, Reply::Bool(true));
    assert!(fx.is_empty() && c.index() == created);
    // A failed cas takes no index either.
    let grpc = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"});
    let (reply, fx) = answer(&mut c, config_put(grpc.clone(), Some(created + 7)));
    assert_eq!(reply, Reply::Bool(false));
    assert!(fx.is_empty());
    let (reply, _) = answer(&mut c, config_put(grpc, Some(created)));
    assert_eq!(reply, Reply::Bool(true));
    let entry = c.config_entry("service-defaults", "web").unwrap();
    assert_eq!(
        (entry.create_index, entry.modify_index),
        (created, created + 1)
    );
    // Another kind moves the table index but not this kind's.
    answer(
        &mut c,
        config_put(json!({"Kind": "proxy-defaults", "Name": "global"}), None),
    );
    assert_eq!(c.config_index(), created + 2);
    assert_eq!(c.config_kind_index("service-defaults"), created + 1);
    let names: Vec<&str> = c.config_entries(None).map(|e| e.kind.as_str()).collect();
    assert_eq!(names, ["proxy-defaults", "service-defaults"]);
    // Deletes: a missing entry answers true and changes nothing; a stale cas answers false.
    let delete = |name: &str, cas| Command::ConfigDelete {
        kind: "service-defaults".into(),
        name: name.into(),
        cas,
    };
    let (reply, fx) = answer(&mut c, delete("missing", Some(3)));
    assert_eq!((reply, fx.is_empty()), (Reply::Bool(true), true));
    let (reply, _) = answer(&mut c, delete("web", Some(created)));
    assert_eq!(reply, Reply::Bool(false));
    let (reply, fx) = answer(&mut c, delete("Web", Some(created + 1)));
    assert_eq!((reply, fx.config), (Reply::Bool(true), true));
    assert!(c.config_entry("service-defaults", "web").is_none());
    assert_eq!(c.config_index(), created + 3);
}

#[test]
fn config_entries_survive_a_restart_and_their_index_resumes() {
    let mut c = Catalog::new();
    answer(
        &mut c,
        config_put(
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
            None,
        ),
    );
    apply(&mut c, reg(json!({"Name": "api", "ID": "a1"})), secs(0));
    let r = restart(&c, secs(50));
    let entry = r.config_entry("service-defaults", "web").unwrap();
    assert_eq!(
        **entry,
        **c.config_entry("service-defaults", "web").unwrap()
    );
    assert_eq!(r.config_index(), c.index(), "resumes at the top");
    assert_eq!(
        r.config_kind_index("service-defaults"),
        0,
        "no change since"
    );
}

#[test]
fn service_summaries_count_checks_and_instances_by_health() {
    let mut c = Catalog::new();
    let ttl = |id: &str, status: &str| json!({"CheckID": id, "TTL": "30s", "Status": status});
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Tags": ["v1"], "Checks": [ttl("w1c", "passing")]})),
        secs(0),
    );
    apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w2", "Tags": ["v2"],
            "Checks": [ttl("w2a", "passing"), ttl("w2b", "warning")]})),
        secs(0),
    );
    apply(&mut c, reg(json!({"Name": "db", "ID": "d1"})), secs(0));
    let summaries = c.service_summaries();
    assert_eq!(
        summaries
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["db", "web"]
    );
    let db = &summaries[0];
    assert_eq!(
        (db.instance_count, db.checks, db.instances),
        (1, [0; 3], [1, 0, 0])
    );
    let web = &summaries[1];
    assert_eq!(web.tags.iter().collect::<Vec<_>>(), ["v1", "v2"]);
    assert_eq!(
        (web.instance_count, web.checks, web.instances),
        (2, [2, 1, 0], [1, 1, 0])
    );
    // A node check counts for every instance of every service.
    let disk = CheckDefinition::from_json(json!({"Name": "disk", "TTL": "10s"})).unwrap();
    apply(&mut c, Command::RegisterCheck { check: disk }, secs(0));
    let summaries = c.service_summaries();
    assert_eq!(summaries[0].instances, [0, 0, 1]);
    assert_eq!(
        (summaries[1].checks, summaries[1].instances),
        ([2, 1, 2], [0, 0, 2])
    );
}

#[test]
fn status_changes_are_reported_as_transitions() {
    let mut c = Catalog::new();
    let fx = apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(0),
    );
    fn seen(fx: &Effects) -> Vec<(&str, Option<CheckStatus>, CheckStatus)> {
        fx.transitions
            .iter()
            .map(|t| (t.check_id.as_str(), t.from, t.to))
            .collect()
    }
    assert_eq!(seen(&fx), [("service:w1", None, CheckStatus::Critical)]);
    assert_eq!(fx.transitions[0].service_name.as_deref(), Some("web"));
    assert_eq!(fx.transitions[0].service_id.as_deref(), Some("w1"));
    let upd = |status, output: &str| Command::UpdateTtl {
        check_id: "service:w1".into(),
        status,
        output: output.into(),
    };
    let fx = apply(&mut c, upd(CheckStatus::Passing, "ok"), secs(1));
    assert_eq!(
        seen(&fx),
        [(
            "service:w1",
            Some(CheckStatus::Critical),
            CheckStatus::Passing
        )]
    );
    assert_eq!(fx.transitions[0].output, "ok");
    // A new output alone is no transition.
    let fx = apply(&mut c, upd(CheckStatus::Passing, "still ok"), secs(2));
    assert!(fx.transitions.is_empty());
    let mut fx = Effects::default();
    c.tick(secs(12), &mut fx);
    assert_eq!(
        seen(&fx),
        [(
            "service:w1",
            Some(CheckStatus::Passing),
            CheckStatus::Critical
        )]
    );
    assert_eq!(fx.transitions[0].output, "TTL expired");
    // Re-registering the same definition changes nothing.
    let fx = apply(
        &mut c,
        reg(json!({"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}})),
        secs(13),
    );
    assert!(fx.transitions.is_empty());
}
