//! The single writer: drains queued commands in batches, applies them to the catalog, makes the
//! batch durable with one commit (group commit), then publishes and answers every request; if
//! the commit fails, it answers every request with an error and reloads the catalog. Between
//! batches it sleeps on the queue until the catalog's next deadline (a TTL running out, the
//! reaper, a session's TTL) or the next slot GC, whichever comes first, so time-driven changes
//! happen within a few milliseconds of their deadline instead of at a fixed tick.

use crate::cluster::{Cluster, Holder, Role};
use crate::metrics::StoreMetrics;
use crate::publisher::Publisher;
use crate::queue::{Queued, Submission, WriteError};
use crate::shared::SharedCatalog;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use trellis_catalog::{Catalog, Command, Effects, Reply};
use trellis_store::{Mutation, Numbering, Snapshot, Store, StoreError};

/// Most commands applied in one batch; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 4096;
/// How often empty, unwatched service slots are dropped; also the longest time between two
/// ticks (a tick with nothing due only forgets lock-delays that passed).
const SLOT_GC: Duration = Duration::from_secs(10);
/// How often a stale replica tries to reload from a store it could not reach.
const RELOAD_RETRY: Duration = Duration::from_millis(250);

/// Why the writer stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WriterFailed {
    #[error(
        "a commit failed ({commit}) and the store could not be reloaded ({reload}); \
         stopped so that no write that was not made durable is served"
    )]
    Reload {
        commit: Box<StoreError>,
        reload: Box<StoreError>,
    },
    /// The shared store's feed broke, or another server took the store over from this one.
    #[error("{0}; stopped so that no stale state is served")]
    Replica(String),
}

/// An applied command's answer, sent once the batch is settled.
type Pending = (
    oneshot::Sender<Result<Reply, WriteError>>,
    Result<Reply, WriteError>,
);

pub struct Writer {
    catalog: Arc<SharedCatalog>,
    store: Box<dyn Store>,
    queue: Receiver<Queued>,
    /// Alone, leading or following: what the writer may do with commands and the store's feed.
    cluster: Arc<Cluster>,
    /// The highest index committed: a leader commits every index it takes, so that followers
    /// see the same numbers.
    committed: u64,
    /// A server sharing a store whose commit failed (cut off from the quorum): its catalog may
    /// hold a batch that was not made durable, so it takes no write and skips the feed until
    /// it has reloaded from the store.
    stale: bool,
    /// The store's lock became this server's while it was stale: it leads once reloaded.
    promote_after_reload: bool,
    /// Sessions whose etcd lease ended that this follower's replica still has: the leader
    /// invalidates them (its commit removes them here), or this server once it leads.
    ended_sessions: BTreeSet<String>,
    publisher: Arc<Publisher>,
    metrics: StoreMetrics,
    /// The catalog's clock: time since the server started.
    clock: Instant,
    /// The catalog's [`Catalog::next_deadline`] as of the last batch: when to wake up.
    next_deadline: Option<Duration>,
    last_tick: Duration,
    last_gc: Duration,
}

impl Writer {
    pub fn new(
        catalog: Arc<SharedCatalog>,
        store: Box<dyn Store>,
        queue: Receiver<Queued>,
        cluster: Arc<Cluster>,
        publisher: Arc<Publisher>,
        metrics: StoreMetrics,
        clock: Instant,
    ) -> Self {
        let committed = catalog.read().map_or(0, |catalog| catalog.index());
        Self {
            catalog,
            store,
            queue,
            cluster,
            committed,
            stale: false,
            promote_after_reload: false,
            ended_sessions: BTreeSet::new(),
            publisher,
            metrics,
            clock,
            // Unknown until the first batch: wake at once and read it.
            next_deadline: Some(Duration::ZERO),
            last_tick: Duration::ZERO,
            last_gc: Duration::ZERO,
        }
    }

    /// Runs on the current thread until every queue handle is gone (`Ok`) or the store fails
    /// beyond repair (`Err`, with the catalog retired).
    pub fn run(mut self) -> Result<(), WriterFailed> {
        while let Some(batch) = self.collect_batch() {
            self.process(batch)?;
            self.gc_slots_if_due();
        }
        Ok(())
    }

    /// Waits for the first command, or until the catalog's next deadline or the next slot GC
    /// (an empty batch), then takes whatever else is queued, up to `MAX_BATCH`. `None` once
    /// every handle is gone.
    fn collect_batch(&self) -> Option<Vec<Queued>> {
        let wake = if self.cluster.writes() {
            let idle_due = self.last_gc.min(self.last_tick) + SLOT_GC;
            self.next_deadline
                .map_or(idle_due, |deadline| deadline.min(idle_due))
        } else {
            // A follower runs no timers (its catalog is never ticked, so its deadlines stay
            // past): it wakes for the feed, its commands, and the slot GC only.
            self.last_gc + SLOT_GC
        };
        let mut wait = wake.saturating_sub(self.clock.elapsed());
        if self.stale {
            // Try the store again soon.
            wait = wait.min(RELOAD_RETRY);
        }
        let mut batch = Vec::new();
        match self.queue.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        batch.extend(self.queue.try_iter().take(MAX_BATCH - batch.len()));
        Some(batch)
    }

    /// Applies (commands, or the store's feed on a follower), ticks, commits, then publishes and
    /// answers — or answers with an error and recovers. The catalog stays write-locked until
    /// the outcome is published.
    fn process(&mut self, batch: Vec<Queued>) -> Result<(), WriterFailed> {
        let now = self.clock.elapsed();
        let catalog = Arc::clone(&self.catalog);
        let mut guard = catalog.write();
        let Some(catalog) = guard.as_mut() else {
            // Retired by an earlier failure, after which the writer does not run again.
            return Ok(());
        };
        let mut fx = Effects::default();
        if self.stale {
            self.reload(catalog, now, &mut fx);
        }
        self.number_batch(catalog);
        let size = batch.len();
        let mut pending = Vec::with_capacity(size);
        for item in batch {
            match item {
                Queued::Command(Submission { command, reply }) => {
                    let result = if self.stale {
                        Err(WriteError::StoreUnreachable)
                    } else if self.cluster.writes() {
                        catalog
                            .apply(command, now, &mut fx)
                            .map_err(WriteError::Rejected)
                    } else {
                        Err(WriteError::NotLeader)
                    };
                    pending.push((reply, result));
                }
                Queued::Feed(feed) => {
                    self.follow(catalog, feed, now, &mut fx)?;
                    if catalog.open_batch().is_some() && !self.cluster.writes() {
                        // The lock went to another server (the feed said so) while this batch
                        // was being applied: none of it was committed, so none of it may be
                        // read or acknowledged, and the new leader's commits that follow in
                        // the feed apply to the catalog as it was.
                        catalog.undo_batch(now);
                        fx = Effects::default();
                        for (_, result) in &mut pending {
                            if result.is_ok() {
                                *result = Err(WriteError::NotLeader);
                            }
                        }
                    }
                }
            }
        }
        if self.cluster.writes() {
            self.tick_if_due(catalog, now, &mut fx);
        }
        self.next_deadline = catalog.next_deadline();
        let committed = self.commit(catalog, &fx, size);
        let tentative = catalog.open_batch();
        match committed {
            Ok(numbered) => {
                if let Some((mutations, numbering)) = numbered {
                    // A batch that numbered nothing has nothing at `index + 1`.
                    let tentative = tentative.unwrap_or(catalog.index() + 1);
                    catalog.renumber(tentative, &mutations, &numbering, &mut fx);
                    for (_, result) in &mut pending {
                        if let Ok(reply) = result {
                            catalog.renumber_reply(tentative, reply);
                        }
                    }
                } else if tentative.is_some() {
                    catalog.end_batch();
                }
                if self.cluster.writes() {
                    self.committed = catalog.index();
                }
                self.publisher.publish(catalog, &fx);
                drop(guard);
                answer(pending);
                Ok(())
            }
            Err(commit) if self.cluster.role() != Role::Alone => {
                // Cut off from the quorum (or fenced off): stop writing, keep serving what was
                // published, and reload once the store answers. The batch's commit may or may
                // not have reached etcd; its requests are told so.
                tracing::error!(error = %commit, "commit failed; taking no writes until the store answers again");
                self.stale = true;
                self.cluster.set_role(Role::Follower { leader: None });
                // Applied but maybe never durable: out again before any reader gets the lock.
                catalog.undo_batch(now);
                drop(guard);
                for (reply, _) in pending {
                    let _ = reply.send(Err(WriteError::StoreUnreachable));
                }
                Ok(())
            }
            Err(commit) => {
                catalog.end_batch();
                let recovered = self.recover(catalog, now, commit);
                self.next_deadline = catalog.next_deadline();
                if recovered.is_err() {
                    // Nobody may read the writes that were applied but never made durable.
                    *guard = None;
                }
                drop(guard);
                fail(pending);
                recovered
            }
        }
    }

    /// One item of the shared store's feed: a follower applies the leader's commits to its
    /// replica (the leader's own come back too, and are already applied); a change of holder
    /// promotes this server or says who leads.
    fn follow(
        &mut self,
        catalog: &mut Catalog,
        feed: trellis_etcd::Feed,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), WriterFailed> {
        use trellis_etcd::Feed;
        match feed {
            // A stale replica reloads instead: the reload has every commit up to its revision.
            Feed::Commit { .. } if self.stale => {}
            Feed::Commit { index, mutations } => {
                if !self.cluster.writes() {
                    catalog.replicate(index, mutations, now, fx);
                    self.ended_sessions
                        .retain(|id| catalog.session(id).is_some());
                } else if index > catalog.index() {
                    // Fencing makes this impossible while this server holds the lock; after it
                    // lost it unnoticed, the store is the truth.
                    tracing::error!(
                        index,
                        "another server committed while this one led; reloading"
                    );
                    self.stale = true;
                    self.cluster.set_role(Role::Follower { leader: None });
                }
            }
            Feed::Holder { ours: true, .. } => {
                if self.stale {
                    self.promote_after_reload = true;
                } else if !self.cluster.writes() {
                    // Everything the previous leader committed came before this in the feed and
                    // is applied: take over from here.
                    self.promote(catalog, now, fx);
                }
            }
            Feed::Holder {
                holder,
                ours: false,
            } => {
                self.promote_after_reload = false;
                if self.cluster.role() == Role::Leader {
                    // Its lease ended (cut off, or paused): another server may write now.
                    tracing::warn!("this server no longer holds the store's lock; following");
                }
                let leader = holder.as_deref().map(Holder::parse);
                match &leader {
                    Some(holder) => {
                        tracing::info!(leader = %holder.node, "following the cluster leader")
                    }
                    None => tracing::warn!("no cluster leader: the store's lock is free"),
                }
                self.cluster.set_role(Role::Follower { leader });
            }
            Feed::SessionsEnded(ids) => {
                if self.cluster.writes() && !self.stale {
                    for id in ids {
                        let _ = catalog.apply(Command::SessionExpired { id }, now, fx);
                    }
                } else {
                    // The leader invalidates them; if it dies first, this server does once it
                    // leads.
                    self.ended_sessions.extend(ids);
                }
            }
            Feed::Member { id, value } => {
                self.cluster
                    .set_member(id, value.as_deref().map(Holder::parse));
            }
            Feed::Table(table) => match table.as_str() {
                "acl" => self.cluster.acl_changed(),
                "ca" => self.cluster.ca_changed(),
                _ => {}
            },
            Feed::Reset(snapshot) => {
                // The holder and the members come again after it.
                self.cluster.clear_members();
                if self.cluster.writes() || self.stale {
                    // A leader's catalog is the store's truth (its commits are fenced), and a
                    // stale replica reloads by itself.
                    return Ok(());
                }
                let index = snapshot.index.max(catalog.index());
                self.replace(catalog, *snapshot, index, now);
                self.committed = catalog.index();
                tracing::warn!(
                    index,
                    "replica loaded anew after falling behind etcd's compaction"
                );
            }
            Feed::Broken(reason) => return Err(WriterFailed::Replica(reason)),
        }
        Ok(())
    }

    /// Takes the lead with the catalog as it is (up to date with the store): the reaper's clock
    /// starts again (TTLs are the checks' owners' and etcd's, not the leader's), and the
    /// sessions whose lease ended before the old leader applied it are invalidated.
    fn promote(&mut self, catalog: &mut Catalog, now: Duration, fx: &mut Effects) {
        catalog.rearm_timers(now);
        self.committed = catalog.index();
        self.cluster.set_role(Role::Leader);
        tracing::info!(index = catalog.index(), "this server now leads the cluster");
        self.number_batch(catalog);
        // Sessions whose lease ended while the old leader had not invalidated them yet.
        for id in std::mem::take(&mut self.ended_sessions) {
            let _ = catalog.apply(Command::SessionExpired { id }, now, fx);
        }
    }

    /// Opens the batch's one number on a leader sharing a store (once per batch; a server
    /// alone numbers each change, as Consul's Raft log does).
    fn number_batch(&self, catalog: &mut Catalog) {
        if self.cluster.role() == Role::Leader {
            catalog.begin_batch();
        }
    }

    /// A stale replica's attempt to reload from the store; on success it serves the store's
    /// state (and leads, if the lock became its own meanwhile).
    fn reload(&mut self, catalog: &mut Catalog, now: Duration, fx: &mut Effects) {
        let Ok(snapshot) = self.store.load() else {
            return;
        };
        // The store's index: the indexes taken by the batch that failed were never answered.
        let index = snapshot.index;
        self.replace(catalog, snapshot, index, now);
        self.stale = false;
        self.committed = catalog.index();
        tracing::warn!(
            index = catalog.index(),
            "the store answers again: replica reloaded"
        );
        // The lock may have stayed this server's through a short outage (no change of holder
        // to say so), or become its own meanwhile.
        if std::mem::take(&mut self.promote_after_reload) || self.cluster.holds_lock() {
            self.promote(catalog, now, fx);
        }
    }

    /// Ticks when a deadline has come (the batch may have added one already due), or when
    /// nothing was due for `SLOT_GC` (to forget lock-delays that passed). A tick with nothing
    /// due changes nothing and takes no index.
    fn tick_if_due(&mut self, catalog: &mut Catalog, now: Duration, fx: &mut Effects) {
        let due = catalog
            .next_deadline()
            .is_some_and(|deadline| deadline <= now);
        if due || now.saturating_sub(self.last_tick) >= SLOT_GC {
            catalog.tick(now, fx);
            self.last_tick = now;
        }
    }

    /// Makes the batch's writes durable in one commit; a batch without writes needs none,
    /// except on a leader whose index moved (followers take their indexes from its commits).
    /// Answers what was committed and how the store numbered it, if it numbers commits itself.
    fn commit(
        &mut self,
        catalog: &Catalog,
        fx: &Effects,
        size: usize,
    ) -> Result<Option<(Vec<Mutation>, Numbering)>, StoreError> {
        if !self.cluster.writes() {
            // A follower's replica is written by the leader alone.
            return Ok(None);
        }
        let mutations: Vec<Mutation> = fx.writes.iter().map(|w| catalog.mutation(w)).collect();
        let leading = self.cluster.role() == Role::Leader;
        if mutations.is_empty() && !(leading && catalog.index() > self.committed) {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.store.commit(catalog.index(), &mutations);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(size as f64);
        Ok(result?.map(|numbering| (mutations, numbering)))
    }

    /// After a failed commit: reloads the catalog from the store, so nothing of the batch is
    /// kept, and republishes everything readers or the checker may hold.
    fn recover(
        &self,
        catalog: &mut Catalog,
        now: Duration,
        commit: StoreError,
    ) -> Result<(), WriterFailed> {
        tracing::error!(error = %commit, "commit failed; reloading the catalog from the store");
        let snapshot = self.store.load().map_err(|reload| WriterFailed::Reload {
            commit: Box::new(commit),
            reload: Box::new(reload),
        })?;
        // Heartbeats and probe results take indexes without a commit, so readers may have seen
        // indexes above the store's: resume above everything this catalog handed out.
        let index = snapshot.index.max(catalog.index());
        self.replace(catalog, snapshot, index, now);
        Ok(())
    }

    /// Replaces the catalog with `snapshot` resumed at `index`, and republishes everything
    /// readers or the checker may hold.
    fn replace(&self, catalog: &mut Catalog, snapshot: Snapshot, index: u64, now: Duration) {
        // Every check the checker may be probing, before and after the reload.
        let mut checks: BTreeSet<String> = catalog.checks().map(|c| c.id().to_owned()).collect();
        *catalog = restored(snapshot, index, now, self.cluster.role() != Role::Alone);
        checks.extend(catalog.checks().map(|c| c.id().to_owned()));
        self.publisher.republish_all(catalog, checks);
    }

    fn gc_slots_if_due(&mut self) {
        let now = self.clock.elapsed();
        if now.saturating_sub(self.last_gc) >= SLOT_GC {
            self.last_gc = now;
            self.publisher.drop_idle_slots();
        }
    }
}

/// A catalog rebuilt from `snapshot`, every index resumed at `index` (at least), its timers
/// started at `now`; `shared`: the store is shared, so status changes must be written, and
/// each TTL check's expiry belongs to the server that owns it (see `ttl.rs`), not to the
/// leader's ticks.
pub fn restored(snapshot: Snapshot, index: u64, now: Duration, shared: bool) -> Catalog {
    let mut catalog = Catalog::restore(
        index,
        snapshot.instances,
        snapshot.checks,
        snapshot.kv,
        snapshot.config_entries,
        now,
    );
    catalog.set_persist_status(shared);
    catalog.set_ttl_expiry(!shared, now);
    catalog
}

/// The batch is durable and published: every request gets its own answer.
fn answer(pending: Vec<Pending>) {
    for (reply, result) in pending {
        let _ = reply.send(result);
    }
}

/// The batch was not kept: every request in it fails.
fn fail(pending: Vec<Pending>) {
    for (reply, _) in pending {
        let _ = reply.send(Err(WriteError::Storage));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::metrics::Metrics;
    use crate::queue::Queued;
    use trellis_etcd::Feed;
    use trellis_store::MemoryStore;

    /// A leader applies a write, then, in the same batch, the feed says the lock is another
    /// server's (its lease ran out): the write was never committed, so it is answered
    /// `NotLeader` and nobody can read it.
    #[test]
    fn a_leader_that_loses_the_lock_within_a_batch_acknowledges_none_of_it() {
        let mut first = Catalog::new();
        first.set_persist_status(true);
        let catalog = Arc::new(SharedCatalog::new(first));
        let cluster = Arc::new(Cluster::new(Role::Leader));
        let (checks, _checks) = tokio::sync::mpsc::unbounded_channel();
        let publisher = Arc::new(Publisher::new(&catalog.read().unwrap(), checks, None));
        let (queue, commands) = std::sync::mpsc::sync_channel(4);
        let (reply, answer) = oneshot::channel();
        let put = Command::KvPut {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
            cas: None,
        };
        queue
            .send(Queued::Command(Submission {
                command: put,
                reply,
            }))
            .unwrap();
        let lost = Feed::Holder {
            holder: Some("server-b".into()),
            ours: false,
        };
        queue.send(Queued::Feed(lost)).unwrap();
        drop(queue);
        let writer = Writer::new(
            Arc::clone(&catalog),
            Box::new(MemoryStore::new()),
            commands,
            Arc::clone(&cluster),
            publisher,
            Metrics::new().store.clone(),
            Instant::now(),
        );
        writer.run().unwrap();
        assert!(matches!(
            answer.blocking_recv().unwrap(),
            Err(WriteError::NotLeader)
        ));
        assert!(catalog.read().unwrap().kv_get("k").is_none());
        assert_eq!(
            cluster.role(),
            Role::Follower {
                leader: Some(Holder::parse("server-b"))
            }
        );
    }
}
