//! The embedded durable store on redb: one table per record kind, JSON values, one fsync'd
//! transaction per commit (so a batch of requests shares one fsync).

use crate::{Mutation, Snapshot, Store, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use std::path::Path;
use trellis_catalog::{CheckRecord, InstanceRecord, KvEntry};

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const CHECKS: TableDefinition<&str, &[u8]> = TableDefinition::new("checks");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INDEX_KEY: &str = "index";
/// Page cache; the catalog itself lives in memory, so the store only needs a small cache.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `dir/catalog.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("catalog.redb"))
            .map_err(redb::Error::from)?;
        // Create the tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(redb::Error::from)?;
        {
            txn.open_table(INSTANCES).map_err(redb::Error::from)?;
            txn.open_table(CHECKS).map_err(redb::Error::from)?;
            txn.open_table(KV).map_err(redb::Error::from)?;
            txn.open_table(META).map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(Self { db })
    }
}

fn read_all<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let table = txn.open_table(table).map_err(redb::Error::from)?;
    let mut out = Vec::with_capacity(table.len().map_err(redb::Error::from)? as usize);
    for row in table.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
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
                read_all(&txn, CHECKS)
            });
            let rest = (|| -> Result<(u64, Vec<InstanceRecord>, Vec<KvEntry>), StoreError> {
                let txn = self.db.begin_read().map_err(redb::Error::from)?;
                let index = txn
                    .open_table(META)
                    .map_err(redb::Error::from)?
                    .get(INDEX_KEY)
                    .map_err(redb::Error::from)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                Ok((index, read_all(&txn, INSTANCES)?, read_all(&txn, KV)?))
            })();
            (checks.join(), rest)
        });
        let checks = checks.map_err(|_| StoreError::Corrupt {
            key: "checks".into(),
            reason: "decoder thread panicked".into(),
        })??;
        let (index, instances, kv) = rest?;
        Ok(Snapshot {
            index,
            instances,
            checks,
            kv,
        })
    }

    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut instances = txn.open_table(INSTANCES).map_err(redb::Error::from)?;
            let mut checks = txn.open_table(CHECKS).map_err(redb::Error::from)?;
            let mut kv = txn.open_table(KV).map_err(redb::Error::from)?;
            let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
            for mutation in mutations {
                match mutation {
                    Mutation::PutInstance(r) => {
                        let bytes = serde_json::to_vec(r)?;
                        instances
                            .insert(r.registration.id.as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteInstance(id) => {
                        instances.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Mutation::PutCheck(r) => {
                        let bytes = serde_json::to_vec(r)?;
                        let id = r.definition.id.as_deref().unwrap_or_default();
                        checks
                            .insert(id, bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteCheck(id) => {
                        checks.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Mutation::PutKv(e) => {
                        let bytes = serde_json::to_vec(e)?;
                        kv.insert(e.key.as_str(), bytes.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Mutation::DeleteKv(key) => {
                        kv.remove(key.as_str()).map_err(redb::Error::from)?;
                    }
                }
            }
            let previous = meta
                .get(INDEX_KEY)
                .map_err(redb::Error::from)?
                .map(|v| v.value())
                .unwrap_or(0);
            meta.insert(INDEX_KEY, previous.max(index))
                .map_err(redb::Error::from)?;
        }
        // Durability::Immediate (the default): fsync'd before commit returns.
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }
}
