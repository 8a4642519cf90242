//! Integration tests of sessions and KV locks on the real binary: create/renew/destroy/info/
//! list/node, blocking session reads, acquire/release, lock-delay, behavior delete, a bound
//! check going critical, durability across `kill -9`, and the KV flags Consul reads by
//! presence. TTL expiry (twice a TTL of at least 10 s) is tested in the catalog with an injected
//! clock instead.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, eventually, http, index_of};

async fn create(c: &reqwest::Client, s: &Server, body: Value) -> String {
    let r = c
        .put(s.url("/v1/session/create"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{body}");
    let created: Value = r.json().await.unwrap();
    created["ID"].as_str().unwrap().to_owned()
}

async fn get(c: &reqwest::Client, url: String) -> (u16, Value, u64) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let index = index_of(&r);
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        index,
    )
}

/// PUT with a body; answers the status and the body text.
async fn put(c: &reqwest::Client, url: String, body: &str) -> (u16, String) {
    let r = c.put(url).body(body.to_owned()).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn node_name(c: &reqwest::Client, s: &Server) -> String {
    let (_, me, _) = get(c, s.url("/v1/agent/self")).await;
    me["Config"]["NodeName"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn session_lifecycle_as_consul_answers_it() {
    let s = Server::dev();
    let c = http();
    let node = node_name(&c, &s).await;
    // An empty body takes every default.
    let (status, text) = put(&c, s.url("/v1/session/create"), "").await;
    assert_eq!(status, 200);
    let id = serde_json::from_str::<Value>(&text).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let (status, info, index) = get(&c, s.url(&format!("/v1/session/info/{id}"))).await;
    assert_eq!(status, 200);
    let session = &info[0];
    assert_eq!(session["ID"], id.as_str());
    assert_eq!(session["Node"], node.as_str());
    assert_eq!(session["LockDelay"], 15_000_000_000u64);
    assert_eq!(session["Behavior"], "release");
    assert_eq!(session["TTL"], "");
    assert_eq!(session["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(session["CreateIndex"], index);
    // Keys in any case, as clients send them; a fractional TTL; LockDelay as seconds.
    let named = create(
        &c,
        &s,
        json!({"name": "leader", "ttl": "15.0s", "lockdelay": 5, "behavior": "delete", "checks": []}),
    )
    .await;
    let (_, info, _) = get(&c, s.url(&format!("/v1/session/info/{named}"))).await;
    assert_eq!(info[0]["Name"], "leader");
    assert_eq!(info[0]["TTL"], "15.0s");
    assert_eq!(info[0]["LockDelay"], 5_000_000_000u64);
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(
        info[0]["NodeChecks"],
        json!([]),
        "an empty Checks binds no check"
    );

    let (_, all, list_index) = get(&c, s.url("/v1/session/list")).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(list_index >= index);
    let (_, mine, _) = get(&c, s.url(&format!("/v1/session/node/{node}"))).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    let (_, other, _) = get(&c, s.url("/v1/session/node/elsewhere")).await;
    assert_eq!(other, json!([]));

    // Renew answers the session; an unknown one is a 404 that still carries the index.
    let r = c
        .put(s.url(&format!("/v1/session/renew/{named}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(index_of(&r) >= 1);
    let renewed: Value = r.json().await.unwrap();
    assert_eq!(renewed[0]["ID"], named.as_str());
    let r = c
        .put(s.url("/v1/session/renew/no-such-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) >= 1);
    assert!(r.text().await.unwrap().contains("not found"));

    // Destroy is idempotent; info of an unknown session is [] with an index.
    for _ in 0..2 {
        let (status, body) = put(&c, s.url(&format!("/v1/session/destroy/{id}")), "").await;
        assert_eq!((status, body.as_str()), (200, "true"));
    }
    let (status, gone, gone_index) = get(&c, s.url(&format!("/v1/session/info/{id}"))).await;
    assert_eq!((status, gone), (200, json!([])));
    assert!(gone_index > index, "the destroy moved the sessions index");
}

#[tokio::test]
async fn session_create_refuses_what_consul_refuses() {
    let s = Server::dev();
    let c = http();
    let cases: Vec<(&str, u16, &str)> = vec![
        (r#"{"TTL": "5s"}"#, 500, "Invalid Session TTL"),
        (r#"{"TTL": "86401s"}"#, 500, "Invalid Session TTL"),
        (r#"{"TTL": "soon"}"#, 500, "Session TTL 'soon' invalid"),
        (
            r#"{"Behavior": "keep"}"#,
            500,
            "Invalid Behavior setting 'keep'",
        ),
        (r#"{"Node": "not-me"}"#, 500, "Missing node registration"),
        (
            r#"{"Checks": ["nope"]}"#,
            500,
            "Missing check 'nope' registration",
        ),
        (r#"{"LockDelay": "forever"}"#, 400, "Request decode failed"),
        (r#"{"Checks": "serfHealth"}"#, 400, "Request decode failed"),
        ("{not json", 400, "Request decode failed"),
    ];
    for (body, want_status, want_text) in cases {
        let (status, text) = put(&c, s.url("/v1/session/create"), body).await;
        assert_eq!(status, want_status, "{body}: {text}");
        assert!(text.starts_with(want_text), "{body}: {text:?}");
    }
    // A critical check cannot be bound.
    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&json!({"Name": "web", "ID": "w1", "Check": {"TTL": "30s"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, text) = put(
        &c,
        s.url("/v1/session/create"),
        r#"{"Checks": ["service:w1"]}"#,
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(text.trim(), "Check 'service:w1' is in critical state");
    // Paths without an ID.
    let (status, text) = put(&c, s.url("/v1/session/destroy/"), "").await;
    assert_eq!((status, text.trim()), (400, "Missing session"));
    let r = c.get(s.url("/v1/session/node/")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(s.url("/v1/session/create")).send().await.unwrap();
    assert_eq!(r.status(), 405, "create is a PUT");
    let (_, all, _) = get(&c, s.url("/v1/session/list")).await;
    assert_eq!(all, json!([]), "nothing was created");
}

#[tokio::test]
async fn session_reads_block_until_the_sessions_change() {
    let s = Server::dev();
    let c = http();
    let id = create(&c, &s, json!({})).await;
    let (_, _, index) = get(&c, s.url("/v1/session/list")).await;
    // Nothing changes: the wait ends with the same index.
    let started = Instant::now();
    let (_, _, same) = get(
        &c,
        s.url(&format!("/v1/session/list?index={index}&wait=300ms")),
    )
    .await;
    assert_eq!(same, index);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A destroy wakes a waiter on the session at once.
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/session/info/{id}?index={index}&wait=20s"));
        tokio::spawn(async move { get(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "blocked while nothing changed");
    let started = Instant::now();
    put(&c, s.url(&format!("/v1/session/destroy/{id}")), "").await;
    let (status, info, after) = waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((status, info), (200, json!([])));
    assert!(after > index);
}

#[tokio::test]
async fn kv_locks_acquire_release_and_lock_delay() {
    let s = Server::dev();
    let c = http();
    let a = create(&c, &s, json!({"LockDelay": "1s"})).await;
    let b = create(&c, &s, json!({"LockDelay": 0})).await;
    let key = |q: &str| s.url(&format!("/v1/kv/service/leader{q}"));
    assert_eq!(
        put(&c, key(&format!("?acquire={a}")), "a-1").await,
        (200, "true".into())
    );
    let (_, entry, index) = get(&c, key("")).await;
    assert_eq!(entry[0]["Session"], a.as_str());
    assert_eq!(entry[0]["LockIndex"], 1);
    assert_eq!(
        entry[0]["ModifyIndex"], index,
        "a single key answers its ModifyIndex"
    );
    // The holder updates the value without a new LockIndex; another session is refused.
    assert_eq!(
        put(&c, key(&format!("?acquire={a}")), "a-2").await.1,
        "true"
    );
    assert_eq!(put(&c, key(&format!("?acquire={b}")), "b").await.1, "false");
    assert_eq!(put(&c, key(&format!("?release={b}")), "b").await.1, "false");
    let (_, entry, _) = get(&c, key("")).await;
    assert_eq!(
        (entry[0]["LockIndex"].clone(), entry[0]["Value"].clone()),
        (json!(1), json!("YS0y"))
    );
    // A plain PUT keeps the holder.
    assert_eq!(put(&c, key(""), "plain").await.1, "true");
    let (_, entry, _) = get(&c, key("")).await;
    assert_eq!(entry[0]["Session"], a.as_str());
    // Bad requests.
    let (status, text) = put(&c, key("?acquire=no-such-session"), "").await;
    assert_eq!(status, 500);
    assert!(text.starts_with("invalid session"), "{text}");
    let (status, text) = put(&c, key(&format!("?acquire={a}&cas=1")), "").await;
    assert_eq!(status, 400);
    assert!(text.starts_with("Conflicting flags"), "{text}");
    let (status, _) = put(&c, key(&format!("?acquire={a}&release={a}")), "").await;
    assert_eq!(status, 400);
    // Destroying the holder releases the lock: Session cleared, LockIndex kept, ModifyIndex
    // moved; for its lock-delay (1 s, from the destroy) nobody may take it.
    let destroyed = Instant::now();
    put(&c, s.url(&format!("/v1/session/destroy/{a}")), "").await;
    let (_, entry, after) = get(&c, key("")).await;
    assert!(entry[0].get("Session").is_none(), "{entry}");
    assert_eq!(
        entry[0]["LockIndex"], 0,
        "a plain PUT reset it, as in Consul"
    );
    assert!(after > index);
    assert_eq!(put(&c, key(&format!("?acquire={b}")), "b").await.1, "false");
    eventually(Duration::from_secs(5), "the lock-delay to pass", || {
        let c = c.clone();
        let url = key(&format!("?acquire={b}"));
        async move { put(&c, url, "b").await.1 == "true" }
    })
    .await;
    // Measured from before the destroy was sent, so a slow machine cannot shorten it.
    assert!(destroyed.elapsed() >= Duration::from_millis(900));
    let (_, entry, _) = get(&c, key("")).await;
    assert_eq!(
        (entry[0]["Session"].clone(), entry[0]["LockIndex"].clone()),
        (json!(b), json!(1))
    );
    assert_eq!(
        put(&c, key(&format!("?release={b}")), "done").await.1,
        "true"
    );
    let (_, entry, _) = get(&c, key("")).await;
    assert!(entry[0].get("Session").is_none());
    assert_eq!(entry[0]["Value"], "ZG9uZQ==", "release writes the body");
}

#[tokio::test]
async fn invalidation_by_behavior_delete_and_by_a_critical_check() {
    let s = Server::dev();
    let c = http();
    let eph = create(&c, &s, json!({"Behavior": "delete", "LockDelay": 0})).await;
    assert_eq!(
        put(&c, s.url(&format!("/v1/kv/eph/me?acquire={eph}")), "x")
            .await
            .1,
        "true"
    );
    put(&c, s.url(&format!("/v1/session/destroy/{eph}")), "").await;
    let (status, _, _) = get(&c, s.url("/v1/kv/eph/me")).await;
    assert_eq!(status, 404, "behavior delete deletes the held keys");

    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&json!({"Name": "web", "ID": "w1", "Check": {"TTL": "30s", "Status": "passing"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bound = create(&c, &s, json!({"Checks": ["service:w1"], "LockDelay": 0})).await;
    assert_eq!(
        put(
            &c,
            s.url(&format!("/v1/kv/web/leader?acquire={bound}")),
            "w1"
        )
        .await
        .1,
        "true"
    );
    // Warning does not invalidate; critical does, at once.
    put(&c, s.url("/v1/agent/check/warn/service:w1"), "").await;
    let (_, info, _) = get(&c, s.url(&format!("/v1/session/info/{bound}"))).await;
    assert_eq!(info.as_array().unwrap().len(), 1);
    put(&c, s.url("/v1/agent/check/fail/service:w1"), "").await;
    let (_, info, _) = get(&c, s.url(&format!("/v1/session/info/{bound}"))).await;
    assert_eq!(info, json!([]));
    let (_, entry, _) = get(&c, s.url("/v1/kv/web/leader")).await;
    assert!(entry[0].get("Session").is_none(), "{entry}");
    assert_eq!(entry[0]["LockIndex"], 1);
}

#[tokio::test]
async fn sessions_and_locks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let s = Server::durable(dir.path());
    let id = create(
        &c,
        &s,
        json!({"Name": "durable", "TTL": "30s", "Behavior": "delete"}),
    )
    .await;
    let gone = create(&c, &s, json!({})).await;
    put(&c, s.url(&format!("/v1/session/destroy/{gone}")), "").await;
    assert_eq!(
        put(&c, s.url(&format!("/v1/kv/held?acquire={id}")), "v")
            .await
            .1,
        "true"
    );
    let (_, before, index) = get(&c, s.url(&format!("/v1/session/info/{id}"))).await;
    s.kill9();

    let s = Server::durable(dir.path());
    let (_, after, after_index) = get(&c, s.url(&format!("/v1/session/info/{id}"))).await;
    assert_eq!(after, before, "the session came back whole");
    assert!(
        after_index >= index,
        "indexes do not go backwards across a restart"
    );
    let (_, listed, _) = get(&c, s.url("/v1/session/list")).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the destroyed one stays gone"
    );
    let (_, entry, _) = get(&c, s.url("/v1/kv/held")).await;
    assert_eq!(entry[0]["Session"], id.as_str());
    assert_eq!(entry[0]["LockIndex"], 1);
    // Its timer restarted: it renews, and destroying it applies its behavior.
    let r = c
        .put(s.url(&format!("/v1/session/renew/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    put(&c, s.url(&format!("/v1/session/destroy/{id}")), "").await;
    let (status, _, _) = get(&c, s.url("/v1/kv/held")).await;
    assert_eq!(status, 404);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn kv_flags_are_read_by_presence() {
    let s = Server::dev();
    let c = http();
    for key in ["f/a", "f/b/c"] {
        put(&c, s.url(&format!("/v1/kv/{key}")), "v").await;
    }
    let (status, all, _) = get(&c, s.url("/v1/kv/f?recurse=false")).await;
    assert_eq!(status, 200);
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "recurse=false still recurses"
    );
    let (_, keys, _) = get(&c, s.url("/v1/kv/f/?keys=false&separator=/")).await;
    assert_eq!(keys, json!(["f/a", "f/b/"]));
    let (_, keys, _) = get(&c, s.url("/v1/kv/f/?keys&seperator=/")).await;
    assert_eq!(keys, json!(["f/a", "f/b/"]), "the old spelling counts");
    let r = c.get(s.url("/v1/kv/f/a?raw=false")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(index_of(&r) >= 1);
    assert_eq!(r.text().await.unwrap(), "v");
    // Every read carries an index, 404s included.
    let r = c.get(s.url("/v1/kv/missing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(index_of(&r) >= 1);
    // The root: a key is needed without recurse or keys; listing keys of an empty store is [].
    let r = c.get(s.url("/v1/kv/")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.delete(s.url("/v1/kv/?recurse")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let (status, keys, _) = get(&c, s.url("/v1/kv/?keys")).await;
    assert_eq!((status, keys), (200, json!([])));
    let r = c
        .delete(s.url("/v1/kv/x?recurse&cas=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "recurse and cas conflict");
    // A delete with cas of a key that is not there succeeds, as in Consul.
    let r = c.delete(s.url("/v1/kv/never?cas=5")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
}
