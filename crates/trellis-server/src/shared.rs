//! The catalog shared between the writer (its only mutator) and readers. The writer holds the
//! write lock from apply until the batch is durable, so readers never see an unacknowledged
//! write; if the writer dies with an undurable batch applied, it retires the catalog and
//! readers are turned away until the server has stopped.

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use trellis_catalog::Catalog;

pub struct SharedCatalog {
    /// `None` once retired.
    lock: RwLock<Option<Catalog>>,
}

/// The catalog is gone: the writer failed and the server is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired;

pub type CatalogRead<'a> = MappedRwLockReadGuard<'a, Catalog>;

impl SharedCatalog {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            lock: RwLock::new(Some(catalog)),
        }
    }

    /// Read access, blocking while the writer applies and commits a batch.
    pub fn read(&self) -> Result<CatalogRead<'_>, Retired> {
        RwLockReadGuard::try_map(self.lock.read(), Option::as_ref).map_err(|_| Retired)
    }

    /// The writer's access: `None` inside once retired.
    pub fn write(&self) -> RwLockWriteGuard<'_, Option<Catalog>> {
        self.lock.write()
    }
}
