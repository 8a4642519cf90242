//! The single writer: drains queued commands in batches, applies them to the catalog, makes the
//! batch durable with one commit (group commit), then publishes and answers every request; if
//! the commit fails, it answers every request with an error and reloads the catalog. Between
//! batches it sleeps on the queue until the catalog's next deadline (a TTL running out, the
//! reaper, a session's TTL) or the next slot GC, whichever comes first, so time-driven changes
//! happen within a few milliseconds of their deadline instead of at a fixed tick.

use crate::metrics::StoreMetrics;
use crate::publisher::Publisher;
use crate::queue::{Submission, WriteError};
use crate::shared::SharedCatalog;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use trellis_catalog::{Catalog, Effects, Reply};
use trellis_store::{Mutation, Store, StoreError};

/// Most commands applied in one batch; bounds the latency a batch adds to its first request.
const MAX_BATCH: usize = 4096;
/// How often empty, unwatched service slots are dropped; also the longest time between two
/// ticks (a tick with nothing due only forgets lock-delays that passed).
const SLOT_GC: Duration = Duration::from_secs(10);

/// Why the writer stopped for good.
#[derive(Debug, thiserror::Error)]
#[error(
    "a commit failed ({commit}) and the store could not be reloaded ({reload}); \
     stopped so that no write that was not made durable is served"
)]
pub struct WriterFailed {
    pub commit: Box<StoreError>,
    pub reload: Box<StoreError>,
}

/// An applied command's answer, sent once the batch is settled.
type Pending = (
    oneshot::Sender<Result<Reply, WriteError>>,
    Result<Reply, WriteError>,
);

pub struct Writer {
    catalog: Arc<SharedCatalog>,
    store: Box<dyn Store>,
    queue: Receiver<Submission>,
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
        queue: Receiver<Submission>,
        publisher: Arc<Publisher>,
        metrics: StoreMetrics,
        clock: Instant,
    ) -> Self {
        Self {
            catalog,
            store,
            queue,
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
    fn collect_batch(&self) -> Option<Vec<Submission>> {
        let idle_due = self.last_gc.min(self.last_tick) + SLOT_GC;
        let wake = self
            .next_deadline
            .map_or(idle_due, |deadline| deadline.min(idle_due));
        let wait = wake.saturating_sub(self.clock.elapsed());
        let mut batch = Vec::new();
        match self.queue.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        batch.extend(self.queue.try_iter().take(MAX_BATCH - batch.len()));
        Some(batch)
    }

    /// Applies, ticks, commits, then publishes and answers — or answers with an error and
    /// recovers. The catalog stays write-locked until the outcome is published.
    fn process(&mut self, batch: Vec<Submission>) -> Result<(), WriterFailed> {
        let now = self.clock.elapsed();
        let catalog = Arc::clone(&self.catalog);
        let mut guard = catalog.write();
        let Some(catalog) = guard.as_mut() else {
            // Retired by an earlier failure, after which the writer does not run again.
            return Ok(());
        };
        let size = batch.len();
        let mut fx = Effects::default();
        let pending = apply(catalog, batch, now, &mut fx);
        self.tick_if_due(catalog, now, &mut fx);
        self.next_deadline = catalog.next_deadline();
        match self.commit(catalog, &fx, size) {
            Ok(()) => {
                self.publisher.publish(catalog, &fx);
                drop(guard);
                answer(pending);
                Ok(())
            }
            Err(commit) => {
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

    /// Makes the batch's writes durable in one commit; a batch without writes needs none.
    fn commit(&self, catalog: &Catalog, fx: &Effects, size: usize) -> Result<(), StoreError> {
        let mutations: Vec<Mutation> = fx.writes.iter().map(|w| catalog.mutation(w)).collect();
        if mutations.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.store.commit(catalog.index(), &mutations);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(size as f64);
        result
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
        // Every check the checker may be probing, before and after the reload.
        let mut checks: BTreeSet<String> = catalog.checks().map(|c| c.id().to_owned()).collect();
        let snapshot = self.store.load().map_err(|reload| WriterFailed {
            commit: Box::new(commit),
            reload: Box::new(reload),
        })?;
        // Heartbeats and probe results take indexes without a commit, so readers may have seen
        // indexes above the store's: resume above everything this catalog handed out.
        let handed_out = catalog.index();
        *catalog = Catalog::restore(
            snapshot.index.max(handed_out),
            snapshot.instances,
            snapshot.checks,
            snapshot.kv,
            snapshot.config_entries,
            now,
        );
        checks.extend(catalog.checks().map(|c| c.id().to_owned()));
        self.publisher.republish_all(catalog, checks);
        Ok(())
    }

    fn gc_slots_if_due(&mut self) {
        let now = self.clock.elapsed();
        if now.saturating_sub(self.last_gc) >= SLOT_GC {
            self.last_gc = now;
            self.publisher.drop_idle_slots();
        }
    }
}

/// Applies every command of the batch, keeping each answer until the batch is settled.
fn apply(
    catalog: &mut Catalog,
    batch: Vec<Submission>,
    now: Duration,
    fx: &mut Effects,
) -> Vec<Pending> {
    batch
        .into_iter()
        .map(|Submission { command, reply }| {
            let result = catalog
                .apply(command, now, fx)
                .map_err(WriteError::Rejected);
            (reply, result)
        })
        .collect()
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
