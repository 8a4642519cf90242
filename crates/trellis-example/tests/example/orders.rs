//! The orders service, alone and together with users, real or fake.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;

use crate::common::{Body, System, Txns, dead_addr, orders_args, spawn_fake, start_orders_with};

#[tokio::test]
async fn seed_orders_filters_and_fetch() {
    let system = System::start().await;
    let orders = &system.orders;

    let all = orders.get("/orders").await;
    assert_eq!(all.status, 200);
    assert_eq!(
        all.body,
        json!([
            {"id": 1, "user_id": 1, "product": "Product A", "quantity": 1},
            {"id": 2, "user_id": 2, "product": "Product B", "quantity": 1},
        ])
    );

    let johns = orders.get("/orders?user_id=1").await;
    assert_eq!(
        johns.body,
        json!([{"id": 1, "user_id": 1, "product": "Product A", "quantity": 1}])
    );
    let janes = orders.get("/orders?user_id=2").await;
    assert_eq!(
        janes.body,
        json!([{"id": 2, "user_id": 2, "product": "Product B", "quantity": 1}])
    );
    assert_eq!(orders.get("/orders?user_id=99").await.body, json!([]));
    // Unrelated query parameters are ignored.
    assert_eq!(
        orders
            .get("/orders?page=1")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );

    for bad in ["abc", "", "0", "-3", "1.0"] {
        let reply = orders.get(&format!("/orders?user_id={bad}")).await;
        assert_eq!(
            reply.expect_error(400),
            "user_id must be a positive integer"
        );
    }

    let one = orders.get("/orders/2").await;
    assert_eq!(
        one.body,
        json!({"id": 2, "user_id": 2, "product": "Product B", "quantity": 1})
    );
    assert_eq!(
        orders.get("/orders/77").await.expect_error(404),
        "order 77 not found"
    );
    assert_eq!(
        orders.get("/orders/x").await.expect_error(400),
        "order id must be a positive integer"
    );

    let health = orders.get("/health").await;
    assert_eq!((health.status, health.body), (200, json!({"status": "ok"})));
    orders.get("/users").await.expect_error(404);

    system.stop().await;
}

#[tokio::test]
async fn order_for_john_is_created() {
    let system = System::start().await;
    let orders = &system.orders;

    let created = orders
        .post(
            "/orders",
            json!({"user_id": 1, "product": "Product A", "quantity": 3}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let expected = json!({"id": 3, "user_id": 1, "product": "Product A", "quantity": 3});
    assert_eq!(created.body, expected);
    assert_eq!(created.headers["location"].to_str().unwrap(), "/orders/3");

    assert_eq!(orders.get("/orders/3").await.body, expected);
    let johns = orders.get("/orders?user_id=1").await.body;
    assert_eq!(johns.as_array().unwrap().len(), 2);
    assert_eq!(johns[1], expected);

    // A user created a moment ago is visible to orders at once.
    let alice = system.users.post("/users", json!({"name": "Alice"})).await;
    let alice_id = alice.body["id"].as_i64().unwrap();
    let created = orders
        .post(
            "/orders",
            json!({"user_id": alice_id, "product": "Product B", "quantity": 100}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    system.stop().await;
}

#[tokio::test]
async fn order_for_unknown_user_is_422() {
    let system = System::start().await;
    let orders = &system.orders;

    let reply = orders
        .post(
            "/orders",
            json!({"user_id": 42, "product": "Widget", "quantity": 1}),
        )
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.body, json!({"error": "user 42 does not exist"}));
    assert_eq!(
        orders.get("/orders").await.body.as_array().unwrap().len(),
        2
    );

    system.stop().await;
}

#[tokio::test]
async fn order_validation() {
    let system = System::start().await;
    let orders = &system.orders;

    let cases = [
        (
            json!({"product": "A", "quantity": 1}),
            "user_id is required",
        ),
        (
            json!({"user_id": "1", "product": "A", "quantity": 1}),
            "user_id must be an integer",
        ),
        (
            json!({"user_id": 0, "product": "A", "quantity": 1}),
            "user_id must be a positive integer",
        ),
        (json!({"user_id": 1, "quantity": 1}), "product is required"),
        (
            json!({"user_id": 1, "product": "", "quantity": 1}),
            "product must not be empty",
        ),
        (
            json!({"user_id": 1, "product": " \t", "quantity": 1}),
            "product must not be empty",
        ),
        (
            json!({"user_id": 1, "product": "p".repeat(201), "quantity": 1}),
            "product must be at most 200 characters",
        ),
        (
            json!({"user_id": 1, "product": "A"}),
            "quantity is required",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": 0}),
            "quantity must be between 1 and 1000",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": -5}),
            "quantity must be between 1 and 1000",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": 1001}),
            "quantity must be between 1 and 1000",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": 1.5}),
            "quantity must be an integer",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": 1e30}),
            "quantity must be an integer",
        ),
        (
            json!({"user_id": 1, "product": "A", "quantity": "two"}),
            "quantity must be an integer",
        ),
    ];
    for (body, reason) in cases {
        let reply = orders.post("/orders", body.clone()).await;
        assert_eq!(reply.expect_error(400), reason, "body {body}");
    }

    let reply = orders
        .post_raw("/orders", Some("application/json"), r#"{"user_id": 1,"#)
        .await;
    assert!(reply.expect_error(400).starts_with("malformed JSON"));
    let huge = "x".repeat(65 * 1024);
    let reply = orders
        .post_raw("/orders", Some("application/json"), &huge)
        .await;
    reply.expect_error(413);

    assert_eq!(
        orders.get("/orders").await.body.as_array().unwrap().len(),
        2
    );
    system.stop().await;
}

#[tokio::test]
async fn users_unreachable_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let users_url = format!("http://{}", dead_addr());
    let orders = start_orders_with(orders_args(
        &dir.path().join("orders.db"),
        "orders-7",
        &users_url,
    ))
    .await;

    let reply = orders
        .post(
            "/orders",
            json!({"user_id": 1, "product": "Widget", "quantity": 1}),
        )
        .await;
    assert_eq!(reply.expect_error(503), "cannot connect to users service");
    // Reads and health do not depend on users.
    assert_eq!(orders.get("/orders").await.status, 200);
    assert_eq!(orders.get("/health").await.status, 200);
    assert_eq!(
        orders.get("/orders").await.body.as_array().unwrap().len(),
        2
    );

    orders.stop().await;
}

#[tokio::test]
async fn users_5xx_and_proxy_errors_are_503() {
    let fake = axum::Router::new()
        .route(
            "/users/1",
            axum::routing::get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        // What a sidecar answers when it has no route: a 404 marked as its own.
        .route(
            "/users/2",
            axum::routing::get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    [("x-trellis-error", "no-route")],
                    "no route to users",
                )
            }),
        )
        // Not the users service at all.
        .route(
            "/users/3",
            axum::routing::get(|| async { "<html>hello</html>" }),
        );
    let addr = spawn_fake(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let orders = start_orders_with(orders_args(
        &dir.path().join("orders.db"),
        "orders-1",
        &format!("http://{addr}"),
    ))
    .await;

    for (user_id, reason) in [
        (1, "users service answered 500"),
        (2, "users service answered 404"),
        (3, "unexpected answer from users service"),
    ] {
        let reply = orders
            .post(
                "/orders",
                json!({"user_id": user_id, "product": "W", "quantity": 1}),
            )
            .await;
        assert_eq!(reply.expect_error(503), reason);
    }
    orders.stop().await;
}

#[tokio::test]
async fn users_timeout_is_503_within_the_bound() {
    let fake = axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(std::future::pending::<&'static str>),
    );
    let addr = spawn_fake(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = orders_args(
        &dir.path().join("orders.db"),
        "orders-1",
        &format!("http://{addr}"),
    );
    args.users_timeout_ms = 300;
    let orders = start_orders_with(args).await;

    let started = Instant::now();
    let reply = orders
        .post(
            "/orders",
            json!({"user_id": 1, "product": "W", "quantity": 1}),
        )
        .await;
    assert_eq!(
        reply.expect_error(503),
        "users service did not answer within 300 ms"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    orders.stop().await;
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// A fake sidecar outbound listener: records what it is asked and answers as users would.
async fn fake_sidecar(seen: Seen) -> std::net::SocketAddr {
    let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push((uri.to_string(), headers));
            match uri.path() {
                "/users/1" => Json(json!({"id": 1, "name": "John"})).into_response(),
                _ => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"error": "user not found"})),
                )
                    .into_response(),
            }
        }
    });
    spawn_fake(router).await
}

#[tokio::test]
async fn users_are_called_through_the_proxy_with_trace_headers() {
    let seen = Seen::default();
    let sidecar = fake_sidecar(Arc::clone(&seen)).await;
    let dir = tempfile::tempdir().unwrap();
    let txns = Txns::start(dir.path()).await;
    let mut args = orders_args(&dir.path().join("orders.db"), "orders-2", "http://users");
    args.proxy = Some(format!("http://{sidecar}").parse().unwrap());
    let orders = txns.start_orders(args).await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let created = orders
        .send(
            reqwest::Method::POST,
            "/orders",
            Body::Json(json!({"user_id": 1, "product": "Product A", "quantity": 2})),
            &[("traceparent", traceparent), ("x-request-id", "req-123")],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    let missing = orders
        .post(
            "/orders",
            json!({"user_id": 5, "product": "W", "quantity": 2}),
        )
        .await;
    assert_eq!(missing.body, json!({"error": "user 5 does not exist"}));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (uri, headers) = &seen[0];
    // Absolute form is how a client talks to an HTTP proxy; the sidecar routes on the host.
    assert_eq!(uri, "http://users/users/1");
    assert_eq!(headers["host"], "users");
    assert_eq!(headers["traceparent"], traceparent);
    assert_eq!(headers["x-request-id"], "req-123");
    let (uri, headers) = &seen[1];
    assert_eq!(uri, "http://users/users/5");
    assert!(!headers.contains_key("traceparent"));
    assert!(!headers.contains_key("x-request-id"));

    // The coordinator is called directly (not through the users proxy), with the same trace.
    let submits = txns.coordinator.submits();
    assert_eq!(submits.len(), 1);
    let (headers, _) = &submits[0];
    assert_eq!(headers["traceparent"], traceparent);
    assert_eq!(headers["x-request-id"], "req-123");

    orders.stop().await;
    txns.stop().await;
}

#[tokio::test]
async fn users_url_with_path_prefix_and_no_proxy() {
    let seen = Seen::default();
    let seen_direct = Arc::clone(&seen);
    // Direct calls (no proxy) use origin form and the base URL's path prefix.
    let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let seen = Arc::clone(&seen_direct);
        async move {
            seen.lock().unwrap().push((uri.to_string(), headers));
            Json(json!({"id": 2, "name": "Jane"}))
        }
    });
    let addr = spawn_fake(router).await;
    let dir = tempfile::tempdir().unwrap();
    let txns = Txns::start(dir.path()).await;
    let orders = txns
        .start_orders(orders_args(
            &dir.path().join("orders.db"),
            "orders-1",
            &format!("http://{addr}/api/"),
        ))
        .await;
    let created = orders
        .post(
            "/orders",
            json!({"user_id": 2, "product": "Product A", "quantity": 1}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(seen.lock().unwrap()[0].0, "/api/users/2");
    orders.stop().await;
    txns.stop().await;
}

#[tokio::test]
async fn bad_configuration_is_rejected_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let mut bad_instance = orders_args(&db, "orders 1", "http://users");
    bad_instance.instance = "orders 1".into();
    let mut https = orders_args(&db, "orders-1", "https://users");
    https.proxy = None;
    let mut bad_proxy = orders_args(&db, "orders-1", "http://users");
    bad_proxy.proxy = Some("socks5://127.0.0.1:1080".parse().unwrap());
    for args in [bad_instance, https, bad_proxy] {
        let err = trellis_example::orders_server(&args).await.err();
        assert!(
            matches!(err, Some(trellis_example::Error::Config(_))),
            "{err:?}"
        );
    }
    // None of these created the database: validation happens first.
    assert!(!db.exists());
}
