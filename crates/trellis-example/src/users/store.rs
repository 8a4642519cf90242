//! The users table.

use rusqlite::{OptionalExtension, Row};

use crate::db::{Db, Query, Schema};
use crate::{Error, User};

static SCHEMA: Schema = Schema {
    // "TRU1" in ASCII: recognisable in a hex dump of the header.
    application_id: 0x5452_5531,
    service: "users",
    // AUTOINCREMENT so that ids are never reused, even if rows are deleted by hand.
    ddl: "CREATE TABLE IF NOT EXISTS users (
              id   INTEGER PRIMARY KEY AUTOINCREMENT,
              name TEXT NOT NULL
          );",
    migrate: None,
    seed: "INSERT INTO users (id, name) VALUES (1, 'John'), (2, 'Jane');",
};

#[derive(Clone)]
pub(crate) struct UsersStore {
    db: Db,
}

fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
    })
}

impl UsersStore {
    pub(crate) async fn open(path: &std::path::Path) -> Result<Self, Error> {
        Ok(Self {
            db: Db::open(path, &SCHEMA).await?,
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn list(&self) -> Result<Vec<User>, Error> {
        self.db
            .call(Query::new("SELECT", "users"), |conn| {
                let mut stmt = conn.prepare_cached("SELECT id, name FROM users ORDER BY id")?;
                stmt.query_map([], user)?.collect()
            })
            .await
    }

    pub(crate) async fn get(&self, id: i64) -> Result<Option<User>, Error> {
        self.db
            .call(Query::new("SELECT", "users"), move |conn| {
                conn.prepare_cached("SELECT id, name FROM users WHERE id = ?1")?
                    .query_row([id], user)
                    .optional()
            })
            .await
    }

    pub(crate) async fn create(&self, name: String) -> Result<User, Error> {
        self.db
            .call(Query::new("INSERT", "users"), move |conn| {
                // One statement, so it is atomic without an explicit transaction and the id
                // comes back even when another instance inserts at the same moment.
                conn.prepare_cached("INSERT INTO users (name) VALUES (?1) RETURNING id, name")?
                    .query_row([name], user)
            })
            .await
    }
}
