//! The durable record of the access-control state: tokens and policies, each one record (JSON,
//! keyed `token/<accessor ID>` or `policy/<policy ID>`, whole records replaced on change), plus
//! the index and the bootstrap mark. The redb log lives in its own file, `acl.redb`: ACL writes
//! are rare and must not queue behind the catalog's group commits; the memory log is for `--dev`.
//! The records are opaque bytes here: their shape belongs to `trellis-acl` and the server.

use crate::StoreError;
use crate::records::{MemoryRecords, RecordLog, RedbRecords};
use std::collections::BTreeMap;
use std::path::Path;

/// What the log holds, as read back at start-up: the last index and every record by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AclSnapshot {
    pub index: u64,
    pub records: BTreeMap<String, Vec<u8>>,
}

/// Durable ACL records. `commit` writes its puts and deletions atomically and durably (fsync)
/// before it returns.
pub trait AclLog: Send + Sync {
    fn load(&self) -> Result<AclSnapshot, StoreError>;
    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError>;
}

/// An ACL log on any [`RecordLog`].
#[derive(Default)]
pub struct RecordAclLog<R>(pub R);

/// The embedded ACL log on redb.
pub type RedbAclLog = RecordAclLog<RedbRecords>;

/// The ACL log of `--dev`: gone with the process.
pub type MemoryAclLog = RecordAclLog<MemoryRecords>;

impl RedbAclLog {
    /// Opens (or creates) `dir/acl.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        RedbRecords::open(dir, "acl.redb", "acl_records").map(Self)
    }
}

impl<R: RecordLog> AclLog for RecordAclLog<R> {
    fn load(&self) -> Result<AclSnapshot, StoreError> {
        let (index, records) = self.0.load()?;
        Ok(AclSnapshot { index, records })
    }

    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        self.0.commit(index, puts, deletes)
    }
}

/// What every [`AclLog`] must do: `open` gives the log over the same storage each time it is
/// called (a reopen after the previous one was dropped).
pub mod conformance {
    use super::*;

    pub fn run<L: AclLog>(open: impl Fn() -> L) {
        {
            let log = open();
            assert_eq!(log.load().expect("load"), AclSnapshot::default());
            log.commit(
                3,
                &[
                    ("policy/p1", br#"{"name":"web"}"#.as_slice()),
                    ("token/t1", b"{\"description\":\"caf\xc3\xa9\"}".as_slice()),
                ],
                &[],
            )
            .expect("commit");
        }
        let log = open();
        let loaded = log.load().expect("reload");
        assert_eq!(loaded.index, 3);
        assert_eq!(
            loaded.records.keys().collect::<Vec<_>>(),
            ["policy/p1", "token/t1"]
        );
        assert_eq!(
            loaded.records["token/t1"],
            b"{\"description\":\"caf\xc3\xa9\"}".to_vec(),
            "byte for byte"
        );
        log.commit(
            7,
            &[("policy/p1", br#"{"name":"db"}"#.as_slice())],
            &["token/t1", "token/never-existed"],
        )
        .expect("second commit");
        log.commit(5, &[], &[]).expect("an older index");
        drop(log);
        let log = open();
        let loaded = log.load().expect("reload");
        assert_eq!(
            loaded,
            AclSnapshot {
                index: 7,
                records: [("policy/p1".to_owned(), br#"{"name":"db"}"#.to_vec())].into(),
            },
            "records are replaced whole, deletions stick, the index never goes back"
        );
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Arc;

        #[test]
        fn redb_log_conforms() {
            let dir = tempfile::tempdir().expect("tempdir");
            run(|| RedbAclLog::open(dir.path()).expect("open"));
        }

        #[test]
        fn memory_log_conforms() {
            let shared = Arc::new(MemoryAclLog::default());
            struct Handle(Arc<MemoryAclLog>);
            impl AclLog for Handle {
                fn load(&self) -> Result<AclSnapshot, StoreError> {
                    self.0.load()
                }
                fn commit(
                    &self,
                    index: u64,
                    puts: &[(&str, &[u8])],
                    deletes: &[&str],
                ) -> Result<(), StoreError> {
                    self.0.commit(index, puts, deletes)
                }
            }
            run(|| Handle(Arc::clone(&shared)));
        }
    }
}
