//! The orders table: reads for the API, and the three changes the order's branch of its
//! transaction makes inside the participant library's local transaction. An order is `pending`
//! from its prepare (keyed by the transaction's gid) until its commit places it; an abort
//! deletes it. Only placed orders are shown unless asked for.

use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::db::{Db, Query, Schema};
use crate::{Error, Order};

static SCHEMA: Schema = Schema {
    // "TRO1" in ASCII.
    application_id: 0x5452_4f31,
    service: "orders",
    // No foreign key to users: that table lives in another service's database, which is the
    // whole point of the example. The user check happens over HTTP instead.
    ddl: "CREATE TABLE IF NOT EXISTS orders (
              id       INTEGER PRIMARY KEY AUTOINCREMENT,
              user_id  INTEGER NOT NULL,
              product  TEXT NOT NULL,
              quantity INTEGER NOT NULL,
              status   TEXT NOT NULL DEFAULT 'placed' CHECK (status IN ('pending', 'placed')),
              gid      TEXT
          );
          CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id);",
    migrate: Some(migrate),
    seed: "INSERT INTO orders (id, user_id, product, quantity)
           VALUES (1, 1, 'Product A', 1), (2, 2, 'Product B', 1);",
};

/// A file from before orders were placed by a transaction has neither `status` nor `gid`: its
/// orders are all placed.
fn migrate(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('orders')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let has = |name: &str| columns.iter().any(|c| c == name);
    if !has("status") {
        tx.execute_batch(
            "ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'placed'
                 CHECK (status IN ('pending', 'placed'))",
        )?;
    }
    if !has("gid") {
        tx.execute_batch("ALTER TABLE orders ADD COLUMN gid TEXT")?;
    }
    tx.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS orders_by_gid ON orders (gid)")
}

/// A validated order that is not stored yet; also the payload of the order's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrder {
    pub user_id: i64,
    pub product: String,
    pub quantity: i64,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Prepared: waits for its transaction's outcome.
    Pending,
    Placed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Placed => "placed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Status::Pending, Status::Placed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Clone)]
pub(crate) struct OrdersStore {
    db: Db,
}

fn order(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get(0)?,
        user_id: row.get(1)?,
        product: row.get(2)?,
        quantity: row.get(3)?,
    })
}

impl OrdersStore {
    pub(crate) async fn open(path: &std::path::Path) -> Result<Self, Error> {
        Ok(Self {
            db: Db::open(path, &SCHEMA).await?,
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn list(
        &self,
        user_id: Option<i64>,
        status: Status,
    ) -> Result<Vec<Order>, Error> {
        self.db
            .call(Query::new("SELECT", "orders"), move |conn| match user_id {
                Some(user_id) => conn
                    .prepare_cached(
                        "SELECT id, user_id, product, quantity FROM orders
                         WHERE user_id = ?1 AND status = ?2 ORDER BY id",
                    )?
                    .query_map(params![user_id, status.as_str()], order)?
                    .collect(),
                None => conn
                    .prepare_cached(
                        "SELECT id, user_id, product, quantity FROM orders
                         WHERE status = ?1 ORDER BY id",
                    )?
                    .query_map([status.as_str()], order)?
                    .collect(),
            })
            .await
    }

    /// A placed order.
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Order>, Error> {
        self.db
            .call(Query::new("SELECT", "orders"), move |conn| {
                conn.prepare_cached(
                    "SELECT id, user_id, product, quantity FROM orders
                     WHERE id = ?1 AND status = 'placed'",
                )?
                .query_row([id], order)
                .optional()
            })
            .await
    }

    /// The order a transaction made, pending or placed.
    pub(crate) async fn by_gid(&self, gid: String) -> Result<Option<Order>, Error> {
        self.db
            .call(Query::new("SELECT", "orders"), move |conn| {
                conn.prepare_cached(
                    "SELECT id, user_id, product, quantity FROM orders WHERE gid = ?1",
                )?
                .query_row([gid], order)
                .optional()
            })
            .await
    }
}

/// Prepare: the order is written, pending, keyed by `gid`.
pub(crate) fn insert_pending(
    tx: &Transaction<'_>,
    gid: &str,
    new: &NewOrder,
) -> rusqlite::Result<i64> {
    tx.query_row(
        "INSERT INTO orders (user_id, product, quantity, status, gid)
         VALUES (?1, ?2, ?3, 'pending', ?4) RETURNING id",
        params![new.user_id, new.product, new.quantity, gid],
        |row| row.get(0),
    )
}

/// Commit: the pending order becomes placed; false if there is none.
pub(crate) fn place(tx: &Transaction<'_>, gid: &str) -> rusqlite::Result<bool> {
    let placed = tx.execute(
        "UPDATE orders SET status = 'placed' WHERE gid = ?1 AND status = 'pending'",
        [gid],
    )?;
    Ok(placed == 1)
}

/// Abort: the pending order is deleted; false if there is none.
pub(crate) fn discard(tx: &Transaction<'_>, gid: &str) -> rusqlite::Result<bool> {
    let deleted = tx.execute(
        "DELETE FROM orders WHERE gid = ?1 AND status = 'pending'",
        [gid],
    )?;
    Ok(deleted == 1)
}
