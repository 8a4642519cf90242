//! The store conformance suite on a real etcd member, and what an operator sees of it with
//! `etcdctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use trellis_etcd::testing::EtcdProcess;
use trellis_etcd::{EtcdOptions, EtcdStore};
use trellis_store::{Mutation, Store, conformance};

/// Commits `mutations` (numbered `index` by the catalog): etcd's number for the commit, and the
/// mutations numbered with their keys' revisions, as a follower reads them.
fn commit(store: &EtcdStore, index: u64, mutations: &[Mutation]) -> (u64, Vec<Mutation>) {
    let numbering = store
        .commit(index, mutations)
        .unwrap()
        .expect("etcd numbers its commits");
    let mut numbered = mutations.to_vec();
    for (mutation, revisions) in numbered.iter_mut().zip(&numbering.records) {
        if let Some(revisions) = revisions {
            mutation.set_indexes(*revisions);
        }
    }
    (numbering.index, numbered)
}

/// A prefix of its own for each test, so tests share one member.
fn options(member: &EtcdProcess, max_txn_ops: usize) -> EtcdOptions {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut options = EtcdOptions::new(vec![member.client_url.clone()]);
    options.prefix = format!("/test-{}/", NEXT.fetch_add(1, Ordering::Relaxed));
    options.max_txn_ops = max_txn_ops;
    options
}

#[test]
fn the_store_conformance_suite_passes_on_etcd() {
    let member = EtcdProcess::start();
    let options = options(&member, 128);
    conformance::run(|| EtcdStore::connect(&options).unwrap());
    // Also when every batch needs several etcd transactions.
    let options = options_with_tiny_transactions(&member);
    conformance::run(|| EtcdStore::connect(&options).unwrap());
}

fn options_with_tiny_transactions(member: &EtcdProcess) -> EtcdOptions {
    options(member, 2)
}

#[test]
fn the_layout_is_readable_with_etcdctl() {
    let member = EtcdProcess::start();
    let options = options(&member, 128);
    let prefix = options.prefix.clone();
    let store = EtcdStore::connect(&options).unwrap();
    let registration = trellis_types::ServiceRegistration::from_json(serde_json::json!({
        "Name": "web", "ID": "web-1", "Port": 80,
        "Check": {"CheckID": "alive", "TTL": "10s"}
    }))
    .unwrap();
    let check = trellis_catalog::CheckRecord {
        definition: registration.checks[0].clone(),
        status: trellis_types::CheckStatus::Passing,
        output: String::new(),
        create_index: 3,
        modify_index: 3,
    };
    let mut check = check;
    check.definition.id = Some("alive".into());
    check.definition.service_id = Some("web-1".into());
    let (index, numbered) = commit(
        &store,
        3,
        &[
            Mutation::PutInstance(trellis_catalog::InstanceRecord {
                registration,
                create_index: 3,
                modify_index: 3,
            }),
            Mutation::PutCheck(check),
            Mutation::PutKv(trellis_catalog::KvEntry {
                key: "app/db/host".into(),
                value: b"db.local".to_vec(),
                flags: 0,
                lock_index: 0,
                session: None,
                create_index: 3,
                modify_index: 3,
            }),
        ],
    );
    let mut keys = member.keys(&prefix);
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{prefix}checks/web-1/alive"),
            format!("{prefix}index"),
            format!("{prefix}instances/web-1"),
            format!("{prefix}kv/app/db/host"),
            format!("{prefix}lock"),
        ]
    );
    assert_eq!(member.value(&format!("{prefix}lock")), "trellis");
    assert_eq!(
        member.value(&format!("{prefix}index")),
        "00000000000000000003"
    );
    let instance: serde_json::Value =
        serde_json::from_str(&member.value(&format!("{prefix}instances/web-1"))).unwrap();
    assert_eq!(
        instance["CreateIndex"], 3,
        "the leader's tentative number: {instance}"
    );
    // The indexes every server shows are the keys' revisions, as etcdctl reads them.
    let (created, modified) = member.revisions(&format!("{prefix}instances/web-1"));
    assert_eq!(modified, index, "one commit, one revision");
    assert_eq!(member.revisions(&format!("{prefix}index")).1, index);
    let Mutation::PutInstance(record) = &numbered[0] else {
        panic!("{numbered:?}")
    };
    assert_eq!(
        (record.create_index, record.modify_index),
        (created, modified)
    );
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.index, index);
    assert_eq!(snapshot.instances[0].create_index, created);
    assert_eq!(snapshot.kv.entries[0].modify_index, index);
    // A later put of the key keeps its create revision.
    let Mutation::PutInstance(again) = &numbered[0] else {
        unreachable!()
    };
    let (later, renumbered) = commit(&store, index + 1, &[Mutation::PutInstance(again.clone())]);
    assert_eq!(
        member.revisions(&format!("{prefix}instances/web-1")),
        (created, later)
    );
    let Mutation::PutInstance(record) = &renumbered[0] else {
        unreachable!()
    };
    assert_eq!((record.create_index, record.modify_index), (created, later));
}

#[test]
fn an_unreachable_cluster_is_a_clear_error_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = EtcdOptions::new(vec![format!("http://127.0.0.1:{port}")]);
    options.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = EtcdStore::connect(&options).err().expect("no etcd there");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("etcd at http://127.0.0.1:{port}: ")),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_commit_while_the_member_is_down_fails_and_an_acknowledged_one_survives_its_crash() {
    let mut member = EtcdProcess::start();
    let mut options = options(&member, 128);
    options.timeout = Duration::from_secs(1);
    let store = EtcdStore::connect(&options).unwrap();
    store
        .commit(2, &[Mutation::PutKv(kv_entry("kept", 2))])
        .unwrap();
    member.kill();
    let error = store
        .commit(3, &[Mutation::PutKv(kv_entry("refused", 2))])
        .unwrap_err();
    assert!(error.to_string().contains(&member.client_url), "{error}");
    member.restart();
    // The store that saw the failure still holds the lock (its lease outlived the outage)
    // and works again once the member is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let later = loop {
        match store.commit(4, &[Mutation::PutKv(kv_entry("later", 2))]) {
            Ok(numbering) => break numbering.expect("numbered").index,
            Err(_) => {
                assert!(
                    Instant::now() < deadline,
                    "no commit after the member came back"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    drop(store);
    let snapshot = EtcdStore::connect(&options).unwrap().load().unwrap();
    assert_eq!(snapshot.index, later);
    let keys: Vec<&str> = snapshot.kv.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["kept", "later"], "the refused write is not there");
}

#[test]
fn one_store_holds_a_prefix_and_a_second_stands_by_until_it_is_released() {
    let member = EtcdProcess::start();
    let mut options = options(&member, 128);
    options.lease_ttl = Duration::from_secs(2);
    options.holder = "server-a".into();
    let active = EtcdStore::connect(&options).unwrap();
    assert_eq!(member.value(&format!("{}lock", options.prefix)), "server-a");
    let mut standby_options = options.clone();
    standby_options.holder = "server-b".into();
    let (took_over, standby) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let store = EtcdStore::connect(&standby_options).unwrap();
        let _ = took_over.send(store);
    });
    // Still standing by while the active store lives and renews its lease.
    assert!(standby.recv_timeout(Duration::from_secs(4)).is_err());
    let (index, _) = commit(&active, 5, &[]);
    // Released on drop: taken over at once, not after the lease's TTL.
    let released = Instant::now();
    drop(active);
    let standby = standby.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "{:?}",
        released.elapsed()
    );
    assert_eq!(member.value(&format!("{}lock", options.prefix)), "server-b");
    assert_eq!(standby.load().unwrap().index, index);
}

#[test]
fn a_store_whose_lease_is_gone_is_fenced_off() {
    let member = EtcdProcess::start();
    let mut options = options(&member, 128);
    options.lease_ttl = Duration::from_secs(2);
    let store = EtcdStore::connect(&options).unwrap();
    // The lease ends behind the store's back (as when etcd expires it during a partition)
    // and another server takes the store.
    let leases = trellis_etcd::testing::etcdctl(&member.client_url, &["lease", "list"]).unwrap();
    let lease = leases
        .lines()
        .find(|l| !l.contains("found"))
        .unwrap()
        .trim()
        .to_owned();
    trellis_etcd::testing::etcdctl(&member.client_url, &["lease", "revoke", &lease]).unwrap();
    let mut other = options.clone();
    other.holder = "server-b".into();
    let successor = EtcdStore::connect(&other).unwrap();
    let error = store.commit(9, &[]).unwrap_err().to_string();
    assert!(error.contains("hold"), "{error}");
    // Once its keeper has noticed, it takes a new lease, but the lock is the successor's: it
    // still commits nothing, and it can still read.
    std::thread::sleep(Duration::from_secs(3));
    let error = store.commit(9, &[]).unwrap_err().to_string();
    assert!(error.contains("hold"), "{error}");
    assert!(store.load().is_ok());
    successor.commit(9, &[]).unwrap();
}

#[test]
fn the_acl_and_decision_logs_conform_on_etcd() {
    use trellis_store::{RecordAclLog, RecordDecisionLog};
    let member = EtcdProcess::start();
    let options = options(&member, 2);
    let store = EtcdStore::connect(&options).unwrap();
    trellis_store::acl_log::conformance::run(|| RecordAclLog(store.records("acl").unwrap()));
    trellis_store::decision_log::conformance::run(|| {
        RecordDecisionLog(store.records("transactions").unwrap())
    });
    let keys = member.keys(&options.prefix);
    assert!(
        keys.contains(&format!("{}acl/records/policy/p1", options.prefix)),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("{}transactions/index", options.prefix)),
        "{keys:?}"
    );
}

/// A follower's feed: the holder as of its snapshot, then every commit with its mutations and
/// index in order (a batch split over several transactions arrives whole), a record table's
/// change, and the lock changing hands to the follower once it campaigns.
#[test]
fn a_follower_sees_every_commit_in_order_and_takes_over_the_lock() {
    use trellis_etcd::Feed;
    let member = EtcdProcess::start();
    let mut options = options_with_tiny_transactions(&member);
    options.lease_ttl = Duration::from_secs(2);
    options.holder = "leader".into();
    let leader = EtcdStore::connect(&options).unwrap();
    let (index, before) = commit(&leader, 2, &[Mutation::PutKv(kv_entry("before", 2))]);
    let follower = EtcdStore::join(&options).unwrap();
    assert!(!follower.holds_lock());
    let (snapshot, revision) = follower.load_at().unwrap();
    assert_eq!(snapshot.index, index);
    let Mutation::PutKv(before) = &before[0] else {
        unreachable!()
    };
    assert_eq!(snapshot.kv.entries, std::slice::from_ref(before));
    let feed = follower.follow(revision).unwrap();
    let next = || feed.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        next(),
        Feed::Holder {
            holder: Some("leader".into()),
            ours: false
        }
    );
    // Three mutations and the index: with two operations per transaction, three transactions.
    let batch = [
        Mutation::PutKv(kv_entry("a", 3)),
        Mutation::PutKv(kv_entry("b", 3)),
        Mutation::DeleteKv("before".into()),
    ];
    let (index, numbered) = commit(&leader, 3, &batch);
    let Mutation::PutKv(a) = &numbered[0] else {
        unreachable!()
    };
    assert!(
        a.modify_index < index,
        "a key of the first transaction has its revision, the commit the last one's"
    );
    assert_eq!(
        next(),
        Feed::Commit {
            index,
            mutations: numbered
        }
    );
    let (index, _) = commit(&leader, 4, &[]);
    assert_eq!(
        next(),
        Feed::Commit {
            index,
            mutations: Vec::new()
        }
    );
    let acl = trellis_store::RecordAclLog(leader.records("acl").unwrap());
    trellis_store::AclLog::commit(&acl, 1, &[("token/x", b"{}".as_slice())], &[]).unwrap();
    assert_eq!(next(), Feed::Table("acl".into()));
    // A follower cannot commit; once the leader is gone and it campaigns, it holds the lock.
    assert!(follower.commit(5, &[]).is_err());
    follower.campaign("follower".into());
    drop(acl);
    drop(leader);
    assert_eq!(
        next(),
        Feed::Holder {
            holder: None,
            ours: false
        }
    );
    assert_eq!(
        next(),
        Feed::Holder {
            holder: Some("follower".into()),
            ours: true
        }
    );
    assert!(follower.holds_lock());
    let (index, _) = commit(&follower, 5, &[]);
    assert_eq!(
        next(),
        Feed::Commit {
            index,
            mutations: Vec::new()
        }
    );
}

/// A follower that fell behind etcd's compaction (its snapshot's revision is gone) starts again
/// from the store's whole state, then the holder, and goes on with every commit after it.
#[test]
fn a_follower_behind_the_compaction_starts_again_from_the_state() {
    use trellis_etcd::Feed;
    use trellis_etcd::testing::etcdctl;
    let member = EtcdProcess::start();
    let mut options = options(&member, 128);
    options.holder = "leader".into();
    let leader = EtcdStore::connect(&options).unwrap();
    commit(&leader, 1, &[Mutation::PutKv(kv_entry("a", 1))]);
    let follower = EtcdStore::join(&options).unwrap();
    let (_, old) = follower.load_at().unwrap();
    let (_, b) = commit(&leader, 2, &[Mutation::PutKv(kv_entry("b", 2))]);
    let (index, _) = commit(&leader, 3, &[Mutation::DeleteKv("a".into())]);
    let (now, revision) = follower.load_at().unwrap();
    etcdctl(&member.client_url, &["compact", &revision.to_string()]).unwrap();

    let feed = follower.follow(old).unwrap();
    let next = || feed.recv_timeout(Duration::from_secs(10)).unwrap();
    let reset = next();
    assert_eq!(reset, Feed::Reset(Box::new(now.clone())));
    assert_eq!(now.index, index);
    let Mutation::PutKv(b) = &b[0] else {
        unreachable!()
    };
    assert_eq!(now.kv.entries, std::slice::from_ref(b));
    assert_eq!(next(), Feed::Table("acl".into()));
    assert_eq!(next(), Feed::Table("transactions".into()));
    assert_eq!(
        next(),
        Feed::Holder {
            holder: Some("leader".into()),
            ours: false
        }
    );
    let (index, c) = commit(&leader, 4, &[Mutation::PutKv(kv_entry("c", 4))]);
    assert_eq!(
        next(),
        Feed::Commit {
            index,
            mutations: c
        }
    );
}

/// A KV entry whose value is its key, written at `index`.
fn kv_entry(key: &str, index: u64) -> trellis_catalog::KvEntry {
    trellis_catalog::KvEntry {
        key: key.into(),
        value: key.as_bytes().to_vec(),
        flags: 0,
        lock_index: 0,
        session: None,
        create_index: index,
        modify_index: index,
    }
}
