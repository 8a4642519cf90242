//! The feed a server keeps its replica with: one etcd watch on the prefix, from the revision its
//! snapshot was read at, turned into the holder's commits (each with its index), changes of
//! holder and changes of the record tables, in etcd's order.

use crate::layout::{Key, Layout};
use crate::store::{EtcdStore, decode_record};
use etcd_client::{EventType, KeyValue, WatchClient, WatchOptions};
use serde::de::DeserializeOwned;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;
use trellis_store::{Mutation, StoreError};

/// One thing that happened in the store, in the order etcd applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// A commit of the catalog by the holder: its mutations (of one or, for a batch larger
    /// than etcd's transaction limit, several transactions) and the index it raised the
    /// store to.
    Commit {
        index: u64,
        mutations: Vec<Mutation>,
    },
    /// The lock changed hands: its holder's value (none: free), and whether the holder is this
    /// store. Everything the previous holder committed came before.
    Holder { holder: Option<String>, ours: bool },
    /// A record table's index moved (`acl`, `transactions`): its records changed.
    Table(String),
    /// A server announced itself (its value: node and address) or went (none).
    Member { id: String, value: Option<String> },
    /// The feed cannot go on (etcd compacted the history it had to resume from, or a record
    /// does not decode); the replica must be loaded anew.
    Broken(String),
}

impl EtcdStore {
    /// Follows every change after `revision` (from [`EtcdStore::load_at`]): first the lock's
    /// holder as of `revision`, then each change as etcd applied it. The watch resumes by
    /// itself after a lost connection; the channel closes when the store's client is closed.
    pub fn follow(&self, revision: i64) -> Result<Receiver<Feed>, StoreError> {
        let conn = self.connection();
        let (tx, rx) = std::sync::mpsc::channel();
        let lock = conn.layout.lock_key();
        let mut kv = conn.kv.clone();
        let holder = conn.block_on("cannot read the lock", async move {
            let options = etcd_client::GetOptions::new().with_revision(revision);
            let answer = kv.get(lock, Some(options)).await?;
            Ok(answer
                .kvs()
                .first()
                .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())))
        })?;
        let ours = holder
            .as_ref()
            .is_some_and(|(_, lease)| *lease == conn.tenure.lease());
        let _ = tx.send(Feed::Holder {
            holder: holder.map(|(value, _)| value),
            ours,
        });
        for kv in conn.read_range(conn.layout.members(), revision)? {
            if let Key::Member(id) = conn.layout.parse(kv.key()) {
                let value = Some(String::from_utf8_lossy(kv.value()).into_owned());
                let _ = tx.send(Feed::Member { id, value });
            }
        }
        let runtime = conn.runtime.as_ref().ok_or_else(|| {
            StoreError::Remote(format!("etcd at {}: the client is closed", conn.endpoints))
        })?;
        let follower = Follower {
            watch: conn.watch.clone(),
            layout: conn.layout.clone(),
            tenure: conn.tenure.clone(),
            endpoints: conn.endpoints.clone(),
            tx,
            pending: Vec::new(),
        };
        runtime.spawn(follower.run(revision));
        Ok(rx)
    }
}

/// The watch task's state.
struct Follower {
    watch: WatchClient,
    layout: Layout,
    /// This store's lease, to tell its own lock from another's.
    tenure: std::sync::Arc<crate::store::Tenure>,
    endpoints: String,
    tx: Sender<Feed>,
    /// Mutations of a commit whose index has not come yet (the first transactions of a batch
    /// split in several).
    pending: Vec<Mutation>,
}

/// What a watch ended with.
enum Ended {
    /// The receiver is gone: stop.
    Closed,
    /// The connection failed: resume after the last revision seen.
    Lost(String),
    /// The feed cannot go on.
    Broken(String),
}

impl Follower {
    async fn run(mut self, mut revision: i64) {
        let mut failures = 0u32;
        loop {
            match self.watch_from(&mut revision).await {
                Ended::Closed => return,
                Ended::Broken(reason) => {
                    let _ = self.tx.send(Feed::Broken(reason));
                    return;
                }
                Ended::Lost(reason) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(etcd = %self.endpoints, %reason, "the watch was lost; resuming");
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(10))))
                        .await;
                }
            }
        }
    }

    /// Watches from `revision + 1`, moving `revision` forward with every change handed on.
    async fn watch_from(&mut self, revision: &mut i64) -> Ended {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let prefix = self.layout.prefix().to_owned();
        let mut stream = match self.watch.watch(prefix, Some(options)).await {
            Ok(watch) => watch,
            Err(error) => return Ended::Lost(error.to_string()),
        };
        loop {
            let answer = match stream.message().await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Ended::Lost("the watch stream ended".into()),
                Err(error) => return Ended::Lost(error.to_string()),
            };
            if answer.compact_revision() > 0 {
                return Ended::Broken(format!(
                    "etcd compacted its history past revision {} that this replica had to resume from",
                    answer.compact_revision()
                ));
            }
            if answer.canceled() {
                return Ended::Lost(format!(
                    "the watch was cancelled: {}",
                    answer.cancel_reason()
                ));
            }
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let feed = match self.event(event.event_type(), kv) {
                    Ok(feed) => feed,
                    Err(reason) => return Ended::Broken(reason),
                };
                if let Some(feed) = feed
                    && self.tx.send(feed).is_err()
                {
                    return Ended::Closed;
                }
                *revision = (*revision).max(kv.mod_revision());
            }
        }
    }

    /// What one change means: a mutation kept until its commit's index comes, or something to
    /// hand on now.
    fn event(&mut self, kind: EventType, kv: &KeyValue) -> Result<Option<Feed>, String> {
        let put = kind == EventType::Put;
        let mutation = match self.layout.parse(kv.key()) {
            Key::Index => {
                if !put {
                    return Ok(None);
                }
                let index = crate::layout::decode_index(kv.value()).ok_or_else(|| {
                    format!(
                        "corrupt record {:?}: not an index",
                        String::from_utf8_lossy(kv.key())
                    )
                })?;
                let mutations = std::mem::take(&mut self.pending);
                return Ok(Some(Feed::Commit { index, mutations }));
            }
            Key::Lock => {
                let ours = put && kv.lease() == self.tenure.lease();
                if ours {
                    // Before the writer hears of it, so its first commit is fenced right.
                    self.tenure.took_lock(kv.create_revision());
                } else if !put {
                    self.tenure.lock_freed.notify_one();
                }
                return Ok(Some(Feed::Holder {
                    holder: put.then(|| String::from_utf8_lossy(kv.value()).into_owned()),
                    ours,
                }));
            }
            Key::TableIndex(table) => return Ok(put.then_some(Feed::Table(table))),
            Key::Member(id) => {
                let value = put.then(|| String::from_utf8_lossy(kv.value()).into_owned());
                return Ok(Some(Feed::Member { id, value }));
            }
            Key::Other => return Ok(None),
            Key::Instance(id) if !put => Mutation::DeleteInstance(id),
            Key::Instance(_) => Mutation::PutInstance(decode(kv)?),
            Key::Check { owner, id } if !put => Mutation::DeleteCheck { id, owner },
            Key::Check { .. } => Mutation::PutCheck(decode(kv)?),
            Key::Kv(key) if !put => Mutation::DeleteKv(key),
            Key::Kv(_) => Mutation::PutKv(decode(kv)?),
            Key::Session(id) if !put => Mutation::DeleteSession(id),
            Key::Session(_) => Mutation::PutSession(decode(kv)?),
            Key::Config { kind, name } if !put => Mutation::DeleteConfigEntry { kind, name },
            Key::Config { .. } => Mutation::PutConfigEntry(decode(kv)?),
        };
        self.pending.push(mutation);
        Ok(None)
    }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, String> {
    decode_record(kv).map_err(|e| e.to_string())
}
