//! The conformance suite: behaviour every [`Store`] implementation must have. Each
//! implementation's tests call [`run`] with a way to open a fresh store and reopen it.

use crate::{Mutation, Store};
use trellis_catalog::{CheckRecord, InstanceRecord, KvEntry, Numbering};
use trellis_types::config_entry::decode_config_entry;
use trellis_types::session::session_from_create;
use trellis_types::{CheckDefinition, CheckStatus, ConfigEntry, ServiceRegistration, Session};

fn instance(id: &str, index: u64) -> InstanceRecord {
    let registration = ServiceRegistration::from_json(serde_json::json!({
        "Name": "web", "ID": id, "Port": 8080, "Tags": ["v1"], "Meta": {"k": "v"}
    }))
    .unwrap_or_else(|e| panic!("fixture: {e}"));
    InstanceRecord {
        registration,
        create_index: index,
        modify_index: index,
    }
}

fn check(id: &str, service: &str) -> CheckRecord {
    let definition = CheckDefinition::from_json(serde_json::json!({
        "CheckID": id, "Name": "c", "ServiceID": service, "TTL": "10s",
        "DeregisterCriticalServiceAfter": "1m"
    }))
    .unwrap_or_else(|e| panic!("fixture: {e}"));
    CheckRecord {
        definition,
        status: CheckStatus::Warning,
        output: "out".into(),
        create_index: 3,
        modify_index: 3,
    }
}

fn kv(key: &str, value: &[u8]) -> KvEntry {
    KvEntry {
        key: key.into(),
        value: value.to_vec(),
        flags: 42,
        lock_index: 0,
        session: None,
        create_index: 4,
        modify_index: 4,
    }
}

fn session(id: &str, index: u64) -> Session {
    let body = serde_json::json!({
        "Name": "leader", "TTL": "15s", "LockDelay": "1s", "Behavior": "delete",
        "Checks": ["c1"], "ServiceChecks": [{"ID": "svc"}]
    });
    let mut s = session_from_create(Some(body), id.into(), "node-1")
        .unwrap_or_else(|e| panic!("fixture: {e}"));
    s.create_index = index;
    s.modify_index = index;
    s
}

fn config_entry(body: serde_json::Value, create: u64, modify: u64) -> ConfigEntry {
    let mut entry = decode_config_entry(body).unwrap_or_else(|e| panic!("fixture: {e}"));
    entry.create_index = create;
    entry.modify_index = modify;
    entry
}

/// Commits `mutations` numbered `index`, as the catalog would: the index the store gave the
/// commit if it numbers commits itself (etcd's revision), and the mutations numbered as the
/// store numbered them, which is how it loads them.
fn commit<S: Store>(
    store: &S,
    index: u64,
    mut mutations: Vec<Mutation>,
) -> (Option<u64>, Vec<Mutation>) {
    let numbering = store
        .commit(index, &mutations)
        .unwrap_or_else(|e| panic!("commit: {e}"));
    let Some(Numbering { index, records }) = numbering else {
        return (None, mutations);
    };
    assert_eq!(records.len(), mutations.len(), "one numbering per mutation");
    for (mutation, revisions) in mutations.iter_mut().zip(records) {
        let put = mutation.is_put();
        match revisions {
            Some(revisions) if put => {
                assert!(revisions.create <= revisions.modify && revisions.modify <= index);
                mutation.set_indexes(revisions);
            }
            None if !put => {}
            other => panic!("{mutation:?} numbered {other:?}"),
        }
    }
    (Some(index), mutations)
}

/// The record of the `n`th mutation, which puts one.
fn put<T>(mutations: &[Mutation], n: usize, record: impl Fn(&Mutation) -> Option<T>) -> T {
    record(&mutations[n]).unwrap_or_else(|| panic!("mutation {n} puts no such record"))
}

fn instance_of(mutation: &Mutation) -> Option<InstanceRecord> {
    match mutation {
        Mutation::PutInstance(record) => Some(record.clone()),
        _ => None,
    }
}

fn check_of(mutation: &Mutation) -> Option<CheckRecord> {
    match mutation {
        Mutation::PutCheck(record) => Some(record.clone()),
        _ => None,
    }
}

fn kv_of(mutation: &Mutation) -> Option<KvEntry> {
    match mutation {
        Mutation::PutKv(entry) => Some(entry.clone()),
        _ => None,
    }
}

fn session_of(mutation: &Mutation) -> Option<Session> {
    match mutation {
        Mutation::PutSession(session) => Some(session.clone()),
        _ => None,
    }
}

fn config_of(mutation: &Mutation) -> Option<ConfigEntry> {
    match mutation {
        Mutation::PutConfigEntry(entry) => Some(entry.clone()),
        _ => None,
    }
}

/// Runs every conformance check. `open` opens the store (again) at the same location.
pub fn run<S: Store>(open: impl Fn() -> S) {
    empty_store_loads_empty(&open());
    round_trip_and_reopen(&open);
    checks_follow_their_owner(&open);
    sessions_and_locks_round_trip(&open);
    config_entries_round_trip(&open);
}

fn empty_store_loads_empty<S: Store>(store: &S) {
    let snapshot = store.load().unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(snapshot.index, 0);
    assert!(snapshot.instances.is_empty() && snapshot.checks.is_empty());
    assert!(snapshot.kv.entries.is_empty() && snapshot.kv.sessions.is_empty());
    assert!(snapshot.config_entries.is_empty());
}

fn round_trip_and_reopen<S: Store>(open: &impl Fn() -> S) {
    let store = open();
    let binary = [0u8, 159, 146, 150, 255];
    let (_, first) = commit(
        &store,
        5,
        vec![
            Mutation::PutInstance(instance("w1", 2)),
            Mutation::PutInstance(instance("w2", 2)),
            Mutation::PutCheck(check("c1", "w1")),
            Mutation::PutKv(kv("a/b", &binary)),
            Mutation::PutKv(kv("a/c", b"")),
        ],
    );
    commit(
        &store,
        7,
        vec![
            Mutation::DeleteInstance("w2".into()),
            Mutation::DeleteKv("a/c".into()),
            Mutation::DeleteKv("never-existed".into()),
        ],
    );
    // A lower index never moves the stored index backwards (a store numbering its commits
    // gives this one a number of its own, its highest).
    let (last, _) = commit(&store, 6, Vec::new());
    drop(store);
    let snapshot = open().load().unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(snapshot.index, last.unwrap_or(7));
    assert_eq!(snapshot.instances, vec![put(&first, 0, instance_of)]);
    assert_eq!(snapshot.checks, vec![put(&first, 2, check_of)]);
    assert_eq!(snapshot.kv.entries, vec![put(&first, 3, kv_of)]);
}

/// A check is deleted from the instance it belonged to; a check ID that moved to another
/// instance survives the delete of its old copy, whatever the order of the two mutations.
fn checks_follow_their_owner<S: Store>(open: &impl Fn() -> S) {
    let store = open();
    let node_check = {
        let mut c = check("node-disk", "w1");
        c.definition.service_id = None;
        c
    };
    commit(
        &store,
        10,
        vec![
            Mutation::PutInstance(instance("w3", 9)),
            Mutation::PutCheck(check("c3", "w3")),
            Mutation::PutCheck(check("moving", "w1")),
            Mutation::PutCheck(node_check.clone()),
        ],
    );
    commit(
        &store,
        11,
        vec![
            Mutation::PutCheck(check("moving", "w3")),
            Mutation::DeleteCheck {
                id: "moving".into(),
                owner: Some("w1".into()),
            },
            Mutation::DeleteCheck {
                id: "c3".into(),
                owner: Some("w3".into()),
            },
        ],
    );
    drop(store);
    let snapshot = open().load().unwrap_or_else(|e| panic!("load: {e}"));
    let mut ids: Vec<(String, Option<String>)> = snapshot
        .checks
        .iter()
        .map(|c| {
            (
                c.definition.id.clone().unwrap_or_default(),
                c.definition.service_id.clone(),
            )
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            ("c1".to_owned(), Some("w1".to_owned())),
            ("moving".to_owned(), Some("w3".to_owned())),
            ("node-disk".to_owned(), None),
        ]
    );
    assert_eq!(snapshot.instances.len(), 2, "w1 and w3");
    store_is_reusable(open);
}

fn store_is_reusable<S: Store>(open: &impl Fn() -> S) {
    let store = open();
    let (numbered, _) = commit(
        &store,
        12,
        vec![Mutation::DeleteCheck {
            id: "node-disk".into(),
            owner: None,
        }],
    );
    drop(store);
    let snapshot = open().load().unwrap_or_else(|e| panic!("load: {e}"));
    assert!(
        snapshot
            .checks
            .iter()
            .all(|c| c.definition.id.as_deref() != Some("node-disk"))
    );
    assert_eq!(snapshot.index, numbered.unwrap_or(12));
}

/// Sessions are stored whole (every field a restart needs), deleted by ID, and a locked entry
/// keeps its holder and lock count, all in the same commit as the rest.
fn sessions_and_locks_round_trip<S: Store>(open: &impl Fn() -> S) {
    let store = open();
    let locked = KvEntry {
        lock_index: 3,
        session: Some("s1".into()),
        ..kv("locks/leader", b"me")
    };
    let (_, first) = commit(
        &store,
        20,
        vec![
            Mutation::PutSession(session("s1", 19)),
            Mutation::PutSession(session("s2", 20)),
            Mutation::PutKv(locked),
        ],
    );
    let (numbered, _) = commit(
        &store,
        21,
        vec![
            Mutation::DeleteSession("s2".into()),
            Mutation::DeleteSession("never-existed".into()),
        ],
    );
    drop(store);
    let snapshot = open().load().unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(snapshot.kv.sessions, vec![put(&first, 0, session_of)]);
    let locked = put(&first, 2, kv_of);
    assert!(
        snapshot.kv.entries.contains(&locked),
        "{:?}",
        snapshot.kv.entries
    );
    assert_eq!(snapshot.index, numbered.unwrap_or(21));
}

/// Config entries are stored whole (their fields in order), replaced and deleted by kind and
/// name without regard to the name's case, and survive a reopen.
fn config_entries_round_trip<S: Store>(open: &impl Fn() -> S) {
    let store = open();
    let web = serde_json::json!({
        "Kind": "service-defaults", "Name": "Web", "Protocol": "http",
        "UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 5000}}, "Meta": {"team": "a"}
    });
    let proxy = serde_json::json!({"Kind": "proxy-defaults", "Config": {"protocol": "grpc"}});
    let api = serde_json::json!({"Kind": "service-defaults", "Name": "api"});
    let (_, first) = commit(
        &store,
        30,
        vec![
            Mutation::PutConfigEntry(config_entry(web.clone(), 29, 29)),
            Mutation::PutConfigEntry(config_entry(proxy, 30, 30)),
            Mutation::PutConfigEntry(config_entry(api, 30, 30)),
        ],
    );
    let mut renamed = web.clone();
    renamed["Name"] = "web".into();
    renamed["Protocol"] = "grpc".into();
    let (numbered, second) = commit(
        &store,
        31,
        vec![
            // Replaces "Web": names are one entry whatever their case.
            Mutation::PutConfigEntry(config_entry(renamed, 29, 31)),
            Mutation::DeleteConfigEntry {
                kind: "service-defaults".into(),
                name: "API".into(),
            },
            Mutation::DeleteConfigEntry {
                kind: "service-defaults".into(),
                name: "never-existed".into(),
            },
        ],
    );
    drop(store);
    let snapshot = open().load().unwrap_or_else(|e| panic!("load: {e}"));
    let renamed = put(&second, 0, config_of);
    if numbered.is_some() {
        // The key whatever the name's case: created with "Web", replaced by "web".
        let web = put(&first, 0, config_of);
        assert_eq!(renamed.create_index, web.create_index);
    }
    assert_eq!(
        snapshot.config_entries,
        vec![put(&first, 1, config_of), renamed]
    );
    assert_eq!(snapshot.index, numbered.unwrap_or(31));
}
