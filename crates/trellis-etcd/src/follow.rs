//! The feed a server keeps its replica with: one etcd watch on the prefix, from the revision its
//! snapshot was read at, turned into the holder's commits (each with its index), changes of
//! holder and changes of the record tables, in etcd's order.

use crate::layout::{Key, Layout};
use crate::reader::{ReadFailed, Reader, commit_revision, decode_numbered};
use crate::store::EtcdStore;
use etcd_client::{EventType, KeyValue, WatchClient, WatchOptions};
use serde::de::DeserializeOwned;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;
use trellis_catalog::Indexed;
use trellis_store::{Mutation, Snapshot, StoreError};

/// One thing that happened in the store, in the order etcd applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// A commit of the catalog by the holder: its mutations (of one or, for a batch larger
    /// than etcd's transaction limit, several transactions), their records numbered with
    /// their keys' revisions, and its index: the revision of its last transaction.
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
    /// Sessions whose etcd lease ended (a revision that deletes only session keys, which no
    /// commit of the holder does: it writes the index with them). The holder invalidates
    /// them (their locks); a replica removes them with the next commit, which is that.
    SessionsEnded(Vec<String>),
    /// The feed fell behind etcd's compaction: the store's whole state at a newer revision,
    /// which replaces the replica. What follows goes on from there: the holder and the members
    /// again (a member not named again is gone), and every record table changed.
    Reset(Box<Snapshot>),
    /// The feed cannot go on (a record does not decode).
    Broken(String),
}

impl EtcdStore {
    /// Follows every change after `revision` (from [`EtcdStore::load_at`]): first the lock's
    /// holder and the members as of `revision`, then each change as etcd applied it. The watch
    /// resumes by itself after a lost connection, and after falling behind etcd's compaction
    /// it starts again from a [`Feed::Reset`]; the channel closes when the store's client is
    /// closed.
    pub fn follow(&self, revision: i64) -> Result<Receiver<Feed>, StoreError> {
        let conn = self.connection();
        let (tx, rx) = std::sync::mpsc::channel();
        let runtime = conn.runtime.as_ref().ok_or_else(|| {
            StoreError::Remote(format!("etcd at {}: the client is closed", conn.endpoints))
        })?;
        let follower = Follower {
            reader: conn.reader(),
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
    reader: Reader,
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

/// What a watch (or a read before it) ended with.
enum Ended {
    /// The receiver is gone: stop.
    Closed,
    /// The connection failed: resume after the last revision seen.
    Lost(String),
    /// etcd compacted the history the watch had to resume from: start again from the state.
    Compacted,
    /// The feed cannot go on.
    Broken(String),
}

impl From<ReadFailed> for Ended {
    fn from(failed: ReadFailed) -> Self {
        match failed {
            ReadFailed::Compacted => Ended::Compacted,
            ReadFailed::Other(error @ StoreError::Corrupt { .. }) => {
                Ended::Broken(error.to_string())
            }
            ReadFailed::Other(error) => Ended::Lost(error.to_string()),
        }
    }
}

impl Follower {
    async fn run(mut self, mut revision: i64) {
        let mut failures = 0u32;
        // Whether the holder and the members as of `revision` were handed on.
        let mut started = false;
        loop {
            let step = if started {
                Err(self.watch_from(&mut revision).await)
            } else {
                self.start_at(revision).await
            };
            let ended = match step {
                Ok(()) => {
                    started = true;
                    continue;
                }
                Err(Ended::Compacted) => {
                    tracing::warn!(
                        etcd = %self.endpoints,
                        revision,
                        "the replica fell behind etcd's compaction; loading the store's state again"
                    );
                    match self.reset().await {
                        Ok(at) => {
                            (revision, started) = (at, false);
                            continue;
                        }
                        Err(ended) => ended,
                    }
                }
                Err(ended) => ended,
            };
            match ended {
                Ended::Closed => return,
                Ended::Broken(reason) => {
                    let _ = self.tx.send(Feed::Broken(reason));
                    return;
                }
                // Compacted again while the state was read: the watch fails again, and the
                // state is read anew.
                Ended::Compacted => {}
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

    /// Hands on who holds the lock and who is a member as of `revision`.
    async fn start_at(&mut self, revision: i64) -> Result<(), Ended> {
        let lock = self.reader.key(self.layout.lock_key(), revision).await?;
        let mut items = vec![Feed::Holder {
            ours: lock
                .as_ref()
                .is_some_and(|kv| kv.lease() == self.tenure.lease()),
            holder: lock.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        }];
        for kv in self.reader.range(self.layout.members(), revision).await? {
            if let Key::Member(id) = self.layout.parse(kv.key()) {
                let value = Some(String::from_utf8_lossy(kv.value()).into_owned());
                items.push(Feed::Member { id, value });
            }
        }
        self.send_all(items)
    }

    /// Loads the store's state anew and hands it on, for a replica that fell behind etcd's
    /// compaction; answers the revision it was read at, to go on from.
    async fn reset(&mut self) -> Result<i64, Ended> {
        let (snapshot, revision) = self.reader.snapshot(&self.layout).await?;
        // A batch cut in two by the compaction is in the state read.
        self.pending.clear();
        let tables = ["acl", "transactions"].map(|table| Feed::Table(table.to_owned()));
        let mut items = vec![Feed::Reset(Box::new(snapshot))];
        items.extend(tables);
        self.send_all(items)?;
        Ok(revision)
    }

    fn send_all(&self, items: Vec<Feed>) -> Result<(), Ended> {
        for item in items {
            self.tx.send(item).map_err(|_| Ended::Closed)?;
        }
        Ok(())
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
                return Ended::Compacted;
            }
            if answer.canceled() {
                return Ended::Lost(format!(
                    "the watch was cancelled: {}",
                    answer.cancel_reason()
                ));
            }
            let events = answer.events();
            // The events of one revision come together, in one answer.
            for change in events.chunk_by(|a, b| revision_of(a) == revision_of(b)) {
                if let Some(ended) = self.sessions_ended(change) {
                    if self.tx.send(Feed::SessionsEnded(ended)).is_err() {
                        return Ended::Closed;
                    }
                    *revision = (*revision).max(revision_of(&change[0]));
                    continue;
                }
                for event in change {
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
    }

    /// The sessions a revision that deletes only session keys ends (their leases ended), kept
    /// as deletes for the replica's next commit too. `None` for any other revision.
    fn sessions_ended(&mut self, change: &[etcd_client::Event]) -> Option<Vec<String>> {
        let mut ended = Vec::new();
        for event in change {
            let kv = event.kv()?;
            match self.layout.parse(kv.key()) {
                Key::Session(id) if event.event_type() == EventType::Delete => ended.push(id),
                _ => return None,
            }
        }
        self.pending
            .extend(ended.iter().cloned().map(Mutation::DeleteSession));
        Some(ended)
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
                let index = commit_revision(kv);
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

/// The revision an event happened at (a delete's tombstone carries it too).
fn revision_of(event: &etcd_client::Event) -> i64 {
    event.kv().map_or(0, KeyValue::mod_revision)
}

fn decode<T: DeserializeOwned + Indexed>(kv: &KeyValue) -> Result<T, String> {
    decode_numbered(kv).map_err(|e| e.to_string())
}
