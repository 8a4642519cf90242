//! Test harness: start servers on free ports, call them, and check `x-served-by` on every
//! single response.

use std::net::SocketAddr;
use std::path::Path;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trellis_example::{
    Error, INVENTORY_SERVICE, InventoryArgs, ORDERS_SERVICE, OrdersArgs, Server, TracingArgs,
    UsersArgs, inventory_server, orders_server, users_server,
};

use crate::coordinator::MiniCoordinator;

/// A server running in the background until [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub instance: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    pub fn start(server: Server, instance: &str) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            instance: instance.to_owned(),
            stop,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful shutdown; fails the test if serving ended with an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server result");
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, Body::None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Body::Json(body), &[])
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Reply {
        let body = Body::Raw(content_type.map(str::to_owned), body.to_owned());
        self.send(reqwest::Method::POST, path, body, &[]).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = client().request(method.clone(), self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, text) => {
                let request = request.body(text);
                match content_type {
                    Some(ct) => request.header("content-type", ct),
                    None => request,
                }
            }
        };
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let served_by = headers.get("x-served-by").and_then(|v| v.to_str().ok());
        assert_eq!(
            served_by,
            Some(self.instance.as_str()),
            "x-served-by on {method} {path} ({status})"
        );
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path} answered non-JSON {text:?}: {e}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

pub enum Body {
    None,
    Json(Value),
    Raw(Option<String>, String),
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `{"error": ...}` reason of an error answer.
    pub fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error reason in {:?}", self.body))
    }

    /// Asserts an error status with a non-empty reason and returns the reason.
    pub fn expect_error(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{:?}", self.body);
        let reason = self.error();
        assert!(!reason.is_empty());
        reason
    }
}

/// A client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub fn users_args(db: &Path, instance: &str) -> UsersArgs {
    UsersArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: db.to_owned(),
        instance: instance.to_owned(),
        tracing: TracingArgs::default(),
    }
}

/// Orders arguments whose coordinator is an address nothing listens on (see [`Txns`]).
pub fn orders_args(db: &Path, instance: &str, users_url: &str) -> OrdersArgs {
    OrdersArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: db.to_owned(),
        instance: instance.to_owned(),
        users_url: users_url.parse().expect("users url"),
        proxy: None,
        users_timeout_ms: 2000,
        coordinator: format!("http://{}", dead_addr()).parse().expect("url"),
        token: None,
        tracing: TracingArgs::default(),
    }
}

pub fn inventory_args(db: &Path, instance: &str) -> InventoryArgs {
    InventoryArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: db.to_owned(),
        instance: instance.to_owned(),
        crash_before_commit: None,
        tracing: TracingArgs::default(),
    }
}

pub async fn start_inventory(db: &Path, instance: &str) -> Running {
    let server = inventory_server(&inventory_args(db, instance))
        .await
        .expect("inventory server");
    Running::start(server, instance)
}

pub async fn start_users(db: &Path, instance: &str) -> Running {
    let server = users_server(&users_args(db, instance))
        .await
        .expect("users server");
    Running::start(server, instance)
}

pub async fn start_orders_with(args: OrdersArgs) -> Running {
    let instance = args.instance.clone();
    let server = orders_server(&args).await.expect("orders server");
    Running::start(server, &instance)
}

/// An inventory's stock of `product` as `(stock, reserved)`.
pub async fn stock_of(inventory: &Running, product: &str) -> (i64, i64) {
    let reply = inventory
        .get(&format!("/stock/{}", product.replace(' ', "%20")))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    (
        reply.body["stock"].as_i64().unwrap(),
        reply.body["reserved"].as_i64().unwrap(),
    )
}

/// What placing an order needs besides users: a coordinator and a real inventory service
/// (its database in the given directory).
pub struct Txns {
    pub coordinator: MiniCoordinator,
    pub inventory: Running,
}

impl Txns {
    pub async fn start(dir: &Path) -> Self {
        let coordinator = MiniCoordinator::start().await;
        let inventory = start_inventory(&dir.join("inventory.db"), "inventory-1").await;
        coordinator.route(INVENTORY_SERVICE, inventory.addr);
        Self {
            coordinator,
            inventory,
        }
    }

    /// `args` pointed at this coordinator.
    pub fn orders_args(&self, mut args: OrdersArgs) -> OrdersArgs {
        args.coordinator = self.coordinator.url.parse().expect("url");
        args
    }

    /// Starts orders with `args` pointed at this coordinator, which sends the orders branches
    /// to this instance.
    pub async fn start_orders(&self, args: OrdersArgs) -> Running {
        let orders = start_orders_with(self.orders_args(args)).await;
        self.coordinator.route(ORDERS_SERVICE, orders.addr);
        orders
    }

    /// The inventory's stock of `product` as `(stock, reserved)`.
    pub async fn stock(&self, product: &str) -> (i64, i64) {
        stock_of(&self.inventory, product).await
    }

    pub async fn stop(self) {
        self.inventory.stop().await;
    }
}

/// Users, orders and inventory wired together directly (no sidecar), with a coordinator.
pub struct System {
    /// Kept so the databases outlive the servers.
    _dir: tempfile::TempDir,
    pub users: Running,
    pub orders: Running,
    pub txns: Txns,
}

impl System {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = start_users(&dir.path().join("users.db"), "users-1").await;
        let txns = Txns::start(dir.path()).await;
        let orders = txns
            .start_orders(orders_args(
                &dir.path().join("orders.db"),
                "orders-1",
                &users.url(""),
            ))
            .await;
        Self {
            _dir: dir,
            users,
            orders,
            txns,
        }
    }

    pub async fn stop(self) {
        self.orders.stop().await;
        self.txns.stop().await;
        self.users.stop().await;
    }
}

/// An address nothing listens on: bound once by the OS, then released.
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Serves `router` on a free port for the rest of the test; used for fake users services
/// and fake sidecars.
pub async fn spawn_fake(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}
