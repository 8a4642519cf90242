//! The classic users/orders example services that `trellis demo` runs behind Trellis sidecars.
//!
//! Each service is a small JSON-over-HTTP application that owns its data in its own SQLite
//! file. Several instances (OS processes) of one service may share that file; the orders
//! service reaches the users service through its sidecar's outbound HTTP proxy, the way any
//! application in a service mesh would.
//!
//! The binary uses [`UsersArgs`] / [`OrdersArgs`] with [`run_users`] / [`run_orders`]; tests
//! use [`users_server`] / [`orders_server`] (or the routers) to learn the bound port.

mod api;
mod db;
mod error;
mod metrics;
mod model;
mod orders;
mod server;
mod users;

pub use error::Error;
pub use model::{Order, User};
pub use orders::{OrdersArgs, OrdersState, orders_router, orders_server, run_orders};
pub use server::Server;
pub use users::{UsersArgs, UsersState, run_users, users_router, users_server};

/// Header naming the instance that produced a response, so demos and tests can see load
/// balancing and failover happen.
pub const SERVED_BY: &str = "x-served-by";

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

        for extra in [&[][..], &["--proxy", "http://127.0.0.1:15001"]] {
            let mut argv = vec!["orders", "--db", "o.db", "--users-timeout-ms", "750"];
            argv.extend_from_slice(extra);
            let orders = Orders::try_parse_from(argv).unwrap().args;
            let again = std::iter::once("orders".to_owned()).chain(orders.to_args());
            assert_eq!(Orders::try_parse_from(again).unwrap().args, orders);
        }
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
