//! A durable table of opaque records by key, with an index that never goes back, in a redb file
//! of its own (so its fsyncs never queue behind the catalog's) or in memory for `--dev`: what
//! the coordinator's decision log and the ACL log are made of.

use crate::StoreError;
use crate::redb_store::{META, create_database, raise_index, read_index};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

/// The records and the index, as read back.
pub type Records = (u64, BTreeMap<String, Vec<u8>>);

/// A durable table of opaque records with an index that never goes back: `commit` writes its
/// puts and deletions and raises the index atomically and durably before it returns. The ACL
/// log and the decision log are made of one (redb, memory, or etcd in `trellis-etcd`).
pub trait RecordLog: Send + Sync {
    fn load(&self) -> Result<Records, StoreError>;
    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError>;
}

impl RecordLog for RedbRecords {
    fn load(&self) -> Result<Records, StoreError> {
        RedbRecords::load(self)
    }
    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        RedbRecords::commit(self, index, puts, deletes)
    }
}

impl RecordLog for MemoryRecords {
    fn load(&self) -> Result<Records, StoreError> {
        MemoryRecords::load(self)
    }
    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        MemoryRecords::commit(self, index, puts, deletes)
    }
}

/// Records in `dir/<file>`, table `table`.
pub struct RedbRecords {
    db: Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
}

impl RedbRecords {
    /// Opens (or creates) `dir/<file>` with its record table and the index.
    pub fn open(dir: &Path, file: &str, table: &'static str) -> Result<Self, StoreError> {
        let db = create_database(dir, file)?;
        let table = TableDefinition::new(table);
        let txn = db.begin_write().map_err(redb::Error::from)?;
        {
            txn.open_table(table).map_err(redb::Error::from)?;
            txn.open_table(META).map_err(redb::Error::from)?;
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(Self { db, table })
    }

    pub fn load(&self) -> Result<Records, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let index = read_index(&txn)?;
        let table = txn.open_table(self.table).map_err(redb::Error::from)?;
        let mut records = BTreeMap::new();
        for row in table.iter().map_err(redb::Error::from)? {
            let (key, value) = row.map_err(redb::Error::from)?;
            records.insert(key.value().to_owned(), value.value().to_vec());
        }
        Ok((index, records))
    }

    /// Writes `puts`, removes `deletes` and raises the index, atomically and durably (fsync'd
    /// before it returns).
    pub fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut table = txn.open_table(self.table).map_err(redb::Error::from)?;
            for (key, value) in puts {
                table.insert(*key, *value).map_err(redb::Error::from)?;
            }
            for key in deletes {
                table.remove(*key).map_err(redb::Error::from)?;
            }
        }
        raise_index(&txn, index)?;
        // Durability::Immediate (the default): fsync'd before commit returns.
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }
}

/// Records in memory: gone with the process.
#[derive(Default)]
pub struct MemoryRecords {
    state: Mutex<Records>,
}

impl MemoryRecords {
    pub fn load(&self) -> Result<Records, StoreError> {
        Ok(self.state.lock().clone())
    }

    pub fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        state.0 = state.0.max(index);
        for (key, value) in puts {
            state.1.insert((*key).to_owned(), value.to_vec());
        }
        for key in deletes {
            state.1.remove(*key);
        }
        Ok(())
    }
}
