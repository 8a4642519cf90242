//! Intentions against the real server: by name and by legacy ID, the list, match order and its
//! blocking wake-up, check and agent authorize (allowed, denied, another trust domain), the
//! `service-intentions` config entry that holds them, a restart, and access control
//! (`intentions:read|write`, lists filtered, the default deny and its header).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, http};

/// A call: the status, the `X-Trellis-Intention-Default` header, and the body (JSON, or the
/// text as a JSON string).
async fn call_full(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = http().request(method, server.url(path));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let default = response
        .headers()
        .get("x-trellis-intention-default")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, default, value)
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, value) = call_full(server, method, path, token, body).await;
    (status, value)
}

async fn put_exact(server: &Server, source: &str, destination: &str, action: &str) {
    let path = format!("/v1/connect/intentions/exact?source={source}&destination={destination}");
    let (status, body) = call(
        server,
        Method::PUT,
        &path,
        None,
        Some(json!({"SourceType": "consul", "Action": action})),
    )
    .await;
    assert_eq!((status, &body), (200, &json!(true)), "PUT {path}");
}

/// `(source, destination, action)` of a list of intentions, in order.
fn pairs(list: &Value) -> Vec<(String, String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            (
                i["SourceName"].as_str().unwrap().to_owned(),
                i["DestinationName"].as_str().unwrap().to_owned(),
                i["Action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn triple(s: &str, d: &str, a: &str) -> (String, String, String) {
    (s.into(), d.into(), a.into())
}

#[tokio::test]
async fn by_name_list_match_check_and_the_config_entry_view() {
    let server = Server::dev();
    put_exact(&server, "web", "db", "allow").await;
    put_exact(&server, "*", "db", "deny").await;
    put_exact(&server, "web", "*", "allow").await;

    let (status, one) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/exact?source=web&destination=db",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["SourceNS"], "default");
    assert_eq!(one["DestinationNS"], "default");
    assert_eq!(one["SourceType"], "consul");
    assert_eq!(one["Action"], "allow");
    assert_eq!(one["Precedence"], 9);
    assert!(
        one.get("ID").is_none() && one.get("CreatedAt").is_none(),
        "{one}"
    );
    assert!(one["CreateIndex"].as_u64().unwrap() > 0);

    // The config entry is where they live: one per destination, sources by precedence.
    let (status, entry) = call(
        &server,
        Method::GET,
        "/v1/config/service-intentions/db",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["Kind"], "service-intentions");
    let sources: Vec<(&str, &str, u64)> = entry["Sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Name"].as_str().unwrap(),
                s["Action"].as_str().unwrap(),
                s["Precedence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [("web", "allow", 9), ("*", "deny", 8)]);
    assert_eq!(entry["ModifyIndex"], one["ModifyIndex"]);

    // And a config entry written through /v1/config is an intention.
    let (status, _) = call(
        &server,
        Method::PUT,
        "/v1/config",
        None,
        Some(json!({"Kind": "service-intentions", "Name": "cache",
                    "Sources": [{"Name": "api", "Action": "allow", "Description": "reads"}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, list) = call(&server, Method::GET, "/v1/connect/intentions", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        pairs(&list),
        [
            triple("api", "cache", "allow"),
            triple("web", "db", "allow"),
            triple("*", "db", "deny"),
            triple("web", "*", "allow"),
        ],
        "by precedence, then names"
    );
    assert_eq!(list[0]["Description"], "reads");

    // Match: what a proxy evaluates, first match wins; the default comes in a header.
    let (status, default, matched) = call_full(
        &server,
        Method::GET,
        "/v1/connect/intentions/match?by=destination&name=db",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{matched}");
    assert_eq!(default.as_deref(), Some("allow"));
    assert_eq!(
        pairs(&matched["db"]),
        [
            triple("web", "db", "allow"),
            triple("*", "db", "deny"),
            triple("web", "*", "allow"),
        ]
    );
    let (_, by_source) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/match?by=source&name=web&name=nobody",
        None,
        None,
    )
    .await;
    assert_eq!(
        pairs(&by_source["web"]),
        [
            triple("web", "db", "allow"),
            triple("*", "db", "deny"),
            triple("web", "*", "allow"),
        ]
    );
    assert_eq!(
        pairs(&by_source["nobody"]),
        [triple("*", "db", "deny")],
        "a wildcard source matches anyone"
    );

    // Check: the exact allow beats the wildcard deny; the wildcard deny beats web → *.
    for (source, destination, allowed) in [
        ("web", "db", true),
        ("api", "db", false),
        ("web", "queue", true),
        ("api", "queue", true), // nothing matches: the default (allow)
        ("api", "cache", true),
    ] {
        let path =
            format!("/v1/connect/intentions/check?source={source}&destination={destination}");
        let (status, answer) = call(&server, Method::GET, &path, None, None).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"Allowed": allowed}),
            "{source} → {destination}"
        );
    }

    // Delete by name: true, also when there is nothing to delete; the last source takes the
    // entry with it.
    for _ in 0..2 {
        let (status, answer) = call(
            &server,
            Method::DELETE,
            "/v1/connect/intentions/exact?source=api&destination=cache",
            None,
            None,
        )
        .await;
        assert_eq!((status, answer), (200, json!(true)));
    }
    let (status, missing) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/exact?source=api&destination=cache",
        None,
        None,
    )
    .await;
    assert_eq!((status, missing), (404, json!("Intention not found\n")));
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/config/service-intentions/cache",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_requests_are_refused_with_consuls_words() {
    let server = Server::dev();
    let cases = [
        (
            Method::GET,
            "/v1/connect/intentions/match?name=db",
            None,
            400,
            "required query parameter 'by' not set",
        ),
        (
            Method::GET,
            "/v1/connect/intentions/match?by=sideways&name=db",
            None,
            400,
            "'by' parameter must be one of 'source' or 'destination'",
        ),
        (
            Method::GET,
            "/v1/connect/intentions/check?source=web",
            None,
            400,
            "required query parameter 'destination' not set",
        ),
        (
            Method::PUT,
            "/v1/connect/intentions/exact?source=web&destination=db",
            Some(json!({"Action": "maybe"})),
            500,
            "Sources[0].Action must be set to 'allow' or 'deny'",
        ),
        (
            Method::PUT,
            "/v1/connect/intentions/exact?source=w*&destination=db",
            Some(json!({"Action": "allow"})),
            500,
            "Sources[0].Name: wildcard character '*' cannot be used with partial values",
        ),
        (
            Method::PUT,
            "/v1/connect/intentions/exact?source=web&destination=db",
            Some(json!({"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]})),
            400,
            "is not supported by Trellis",
        ),
        (
            Method::PUT,
            "/v1/connect/intentions/exact?source=web&destination=db",
            Some(json!({"Action": 7})),
            400,
            "Request decode failed",
        ),
        (
            Method::PUT,
            "/v1/config",
            Some(json!({"Kind": "service-intentions", "Name": "db", "Sources": []})),
            500,
            "At least one source is required",
        ),
        (
            Method::GET,
            "/v1/connect/intentions/not-a-uuid",
            None,
            400,
            "UUID must be 36 characters",
        ),
        (
            Method::POST,
            "/v1/agent/connect/authorize",
            Some(json!({"Target": "db", "ClientCertURI": "https://x/y"})),
            400,
            "ClientCertURI not a valid Connect identifier",
        ),
        (
            Method::POST,
            "/v1/agent/connect/authorize",
            Some(json!({"ClientCertURI": "spiffe://x/ns/default/dc/dc1/svc/web"})),
            400,
            "Target service must be specified",
        ),
    ];
    for (method, path, body, want_status, want_text) in cases {
        let (status, answer) = call(&server, method.clone(), path, None, body).await;
        assert_eq!(status, want_status, "{method} {path}: {answer}");
        assert!(
            answer.as_str().unwrap_or_default().contains(want_text),
            "{method} {path}: {answer}"
        );
    }
}

#[tokio::test]
async fn legacy_ids_create_read_update_delete() {
    let server = Server::dev();
    let create = json!({
        "SourceName": "web", "DestinationName": "db", "SourceType": "consul",
        "Action": "allow", "Description": "web reads db", "Meta": {"team": "core"}
    });
    let (status, created) = call(
        &server,
        Method::POST,
        "/v1/connect/intentions",
        None,
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["ID"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let path = format!("/v1/connect/intentions/{id}");
    let (status, one) = call(&server, Method::GET, &path, None, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["ID"], id.as_str());
    assert_eq!(one["Description"], "web reads db");
    assert_eq!(one["Meta"], json!({"team": "core"}));
    assert_eq!(one["Precedence"], 9);
    let created_at = one["CreatedAt"].as_str().unwrap().to_owned();
    assert!(created_at.ends_with('Z'), "{one}");
    assert_eq!(one["UpdatedAt"], one["CreatedAt"]);

    // The same pair again is refused by the entry's validation, as Consul refuses it.
    let (status, dup) = call(
        &server,
        Method::POST,
        "/v1/connect/intentions",
        None,
        Some(create),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(dup, json!("Sources[1] defines \"web\" more than once\n"));

    // Update: the source and action may change, the destination may not.
    let (status, updated) = call(
        &server,
        Method::PUT,
        &path,
        None,
        Some(json!({"SourceName": "*", "DestinationName": "db", "Action": "deny"})),
    )
    .await;
    assert_eq!((status, updated), (200, json!({"ID": id})));
    let (_, one) = call(&server, Method::GET, &path, None, None).await;
    assert_eq!(
        (one["SourceName"].as_str(), one["Action"].as_str()),
        (Some("*"), Some("deny"))
    );
    assert_eq!(one["Precedence"], 8);
    assert_eq!(one["CreatedAt"].as_str(), Some(created_at.as_str()));
    let (status, moved) = call(
        &server,
        Method::PUT,
        &path,
        None,
        Some(json!({"SourceName": "web", "DestinationName": "cache", "Action": "deny"})),
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        moved
            .as_str()
            .unwrap()
            .starts_with("Cannot modify Destination")
    );
    // The ID is also found by name, and the config entry keeps it.
    let (_, by_name) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/exact?source=*&destination=db",
        None,
        None,
    )
    .await;
    assert_eq!(by_name["ID"], id.as_str());
    let (_, entry) = call(
        &server,
        Method::GET,
        "/v1/config/service-intentions/db",
        None,
        None,
    )
    .await;
    assert_eq!(entry["Sources"][0]["LegacyID"], id.as_str());

    let (status, deleted) = call(&server, Method::DELETE, &path, None, None).await;
    assert_eq!((status, deleted), (200, json!(true)));
    let (status, gone) = call(&server, Method::GET, &path, None, None).await;
    assert_eq!((status, gone), (404, json!("Intention not found\n")));
    let (status, again) = call(&server, Method::DELETE, &path, None, None).await;
    assert_eq!(status, 500);
    assert_eq!(
        again,
        json!(format!("Cannot delete non-existent intention: '{id}'\n"))
    );

    // Entries written by name are not the legacy API's to edit.
    put_exact(&server, "web", "cache", "allow").await;
    let (status, refused) = call(
        &server,
        Method::POST,
        "/v1/connect/intentions",
        None,
        Some(json!({"SourceName": "api", "DestinationName": "cache", "Action": "allow"})),
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        refused
            .as_str()
            .unwrap()
            .starts_with("cannot use legacy intention API"),
        "{refused}"
    );
}

async fn trust_domain(server: &Server) -> String {
    let (status, roots) = call(
        server,
        Method::GET,
        "/v1/agent/connect/ca/roots",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{roots}");
    roots["TrustDomain"].as_str().unwrap().to_owned()
}

async fn authorize(server: &Server, token: Option<&str>, target: &str, uri: &str) -> (u16, Value) {
    call(
        server,
        Method::POST,
        "/v1/agent/connect/authorize",
        token,
        Some(json!({"Target": target, "ClientCertURI": uri, "ClientCertSerial": "01:02"})),
    )
    .await
}

#[tokio::test]
async fn authorize_decides_for_a_certificate_identity() {
    let server = Server::dev();
    let domain = trust_domain(&server).await;
    let spiffe = |svc: &str| format!("spiffe://{domain}/ns/default/dc/dc1/svc/{svc}");
    put_exact(&server, "web", "db", "allow").await;
    put_exact(&server, "*", "db", "deny").await;

    let (status, answer) = authorize(&server, None, "db", &spiffe("web")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"Authorized": true,
               "Reason": "Matched L4 intention: default/web => default/db (Precedence: 9, Action: ALLOW)"})
    );
    let (_, answer) = authorize(&server, None, "db", &spiffe("api")).await;
    assert_eq!(
        answer,
        json!({"Authorized": false,
               "Reason": "Matched L4 intention: default/* => default/db (Precedence: 8, Action: DENY)"})
    );
    let (_, answer) = authorize(&server, None, "queue", &spiffe("api")).await;
    assert_eq!(
        answer,
        json!({"Authorized": true, "Reason": "Default behavior configured by ACLs"})
    );
    let (status, answer) = authorize(
        &server,
        None,
        "db",
        "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"Authorized": false,
               "Reason": "Identity from an external trust domain: 11111111-2222-3333-4444-555555555555.consul"})
    );
    let (status, answer) = authorize(
        &server,
        None,
        "db",
        &format!("spiffe://{domain}/agent/client/dc/dc1/id/node1"),
    )
    .await;
    assert_eq!(
        (status, answer),
        (400, json!("ClientCertURI not a valid Service identifier\n"))
    );
}

#[tokio::test]
async fn a_blocking_match_is_woken_by_an_intention_write() {
    let server = Server::dev();
    put_exact(&server, "web", "db", "allow").await;
    let first = http()
        .get(server.url("/v1/connect/intentions/match?by=destination&name=db"))
        .send()
        .await
        .unwrap();
    let index = support::index_of(&first);
    let url = server.url(&format!(
        "/v1/connect/intentions/match?by=destination&name=db&index={index}&wait=30s"
    ));
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = http().get(url).send().await.unwrap();
        let next = support::index_of(&response);
        let body: Value = response.json().await.unwrap();
        (started.elapsed(), next, body)
    });
    put_exact(&server, "api", "db", "deny").await;
    let (elapsed, next, body) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the blocking match was not woken")
        .unwrap();
    assert!(elapsed < Duration::from_secs(20));
    assert!(next > index, "{next} > {index}");
    assert_eq!(
        pairs(&body["db"]),
        [triple("api", "db", "deny"), triple("web", "db", "allow")]
    );
}

#[tokio::test]
async fn intentions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::durable(dir.path());
    put_exact(&server, "web", "db", "allow").await;
    let (status, created) = call(
        &server,
        Method::POST,
        "/v1/connect/intentions",
        None,
        Some(json!({"SourceName": "api", "DestinationName": "cache", "Action": "deny"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["ID"].as_str().unwrap().to_owned();
    let (_, before) = call(&server, Method::GET, "/v1/connect/intentions", None, None).await;
    assert!(server.terminate().success());

    let server = Server::durable(dir.path());
    let (status, after) = call(&server, Method::GET, "/v1/connect/intentions", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(after, before);
    let (status, one) = call(
        &server,
        Method::GET,
        &format!("/v1/connect/intentions/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["Action"], "deny");
    let (_, answer) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/check?source=api&destination=cache",
        None,
        None,
    )
    .await;
    assert_eq!(answer, json!({"Allowed": false}));
}

/// A token whose policy has `rules`; answers its secret.
async fn token(server: &Server, management: &str, name: &str, rules: &str) -> String {
    let (status, policy) = call(
        server,
        Method::PUT,
        "/v1/acl/policy",
        Some(management),
        Some(json!({"Name": name, "Rules": rules})),
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    let (status, token) = call(
        server,
        Method::PUT,
        "/v1/acl/token",
        Some(management),
        Some(json!({"Description": name, "Policies": [{"Name": name}]})),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    token["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn access_control_and_the_default_deny() {
    let server = Server::start(&["--dev", "--acl-default-policy", "deny"]);
    let management = support::bootstrap_acl(server.url.trim_end_matches('/')).await;
    let root = Some(management.as_str());
    // Reading db's service gives intentions:read on db (Consul derives it); writing needs the
    // intentions level itself.
    let reader = token(
        &server,
        &management,
        "db-reader",
        r#"service "db" { policy = "read" }"#,
    )
    .await;
    let writer = token(
        &server,
        &management,
        "db-owner",
        r#"service "db" { policy = "write" intentions = "write" }"#,
    )
    .await;
    let exact =
        |s: &str, d: &str| format!("/v1/connect/intentions/exact?source={s}&destination={d}");
    let allow = json!({"Action": "allow"});

    // Writes: intentions:write on the destination.
    let (status, denied) = call(
        &server,
        Method::PUT,
        &exact("web", "db"),
        None,
        Some(allow.clone()),
    )
    .await;
    assert_eq!(status, 403, "{denied}");
    assert!(
        denied.as_str().unwrap().contains("intention:write"),
        "{denied}"
    );
    for (source, destination, as_token, expected, why) in [
        ("web", "db", Some(reader.as_str()), 403, "a reader of db"),
        ("web", "db", Some(writer.as_str()), 200, "db's owner"),
        (
            "api",
            "cache",
            Some(writer.as_str()),
            403,
            "db's owner does not own cache",
        ),
        ("api", "cache", root, 200, "the management token"),
    ] {
        let path = exact(source, destination);
        let (status, _) = call(&server, Method::PUT, &path, as_token, Some(allow.clone())).await;
        assert_eq!(status, expected, "{why}");
    }
    let (status, created) = call(
        &server,
        Method::POST,
        "/v1/connect/intentions",
        Some(&writer),
        Some(json!({"SourceName": "api", "DestinationName": "queue", "Action": "allow"})),
    )
    .await;
    assert_eq!(status, 403, "{created}");

    // Reads: the list is filtered, single reads are refused.
    let (status, list) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(pairs(&list), [triple("web", "db", "allow")]);
    let (_, list) = call(&server, Method::GET, "/v1/connect/intentions", root, None).await;
    assert_eq!(pairs(&list).len(), 2);
    let (status, list) = call(&server, Method::GET, "/v1/connect/intentions", None, None).await;
    assert_eq!(
        (status, list),
        (200, json!([])),
        "the anonymous token reads nothing"
    );
    let (status, _) = call(
        &server,
        Method::GET,
        &exact("web", "db"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        Method::GET,
        &exact("api", "cache"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/match?by=destination&name=cache",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 403);

    // What no intention matches is denied, and the match answer says so.
    let (status, default, matched) = call_full(
        &server,
        Method::GET,
        "/v1/connect/intentions/match?by=destination&name=db",
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 200, "{matched}");
    assert_eq!(default.as_deref(), Some("deny"));
    assert_eq!(pairs(&matched["db"]), [triple("web", "db", "allow")]);
    for (source, allowed) in [("web", true), ("api", false)] {
        let path = format!("/v1/connect/intentions/check?source={source}&destination=db");
        let (status, answer) = call(&server, Method::GET, &path, Some(&reader), None).await;
        assert_eq!(
            (status, answer),
            (200, json!({"Allowed": allowed})),
            "{source}"
        );
    }
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/connect/intentions/check?source=web&destination=db",
        None,
        None,
    )
    .await;
    assert_eq!(status, 403, "a check needs service:read on the destination");

    // Authorize needs service:write on the target.
    let domain = trust_domain(&server).await;
    let spiffe = |svc: &str| format!("spiffe://{domain}/ns/default/dc/dc1/svc/{svc}");
    let (status, _) = authorize(&server, Some(&reader), "db", &spiffe("web")).await;
    assert_eq!(status, 403);
    let (status, answer) = authorize(&server, Some(&writer), "db", &spiffe("web")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["Authorized"], true);
    let (_, answer) = authorize(&server, Some(&writer), "db", &spiffe("api")).await;
    assert_eq!(
        answer,
        json!({"Authorized": false, "Reason": "Default behavior configured by ACLs"})
    );
}
