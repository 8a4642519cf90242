//! Integration tests of Consul's config entries (`/v1/config`) on the real binary: writes with
//! and without `cas`, reads as Consul answers them (the structs it always prints, `Protocol`
//! lower-cased, names matched without regard to case), lists, deletes, blocking reads woken by
//! what they read (and not by another kind), Consul's 400/404/500 answers, the Connect kinds
//! Trellis refuses, and durability across a restart.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, http, index_of};

/// GET: status, JSON body (`Null` if not JSON), `X-Consul-Index` (0 if absent).
async fn get(c: &reqwest::Client, url: String) -> (u16, Value, u64) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let index = if r.headers().contains_key("x-consul-index") {
        index_of(&r)
    } else {
        0
    };
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        index,
    )
}

/// GET answering the body as text.
async fn get_text(c: &reqwest::Client, url: String) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// PUT /v1/config with a body (`?query` appended): status and body text.
async fn write(c: &reqwest::Client, s: &Server, query: &str, body: &str) -> (u16, String) {
    let r = c
        .put(s.url(&format!("/v1/config{query}")))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn delete(c: &reqwest::Client, s: &Server, path: &str) -> (u16, String) {
    let r = c.delete(s.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn entries_are_written_read_listed_and_deleted_as_consul_answers_them() {
    let s = Server::dev();
    let c = http();
    // snake_case keys and lower-case keys, as Consul's decoder takes them.
    let body = json!({
        "kind": "service-defaults", "name": "Web", "protocol": "HTTP",
        "transparent_proxy": {"outbound_listener_port": 15001},
        "max_inbound_connections": 64, "meta": {"team": "core"}
    });
    assert_eq!(
        write(&c, &s, "", &body.to_string()).await,
        (200, "true".into())
    );
    let (status, entry, index) = get(&c, s.url("/v1/config/service-defaults/web")).await;
    assert_eq!(status, 200);
    assert_eq!(
        entry,
        json!({
            "Kind": "service-defaults", "Name": "Web", "Protocol": "http",
            "TransparentProxy": {"OutboundListenerPort": 15001},
            "MeshGateway": {}, "Expose": {}, "MaxInboundConnections": 64,
            "Meta": {"team": "core"}, "CreateIndex": index, "ModifyIndex": index
        })
    );
    // proxy-defaults is always "global"; its Config is kept as sent.
    let proxy = json!({"Kind": "proxy-defaults", "Config": {"protocol": "grpc", "n": [1, 2]}});
    assert_eq!(
        write(&c, &s, "", &proxy.to_string()).await,
        (200, "true".into())
    );
    let (_, global, _) = get(&c, s.url("/v1/config/proxy-defaults/global")).await;
    assert_eq!(global["Config"], json!({"protocol": "grpc", "n": [1, 2]}));
    assert_eq!(global["AccessLogs"], json!({}));
    // A kind's list, by name; every entry under /v1/config/.
    let api = json!({"Kind": "service-defaults", "Name": "api"});
    write(&c, &s, "", &api.to_string()).await;
    let (_, listed, list_index) = get(&c, s.url("/v1/config/service-defaults")).await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "Web"]);
    let (_, one, one_index) = get(&c, s.url("/v1/config/service-defaults/api")).await;
    assert_eq!(
        one_index, list_index,
        "every read answers the config entries index"
    );
    assert!(one["ModifyIndex"].as_u64().unwrap() <= one_index);
    let (_, all, _) = get(&c, s.url("/v1/config/")).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[0]["Kind"], "proxy-defaults");
    // Writing what is there answers true and changes nothing.
    write(&c, &s, "", &api.to_string()).await;
    assert_eq!(
        get(&c, s.url("/v1/config/service-defaults")).await.2,
        list_index
    );
    // Deletes answer {} (a missing entry too); the entry is gone.
    assert_eq!(
        delete(&c, &s, "/v1/config/service-defaults/WEB").await,
        (200, "{}".into())
    );
    let (status, text) = get_text(&c, s.url("/v1/config/service-defaults/web")).await;
    assert_eq!(status, 404);
    assert_eq!(
        text.trim_end(),
        r#"Config entry not found for "service-defaults" / "web""#
    );
    assert_eq!(
        delete(&c, &s, "/v1/config/service-defaults/web").await,
        (200, "{}".into())
    );
}

#[tokio::test]
async fn cas_writes_and_deletes() {
    let s = Server::dev();
    let c = http();
    let v1 = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}).to_string();
    let v2 = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}).to_string();
    let v3 = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}).to_string();
    assert_eq!(write(&c, &s, "?cas=0", &v1).await, (200, "true".into()));
    assert_eq!(
        write(&c, &s, "?cas=0", &v2).await,
        (200, "false".into()),
        "0: only if absent"
    );
    let (_, entry, _) = get(&c, s.url("/v1/config/service-defaults/web")).await;
    let modify = entry["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        write(&c, &s, &format!("?cas={}", modify + 100), &v2).await,
        (200, "false".into())
    );
    assert_eq!(
        write(&c, &s, &format!("?cas={modify}"), &v2).await,
        (200, "true".into())
    );
    let (_, entry, _) = get(&c, s.url("/v1/config/service-defaults/web")).await;
    assert_eq!(entry["Protocol"], "grpc");
    assert_eq!(entry["CreateIndex"].as_u64().unwrap(), modify);
    let current = entry["ModifyIndex"].as_u64().unwrap();
    assert!(current > modify);
    // A stale cas neither writes nor deletes.
    assert_eq!(
        write(&c, &s, &format!("?cas={modify}"), &v3).await,
        (200, "false".into())
    );
    assert_eq!(
        delete(
            &c,
            &s,
            &format!("/v1/config/service-defaults/web?cas={modify}")
        )
        .await,
        (200, "false".into())
    );
    assert_eq!(
        delete(
            &c,
            &s,
            &format!("/v1/config/service-defaults/web?cas={current}")
        )
        .await,
        (200, "true".into())
    );
    assert_eq!(
        get(&c, s.url("/v1/config/service-defaults/web")).await.0,
        404
    );
}

#[tokio::test]
async fn blocking_reads_wake_on_what_they_read() {
    let s = Server::dev();
    let c = http();
    let web = |protocol: &str| {
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": protocol}).to_string()
    };
    write(&c, &s, "", &web("http")).await;
    let (_, _, index) = get(&c, s.url("/v1/config/service-defaults")).await;
    // Nothing changes: the wait ends with the same index.
    let started = Instant::now();
    let (status, _, same) = get(
        &c,
        s.url(&format!(
            "/v1/config/service-defaults?index={index}&wait=300ms"
        )),
    )
    .await;
    assert_eq!((status, same), (200, index));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let list_waiter = {
        let (c, url) = (
            c.clone(),
            s.url(&format!(
                "/v1/config/service-defaults?index={index}&wait=20s"
            )),
        );
        tokio::spawn(async move { get(&c, url).await })
    };
    let entry_waiter = {
        let (c, url) = (
            c.clone(),
            s.url(&format!(
                "/v1/config/service-defaults/web?index={index}&wait=20s"
            )),
        );
        tokio::spawn(async move { get(&c, url).await })
    };
    let missing_waiter = {
        let (c, url) = (
            c.clone(),
            s.url(&format!(
                "/v1/config/service-defaults/api?index={index}&wait=20s"
            )),
        );
        tokio::spawn(async move { get(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another kind changes: the service-defaults readers keep waiting.
    let proxy = json!({"Kind": "proxy-defaults", "Name": "global"}).to_string();
    assert_eq!(write(&c, &s, "", &proxy).await.1, "true");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!list_waiter.is_finished(), "woken by another kind");
    assert!(!entry_waiter.is_finished(), "woken by another entry");
    // The entry changes: its reader and the kind's list wake at once, with the new index.
    let started = Instant::now();
    write(&c, &s, "", &web("grpc")).await;
    let (status, listed, list_index) = list_waiter.await.unwrap();
    let (_, entry, entry_index) = entry_waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status, 200);
    assert_eq!(listed[0]["Protocol"], "grpc");
    assert_eq!(entry["Protocol"], "grpc");
    assert!(list_index > index && entry_index == list_index);
    assert!(!missing_waiter.is_finished(), "woken by another name");
    // Creating the missing entry wakes its reader.
    write(
        &c,
        &s,
        "",
        &json!({"Kind": "service-defaults", "Name": "api"}).to_string(),
    )
    .await;
    let (status, api, _) = missing_waiter.await.unwrap();
    assert_eq!((status, api["Name"].as_str()), (200, Some("api")));
    // An index that is not the current one answers at once.
    let started = Instant::now();
    let (_, _, now) = get(
        &c,
        s.url(&format!(
            "/v1/config/service-defaults/web?index={index}&wait=20s"
        )),
    )
    .await;
    assert!(now > index && started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refusals_use_consuls_statuses_and_words() {
    let s = Server::dev();
    let c = http();
    let cases: &[(&str, u16, &str)] = &[
        (
            r#"{"Name": "web"}"#,
            400,
            "Request decoding failed: Payload does not contain a kind/Kind key at the top level",
        ),
        (
            r#"{"Kind": "nope", "Name": "web"}"#,
            400,
            "Request decoding failed: invalid config entry kind: nope",
        ),
        (
            r#"{"Kind": "service-defaults", "Name": "web", "Foo": 1}"#,
            400,
            "Request decoding failed: 1 error occurred:\n\t* invalid config key \"Foo\"",
        ),
        (
            r#"{"Kind": "service-defaults", "Name": "web", "Protocol": ["a", "b"]}"#,
            400,
            "Request decoding failed: 1 error(s) decoding:\n\n* 'Protocol' expected type \
             'string', got unconvertible type '[]interface {}', value: '[a b]'",
        ),
        (
            r#"{"Kind": "service-defaults", "Name": "web", "Partition": "p"}"#,
            400,
            "Request decoding failed: 1 error occurred:\n\t* invalid config key \"Partition\"",
        ),
        ("", 400, "Request decoding failed: EOF"),
        // Normalize and Validate errors are Consul's RPC errors: 500.
        (r#"{"Kind": "service-defaults"}"#, 500, "Name is required"),
        (
            r#"{"Kind": "proxy-defaults", "Name": "web"}"#,
            500,
            r#"invalid name ("web"), only "global" is supported"#,
        ),
    ];
    for (body, status, text) in cases {
        let (got_status, got_text) = write(&c, &s, "", body).await;
        assert_eq!(
            (got_status, got_text.trim_end()),
            (*status, *text),
            "body {body}"
        );
    }
    // Connect's kinds are refused, with the reason; they read as absent.
    let (status, text) = write(&c, &s, "", r#"{"Kind": "service-resolver", "Name": "web"}"#).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("\"service-resolver\" is not supported by Trellis")
            && text.contains("Connect"),
        "{text}"
    );
    assert_eq!(
        get(&c, s.url("/v1/config/service-resolver/web")).await.0,
        404
    );
    assert_eq!(
        get(&c, s.url("/v1/config/service-resolver")).await.1,
        json!([])
    );
    // Reads and deletes of a kind Consul does not have; a delete without a name.
    assert_eq!(
        get_text(&c, s.url("/v1/config/nope")).await,
        (500, "invalid config entry kind: nope\n".into())
    );
    assert_eq!(
        delete(&c, &s, "/v1/config/nope/x").await,
        (400, "invalid config entry kind: nope\n".into())
    );
    assert_eq!(
        delete(&c, &s, "/v1/config/service-defaults").await,
        (404, "Must provide both a kind and name to delete\n".into())
    );
    assert_eq!(
        get_text(&c, s.url("/v1/config/service-defaults?dc=elsewhere"))
            .await
            .0,
        500
    );
    // Bodies are bounded like every other write.
    let huge = format!(
        r#"{{"Kind": "service-defaults", "Name": "web", "Meta": {{"k": "{}"}}}}"#,
        "x".repeat(600 * 1024)
    );
    assert_eq!(write(&c, &s, "", &huge).await.0, 413);
}

#[tokio::test]
async fn entries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let s = Server::durable(dir.path());
    let web = json!({
        "Kind": "service-defaults", "Name": "web", "Protocol": "http",
        "UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 5000}},
        "Expose": {"Paths": [{"Path": "/metrics", "LocalPathPort": 8080, "ListenerPort": 21500}]}
    });
    write(&c, &s, "", &web.to_string()).await;
    let proxy = json!({"Kind": "proxy-defaults", "Config": {"protocol": "http"}});
    write(&c, &s, "", &proxy.to_string()).await;
    let gone = json!({"Kind": "service-defaults", "Name": "gone"});
    write(&c, &s, "", &gone.to_string()).await;
    delete(&c, &s, "/v1/config/service-defaults/gone").await;
    let (_, before, index) = get(&c, s.url("/v1/config/")).await;
    assert!(s.terminate().success());

    let s = Server::durable(dir.path());
    let (_, after, after_index) = get(&c, s.url("/v1/config/")).await;
    assert_eq!(
        after, before,
        "every entry came back whole, the deleted one gone"
    );
    assert!(after_index >= index, "the index does not go backwards");
    // The next write is numbered above everything restored.
    let v2 = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"});
    write(&c, &s, "", &v2.to_string()).await;
    let (_, entry, _) = get(&c, s.url("/v1/config/service-defaults/web")).await;
    assert!(entry["ModifyIndex"].as_u64().unwrap() > after_index);
    assert_eq!(entry["CreateIndex"], before[1]["CreateIndex"]);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn service_defaults_lists_take_consuls_filters() {
    let s = Server::dev();
    let c = http();
    for body in [
        json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http",
               "Meta": {"team": "core"}, "Expose": {"Paths": [{"Path": "/metrics"}]}}),
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "grpc",
               "upstream_config": {"defaults": {"connect_timeout_ms": 500}}}),
        json!({"Kind": "service-defaults", "Name": "db"}),
    ] {
        assert_eq!(write(&c, &s, "", &body.to_string()).await.1, "true");
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let filtered = |expr: &str| {
        let url = s.url(&format!(
            "/v1/config/service-defaults?filter={}",
            expr.replace(' ', "%20")
                .replace('"', "%22")
                .replace('=', "%3D")
        ));
        let c = c.clone();
        async move { get(&c, url).await }
    };
    let (status, listed, _) = filtered(r#"Protocol == "http""#).await;
    assert_eq!((status, names(&listed)), (200, vec!["web".to_owned()]));
    let (_, listed, _) = filtered(r#"Meta.team == "core" or Protocol == "grpc""#).await;
    assert_eq!(names(&listed), ["api", "web"]);
    let (_, listed, _) = filtered(r#"Expose.Paths.Path == "/metrics""#).await;
    assert_eq!(names(&listed), ["web"]);
    let (_, listed, _) = filtered("Protocol is empty").await;
    assert_eq!(names(&listed), ["db"]);
    // Values kept as sent are read as Consul's decoder reads them.
    let (_, listed, _) = filtered("UpstreamConfig.Defaults.ConnectTimeoutMs == 500").await;
    assert_eq!(names(&listed), ["api"]);
    // A bad filter is a 400 with its position; other kinds refuse filters, as Consul does.
    let (status, text) = get_text(
        &c,
        s.url("/v1/config/service-defaults?filter=Bogus%20%3D%3D%201"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains(r#"Selector "Bogus" is not valid"#), "{text}");
    let (status, text) = get_text(
        &c,
        s.url("/v1/config/proxy-defaults?filter=Name%20%3D%3D%20global"),
    )
    .await;
    assert_eq!(
        (status, text.trim_end()),
        (
            500,
            "filtering not supported for config entry kind=proxy-defaults"
        )
    );
}
