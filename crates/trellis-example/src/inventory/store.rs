//! The stock table: reads for the API, and the three changes a reservation's branch makes inside
//! the participant library's local transaction.

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::db::{Db, Query, Schema};
use crate::{Error, Stock};

pub(crate) static SCHEMA: Schema = Schema {
    // "TRI1" in ASCII.
    application_id: 0x5452_4931,
    service: "inventory",
    // `reserved` is what prepared orders hold back: `stock - reserved` may still be sold.
    ddl: "CREATE TABLE IF NOT EXISTS stock (
              product  TEXT PRIMARY KEY,
              stock    INTEGER NOT NULL CHECK (stock >= 0),
              reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= stock)
          ) WITHOUT ROWID;",
    migrate: None,
    seed: "INSERT INTO stock (product, stock) VALUES
               ('Product A', 100), ('Product B', 100), ('Product C', 100),
               ('Limited edition', 1);",
};

fn stock(row: &Row<'_>) -> rusqlite::Result<Stock> {
    Ok(Stock {
        product: row.get(0)?,
        stock: row.get(1)?,
        reserved: row.get(2)?,
    })
}

#[derive(Clone)]
pub(crate) struct InventoryStore {
    db: Db,
}

impl InventoryStore {
    pub(crate) async fn open(path: &std::path::Path) -> Result<Self, Error> {
        Ok(Self {
            db: Db::open(path, &SCHEMA).await?,
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn list(&self) -> Result<Vec<Stock>, Error> {
        self.db
            .call(Query::new("SELECT", "stock"), |conn| {
                conn.prepare_cached("SELECT product, stock, reserved FROM stock ORDER BY product")?
                    .query_map([], stock)?
                    .collect()
            })
            .await
    }

    pub(crate) async fn get(&self, product: String) -> Result<Option<Stock>, Error> {
        self.db
            .call(Query::new("SELECT", "stock"), move |conn| {
                conn.prepare_cached(
                    "SELECT product, stock, reserved FROM stock WHERE product = ?1",
                )?
                .query_row([product], stock)
                .optional()
            })
            .await
    }
}

/// Why a reservation could not be made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Short {
    UnknownProduct,
    /// Only this many are left unreserved.
    Only(i64),
}

/// Reserves `quantity` of `product` if that many are neither sold nor reserved.
pub(crate) fn reserve(
    tx: &Transaction<'_>,
    product: &str,
    quantity: i64,
) -> rusqlite::Result<Result<(), Short>> {
    let reserved = tx.execute(
        "UPDATE stock SET reserved = reserved + ?2 WHERE product = ?1 AND stock - reserved >= ?2",
        params![product, quantity],
    )?;
    if reserved == 1 {
        return Ok(Ok(()));
    }
    let left: Option<i64> = tx
        .query_row(
            "SELECT stock - reserved FROM stock WHERE product = ?1",
            [product],
            |row| row.get(0),
        )
        .optional()?;
    Ok(Err(left.map_or(Short::UnknownProduct, Short::Only)))
}

/// Takes a reservation out of stock; false if the product is gone (which a prepared
/// reservation rules out).
pub(crate) fn take(tx: &Transaction<'_>, product: &str, quantity: i64) -> rusqlite::Result<bool> {
    let taken = tx.execute(
        "UPDATE stock SET stock = stock - ?2, reserved = reserved - ?2 WHERE product = ?1",
        params![product, quantity],
    )?;
    Ok(taken == 1)
}

/// Releases a reservation; false if the product is gone.
pub(crate) fn release(
    tx: &Transaction<'_>,
    product: &str,
    quantity: i64,
) -> rusqlite::Result<bool> {
    let released = tx.execute(
        "UPDATE stock SET reserved = reserved - ?2 WHERE product = ?1",
        params![product, quantity],
    )?;
    Ok(released == 1)
}
