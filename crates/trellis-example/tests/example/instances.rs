//! Several instances of one service sharing one database file, in one process and across
//! processes, plus the binary-facing `run_*` entry points.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;
use trellis_example::{Error, User, run_users, users_server};

use crate::common::{
    Running, Txns, client, orders_args, start_orders_with, start_users, users_args,
};

#[tokio::test]
async fn two_users_instances_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let a = start_users(&db, "users-1").await;
    let b = start_users(&db, "users-2").await;

    let created = a.post("/users", json!({"name": "Alice"})).await;
    assert_eq!(created.status, 201);
    assert_eq!(
        b.get("/users/3").await.body,
        json!({"id": 3, "name": "Alice"})
    );
    let created = b.post("/users", json!({"name": "Bob"})).await;
    assert_eq!(created.body, json!({"id": 4, "name": "Bob"}));
    let names: Vec<_> = a
        .get("/users")
        .await
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["John", "Jane", "Alice", "Bob"]);

    // Interleaved concurrent writes through both instances: all succeed, ids are unique.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            a.url("/users")
        } else {
            b.url("/users")
        };
        tasks.push(tokio::spawn(async move {
            let reply = client()
                .post(url)
                .json(&json!({"name": format!("user {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 201);
            reply.json::<User>().await.unwrap().id
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        assert!(ids.insert(task.await.unwrap()));
    }
    assert_eq!(b.get("/users").await.body.as_array().unwrap().len(), 44);

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_orders_instances_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let users = start_users(&dir.path().join("users.db"), "users-1").await;
    let txns = Txns::start(dir.path()).await;
    let db = dir.path().join("orders.db");
    // The coordinator sends the orders branch to a; b sees what a's participant wrote.
    let a = txns
        .start_orders(orders_args(&db, "orders-1", &users.url("")))
        .await;
    let b = start_orders_with(txns.orders_args(orders_args(&db, "orders-2", &users.url("")))).await;

    let created = a
        .post(
            "/orders",
            json!({"user_id": 2, "product": "Product C", "quantity": 4}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let expected = json!({"id": 3, "user_id": 2, "product": "Product C", "quantity": 4});
    assert_eq!(b.get("/orders/3").await.body, expected);
    assert_eq!(
        b.get("/orders?user_id=2")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );

    a.stop().await;
    b.stop().await;
    txns.stop().await;
    users.stop().await;
}

#[tokio::test]
async fn simultaneous_starts_seed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let users_db = dir.path().join("users.db");
    let orders_db = dir.path().join("orders.db");

    let mut starts = Vec::new();
    for i in 0..6 {
        let users_args = users_args(&users_db, &format!("users-{i}"));
        let orders_args = orders_args(&orders_db, &format!("orders-{i}"), "http://users");
        starts.push(tokio::spawn(async move {
            let users = users_server(&users_args).await.unwrap();
            let orders = trellis_example::orders_server(&orders_args).await.unwrap();
            (
                Running::start(users, &users_args.instance),
                Running::start(orders, &orders_args.instance),
            )
        }));
    }
    let mut running = Vec::new();
    for start in starts {
        running.push(start.await.unwrap());
    }
    for (users, orders) in &running {
        assert_eq!(
            users.get("/users").await.body,
            json!([{"id": 1, "name": "John"}, {"id": 2, "name": "Jane"}])
        );
        assert_eq!(
            orders.get("/orders").await.body.as_array().unwrap().len(),
            2
        );
    }
    for (users, orders) in running {
        users.stop().await;
        orders.stop().await;
    }
}

#[tokio::test]
async fn wrong_service_database_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let users = start_users(&db, "users-1").await;
    users.stop().await;
    let err = trellis_example::orders_server(&orders_args(&db, "orders-1", "http://users"))
        .await
        .err();
    assert!(matches!(err, Some(Error::Config(_))), "{err:?}");
}

const CHILD_DB: &str = "TRELLIS_EXAMPLE_CHILD_DB";
const CHILD_WRITES: usize = 25;

/// Not a test on its own: the body of a child process started by
/// `instances_in_separate_processes_share_one_database`.
#[test]
fn child_users_instance() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let users = start_users(Path::new(&db), "users-child").await;
        for i in 0..CHILD_WRITES {
            let reply = users
                .post("/users", json!({"name": format!("child {}", i)}))
                .await;
            assert_eq!(reply.status, 201, "{:?}", reply.body);
        }
        users.stop().await;
    });
}

/// Runs one test of this binary in a child process. Children are killed if the test fails
/// half-way, so a broken run never leaves servers behind.
pub fn child(test: &str, envs: &[(&str, &std::ffi::OsStr)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Processes racing to open one fresh database file: more make SQLite's immediate SQLITE_BUSY
/// on the WAL switch likely, which once failed an instance's start.
const CHILDREN: usize = 4;

/// Generous upper bound for anything a child process does; reaching it means a hang.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn instances_in_separate_processes_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    // Both processes start on a fresh file at once: they race to create, seed and write.
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            child(
                "instances::child_users_instance",
                &[(CHILD_DB, db.as_os_str())],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let output = timeout(CHILD_DEADLINE, child.wait_with_output())
            .await
            .expect("child finished in time")
            .unwrap();
        assert!(
            output.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let users = start_users(&db, "users-1").await;
    let list: Vec<User> = serde_json::from_value(users.get("/users").await.body).unwrap();
    assert_eq!(list.len(), 2 + CHILDREN * CHILD_WRITES);
    assert_eq!(
        list[0],
        User {
            id: 1,
            name: "John".into()
        }
    );
    assert_eq!(
        list[1],
        User {
            id: 2,
            name: "Jane".into()
        }
    );
    let ids: HashSet<_> = list.iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), list.len());
    users.stop().await;
}

const RUN_DB: &str = "TRELLIS_EXAMPLE_RUN_DB";

/// Not a test on its own: runs `run_users` as the binary would, in a child process, until
/// its stdin closes.
#[test]
fn child_run_users() {
    let Some(db) = std::env::var_os(RUN_DB) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(run_users(users_args(Path::new(&db), "users-9"), async {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        }))
        .unwrap();
}

#[tokio::test]
async fn run_users_announces_its_address_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let mut process = child("instances::child_run_users", &[(RUN_DB, db.as_os_str())])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    // Wait for the announcement, exactly as `trellis demo` does. libtest prints the test name
    // on the same line first, so look for the text anywhere in the line.
    let addr = timeout(CHILD_DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, addr)) = line.split_once("listening on ") {
                return addr.trim().to_owned();
            }
        }
        panic!("child exited without announcing its address");
    })
    .await
    .expect("announcement in time");

    let reply = client()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["x-served-by"], "users-9");
    drop(reply);

    // Closing stdin is the child's shutdown signal; it must drain and exit cleanly.
    drop(process.stdin.take());
    let status = timeout(CHILD_DEADLINE, process.wait())
        .await
        .expect("graceful exit in time")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn run_users_reports_bind_errors() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut args = users_args(&dir.path().join("users.db"), "users-1");
    args.listen = taken.local_addr().unwrap();
    let err = run_users(args, async {}).await.err();
    assert!(matches!(err, Some(Error::Bind { .. })), "{err:?}");
}
