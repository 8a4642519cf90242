//! The two-phase-commit coordinator's durable decision log: one record per transaction (its
//! latest state, so the log never needs compacting), and the coordinator's last index. The redb
//! log lives in its own file, `transactions.redb`, so its fsyncs never queue behind the
//! catalog's; the memory log is for `--dev`. [`conformance`] is what both must do.

use crate::StoreError;
use crate::records::{MemoryRecords, RecordLog, Records, RedbRecords};
use std::path::Path;
use trellis_coordinator::Txn;

/// What the log holds, as read back at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogSnapshot {
    pub index: u64,
    pub transactions: Vec<Txn>,
}

/// Durable transaction records. `commit` writes all its records and deletions atomically and
/// durably (fsync) before it returns; the coordinator batches many transactions into one commit.
pub trait DecisionLog: Send {
    fn load(&self) -> Result<LogSnapshot, StoreError>;
    fn commit(&self, index: u64, puts: &[&Txn], deletes: &[&str]) -> Result<(), StoreError>;
}

/// A decision log on any [`RecordLog`]: a transaction is its record, keyed by gid.
#[derive(Default)]
pub struct RecordDecisionLog<R>(pub R);

/// The embedded decision log on redb.
pub type RedbDecisionLog = RecordDecisionLog<RedbRecords>;

/// The decision log of `--dev`: gone with the process.
pub type MemoryDecisionLog = RecordDecisionLog<MemoryRecords>;

impl RedbDecisionLog {
    /// Opens (or creates) `dir/transactions.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        RedbRecords::open(dir, "transactions.redb", "transactions").map(Self)
    }
}

impl<R: RecordLog> DecisionLog for RecordDecisionLog<R> {
    fn load(&self) -> Result<LogSnapshot, StoreError> {
        snapshot(self.0.load()?)
    }

    fn commit(&self, index: u64, puts: &[&Txn], deletes: &[&str]) -> Result<(), StoreError> {
        let encoded = encode(puts)?;
        self.0.commit(index, &borrowed(&encoded), deletes)
    }
}

/// Each transaction as its record: (gid, JSON).
fn encode(puts: &[&Txn]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    puts.iter()
        .map(|txn| Ok((txn.gid.clone(), serde_json::to_vec(txn)?)))
        .collect()
}

fn borrowed(records: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    records
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_slice()))
        .collect()
}

fn snapshot((index, records): Records) -> Result<LogSnapshot, StoreError> {
    let transactions = records
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                key,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<Txn>, _>>()?;
    Ok(LogSnapshot {
        index,
        transactions,
    })
}

/// What every [`DecisionLog`] must do: `open` gives the log over the same storage each time it
/// is called (a reopen after the previous one was dropped).
pub mod conformance {
    use super::*;
    use trellis_coordinator::{Config, Engine, Phase, Response, Target, TxnState};

    /// Records made by the real engine, so the log is tested on what it will hold.
    fn records() -> (u64, Vec<Txn>) {
        let mut engine = Engine::new(Config::default(), 1);
        for gid in ["a", "b"] {
            engine.begin(gid, Some(5_000), 100).expect("begin");
            engine
                .add_branch(
                    gid,
                    "x",
                    Target::Service {
                        name: "orders".into(),
                        path: "/txn".into(),
                    },
                    r#"{"amount": 5, "note": "caf\u00e9 \"quoted\""}"#.into(),
                )
                .expect("branch");
        }
        engine.commit("a", 200).expect("commit");
        engine.on_response("a", "x", Phase::Prepare, Response::Ok, 300);
        let mut txns: Vec<Txn> = engine.transactions().cloned().collect();
        txns.sort_by(|x, y| x.gid.cmp(&y.gid));
        assert_eq!(txns[0].state, TxnState::Committing);
        (engine.index(), txns)
    }

    fn sorted(mut snapshot: LogSnapshot) -> LogSnapshot {
        snapshot.transactions.sort_by(|x, y| x.gid.cmp(&y.gid));
        snapshot
    }

    pub fn run<L: DecisionLog>(open: impl Fn() -> L) {
        let (index, txns) = records();
        {
            let log = open();
            assert_eq!(log.load().expect("load"), LogSnapshot::default());
            log.commit(index, &txns.iter().collect::<Vec<_>>(), &[])
                .expect("commit");
        }
        let log = open();
        assert_eq!(
            sorted(log.load().expect("reload")),
            LogSnapshot {
                index,
                transactions: txns.clone()
            },
            "every record survives a reopen, byte for byte"
        );

        let mut done = txns[0].clone();
        done.state = TxnState::Committed;
        log.commit(index + 5, &[&done], &["b", "never-existed"])
            .expect("second commit");
        log.commit(index + 1, &[], &[]).expect("an older index");
        drop(log);
        let log = open();
        assert_eq!(
            log.load().expect("reload"),
            LogSnapshot {
                index: index + 5,
                transactions: vec![done]
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
            run(|| RedbDecisionLog::open(dir.path()).expect("open"));
        }

        #[test]
        fn memory_log_conforms() {
            let shared = Arc::new(MemoryDecisionLog::default());
            struct Handle(Arc<MemoryDecisionLog>);
            impl DecisionLog for Handle {
                fn load(&self) -> Result<LogSnapshot, StoreError> {
                    self.0.load()
                }
                fn commit(
                    &self,
                    index: u64,
                    puts: &[&Txn],
                    deletes: &[&str],
                ) -> Result<(), StoreError> {
                    self.0.commit(index, puts, deletes)
                }
            }
            run(|| Handle(Arc::clone(&shared)));
        }

        #[test]
        fn a_second_open_of_the_same_directory_is_locked() {
            let dir = tempfile::tempdir().expect("tempdir");
            let _first = RedbDecisionLog::open(dir.path()).expect("open");
            assert!(matches!(
                RedbDecisionLog::open(dir.path()),
                Err(StoreError::Locked { .. })
            ));
        }
    }
}
