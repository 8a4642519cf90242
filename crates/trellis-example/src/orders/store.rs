//! The orders table.

use rusqlite::{OptionalExtension, Row, params};

use crate::db::{Db, Schema};
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
              quantity INTEGER NOT NULL
          );
          CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id);",
    seed: "INSERT INTO orders (id, user_id, product, quantity)
           VALUES (1, 1, 'Product A', 1), (2, 2, 'Product B', 1);",
};

/// A validated order that is not stored yet.
pub(crate) struct NewOrder {
    pub user_id: i64,
    pub product: String,
    pub quantity: i64,
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

    pub(crate) async fn list(&self, user_id: Option<i64>) -> Result<Vec<Order>, Error> {
        self.db
            .call(move |conn| match user_id {
                Some(user_id) => conn
                    .prepare_cached(
                        "SELECT id, user_id, product, quantity FROM orders
                         WHERE user_id = ?1 ORDER BY id",
                    )?
                    .query_map([user_id], order)?
                    .collect(),
                None => conn
                    .prepare_cached(
                        "SELECT id, user_id, product, quantity FROM orders ORDER BY id",
                    )?
                    .query_map([], order)?
                    .collect(),
            })
            .await
    }

    pub(crate) async fn get(&self, id: i64) -> Result<Option<Order>, Error> {
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT id, user_id, product, quantity FROM orders WHERE id = ?1",
                )?
                .query_row([id], order)
                .optional()
            })
            .await
    }

    pub(crate) async fn create(&self, new: NewOrder) -> Result<Order, Error> {
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO orders (user_id, product, quantity) VALUES (?1, ?2, ?3)
                     RETURNING id, user_id, product, quantity",
                )?
                .query_row(params![new.user_id, new.product, new.quantity], order)
            })
            .await
    }
}
