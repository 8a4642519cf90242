//! Every store implementation passes the same conformance suite.

use std::sync::Arc;
use trellis_store::{MemoryStore, RedbStore, conformance};

#[test]
fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(|| RedbStore::open(dir.path()).unwrap());
}

#[test]
fn memory_store_conforms() {
    // "Reopening" a memory store is handing out the same instance.
    let store = Arc::new(MemoryStore::new());
    conformance::run(|| SharedMemory(store.clone()));
}

struct SharedMemory(Arc<MemoryStore>);

impl trellis_store::Store for SharedMemory {
    fn load(&self) -> Result<trellis_store::Snapshot, trellis_store::StoreError> {
        self.0.load()
    }
    fn commit(
        &self,
        index: u64,
        m: &[trellis_store::Mutation],
    ) -> Result<Option<trellis_store::Numbering>, trellis_store::StoreError> {
        self.0.commit(index, m)
    }
}
