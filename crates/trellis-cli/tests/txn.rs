//! Integration tests of `PUT /v1/txn` on the real binary: all or nothing at one index,
//! `Results`/`Errors` as Consul answers them, locks inside a transaction, the bounds and bad
//! bodies, and durability across `kill -9`.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{Server, http};

/// Standard base64, padded (a few lines keep the test free of another dependency).
fn b64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

async fn txn(c: &reqwest::Client, s: &Server, ops: Value) -> (u16, Value) {
    let r = c.put(s.url("/v1/txn")).json(&ops).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn b64_encodes_like_the_standard() {
    assert_eq!(b64("1"), "MQ==");
    assert_eq!(b64("me"), "bWU=");
    assert_eq!(b64("two"), "dHdv");
}

fn kv(verb: &str, key: &str) -> Value {
    json!({"KV": {"Verb": verb, "Key": key}})
}

fn set(key: &str, value: &str) -> Value {
    json!({"KV": {"Verb": "set", "Key": key, "Value": b64(value)}})
}

#[tokio::test]
async fn transactions_are_all_or_nothing() {
    let s = Server::dev();
    let c = http();
    let (status, done) = txn(
        &c,
        &s,
        json!([set("app/a", "1"), set("app/b", "2"), kv("get", "app/a")]),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["Errors"], Value::Null);
    let results = done["Results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0]["KV"]["Value"],
        Value::Null,
        "writes answer no value"
    );
    assert_eq!(results[2]["KV"]["Value"], b64("1"), "reads do");
    let index = results[0]["KV"]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        results[1]["KV"]["ModifyIndex"], index,
        "one index for the transaction"
    );

    // One failed operation: 409 with every error, and nothing applied.
    let (status, failed) = txn(
        &c,
        &s,
        json!([
            set("app/c", "3"),
            {"KV": {"Verb": "cas", "Key": "app/a", "Index": index + 100, "Value": b64("x")}},
            kv("check-not-exists", "app/b"),
        ]),
    )
    .await;
    assert_eq!(status, 409, "{failed}");
    assert_eq!(failed["Results"], Value::Null);
    assert_eq!(
        failed["Errors"],
        json!([
            {"OpIndex": 1, "What": "failed to set key \"app/a\", index is stale"},
            {"OpIndex": 2, "What": "key \"app/b\" exists"},
        ])
    );
    let r = c.get(s.url("/v1/kv/app/c")).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing of a failed transaction applies");

    // Reads only: answered without the writer, with the leader headers.
    let r = c
        .put(s.url("/v1/txn"))
        .json(&json!([kv("get-tree", "app/"), {"KV": {"Verb": "check-index", "Key": "app/a", "Index": index}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-consul-knownleader"], "true");
    let read: Value = r.json().await.unwrap();
    let keys: Vec<&str> = read["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["KV"]["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/a", "app/b", "app/a"]);

    // Deletes and the tree.
    let (status, _) = txn(
        &c,
        &s,
        json!([kv("delete-tree", "app/"), {"KV": {"Verb": "delete-cas", "Key": "gone", "Index": 3}}]),
    )
    .await;
    assert_eq!(status, 200);
    let r = c.get(s.url("/v1/kv/app?recurse")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn locks_inside_transactions() {
    let s = Server::dev();
    let c = http();
    let r = c.put(s.url("/v1/session/create")).send().await.unwrap();
    let id = r.json::<Value>().await.unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, done) = txn(
        &c,
        &s,
        json!([
            {"KV": {"Verb": "lock", "Key": "leader", "Session": id, "Value": b64("me")}},
            {"KV": {"Verb": "check-session", "Key": "leader", "Session": id}},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["Results"][0]["KV"]["Session"], id.as_str());
    assert_eq!(done["Results"][0]["KV"]["LockIndex"], 1);
    let (status, failed) = txn(
        &c,
        &s,
        json!([{"KV": {"Verb": "lock", "Key": "other", "Session": "no-such-session"}}]),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        failed["Errors"][0]["What"],
        "invalid session \"no-such-session\""
    );
    let (status, done) = txn(
        &c,
        &s,
        json!([{"KV": {"Verb": "unlock", "Key": "leader", "Session": id}}]),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert!(done["Results"][0]["KV"].get("Session").is_none());
}

#[tokio::test]
async fn bad_transactions_are_refused_with_a_reason() {
    let s = Server::dev();
    let c = http();
    for (body, want_status, want_text) in [
        ("{not json".to_owned(), 400, "Failed to parse body"),
        (r#"{"KV": {}}"#.to_owned(), 400, "array"),
        (
            r#"[{"KV": {"Verb": "set", "Key": "k", "Value": "%%%"}}]"#.to_owned(),
            400,
            "decode value",
        ),
        (
            r#"[{"Node": {"Verb": "get", "Node": {"Node": "n"}}}]"#.to_owned(),
            400,
            "only KV",
        ),
        (
            serde_json::to_string(&vec![kv("get", "k"); 129]).unwrap(),
            413,
            "too many operations (129 > 128)",
        ),
    ] {
        let r = c
            .put(s.url("/v1/txn"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, want_status, "{body:.60}: {text}");
        assert!(text.contains(want_text), "{body:.60}: {text}");
    }
    let (status, answer) = txn(&c, &s, Value::Array(vec![kv("get", "k"); 128])).await;
    assert_eq!(status, 409, "128 operations are fine (each fails: no key)");
    assert_eq!(answer["Errors"].as_array().unwrap().len(), 128);
    let (status, answer) = txn(&c, &s, json!([kv("frobnicate", "k")])).await;
    assert_eq!(status, 409);
    assert_eq!(
        answer["Errors"][0]["What"],
        "unknown KV verb \"frobnicate\""
    );
    let (status, answer) = txn(&c, &s, json!([kv("set", "")])).await;
    assert_eq!(
        (status, answer["Errors"][0]["What"].clone()),
        (409, json!("Must provide key"))
    );
    let r = c.get(s.url("/v1/txn")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn a_transaction_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let s = Server::durable(dir.path());
    let (status, _) = txn(&c, &s, json!([set("d/1", "one"), set("d/2", "two")])).await;
    assert_eq!(status, 200);
    s.kill9();
    let s = Server::durable(dir.path());
    let r = c.get(s.url("/v1/kv/d?recurse")).send().await.unwrap();
    let pairs: Value = r.json().await.unwrap();
    assert_eq!(pairs.as_array().unwrap().len(), 2);
    assert_eq!(pairs[1]["Value"], b64("two"));
}
