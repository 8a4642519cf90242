//! The inventory service: its stock API, and its branch of an order's transaction driven
//! directly (prepare reserves, commit takes, abort releases), including a crash between
//! prepare and commit in a child process.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;
use trellis_example::{CRASH_EXIT_CODE, RESERVE_PATH, run_inventory};

use crate::common::{Running, client, inventory_args, start_inventory, stock_of};
use crate::coordinator::call;
use crate::instances::{CHILD_DEADLINE, child};

fn reservation(product: &str, quantity: i64) -> Value {
    json!({"product": product, "quantity": quantity})
}

fn base(inventory: &Running) -> String {
    inventory.url(RESERVE_PATH)
}

#[tokio::test]
async fn stock_is_seeded_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = start_inventory(&dir.path().join("inventory.db"), "inventory-1").await;

    let all = inventory.get("/stock").await;
    assert_eq!(all.status, 200);
    assert_eq!(
        all.body,
        json!([
            {"product": "Limited edition", "stock": 1, "reserved": 0},
            {"product": "Product A", "stock": 100, "reserved": 0},
            {"product": "Product B", "stock": 100, "reserved": 0},
            {"product": "Product C", "stock": 100, "reserved": 0},
        ])
    );
    let one = inventory.get("/stock/Limited%20edition").await;
    assert_eq!(
        one.body,
        json!({"product": "Limited edition", "stock": 1, "reserved": 0})
    );
    assert_eq!(
        inventory.get("/stock/Gizmo").await.expect_error(404),
        "Gizmo is not in the inventory"
    );
    let health = inventory.get("/health").await;
    assert_eq!((health.status, health.body), (200, json!({"status": "ok"})));
    inventory.get("/orders").await.expect_error(404);

    // A second instance on the same file does not seed again.
    let second = start_inventory(&dir.path().join("inventory.db"), "inventory-2").await;
    assert_eq!(second.get("/stock").await.body, all.body);
    second.stop().await;
    inventory.stop().await;
}

#[tokio::test]
async fn prepare_reserves_commit_takes_abort_releases() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = start_inventory(&dir.path().join("inventory.db"), "inventory-1").await;
    let base = base(&inventory);
    let three = reservation("Product A", 3);

    assert_eq!(call(&base, "prepare", "g1", "stock", &three).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product A").await, (100, 3));
    assert_eq!(call(&base, "commit", "g1", "stock", &three).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product A").await, (97, 0));
    // Repeated calls change nothing.
    assert_eq!(call(&base, "commit", "g1", "stock", &three).await.0, 200);
    assert_eq!(call(&base, "prepare", "g1", "stock", &three).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product A").await, (97, 0));

    let five = reservation("Product A", 5);
    assert_eq!(call(&base, "prepare", "g2", "stock", &five).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product A").await, (97, 5));
    assert_eq!(call(&base, "abort", "g2", "stock", &five).await.0, 200);
    assert_eq!(call(&base, "abort", "g2", "stock", &five).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product A").await, (97, 0));

    // An abort before its prepare makes the late prepare vote no and reserve nothing.
    assert_eq!(call(&base, "abort", "g3", "stock", &five).await.0, 200);
    let (status, body) = call(&base, "prepare", "g3", "stock", &five).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(stock_of(&inventory, "Product A").await, (97, 0));

    inventory.stop().await;
}

#[tokio::test]
async fn short_stock_and_unknown_products_vote_no() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = start_inventory(&dir.path().join("inventory.db"), "inventory-1").await;
    let base = base(&inventory);

    let two = reservation("Limited edition", 2);
    let (status, body) = call(&base, "prepare", "g1", "stock", &two).await;
    assert_eq!(
        (status, body),
        (409, json!({"reason": "only 1 of Limited edition left"}))
    );
    // The coordinator aborts the branch that voted no: nothing to release.
    assert_eq!(call(&base, "abort", "g1", "stock", &two).await.0, 200);
    assert_eq!(stock_of(&inventory, "Limited edition").await, (1, 0));

    // The last one reserved: nothing is left for anyone else until it is released.
    let one = reservation("Limited edition", 1);
    assert_eq!(call(&base, "prepare", "g2", "stock", &one).await.0, 200);
    let (status, body) = call(&base, "prepare", "g3", "stock", &one).await;
    assert_eq!(
        (status, body),
        (409, json!({"reason": "only 0 of Limited edition left"}))
    );
    assert_eq!(call(&base, "abort", "g2", "stock", &one).await.0, 200);
    assert_eq!(call(&base, "prepare", "g4", "stock", &one).await.0, 200);
    assert_eq!(stock_of(&inventory, "Limited edition").await, (1, 1));

    let (status, body) = call(&base, "prepare", "g5", "stock", &reservation("Gizmo", 1)).await;
    assert_eq!(
        (status, body),
        (409, json!({"reason": "Gizmo is not in the inventory"}))
    );
    let (status, body) = call(
        &base,
        "prepare",
        "g6",
        "stock",
        &json!({"product": "Product A"}),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("invalid payload"),
        "{body}"
    );
    assert_eq!(stock_of(&inventory, "Product A").await, (100, 0));

    inventory.stop().await;
}

const CRASH_DB: &str = "TRELLIS_EXAMPLE_CRASH_DB";

/// Not a test on its own: an inventory started with `--crash-before-commit "Product B"`, in a
/// child process started by `a_crash_between_prepare_and_commit_is_finished_after_restart`, until
/// its stdin closes or the commit makes it exit.
#[test]
fn child_crashing_inventory() {
    let Some(db) = std::env::var_os(CRASH_DB) else {
        return;
    };
    let mut args = inventory_args(Path::new(&db), "inventory-crashing");
    args.crash_before_commit = Some("Product B".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(run_inventory(args, async {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        }))
        .unwrap();
}

#[tokio::test]
async fn a_crash_between_prepare_and_commit_is_finished_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inventory.db");
    let mut process = child(
        "inventory::child_crashing_inventory",
        &[(CRASH_DB, db.as_os_str())],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
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
    let base = format!("http://{addr}{RESERVE_PATH}");

    // Another product commits as usual on the crashing instance.
    let a = reservation("Product A", 1);
    assert_eq!(call(&base, "prepare", "g0", "stock", &a).await.0, 200);
    assert_eq!(call(&base, "commit", "g0", "stock", &a).await.0, 200);

    let b = reservation("Product B", 2);
    assert_eq!(call(&base, "prepare", "g1", "stock", &b).await.0, 200);
    // The commit gets no answer: the process exits on it.
    let sent = client()
        .post(format!("{base}/commit"))
        .json(&json!({"gid": "g1", "branch_id": "stock", "payload": b}))
        .send()
        .await;
    assert!(sent.is_err(), "{sent:?}");
    let status = timeout(CHILD_DEADLINE, process.wait())
        .await
        .expect("the child exits")
        .unwrap();
    assert_eq!(status.code(), Some(CRASH_EXIT_CODE));

    // Started again without the flag: the reservation survived, the commit did not happen,
    // and the coordinator's next try commits it, once.
    let inventory = start_inventory(&db, "inventory-1").await;
    assert_eq!(stock_of(&inventory, "Product A").await, (99, 0));
    assert_eq!(stock_of(&inventory, "Product B").await, (100, 2));
    let base = inventory.url(RESERVE_PATH);
    assert_eq!(call(&base, "commit", "g1", "stock", &b).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product B").await, (98, 0));
    assert_eq!(call(&base, "commit", "g1", "stock", &b).await.0, 200);
    assert_eq!(stock_of(&inventory, "Product B").await, (98, 0));
    inventory.stop().await;
}
