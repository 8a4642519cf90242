//! Regressions found by running real third-party Consul clients against `trellis server`
//! (tests/compat/): each test pins a Consul behaviour that trellis once got wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod support;

use support::Server;

async fn register(c: &reqwest::Client, s: &Server, body: Value) {
    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "register {body}: {}",
        r.text().await.unwrap()
    );
}

/// GETs a JSON list; answers it and the X-Consul-Index.
async fn list(c: &reqwest::Client, s: &Server, path: &str) -> (Vec<Value>, u64) {
    let r = c.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    let index = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (r.json().await.unwrap(), index)
}

/// The service IDs of a health or catalog answer, sorted.
fn ids(entries: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = entries
        .iter()
        .map(|e| {
            e.pointer("/Service/ID")
                .or_else(|| e.get("ServiceID"))
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// Consul matches `?tag=` without regard to case (its state store lower-cases both sides), so
/// clients and Prometheus' `consul_sd_configs.tags` find `Primary` when asking for `primary`.
#[tokio::test]
async fn tag_filters_ignore_case_like_consul() {
    let s = Server::dev();
    let c = reqwest::Client::new();
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1", "Tags": ["Primary", "v1"]}),
    )
    .await;
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-2", "Tags": ["v2"]}),
    )
    .await;
    for path in [
        "/v1/health/service/web?tag=primary",
        "/v1/health/service/web?tag=PRIMARY&tag=V1",
        "/v1/catalog/service/web?tag=primary",
        "/v1/catalog/service/web?tag=Primary&tag=v1",
    ] {
        assert_eq!(ids(&list(&c, &s, path).await.0), ["web-1"], "{path}");
    }
    assert_eq!(
        ids(&list(&c, &s, "/v1/health/service/web?tag=V2").await.0),
        ["web-2"]
    );
    assert!(
        list(&c, &s, "/v1/health/service/web?tag=primary&tag=v2")
            .await
            .0
            .is_empty()
    );
    // The answer keeps the tags as registered.
    let (entries, _) = list(&c, &s, "/v1/health/service/web?tag=primary").await;
    assert_eq!(entries[0]["Service"]["Tags"], json!(["Primary", "v1"]));
}

/// Consul indexes services by lower-cased name: `/v1/health/service/billing-api` finds
/// instances registered as `Billing-API`, each answer keeps the registered spelling, and a
/// blocking query under any spelling wakes on changes to the service.
#[tokio::test]
async fn service_names_are_looked_up_without_regard_to_case() {
    let s = Server::dev();
    let c = reqwest::Client::new();
    register(
        &c,
        &s,
        json!({"Name": "Billing-API", "ID": "billing-1", "Port": 9000}),
    )
    .await;

    for path in [
        "/v1/health/service/billing-api",
        "/v1/health/service/BILLING-API",
    ] {
        let (entries, _) = list(&c, &s, path).await;
        assert_eq!(ids(&entries), ["billing-1"], "{path}");
        assert_eq!(entries[0]["Service"]["Service"], "Billing-API");
    }
    let (entries, _) = list(&c, &s, "/v1/catalog/service/billing-api").await;
    assert_eq!(ids(&entries), ["billing-1"]);
    assert_eq!(entries[0]["ServiceName"], "Billing-API");
    let services: Value = c
        .get(s.url("/v1/catalog/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        services.get("Billing-API").is_some(),
        "catalog/services keeps the registered name: {services}"
    );

    // A blocking query under the lower-case name wakes when an instance registered under
    // another spelling of the name arrives.
    let (_, index) = list(&c, &s, "/v1/health/service/billing-api").await;
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!(
            "/v1/health/service/billing-api?index={index}&wait=20s"
        ));
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c.get(url).send().await.unwrap();
            let index: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (
                started.elapsed(),
                index,
                r.json::<Vec<Value>>().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    register(
        &c,
        &s,
        json!({"Name": "billing-api", "ID": "billing-2", "Port": 9001}),
    )
    .await;
    let (elapsed, new_index, entries) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the blocking query never returned")
        .unwrap();
    assert!(elapsed < Duration::from_secs(5), "woken after {elapsed:?}");
    assert!(new_index > index);
    assert_eq!(ids(&entries), ["billing-1", "billing-2"]);

    let r = c
        .put(s.url("/v1/agent/service/deregister/billing-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ids(&list(&c, &s, "/v1/health/service/Billing-Api").await.0),
        ["billing-2"]
    );
}

/// GETs a single KV key: its ModifyIndex and the answer's X-Consul-Index.
async fn kv_read(c: &reqwest::Client, s: &Server, path: &str) -> (u64, u64) {
    let r = c.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    let index = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Vec<Value> = r.json().await.unwrap();
    (body[0]["ModifyIndex"].as_u64().unwrap(), index)
}

async fn kv_put(c: &reqwest::Client, s: &Server, key: &str, value: &str) {
    let r = c
        .put(s.url(&format!("/v1/kv/{key}")))
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
}

/// For a single existing key Consul answers `X-Consul-Index` = the key's `ModifyIndex` and a
/// blocking read wakes only when that key changes -- not when a key that merely shares its
/// prefix (`cfg-backup`, `cfg/x`) does. Clients use that index for CAS and for watches.
#[tokio::test]
async fn single_key_reads_answer_the_keys_own_index() {
    let s = Server::dev();
    let c = reqwest::Client::new();
    kv_put(&c, &s, "cfg", "1").await;
    kv_put(&c, &s, "cfg-backup", "x").await;
    kv_put(&c, &s, "cfg/nested", "y").await;
    let (modify, index) = kv_read(&c, &s, "/v1/kv/cfg").await;
    assert_eq!(
        index, modify,
        "X-Consul-Index of a single key is its ModifyIndex"
    );

    // The index answered is usable as a CAS index, as with Consul.
    let r = c
        .put(s.url(&format!("/v1/kv/cfg?cas={index}")))
        .body("2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let (modify, index) = kv_read(&c, &s, "/v1/kv/cfg").await;
    assert_eq!(index, modify);

    // A write to a key that only shares the prefix does not wake the key's watchers...
    let started = Instant::now();
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/kv/cfg?index={index}&wait=1s"));
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kv_put(&c, &s, "cfg-backup", "z").await;
    kv_put(&c, &s, "cfg/nested", "z").await;
    assert_eq!(
        waiter.await.unwrap(),
        index,
        "a sibling key's write changed the index"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "woken after {:?}",
        started.elapsed()
    );

    // ...while a write to the key itself does, at once.
    let started = Instant::now();
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/kv/cfg?index={index}&wait=20s"));
        tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kv_put(&c, &s, "cfg", "3").await;
    assert_eq!(waiter.await.unwrap(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Recursive reads still answer the index of everything under the prefix.
    let (entries, prefix_index) = list(&c, &s, "/v1/kv/cfg?recurse").await;
    let newest = entries
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(prefix_index, newest);

    // Deleting the key wakes its watchers and the 404 still carries an index.
    let (_, index) = kv_read(&c, &s, "/v1/kv/cfg").await;
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!("/v1/kv/cfg?index={index}&wait=20s"));
        tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let index: u64 = r.headers()["x-consul-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (r.status(), index)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c.delete(s.url("/v1/kv/cfg")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "true");
    let (status, after) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 404);
    assert!(after > index);
}

/// Consul parses `?passing=` with Go's `strconv.ParseBool`, so `t`/`T`/`f`/`F` are valid too.
#[tokio::test]
async fn boolean_parameters_accept_go_parse_bool_forms() {
    let s = Server::dev();
    let c = reqwest::Client::new();
    register(
        &c,
        &s,
        json!({"Name": "db", "ID": "db-1", "Check": {"TTL": "30s"}}),
    )
    .await;
    for (value, passing_only) in [
        ("t", true),
        ("T", true),
        ("1", true),
        ("f", false),
        ("F", false),
        ("0", false),
    ] {
        let (entries, _) = list(&c, &s, &format!("/v1/health/service/db?passing={value}")).await;
        assert_eq!(entries.len(), usize::from(!passing_only), "passing={value}");
    }
    let r = c
        .get(s.url("/v1/health/service/db?passing=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Consul ignores a `Check` whose fields are all empty (`CheckType.Empty()`), which clients
/// that always serialise the field send; every entry of `Checks` must still be a real check.
#[tokio::test]
async fn an_empty_check_object_is_ignored_like_consul() {
    let s = Server::dev();
    let c = reqwest::Client::new();
    register(&c, &s, json!({"Name": "svc", "ID": "svc-1", "Check": {}})).await;
    register(
        &c,
        &s,
        json!({"Name": "svc", "ID": "svc-2",
               "check": {"Script": null, "interval": "", "TTL": "", "HTTP": "", "Status": "",
                         "TLSSkipVerify": false, "Header": {}, "SuccessBeforePassing": 0}}),
    )
    .await;
    let checks: Value = c
        .get(s.url("/v1/agent/checks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checks, json!({}), "an empty Check registered a check");
    let (entries, _) = list(&c, &s, "/v1/health/service/svc?passing").await;
    assert_eq!(ids(&entries), ["svc-1", "svc-2"], "no checks: passing");

    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&json!({"Name": "svc", "ID": "svc-3", "Checks": [{}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "an empty entry of Checks is still an error"
    );
}
