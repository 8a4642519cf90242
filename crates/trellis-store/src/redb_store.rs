//! The embedded durable store on redb: JSON values, one fsync'd transaction per commit (so a
//! batch of requests shares one fsync). Instances and their checks share one table, a
//! service's checks keyed right after its instance (`id\0` and `id\0check`), so registering an
//! instance with its check dirties one B-tree leaf instead of one in each of two tables. KV
//! entries, sessions and config entries have a table each.

use crate::{Mutation, Numbering, Snapshot, Store, StoreError, config_key};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use std::path::Path;
use trellis_catalog::{CheckRecord, InstanceRecord, KvSnapshot};
use trellis_types::ConfigEntry;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Config entries by `config_key` (kind, NUL, lower-cased name).
const CONFIG_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("config_entries");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INDEX_KEY: &str = "index";
/// Page cache; the catalog itself lives in memory, so the store only needs a small cache.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `dir/catalog.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = create_database(dir, "catalog.redb")?;
        // Create the tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(redb::Error::from)?;
        {
            txn.open_table(RECORDS).map_err(redb::Error::from)?;
            txn.open_table(KV).map_err(redb::Error::from)?;
            txn.open_table(SESSIONS).map_err(redb::Error::from)?;
            txn.open_table(CONFIG_ENTRIES).map_err(redb::Error::from)?;
            txn.open_table(META).map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(Self { db })
    }
}

/// Creates `dir` if needed and opens (or creates) the database `file` in it, with the small
/// page cache every Trellis store uses; a database another process holds is `Locked`.
pub(crate) fn create_database(dir: &Path, file: &str) -> Result<Database, StoreError> {
    std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
        path: dir.display().to_string(),
        error,
    })?;
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(file))
        .map_err(|error| match redb::Error::from(error) {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
                dir: dir.display().to_string(),
            },
            other => StoreError::Engine(other),
        })
}

/// The highest index committed (0 in a new database).
pub(crate) fn read_index(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn
        .open_table(META)
        .map_err(redb::Error::from)?
        .get(INDEX_KEY)
        .map_err(redb::Error::from)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Records `index` as the highest committed, unless a higher one already is: indexes never go
/// back.
pub(crate) fn raise_index(txn: &redb::WriteTransaction, index: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
    let previous = meta
        .get(INDEX_KEY)
        .map_err(redb::Error::from)?
        .map(|v| v.value())
        .unwrap_or(0);
    meta.insert(INDEX_KEY, previous.max(index))
        .map_err(redb::Error::from)?;
    Ok(())
}

/// An instance's key: its ID and a NUL (IDs never contain control characters).
fn instance_key(id: &str) -> String {
    format!("{id}\0")
}

/// A check's key: its instance's ID (empty for a node check), a NUL, the check ID.
fn check_key(owner: Option<&str>, id: &str) -> String {
    format!("{}\0{id}", owner.unwrap_or_default())
}

fn is_instance_key(key: &str) -> bool {
    key.split_once('\0')
        .is_some_and(|(owner, rest)| !owner.is_empty() && rest.is_empty())
}

/// Decodes the rows of `table` whose key `wanted` accepts.
fn read_all<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<T>, StoreError> {
    let table = txn.open_table(table).map_err(redb::Error::from)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
        if !wanted(key.value()) {
            continue;
        }
        let record = serde_json::from_slice(value.value()).map_err(|e| StoreError::Corrupt {
            key: key.value().to_owned(),
            reason: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        // Decoding is most of a restart: instances and checks decode on two threads.
        let (checks, rest) = std::thread::scope(|scope| {
            let checks = scope.spawn(|| -> Result<Vec<CheckRecord>, StoreError> {
                let txn = self.db.begin_read().map_err(redb::Error::from)?;
                read_all(&txn, RECORDS, |key| !is_instance_key(key))
            });
            type Rest = (u64, Vec<InstanceRecord>, KvSnapshot, Vec<ConfigEntry>);
            let rest = (|| -> Result<Rest, StoreError> {
                let txn = self.db.begin_read().map_err(redb::Error::from)?;
                let index = read_index(&txn)?;
                let instances = read_all(&txn, RECORDS, is_instance_key)?;
                let kv = KvSnapshot {
                    entries: read_all(&txn, KV, |_| true)?,
                    sessions: read_all(&txn, SESSIONS, |_| true)?,
                };
                let config_entries = read_all(&txn, CONFIG_ENTRIES, |_| true)?;
                Ok((index, instances, kv, config_entries))
            })();
            (checks.join(), rest)
        });
        let checks = checks.map_err(|_| StoreError::Corrupt {
            key: "checks".into(),
            reason: "decoder thread panicked".into(),
        })??;
        let (index, instances, kv, config_entries) = rest?;
        Ok(Snapshot {
            index,
            instances,
            checks,
            kv,
            config_entries,
        })
    }

    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<Option<Numbering>, StoreError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(redb::Error::from)?;
            let mut kv = txn.open_table(KV).map_err(redb::Error::from)?;
            let mut sessions = txn.open_table(SESSIONS).map_err(redb::Error::from)?;
            let mut config = txn.open_table(CONFIG_ENTRIES).map_err(redb::Error::from)?;
            for mutation in mutations {
                match mutation {
                    Mutation::PutInstance(r) => {
                        let bytes = serde_json::to_vec(r)?;
                        records
                            .insert(instance_key(&r.registration.id).as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteInstance(id) => {
                        records
                            .remove(instance_key(id).as_str())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::PutCheck(r) => {
                        let bytes = serde_json::to_vec(r)?;
                        let id = r.definition.id.as_deref().unwrap_or_default();
                        let key = check_key(r.definition.service_id.as_deref(), id);
                        records
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteCheck { id, owner } => {
                        records
                            .remove(check_key(owner.as_deref(), id).as_str())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::PutKv(e) => {
                        let bytes = serde_json::to_vec(e)?;
                        kv.insert(e.key.as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteKv(key) => {
                        kv.remove(key.as_str()).map_err(redb::Error::from)?;
                    }
                    Mutation::PutSession(session) => {
                        let bytes = serde_json::to_vec(session)?;
                        sessions
                            .insert(session.id.as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteSession(id) => {
                        sessions.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Mutation::PutConfigEntry(entry) => {
                        let bytes = serde_json::to_vec(entry)?;
                        config
                            .insert(
                                config_key(&entry.kind, &entry.name).as_str(),
                                bytes.as_slice(),
                            )
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteConfigEntry { kind, name } => {
                        config
                            .remove(config_key(kind, name).as_str())
                            .map_err(redb::Error::from)?;
                    }
                }
            }
        }
        raise_index(&txn, index)?;
        // Durability::Immediate (the default): fsync'd before commit returns.
        txn.commit().map_err(redb::Error::from)?;
        Ok(None)
    }
}
