//! Placing an order as one transaction: the orders service's own branch driven directly
//! (prepare writes a pending order, commit places it, abort deletes it), and `POST /orders`
//! through a coordinator with the real inventory: committed, aborted for short stock with
//! nothing left behind, decided but not yet acknowledged, and no coordinator at all.

use serde_json::{Value, json};
use trellis_example::{ORDER_PATH, TXN_GID};

use crate::common::{Running, System, Txns, orders_args, start_orders_with, start_users};
use crate::coordinator::call;

fn order(user_id: i64, product: &str, quantity: i64) -> Value {
    json!({"user_id": user_id, "product": product, "quantity": quantity})
}

/// Every order row, placed and pending, as `(id, product, status)`.
async fn rows(orders: &Running) -> Vec<(i64, String, &'static str)> {
    let mut rows = Vec::new();
    for status in ["placed", "pending"] {
        let reply = orders.get(&format!("/orders?status={status}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        for o in reply.body.as_array().unwrap() {
            rows.push((
                o["id"].as_i64().unwrap(),
                o["product"].as_str().unwrap().to_owned(),
                status,
            ));
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn the_orders_branch_writes_pending_then_places_or_deletes() {
    let dir = tempfile::tempdir().unwrap();
    // No coordinator and no users needed: the test is the coordinator.
    let orders = start_orders_with(orders_args(
        &dir.path().join("orders.db"),
        "orders-1",
        "http://users",
    ))
    .await;
    let base = orders.url(ORDER_PATH);
    let payload = order(1, "Product A", 2);

    assert_eq!(call(&base, "prepare", "g1", "order", &payload).await.0, 200);
    // Pending: not shown as an order, not fetchable.
    assert_eq!(
        orders.get("/orders").await.body.as_array().unwrap().len(),
        2
    );
    assert_eq!(
        orders.get("/orders?status=pending").await.body,
        json!([{"id": 3, "user_id": 1, "product": "Product A", "quantity": 2}])
    );
    orders.get("/orders/3").await.expect_error(404);

    assert_eq!(call(&base, "commit", "g1", "order", &payload).await.0, 200);
    assert_eq!(
        orders.get("/orders/3").await.body,
        json!({"id": 3, "user_id": 1, "product": "Product A", "quantity": 2})
    );
    assert_eq!(orders.get("/orders?status=pending").await.body, json!([]));
    // A repeated commit changes nothing.
    assert_eq!(call(&base, "commit", "g1", "order", &payload).await.0, 200);

    assert_eq!(call(&base, "prepare", "g2", "order", &payload).await.0, 200);
    assert_eq!(rows(&orders).await.len(), 4);
    assert_eq!(call(&base, "abort", "g2", "order", &payload).await.0, 200);
    assert_eq!(call(&base, "abort", "g2", "order", &payload).await.0, 200);
    // Nothing left of the aborted order, in either status.
    assert_eq!(
        rows(&orders).await,
        [
            (1, "Product A".to_owned(), "placed"),
            (2, "Product B".to_owned(), "placed"),
            (3, "Product A".to_owned(), "placed"),
        ]
    );

    // A payload that is not an order is a no vote, and writes nothing.
    for bad in [
        json!({"user_id": 1, "product": "Product A"}),
        json!({"user_id": 0, "product": "Product A", "quantity": 1}),
        json!({"user_id": 1, "product": "Product A", "quantity": 1, "x": 1}),
    ] {
        let (status, body) = call(&base, "prepare", "g3", "order", &bad).await;
        assert_eq!(status, 409, "{bad}: {body}");
    }
    assert_eq!(rows(&orders).await.len(), 3);
    orders
        .get("/orders?status=cancelled")
        .await
        .expect_error(400);

    orders.stop().await;
}

#[tokio::test]
async fn a_placed_order_took_its_stock() {
    let system = System::start().await;
    let created = system
        .orders
        .post("/orders", order(1, "Product A", 3))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body,
        json!({"id": 3, "user_id": 1, "product": "Product A", "quantity": 3})
    );
    let gid = created.headers[TXN_GID].to_str().unwrap();
    assert!(gid.starts_with("order-"), "{gid}");
    assert_eq!(system.txns.stock("Product A").await, (97, 0));

    // The transaction the coordinator was given: two branches, named by service.
    let submits = system.txns.coordinator.submits();
    let (_, txn) = submits.last().unwrap();
    assert_eq!(txn["gid"], gid);
    assert_eq!(txn["commit"], true);
    assert_eq!(
        txn["branches"],
        json!([
            {"branch_id": "order", "service": "orders", "path": "/txn/order",
             "payload": {"user_id": 1, "product": "Product A", "quantity": 3}},
            {"branch_id": "stock", "service": "inventory", "path": "/txn/reserve",
             "payload": {"product": "Product A", "quantity": 3}},
        ])
    );
    system.stop().await;
}

#[tokio::test]
async fn short_stock_aborts_and_leaves_nothing_behind() {
    let system = System::start().await;
    let before = rows(&system.orders).await;

    let reply = system
        .orders
        .post("/orders", order(2, "Limited edition", 2))
        .await;
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    assert_eq!(
        reply.body,
        json!({"error": "only 1 of Limited edition left"})
    );
    assert!(reply.headers.contains_key(TXN_GID));
    assert_eq!(rows(&system.orders).await, before);
    assert_eq!(system.txns.stock("Limited edition").await, (1, 0));

    // The last one sells; the next order finds none left.
    let placed = system
        .orders
        .post("/orders", order(2, "Limited edition", 1))
        .await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    let reply = system
        .orders
        .post("/orders", order(1, "Limited edition", 1))
        .await;
    assert_eq!(reply.expect_error(409), "only 0 of Limited edition left");
    let reply = system.orders.post("/orders", order(1, "Gizmo", 1)).await;
    assert_eq!(reply.expect_error(409), "Gizmo is not in the inventory");
    assert_eq!(system.txns.stock("Limited edition").await, (0, 0));
    assert_eq!(rows(&system.orders).await.len(), before.len() + 1);
    system.stop().await;
}

#[tokio::test]
async fn a_commit_not_yet_acknowledged_is_202_with_the_order() {
    let system = System::start().await;
    system.txns.coordinator.lose_commits_of("stock");
    let reply = system
        .orders
        .post("/orders", order(1, "Product B", 1))
        .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let gid = reply.headers[TXN_GID].to_str().unwrap().to_owned();
    assert_eq!(
        reply.body,
        json!({
            "gid": gid,
            "state": "committing",
            "order": {"id": 3, "user_id": 1, "product": "Product B", "quantity": 1},
        })
    );
    assert_eq!(reply.headers["location"], "/orders/3");
    // The order is placed; the stock stays reserved until inventory gets its commit.
    assert_eq!(system.orders.get("/orders/3").await.status, 200);
    assert_eq!(system.txns.stock("Product B").await, (100, 1));
    let base = system.txns.inventory.url(trellis_example::RESERVE_PATH);
    let payload = json!({"product": "Product B", "quantity": 1});
    assert_eq!(call(&base, "commit", &gid, "stock", &payload).await.0, 200);
    assert_eq!(system.txns.stock("Product B").await, (99, 0));
    system.stop().await;
}

#[tokio::test]
async fn no_coordinator_is_503_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let users = start_users(&dir.path().join("users.db"), "users-1").await;
    // orders_args points at an address nothing listens on.
    let orders = start_orders_with(orders_args(
        &dir.path().join("orders.db"),
        "orders-1",
        &users.url(""),
    ))
    .await;
    let reply = orders.post("/orders", order(1, "Product A", 1)).await;
    assert_eq!(
        reply.expect_error(503),
        "cannot connect to the transaction coordinator"
    );
    assert_eq!(rows(&orders).await.len(), 2);
    // Validation and the user check still come first.
    let reply = orders.post("/orders", order(42, "Product A", 1)).await;
    assert_eq!(reply.expect_error(422), "user 42 does not exist");
    orders.stop().await;
    users.stop().await;
}

#[tokio::test]
async fn a_database_from_before_transactions_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    {
        // What the orders service wrote before orders had a status.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE orders (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 user_id INTEGER NOT NULL,
                 product TEXT NOT NULL,
                 quantity INTEGER NOT NULL
             );
             CREATE INDEX orders_by_user ON orders (user_id);
             INSERT INTO orders (id, user_id, product, quantity)
                 VALUES (1, 1, 'Product A', 1), (2, 2, 'Product B', 1), (3, 1, 'Old', 7);
             PRAGMA application_id = 1414680369;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let dir_path = dir.path().to_owned();
    let txns = Txns::start(&dir_path).await;
    let users = start_users(&dir_path.join("users.db"), "users-1").await;
    for round in 0..2 {
        // Opening twice migrates once.
        let orders = txns
            .start_orders(orders_args(&db, "orders-1", &users.url("")))
            .await;
        let all = orders.get("/orders").await.body;
        assert_eq!(all.as_array().unwrap().len(), 3 + round, "{all}");
        assert_eq!(
            orders.get("/orders/3").await.body,
            json!({"id": 3, "user_id": 1, "product": "Old", "quantity": 7})
        );
        if round == 0 {
            let created = orders.post("/orders", order(1, "Product C", 1)).await;
            assert_eq!(created.status, 201, "{:?}", created.body);
            assert_eq!(created.body["id"], 4);
        }
        orders.stop().await;
    }
    txns.stop().await;
    users.stop().await;
}
