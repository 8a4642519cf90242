//! Access control end to end against the real server: bootstrap once, token and policy CRUD,
//! the permission matrix (each rule kind × read/write × allowed/denied), list filtering, bad
//! tokens, default allow vs deny, and secrets that survive a restart but are stored hashed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Server, http};

/// A call with a token: the status and the body (JSON, or the text as a JSON string).
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http().request(method, server.url(path));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        request = request.body(match body {
            Value::String(text) => text,
            other => other.to_string(),
        });
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn bootstrap(server: &Server) -> String {
    support::bootstrap_acl(server.url.trim_end_matches('/')).await
}

/// Creates a policy with `rules` and a token linked to it; answers the token's secret.
async fn token_with_rules(server: &Server, management: &str, name: &str, rules: &str) -> String {
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
    assert_eq!(token["Policies"][0]["ID"], policy["ID"]);
    token["SecretID"].as_str().unwrap().to_owned()
}

fn register(name: &str, id: &str) -> Value {
    json!({"Name": name, "ID": id, "Port": 80})
}

#[tokio::test]
async fn bootstrap_works_once_and_acl_management_needs_a_management_token() {
    let server = Server::dev();
    let (status, _) = call(&server, Method::GET, "/v1/acl/tokens", None, None).await;
    assert_eq!(
        status, 403,
        "the anonymous token manages nothing, even under allow"
    );
    let management = bootstrap(&server).await;
    let (status, again) = call(&server, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 403);
    assert!(
        again
            .as_str()
            .unwrap()
            .contains("ACL bootstrap no longer allowed"),
        "{again}"
    );
    let (status, tokens) = call(
        &server,
        Method::GET,
        "/v1/acl/tokens",
        Some(&management),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let tokens = tokens.as_array().unwrap();
    assert_eq!(
        tokens.len(),
        2,
        "the bootstrap token and the anonymous one: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| t["SecretID"] == "<hidden>"));
    let (status, me) = call(
        &server,
        Method::GET,
        "/v1/acl/token/self",
        Some(&management),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["Policies"][0]["Name"], "global-management");
    // Under the default policy allow, the anonymous token still does everything else.
    let (status, _) = call(
        &server,
        Method::PUT,
        "/v1/agent/service/register",
        None,
        Some(register("web", "web-1")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_tokens_are_refused_however_they_are_sent() {
    let server = Server::dev();
    for request in [
        http()
            .get(server.url("/v1/catalog/services"))
            .header("X-Consul-Token", "nope"),
        http()
            .get(server.url("/v1/catalog/services"))
            .header("Authorization", "Bearer nope"),
        http().get(server.url("/v1/catalog/services?token=nope")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(response.text().await.unwrap().trim(), "ACL not found");
    }
}

#[tokio::test]
async fn the_permission_matrix_under_default_deny() {
    let server = Server::start(&["--dev", "--acl-default-policy", "deny"]);
    let management = bootstrap(&server).await;
    let rules = r#"
        # Services: web may be written; everything may be read.
        service "web" { policy = "write" }
        service_prefix "" { policy = "read" }
        key_prefix "app/" { policy = "write" }
        key "app/secret" { policy = "deny" }
        node_prefix "" { policy = "read" }
        session_prefix "" { policy = "write" }
        agent_prefix "" { policy = "read" }
        event_prefix "deploy" { policy = "write" }
        operator = "read"
    "#;
    let token = token_with_rules(&server, &management, "matrix", rules).await;
    let t = Some(token.as_str());
    // Seed with the management token.
    for (name, id) in [("web", "web-1"), ("db", "db-1")] {
        let (status, _) = call(
            &server,
            Method::PUT,
            "/v1/agent/service/register",
            Some(&management),
            Some(register(name, id)),
        )
        .await;
        assert_eq!(status, 200);
    }
    for key in ["app/x", "app/secret", "other/y"] {
        let path = format!("/v1/kv/{key}");
        let (status, _) = call(
            &server,
            Method::PUT,
            &path,
            Some(&management),
            Some(json!("v")),
        )
        .await;
        assert_eq!(status, 200);
    }

    let cases: Vec<(Method, &str, Option<Value>, u16)> = vec![
        // service: write on web, read on everything
        (
            Method::PUT,
            "/v1/agent/service/register",
            Some(register("web", "web-2")),
            200,
        ),
        (
            Method::PUT,
            "/v1/agent/service/register",
            Some(register("db", "db-2")),
            403,
        ),
        (Method::GET, "/v1/health/service/db", None, 200),
        (Method::PUT, "/v1/agent/service/deregister/db-1", None, 403),
        (
            Method::PUT,
            "/v1/agent/service/maintenance/web-1?enable=true",
            None,
            200,
        ),
        // key: write under app/, denied on app/secret, nothing elsewhere
        (Method::PUT, "/v1/kv/app/new", Some(json!("1")), 200),
        (Method::GET, "/v1/kv/app/x", None, 200),
        (Method::GET, "/v1/kv/app/secret", None, 403),
        (Method::PUT, "/v1/kv/app/secret", Some(json!("2")), 403),
        (Method::GET, "/v1/kv/other/y", None, 403),
        (Method::PUT, "/v1/kv/other/y", Some(json!("3")), 403),
        (Method::GET, "/v1/kv/?keys", None, 403),
        (Method::DELETE, "/v1/kv/app/?recurse", None, 403),
        // node: read only
        (Method::GET, "/v1/catalog/nodes", None, 200),
        (Method::PUT, "/v1/agent/maintenance?enable=true", None, 403),
        // agent: read only
        (Method::GET, "/v1/agent/self", None, 200),
        (Method::PUT, "/v1/agent/reload", None, 403),
        // operator: read only (transactions count as operator resources)
        (Method::GET, "/v1/operator/raft/configuration", None, 200),
        (Method::GET, "/v1/trellis/txn", None, 200),
        (Method::POST, "/v1/trellis/txn", Some(json!({})), 403),
        (Method::GET, "/api/services", None, 200),
        (Method::GET, "/v1/config/proxy-defaults", None, 200),
        (
            Method::PUT,
            "/v1/config",
            Some(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})),
            403,
        ),
        // event: write on deploy*
        (Method::PUT, "/v1/event/fire/deploy-web", None, 200),
        (Method::PUT, "/v1/event/fire/other", None, 403),
        // session: write
        (
            Method::PUT,
            "/v1/session/create",
            Some(json!({"TTL": "30s"})),
            200,
        ),
        // acl: none
        (Method::GET, "/v1/acl/policies", None, 403),
    ];
    for (method, path, body, want) in cases {
        let (status, answer) = call(&server, method.clone(), path, t, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        if want == 403 {
            assert!(
                answer
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("Permission denied"),
                "{method} {path}: {answer}"
            );
        }
    }

    // A transaction is vetted whole: one denied operation fails it, and nothing is written.
    let set = |key: &str| json!({"KV": {"Verb": "set", "Key": key, "Value": "eA=="}});
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/v1/txn",
        t,
        Some(json!([set("app/t1")])),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/v1/txn",
        t,
        Some(json!([set("app/t2"), set("other/t2")])),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["Errors"],
        json!([{"OpIndex": 1, "What": "Permission denied"}])
    );
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/kv/app/t2",
        Some(&management),
        None,
    )
    .await;
    assert_eq!(status, 404, "nothing of a refused transaction is applied");
    let tree = json!([{"KV": {"Verb": "get-tree", "Key": ""}}]);
    let (status, _) = call(&server, Method::PUT, "/v1/txn", t, Some(tree)).await;
    assert_eq!(status, 409, "a tree read needs list on its prefix");
    let (_, _) = call(
        &server,
        Method::DELETE,
        "/v1/kv/app/t1",
        Some(&management),
        None,
    )
    .await;

    // Lists answer only what the token may read.
    let (_, pairs) = call(&server, Method::GET, "/v1/kv/?recurse", t, None).await;
    let keys: Vec<&str> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/new", "app/x"], "{pairs}");
    let (status, keys) = call(&server, Method::GET, "/v1/kv/app/?keys", t, None).await;
    assert_eq!(status, 200);
    assert_eq!(keys, json!(["app/new", "app/x"]));

    // The anonymous token sees nothing under deny.
    let (status, _) = call(&server, Method::GET, "/v1/health/service/web", None, None).await;
    assert_eq!(status, 403);
    let (_, services) = call(&server, Method::GET, "/v1/catalog/services", None, None).await;
    assert_eq!(services, json!({}));
}

#[tokio::test]
async fn lists_are_filtered_by_service_read() {
    let server = Server::start(&["--dev", "--acl-default-policy", "deny"]);
    let management = bootstrap(&server).await;
    for (name, id) in [("web", "web-1"), ("db", "db-1"), ("cache", "cache-1")] {
        let mut body = register(name, id);
        body["Check"] = json!({"TTL": "30s", "Status": "passing"});
        let (status, _) = call(
            &server,
            Method::PUT,
            "/v1/agent/service/register",
            Some(&management),
            Some(body),
        )
        .await;
        assert_eq!(status, 200);
    }
    let token = token_with_rules(
        &server,
        &management,
        "web-reader",
        r#"service "web" { policy = "read" }"#,
    )
    .await;
    let t = Some(token.as_str());
    let (_, services) = call(&server, Method::GET, "/v1/catalog/services", t, None).await;
    assert_eq!(services, json!({"web": []}));
    // The token's filtered list follows changes (it is kept per services index).
    let mut body = register("web", "web-2");
    body["Tags"] = json!(["v2"]);
    let (status, _) = call(
        &server,
        Method::PUT,
        "/v1/agent/service/register",
        Some(&management),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    let (_, services) = call(&server, Method::GET, "/v1/catalog/services", t, None).await;
    assert_eq!(services, json!({"web": ["v2"]}));
    let (status, _) = call(
        &server,
        Method::PUT,
        "/v1/agent/service/deregister/web-2",
        Some(&management),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, summary) = call(&server, Method::GET, "/v1/internal/ui/services", t, None).await;
    let names: Vec<&str> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    let (_, agent) = call(&server, Method::GET, "/v1/agent/services", t, None).await;
    assert_eq!(
        agent.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["web-1"]
    );
    let (_, checks) = call(&server, Method::GET, "/v1/health/state/any", t, None).await;
    let owners: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ServiceName"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["web"], "{checks}");
    let (status, _) = call(&server, Method::GET, "/v1/health/service/db", t, None).await;
    assert_eq!(status, 403);
    // Traces cross services: they need operator read.
    let (status, _) = call(&server, Method::GET, "/api/services", t, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn tokens_and_policies_survive_a_restart_with_their_secrets_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let management;
    let token;
    {
        let server = Server::start(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--acl-default-policy",
            "deny",
        ]);
        management = bootstrap(&server).await;
        token = token_with_rules(
            &server,
            &management,
            "kv",
            r#"key_prefix "" { policy = "write" }"#,
        )
        .await;
        let (status, _) = call(
            &server,
            Method::PUT,
            "/v1/kv/a",
            Some(&token),
            Some(json!("1")),
        )
        .await;
        assert_eq!(status, 200);
        // A bad rule is refused with a reason, and changes nothing.
        let (status, answer) = call(
            &server,
            Method::PUT,
            "/v1/acl/policy",
            Some(&management),
            Some(json!({"Name": "bad", "Rules": "servce \"x\" { policy = \"read\" }"})),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        server.terminate();
    }
    let bytes = std::fs::read(dir.path().join("acl.redb")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&token) && !text.contains(&management),
        "secrets are stored hashed"
    );
    let server = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--acl-default-policy",
        "deny",
    ]);
    let (status, value) = call(&server, Method::GET, "/v1/kv/a?raw", Some(&token), None).await;
    assert_eq!((status, value), (200, json!(1)));
    let (status, _) = call(&server, Method::PUT, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 403, "still bootstrapped after a restart");
    // Deleting the token revokes it at once.
    let (_, me) = call(
        &server,
        Method::GET,
        "/v1/acl/token/self",
        Some(&token),
        None,
    )
    .await;
    let accessor = me["AccessorID"].as_str().unwrap().to_owned();
    let path = format!("/v1/acl/token/{accessor}");
    let (status, _) = call(&server, Method::DELETE, &path, Some(&management), None).await;
    assert_eq!(status, 200);
    let (status, answer) = call(&server, Method::GET, "/v1/kv/a", Some(&token), None).await;
    assert_eq!(
        (status, answer.as_str().map(str::trim)),
        (403, Some("ACL not found"))
    );
}
