//! The users service on its own.

use serde_json::json;

use crate::common::{Body, start_users};

async fn users() -> (tempfile::TempDir, crate::common::Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = start_users(&dir.path().join("users.db"), "users-1").await;
    (dir, users)
}

#[tokio::test]
async fn seed_data_is_listed_and_fetchable() {
    let (_dir, users) = users().await;

    let list = users.get("/users").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body,
        json!([{"id": 1, "name": "John"}, {"id": 2, "name": "Jane"}])
    );
    assert_eq!(
        list.headers["content-type"].to_str().unwrap(),
        "application/json"
    );

    let john = users.get("/users/1").await;
    assert_eq!(john.status, 200);
    assert_eq!(john.body, json!({"id": 1, "name": "John"}));
    let jane = users.get("/users/2").await;
    assert_eq!(jane.body, json!({"id": 2, "name": "Jane"}));

    users.stop().await;
}

#[tokio::test]
async fn create_user_answers_201_and_is_stored() {
    let (_dir, users) = users().await;

    let created = users.post("/users", json!({"name": "  Alice "})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body, json!({"id": 3, "name": "Alice"}));
    assert_eq!(created.headers["location"].to_str().unwrap(), "/users/3");

    assert_eq!(
        users.get("/users/3").await.body,
        json!({"id": 3, "name": "Alice"})
    );
    let list = users.get("/users").await;
    assert_eq!(list.body.as_array().unwrap().len(), 3);

    // Unknown fields are ignored, and exactly 100 characters is still allowed.
    let long = "é".repeat(100);
    let created = users
        .post("/users", json!({"name": long, "id": 99, "admin": true}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body, json!({"id": 4, "name": long}));

    // A body without a content type (as `curl -d` with a form type removed would send) works.
    let created = users.post_raw("/users", None, r#"{"name":"Bob"}"#).await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    users.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let (_dir, users) = users().await;

    let missing = users.get("/users/42").await;
    assert_eq!(missing.expect_error(404), "user 42 not found");

    for path in [
        "/users/abc",
        "/users/0",
        "/users/-1",
        "/users/1.5",
        "/users/99999999999999999999999",
        "/users/%FF",
    ] {
        let reply = users.get(path).await;
        assert_eq!(reply.status, 400, "{path}: {:?}", reply.body);
        reply.error();
    }

    users.stop().await;
}

#[tokio::test]
async fn create_user_validation() {
    let (_dir, users) = users().await;
    let json = Some("application/json");

    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (json, "{not json".into(), 400, "malformed JSON"),
        (json, String::new(), 400, "malformed JSON"),
        (json, "[1,2]".into(), 400, "body must be a JSON object"),
        (json, "null".into(), 400, "body must be a JSON object"),
        (json, "{}".into(), 400, "name is required"),
        (json, r#"{"name":null}"#.into(), 400, "name is required"),
        (json, r#"{"name":""}"#.into(), 400, "name must not be empty"),
        (
            json,
            r#"{"name":"   "}"#.into(),
            400,
            "name must not be empty",
        ),
        (json, r#"{"name":42}"#.into(), 400, "name must be a string"),
        (
            json,
            json!({"name": "x".repeat(101)}).to_string(),
            400,
            "name must be at most 100 characters",
        ),
        (
            json,
            r#"{"name":"a\u0000b"}"#.into(),
            400,
            "name must not contain control characters",
        ),
        (
            Some("text/plain"),
            r#"{"name":"x"}"#.into(),
            415,
            "content-type must be application/json",
        ),
        (
            json,
            json!({"name": "x".repeat(70 * 1024)}).to_string(),
            413,
            "request body larger than 64 KiB",
        ),
        (json, "[".repeat(10_000), 400, "malformed JSON"),
    ];
    for (content_type, body, status, reason) in cases {
        let reply = users.post_raw("/users", content_type, &body).await;
        let got = reply.expect_error(status);
        assert!(
            got.starts_with(reason),
            "body {:?}: reason {got:?}, want {reason:?}",
            &body[..body.len().min(40)]
        );
    }

    // Nothing invalid was stored.
    assert_eq!(users.get("/users").await.body.as_array().unwrap().len(), 2);
    users.stop().await;
}

#[tokio::test]
async fn health_fallbacks_and_methods_carry_served_by() {
    let (_dir, users) = users().await;

    let health = users.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok"}));

    let nowhere = users.get("/nowhere").await;
    assert_eq!(nowhere.expect_error(404), "no such route");

    let delete = users
        .send(reqwest::Method::DELETE, "/users/1", Body::None, &[])
        .await;
    assert_eq!(delete.expect_error(405), "method not allowed");
    assert!(delete.headers.contains_key("allow"));

    let head = users
        .send(reqwest::Method::HEAD, "/health", Body::None, &[])
        .await;
    assert_eq!(head.status, 200);

    users.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let (_dir, users) = users().await;
    assert_eq!(users.get("/users/1").await.status, 200);
    assert_eq!(users.get("/users/999").await.status, 404);
    assert_eq!(users.get("/nowhere").await.status, 404);

    let metrics = crate::common::client()
        .get(users.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.expect("metrics text");
    for line in [
        r#"trellis_http_requests_total{route="/users/{id}",method="GET",code="200"} 1"#,
        r#"trellis_http_requests_total{route="/users/{id}",method="GET",code="404"} 1"#,
        r#"trellis_http_requests_total{route="unmatched",method="GET",code="404"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(text.contains("trellis_http_request_duration_seconds_bucket"));
    assert!(
        !text.contains("/users/999"),
        "raw paths never become labels"
    );
    assert!(!text.contains("/nowhere"), "raw paths never become labels");
    users.stop().await;
}
