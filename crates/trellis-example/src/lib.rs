//! The classic users/orders/inventory example services that `trellis demo` runs behind Trellis
//! sidecars, and the bank of the two-phase-commit chaos test.
//!
//! Each service is a small JSON-over-HTTP application that owns its data in its own SQLite
//! file. Several instances (OS processes) of one service may share that file; the orders
//! service reaches the users service through its sidecar's outbound HTTP proxy, the way any
//! application in a service mesh would. Placing an order is one two-phase-commit transaction
//! (submitted to the coordinator in `trellis server`) across the orders service (the order row)
//! and the inventory service (the stock), both participants through `trellis-participant`.
//!
//! The binary uses [`UsersArgs`] / [`OrdersArgs`] / [`InventoryArgs`] with [`run_users`] /
//! [`run_orders`] / [`run_inventory`]; tests use [`users_server`] / [`orders_server`] /
//! [`inventory_server`] (or the routers) to learn the bound port.
//!
//! The bank ([`BankArgs`], [`run_bank`]) is not part of the demo: it is one participant of the
//! two-phase-commit chaos test (`trellis bank`), on SQLite or PostgreSQL.

mod api;
mod bank;
mod db;
mod error;
mod inventory;
mod metrics;
mod model;
mod orders;
mod server;
mod telemetry;
mod users;

pub use bank::{BankArgs, TRANSFER_PATH, bank_server, run_bank};
pub use error::Error;
pub use inventory::{
    CRASH_EXIT_CODE, InventoryArgs, InventoryState, RESERVE_PATH, inventory_router,
    inventory_server, run_inventory,
};
pub use model::{Order, Stock, User};
pub use orders::{
    INVENTORY_SERVICE, ORDER_PATH, ORDERS_SERVICE, OrdersArgs, OrdersState, orders_router,
    orders_server, run_orders,
};
pub use server::Server;
pub use telemetry::{OtelLayer, OtlpEndpoint, Telemetry, TracingArgs};
pub use users::{UsersArgs, UsersState, run_users, users_router, users_server};

/// Header naming the instance that produced a response, so demos and tests can see load
/// balancing and failover happen.
pub const SERVED_BY: &str = "x-served-by";

/// Header naming the two-phase-commit transaction (its gid) that placed, or failed to place,
/// an order: on every answer of `POST /orders` that got as far as the coordinator.
pub const TXN_GID: &str = "x-trellis-gid";

/// Largest request body accepted; bigger bodies are answered 413 before they are buffered.
pub const BODY_LIMIT: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Users {
        #[command(flatten)]
        args: UsersArgs,
    }

    #[derive(Parser)]
    struct Orders {
        #[command(flatten)]
        args: OrdersArgs,
    }

    #[derive(Parser)]
    struct Inventory {
        #[command(flatten)]
        args: InventoryArgs,
    }

    #[test]
    fn users_flags_and_defaults() {
        let args = Users::try_parse_from(["users", "--db", "u.db"])
            .unwrap()
            .args;
        assert_eq!(args.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(args.db.to_str(), Some("u.db"));
        assert_eq!(args.instance, "users-1");
        assert!(
            Users::try_parse_from(["users"]).is_err(),
            "--db is required"
        );
    }

    #[test]
    fn listen_accepts_host_names() {
        let args = Users::try_parse_from(["users", "--db", "u.db", "--listen", "localhost:0"])
            .unwrap()
            .args;
        assert!(args.listen.ip().is_loopback(), "{}", args.listen);
        for bad in ["8081", ":8081", "localhost", "localhost:x"] {
            assert!(
                Users::try_parse_from(["users", "--db", "u.db", "--listen", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn argv_parses_back_into_the_same_arguments() {
        let users =
            Users::try_parse_from(["users", "--db", "/tmp/u s.db", "--instance", "users-7"])
                .unwrap()
                .args;
        let argv = std::iter::once("users".to_owned()).chain(users.to_args());
        assert_eq!(Users::try_parse_from(argv).unwrap().args, users);

        for extra in [
            &[][..],
            &["--proxy", "http://127.0.0.1:15001"],
            &["--coordinator", "http://127.0.0.1:9500"],
            &["--token", "0e0c5a9e-secret"],
        ] {
            let mut argv = vec!["orders", "--db", "o.db", "--users-timeout-ms", "750"];
            argv.extend_from_slice(extra);
            let orders = Orders::try_parse_from(argv).unwrap().args;
            let again = std::iter::once("orders".to_owned()).chain(orders.to_args());
            assert_eq!(Orders::try_parse_from(again).unwrap().args, orders);
        }

        for extra in [&[][..], &["--crash-before-commit", "Limited edition"]] {
            let mut argv = vec!["inventory", "--db", "/tmp/i s.db", "--instance", "inv-2"];
            argv.extend_from_slice(extra);
            let inventory = Inventory::try_parse_from(argv).unwrap().args;
            let again = std::iter::once("inventory".to_owned()).chain(inventory.to_args());
            assert_eq!(Inventory::try_parse_from(again).unwrap().args, inventory);
        }
    }

    #[test]
    fn inventory_flags_and_defaults() {
        let args = Inventory::try_parse_from(["inventory", "--db", "i.db"])
            .unwrap()
            .args;
        assert_eq!(args.listen.to_string(), "127.0.0.1:8084");
        assert_eq!(args.instance, "inventory-1");
        assert_eq!(args.crash_before_commit, None);
        assert!(
            Inventory::try_parse_from(["inventory"]).is_err(),
            "--db is required"
        );
        let args = Inventory::try_parse_from([
            "inventory",
            "--db",
            "i.db",
            "--crash-before-commit",
            "Product B",
        ])
        .unwrap()
        .args;
        assert_eq!(args.crash_before_commit.as_deref(), Some("Product B"));
    }

    #[test]
    fn orders_flags_and_defaults() {
        let args = Orders::try_parse_from(["orders", "--db", "o.db"])
            .unwrap()
            .args;
        assert_eq!(args.listen.to_string(), "127.0.0.1:8082");
        assert_eq!(args.instance, "orders-1");
        assert_eq!(args.users_url.as_str(), "http://users/");
        assert_eq!(args.proxy, None);
        assert_eq!(args.users_timeout_ms, 2000);
        assert_eq!(args.coordinator.as_str(), "http://127.0.0.1:8500/");

        let args = Orders::try_parse_from([
            "orders",
            "--listen",
            "0.0.0.0:9000",
            "--db",
            "o.db",
            "--instance",
            "orders-2",
            "--users-url",
            "http://users:8081",
            "--proxy",
            "http://127.0.0.1:15001",
            "--users-timeout-ms",
            "500",
        ])
        .unwrap()
        .args;
        assert_eq!(args.instance, "orders-2");
        assert_eq!(
            args.proxy.map(String::from).as_deref(),
            Some("http://127.0.0.1:15001/")
        );
        assert_eq!(args.users_timeout_ms, 500);
        assert!(
            Orders::try_parse_from(["orders", "--db", "o.db", "--users-timeout-ms", "0"]).is_err()
        );
        assert!(
            Orders::try_parse_from(["orders", "--db", "o.db", "--proxy", "not a url"]).is_err()
        );
    }
}
