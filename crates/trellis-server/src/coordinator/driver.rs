//! The coordinator's driver thread: owns the engine and the decision log, and loops — collect a
//! batch of inputs (requests, participants' answers; waiting at most until the engine's next
//! timer) → apply them → fire due timers → make the changed records durable in one commit →
//! publish them → answer requests → send phase messages. Messages and answers leave only after
//! the commit, which is the engine's one rule: nothing is sent or acknowledged before it is on
//! disk.

use super::participants::Participants;
use super::{
    Answer, CoordinatorMetrics, Input, MAX_OUTCOME_WAITERS, NewBranch, Published, Request,
    TraceContext, TxnError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use trellis_coordinator::{
    BranchState, Config, CoordinatorError, Effects, Engine, Millis, Stats, Txn,
};
use trellis_store::{DecisionLog, StoreError};

/// Most inputs applied per commit.
const MAX_BATCH: usize = 4_096;
/// Longest sleep with nothing due (so a stuck clock cannot stall timers for long).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often the gauges that count over every transaction are refreshed (counting is a scan).
const GAUGE_INTERVAL: Duration = Duration::from_millis(250);

/// The decision log failed and could not be read back: the coordinator stopped.
#[derive(Debug, thiserror::Error)]
#[error("the transaction log failed and could not be reloaded: {0}")]
pub struct DriverFailed(pub StoreError);

/// A request answered after the batch's commit.
struct Pending {
    gid: Arc<str>,
    await_outcome: bool,
    reply: oneshot::Sender<Answer>,
}

pub struct Driver {
    engine: Engine,
    config: Config,
    log: Box<dyn DecisionLog>,
    rx: Receiver<Input>,
    /// Where participants' answers come back (the same queue as requests).
    tx: Sender<Input>,
    queued: Arc<AtomicUsize>,
    published: Arc<Published>,
    participants: Participants,
    runtime: Handle,
    metrics: CoordinatorMetrics,
    /// Callers waiting for a transaction's outcome.
    waiters: HashMap<Arc<str>, Vec<oneshot::Sender<Answer>>>,
    waiting: usize,
    /// Counters already added to the metrics.
    reported: Stats,
    /// When the scanning gauges were last refreshed.
    gauges_at: Instant,
    /// The trace context of each unfinished transaction that was given one (memory only: after
    /// a restart the re-driven messages start traces of their own).
    traces: HashMap<Arc<str>, TraceContext>,
}

/// The parts a driver is built from.
pub struct DriverParts {
    pub log: Box<dyn DecisionLog>,
    pub participants: Participants,
    pub runtime: Handle,
    pub metrics: CoordinatorMetrics,
    pub config: Config,
}

impl Driver {
    /// Restores the engine from the log (re-driving what was unfinished) and returns the driver
    /// with the handle the API uses.
    pub fn start(parts: DriverParts) -> Result<(Self, super::Coordinator), StoreError> {
        let DriverParts {
            log,
            participants,
            runtime,
            metrics,
            config,
        } = parts;
        let (tx, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let published = Arc::new(Published::new());
        let mut driver = Self {
            engine: Engine::new(config.clone(), rand::random()),
            config,
            log,
            rx,
            tx: tx.clone(),
            queued: Arc::clone(&queued),
            published: Arc::clone(&published),
            participants,
            runtime,
            metrics,
            waiters: HashMap::new(),
            waiting: 0,
            reported: Stats::default(),
            gauges_at: Instant::now(),
            traces: HashMap::new(),
        };
        driver.reload()?;
        let restored = driver.engine.transactions().count();
        let unfinished = driver.engine.active();
        if restored > 0 {
            tracing::info!(restored, unfinished, "transactions restored");
        }
        // The re-drive's aborts and phase-2 messages leave through the first loop's commit.
        Ok((driver, super::Coordinator::new(tx, queued, published)))
    }

    /// Runs until [`super::Coordinator::stop`] (the driver keeps a sender of its own for
    /// participants' answers, so dropped handles do not stop it), or until the log fails and
    /// cannot be read back.
    pub fn run(mut self) -> Result<(), DriverFailed> {
        loop {
            let Some(batch) = self.collect() else {
                return Ok(());
            };
            let now = now_ms();
            let mut pending = Vec::new();
            for input in batch {
                match input {
                    Input::Request {
                        request,
                        await_outcome,
                        reply,
                        trace,
                    } => {
                        match self.apply(request, now) {
                            Ok(gid) => {
                                let unfinished = self
                                    .engine
                                    .get(&gid)
                                    .is_some_and(|txn| !txn.state.is_done());
                                if let Some(trace_id) =
                                    trace.as_ref().and_then(TraceContext::trace_id)
                                {
                                    self.engine.set_trace_id(&gid, &trace_id);
                                }
                                if let (Some(trace), true) = (trace, unfinished) {
                                    self.traces.insert(Arc::clone(&gid), trace);
                                }
                                pending.push(Pending {
                                    gid,
                                    await_outcome,
                                    reply,
                                })
                            }
                            // Nothing changed: no need to wait for the commit.
                            Err(error) => {
                                let _ = reply.send(Err(TxnError::Rejected(error)));
                            }
                        }
                    }
                    Input::Response {
                        gid,
                        branch,
                        phase,
                        response,
                    } => self.engine.on_response(&gid, &branch, phase, response, now),
                    Input::Stop => return Ok(()),
                }
            }
            self.engine.tick(now);
            let fx = self.engine.take_effects();
            match self.commit(&fx) {
                Ok(()) => self.after_commit(fx, pending),
                Err(error) => {
                    tracing::error!(%error, "the transaction log could not be written");
                    let waiters = self.waiters.drain().flat_map(|(_, replies)| replies);
                    for reply in pending.into_iter().map(|p| p.reply).chain(waiters) {
                        let _ = reply.send(Err(TxnError::Storage));
                    }
                    self.waiting = 0;
                    // What is durable is the truth: start again from it (the re-drive
                    // resends what was lost with this batch's messages).
                    self.engine = Engine::new(self.config.clone(), rand::random());
                    self.reload().map_err(DriverFailed)?;
                }
            }
        }
    }

    /// Waits for the first input (at most until the next timer), then takes what else is queued.
    fn collect(&self) -> Option<Vec<Input>> {
        let now = now_ms();
        let sleep = self
            .engine
            .next_deadline()
            .map_or(MAX_SLEEP, |at| {
                Duration::from_millis(at.saturating_sub(now))
            })
            .min(MAX_SLEEP);
        let mut batch = Vec::new();
        match self.rx.recv_timeout(sleep) {
            Ok(input) => batch.push(self.received(input)),
            Err(RecvTimeoutError::Timeout) => return Some(batch),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(input) => batch.push(self.received(input)),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    fn received(&self, input: Input) -> Input {
        if matches!(input, Input::Request { .. }) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        input
    }

    /// Applies a request; the transaction it is about, or why it was refused (then nothing
    /// changed, except that a one-shot submit aborts the transaction it created).
    fn apply(&mut self, request: Request, now: Millis) -> Result<Arc<str>, CoordinatorError> {
        let gid = match request {
            Request::Begin {
                gid,
                timeout_ms,
                branches,
                commit,
            } => self
                .begin(&gid, timeout_ms, branches, commit, now)
                .map(|()| gid),
            Request::AddBranch { gid, branch } => self
                .engine
                .add_branch(&gid, &branch.id, branch.target, branch.payload)
                .map(|()| gid),
            Request::Commit { gid } => self.engine.commit(&gid, now).map(|_| gid),
            Request::Abort { gid } => self.engine.abort(&gid, now).map(|()| gid),
        }?;
        Ok(Arc::from(gid))
    }

    /// The one-shot submit (or a plain begin): begin, add every branch, maybe commit. If a
    /// branch is refused, a transaction this request created is aborted, so a failed submit
    /// leaves nothing open.
    fn begin(
        &mut self,
        gid: &str,
        timeout_ms: Option<u64>,
        branches: Vec<NewBranch>,
        commit: bool,
        now: Millis,
    ) -> Result<(), CoordinatorError> {
        let created = self.engine.get(gid).is_none();
        self.engine.begin(gid, timeout_ms, now)?;
        for branch in branches {
            if let Err(error) =
                self.engine
                    .add_branch(gid, &branch.id, branch.target, branch.payload)
            {
                if created {
                    let _ = self.engine.abort(gid, now);
                }
                return Err(error);
            }
        }
        if commit {
            self.engine.commit(gid, now)?;
        }
        Ok(())
    }

    /// Writes the changed records (and deletes the forgotten ones) in one durable commit.
    fn commit(&mut self, fx: &Effects) -> Result<(), StoreError> {
        if fx.persist.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut puts: Vec<&Txn> = Vec::new();
        let mut deletes: Vec<&str> = Vec::new();
        for gid in &fx.persist {
            match self.engine.get(gid) {
                Some(txn) => puts.push(txn),
                None => deletes.push(gid),
            }
        }
        self.log.commit(self.engine.index(), &puts, &deletes)?;
        self.metrics
            .log_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.log_batch_size.observe(fx.persist.len() as f64);
        Ok(())
    }

    /// Publishes what is now durable, answers, and sends the phase messages.
    fn after_commit(&mut self, mut fx: Effects, pending: Vec<Pending>) {
        self.publish(&fx);
        self.observe(&fx);
        for p in pending {
            if p.await_outcome && !self.outcome_known(&p.gid) {
                if self.waiting >= MAX_OUTCOME_WAITERS {
                    let _ = p.reply.send(Err(TxnError::Busy));
                    continue;
                }
                self.waiting += 1;
                self.waiters.entry(p.gid).or_default().push(p.reply);
            } else {
                let _ = p.reply.send(self.answer(&p.gid));
            }
        }
        for gid in &fx.changed {
            if self.waiters.contains_key(gid) && self.outcome_known(gid) {
                let answer = self.answer(gid);
                for reply in self.waiters.remove(gid).unwrap_or_default() {
                    self.waiting -= 1;
                    let _ = reply.send(answer.clone());
                }
            }
        }
        self.forget_finished_traces(&fx);
        for message in std::mem::take(&mut fx.sends) {
            let participants = self.participants.clone();
            let tx = self.tx.clone();
            let trace = self.traces.get(&message.gid).cloned();
            self.runtime.spawn(async move {
                let response = participants.call(&message, trace.as_ref()).await;
                // The driver may have stopped; the answer then no longer matters.
                let _ = tx.send(Input::Response {
                    gid: message.gid,
                    branch: message.branch,
                    phase: message.phase,
                    response,
                });
            });
        }
    }

    /// Forgets the trace context of transactions that finished (no message will follow).
    fn forget_finished_traces(&mut self, fx: &Effects) {
        if self.traces.is_empty() {
            return;
        }
        for gid in &fx.changed {
            if self.engine.get(gid).is_none_or(|txn| txn.state.is_done()) {
                self.traces.remove(gid);
            }
        }
    }

    fn publish(&mut self, fx: &Effects) {
        if fx.changed.is_empty() && fx.persist.is_empty() {
            return;
        }
        {
            let mut txns = self.published.txns.write();
            // A transaction written is also changed, except one forgotten (deleted).
            for gid in fx.changed.union(&fx.persist) {
                match self.engine.get(gid) {
                    Some(txn) => {
                        txns.insert(Arc::clone(gid), Arc::new(txn.clone()));
                    }
                    None => {
                        txns.remove(gid);
                    }
                }
            }
        }
        let index = self.engine.index();
        self.published.index.send_if_modified(|current| {
            let changed = *current != index;
            *current = index;
            changed
        });
    }

    /// Every branch acknowledged phase 2, or a phase-2 message already had to be sent again
    /// (a participant is down: the outcome is fixed, but waiting for it could take long).
    fn outcome_known(&self, gid: &str) -> bool {
        self.engine.get(gid).is_none_or(|txn| {
            txn.state.is_done()
                || (txn.state.is_decided()
                    && txn.branches.iter().any(|b| {
                        matches!(b.state, BranchState::Committing | BranchState::Aborting)
                            && b.attempts >= 2
                    }))
        })
    }

    fn answer(&self, gid: &str) -> Answer {
        self.published
            .txns
            .read()
            .get(gid)
            .cloned()
            .ok_or_else(|| TxnError::Rejected(CoordinatorError::UnknownTransaction(gid.into())))
    }

    fn observe(&mut self, fx: &Effects) {
        let stats = self.engine.stats();
        let m = &self.metrics;
        m.begun.inc_by(stats.begun - self.reported.begun);
        m.committed
            .inc_by(stats.committed - self.reported.committed);
        m.aborted.inc_by(stats.aborted - self.reported.aborted);
        m.prepare_retries
            .inc_by(stats.prepare_retries - self.reported.prepare_retries);
        m.phase2_retries
            .inc_by(stats.phase2_retries - self.reported.phase2_retries);
        self.reported = stats;
        let seconds = |from: Option<Millis>, to: Option<Millis>| match (from, to) {
            (Some(from), Some(to)) => Some(to.saturating_sub(from) as f64 / 1000.0),
            _ => None,
        };
        for gid in &fx.decided {
            if let Some(s) = self
                .engine
                .get(gid)
                .and_then(|t| seconds(t.prepare_started_at, t.decided_at))
            {
                m.prepare_seconds.observe(s);
            }
        }
        for gid in &fx.finished {
            if let Some(s) = self
                .engine
                .get(gid)
                .and_then(|t| seconds(t.decided_at, t.finished_at))
            {
                m.phase2_seconds.observe(s);
            }
        }
        m.active.set(self.engine.active() as i64);
        if self.gauges_at.elapsed() >= GAUGE_INTERVAL {
            self.gauges_at = Instant::now();
            m.in_doubt.set(self.engine.in_doubt_branches() as i64);
        }
    }

    /// Restores the engine from the log and publishes everything it holds.
    pub(crate) fn reload(&mut self) -> Result<(), StoreError> {
        let snapshot = self.log.load()?;
        self.engine
            .restore(snapshot.transactions, snapshot.index, now_ms());
        let mut txns = self.published.txns.write();
        txns.clear();
        for txn in self.engine.transactions() {
            txns.insert(Arc::from(txn.gid.as_str()), Arc::new(txn.clone()));
        }
        drop(txns);
        let _ = self.published.index.send(self.engine.index());
        Ok(())
    }
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
