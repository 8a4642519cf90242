//! The coordinator's state machine: requests, participants' answers and timer ticks in;
//! records to make durable and messages to send out, collected in [`Effects`].

use crate::error::CoordinatorError;
use crate::model::{
    AbortCause, Branch, BranchState, Millis, Phase, Response, Target, Txn, TxnState,
};
use crate::timers::{Timer, Timers};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use trellis_resilience::{Backoff, Jitter};

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time from begin to decision when the caller gives none.
    pub default_timeout_ms: u64,
    /// Longest timeout a caller may ask for (longer ones are cut to it).
    pub max_timeout_ms: u64,
    pub max_branches: usize,
    /// Transactions not yet done (open, preparing, or in phase 2) beyond which begin is refused.
    pub max_active: usize,
    /// Finished transactions kept (in memory and in the log) for reads; the oldest go first.
    pub retained_done: usize,
    /// Delay before sending a phase message again after a failure.
    pub retry: Backoff,
    /// Most timers [`Engine::tick`] handles per call; the rest stay due.
    pub tick_budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_timeout_ms: 10_000,
            max_timeout_ms: 600_000,
            max_branches: 64,
            max_active: 100_000,
            retained_done: 10_000,
            retry: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_secs(5),
                jitter: Jitter::Equal,
            },
            tick_budget: 16_384,
        }
    }
}

/// A phase message to send to a branch's participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub gid: Arc<str>,
    pub branch: String,
    pub phase: Phase,
    pub target: Target,
    pub payload: Arc<str>,
    /// 1 for the first message of this phase.
    pub attempt: u32,
}

/// What the calls since the last [`Engine::take_effects`] did. The runtime writes `persist`
/// durably (one group commit), and only then sends `sends` and answers waiters.
#[derive(Debug, Default)]
pub struct Effects {
    /// Transactions whose log record must be written (or deleted, when the engine no longer
    /// has them).
    pub persist: BTreeSet<Arc<str>>,
    /// Phase messages to send once `persist` is durable.
    pub sends: Vec<Message>,
    /// Transactions whose visible state changed (to wake readers).
    pub changed: BTreeSet<Arc<str>>,
    /// Transactions decided (commit or abort) and finished (every branch acknowledged), for
    /// metrics; a transaction may appear in both.
    pub decided: Vec<Arc<str>>,
    pub finished: Vec<Arc<str>>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty() && self.sends.is_empty() && self.changed.is_empty()
    }
}

/// Counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub begun: u64,
    pub committed: u64,
    pub aborted: u64,
    pub prepare_retries: u64,
    pub phase2_retries: u64,
}

/// The coordinator: every transaction not yet forgotten, its timers, and the index.
pub struct Engine {
    config: Config,
    txns: HashMap<Arc<str>, Txn>,
    timers: Timers,
    /// Finished transactions, oldest first, for retention.
    done: VecDeque<Arc<str>>,
    /// Branches (transaction, index) with a message on its way: no second one is sent until it
    /// is answered. Memory only: after a restart nothing is on its way.
    in_flight: HashSet<(Arc<str>, usize)>,
    index: u64,
    rng: StdRng,
    stats: Stats,
    effects: Effects,
}

impl Engine {
    /// An empty engine; `seed` drives the retry jitter (fixed in tests).
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            config,
            txns: HashMap::new(),
            timers: Timers::default(),
            done: VecDeque::new(),
            in_flight: HashSet::new(),
            index: 0,
            rng: StdRng::seed_from_u64(seed),
            stats: Stats::default(),
            effects: Effects::default(),
        }
    }

    /// Takes back the decision log after a restart and re-drives what was unfinished: an
    /// undecided transaction aborts (presumed abort; its branches may have been prepared, so
    /// every one is told), a decided one resends phase 2 to each branch that had not
    /// acknowledged it. `index` is the last index the log recorded (records alone may not hold
    /// it: the transaction that last changed may have been forgotten since).
    pub fn restore(&mut self, records: Vec<Txn>, index: u64, now: Millis) {
        self.index = self.index.max(index);
        let mut records = records;
        records.sort_by_key(|txn| (txn.finished_at, txn.modify_index));
        for txn in records {
            self.index = self.index.max(txn.modify_index);
            let gid: Arc<str> = Arc::from(txn.gid.as_str());
            let state = txn.state;
            self.txns.insert(Arc::clone(&gid), txn);
            match state {
                TxnState::Committed | TxnState::Aborted => self.done.push_back(gid),
                TxnState::Open | TxnState::Preparing => {
                    self.touch(&gid);
                    let cause = AbortCause {
                        branch: None,
                        reason: "the coordinator restarted before a decision".into(),
                    };
                    self.decide_abort(&gid, cause, true, now);
                }
                TxnState::Committing | TxnState::Aborting => {
                    self.touch(&gid);
                    self.send_pending(&gid);
                    self.finish_if_acknowledged(&gid, now);
                }
            }
        }
        self.forget_beyond_retention();
    }

    /// Begins transaction `gid`; beginning one that exists changes nothing (idempotent).
    pub fn begin(
        &mut self,
        gid: &str,
        timeout_ms: Option<u64>,
        now: Millis,
    ) -> Result<&Txn, CoordinatorError> {
        if !self.txns.contains_key(gid) {
            let active = self.active();
            if active >= self.config.max_active {
                return Err(CoordinatorError::Overloaded(active));
            }
            let timeout_ms = timeout_ms
                .unwrap_or(self.config.default_timeout_ms)
                .min(self.config.max_timeout_ms);
            let index = self.next_index();
            let gid: Arc<str> = Arc::from(gid);
            let txn = Txn {
                gid: gid.to_string(),
                state: TxnState::Open,
                branches: Vec::new(),
                timeout_ms,
                created_at: now,
                prepare_started_at: None,
                decided_at: None,
                finished_at: None,
                cause: None,
                create_index: index,
                modify_index: index,
                trace_id: None,
            };
            self.timers
                .add(txn.deadline(), Timer::Timeout(Arc::clone(&gid)));
            self.txns.insert(Arc::clone(&gid), txn);
            self.stats.begun += 1;
            self.effects.persist.insert(Arc::clone(&gid));
            self.effects.changed.insert(gid);
        }
        self.txns
            .get(gid)
            .ok_or_else(|| CoordinatorError::UnknownTransaction(gid.to_string()))
    }

    /// Records the trace transaction `gid` belongs to, if it has none yet (the first traced
    /// request wins; the trace ID is written with the transaction, so it survives a restart).
    pub fn set_trace_id(&mut self, gid: &str, trace_id: &str) {
        let Some(key) = self.txns.get_key_value(gid).map(|(key, _)| Arc::clone(key)) else {
            return;
        };
        let Some(txn) = self.txns.get_mut(gid).filter(|txn| txn.trace_id.is_none()) else {
            return;
        };
        txn.trace_id = Some(trace_id.to_owned());
        self.effects.persist.insert(Arc::clone(&key));
        self.effects.changed.insert(key);
    }

    /// Adds a branch to an open transaction. Adding the same branch again (same ID, participant
    /// and payload) changes nothing, whatever the transaction's state.
    pub fn add_branch(
        &mut self,
        gid: &str,
        id: &str,
        target: Target,
        payload: Arc<str>,
    ) -> Result<(), CoordinatorError> {
        let max = self.config.max_branches;
        let txn = self.txn_mut(gid)?;
        if let Some(existing) = txn.branch(id) {
            return if existing.target == target && existing.payload == payload {
                Ok(())
            } else {
                Err(CoordinatorError::BranchConflict {
                    gid: gid.to_string(),
                    branch: id.to_string(),
                })
            };
        }
        if txn.state != TxnState::Open {
            return Err(CoordinatorError::NotOpen {
                gid: gid.to_string(),
                state: txn.state.as_str(),
            });
        }
        if txn.branches.len() >= max {
            return Err(CoordinatorError::TooManyBranches {
                gid: gid.to_string(),
                max,
            });
        }
        txn.branches.push(Branch {
            id: id.to_string(),
            target,
            payload,
            state: BranchState::Registered,
            attempts: 0,
            last_error: None,
        });
        let gid = self.touch(gid);
        self.effects.persist.insert(gid);
        Ok(())
    }

    /// Requests the commit: phase 1 starts (prepare to every branch). A transaction without
    /// branches commits at once. Asking again, or after the decision, changes nothing; the
    /// state returned says where the transaction is.
    pub fn commit(&mut self, gid: &str, now: Millis) -> Result<TxnState, CoordinatorError> {
        let txn = self.txn_mut(gid)?;
        if txn.state != TxnState::Open {
            return Ok(txn.state);
        }
        txn.prepare_started_at = Some(now);
        if txn.branches.is_empty() {
            let gid = self.touch(gid);
            self.decide_commit(&gid, now);
        } else {
            txn.state = TxnState::Preparing;
            for branch in &mut txn.branches {
                branch.state = BranchState::Preparing;
            }
            let gid = self.touch(gid);
            self.send_pending(&gid);
        }
        Ok(self
            .txns
            .get(gid)
            .map_or(TxnState::Aborted, |txn| txn.state))
    }

    /// Aborts a transaction that is not decided yet; aborting an aborted one changes nothing.
    pub fn abort(&mut self, gid: &str, now: Millis) -> Result<(), CoordinatorError> {
        let txn = self.txn_mut(gid)?;
        match txn.state {
            TxnState::Open | TxnState::Preparing => {
                let gid = self.touch(gid);
                let cause = AbortCause {
                    branch: None,
                    reason: "aborted by request".into(),
                };
                self.decide_abort(&gid, cause, false, now);
                Ok(())
            }
            TxnState::Aborting | TxnState::Aborted => Ok(()),
            TxnState::Committing | TxnState::Committed => {
                Err(CoordinatorError::AlreadyCommitted(gid.to_string()))
            }
        }
    }

    /// A participant's answer to a phase message. Answers for a phase the branch is no longer
    /// in (late, duplicated, or for a forgotten transaction) are ignored.
    pub fn on_response(
        &mut self,
        gid: &str,
        branch_id: &str,
        phase: Phase,
        response: Response,
        now: Millis,
    ) {
        let Some(txn) = self.txns.get_mut(gid) else {
            return;
        };
        let Some(at) = txn.branches.iter().position(|b| b.id == branch_id) else {
            return;
        };
        if txn.branches[at].state.pending_phase() != Some(phase) {
            return;
        }
        let gid = self.touch(gid);
        self.in_flight.remove(&(Arc::clone(&gid), at));
        match (phase, response) {
            (Phase::Prepare, Response::Ok) => {
                self.set_branch(&gid, at, BranchState::Prepared, None);
                let all_prepared = self.txns.get(&gid).is_some_and(|txn| {
                    txn.branches
                        .iter()
                        .all(|b| b.state == BranchState::Prepared)
                });
                if all_prepared {
                    self.decide_commit(&gid, now);
                }
            }
            (Phase::Prepare, Response::Refused(reason)) => {
                self.set_branch(&gid, at, BranchState::Refused, Some(reason.clone()));
                let cause = AbortCause {
                    branch: Some(branch_id.to_string()),
                    reason,
                };
                self.decide_abort(&gid, cause, true, now);
            }
            (Phase::Commit, Response::Ok) => {
                self.set_branch(&gid, at, BranchState::Committed, None);
                self.finish_if_acknowledged(&gid, now);
            }
            (Phase::Abort, Response::Ok) => {
                self.set_branch(&gid, at, BranchState::Aborted, None);
                self.finish_if_acknowledged(&gid, now);
            }
            (_, Response::Refused(error) | Response::Failed(error)) => {
                self.retry_later(&gid, at, error, now);
            }
        }
    }

    /// Fires the timers due at `now`: timeouts abort undecided transactions, retries resend.
    pub fn tick(&mut self, now: Millis) {
        for _ in 0..self.config.tick_budget {
            let Some(timer) = self.timers.pop_due(now) else {
                return;
            };
            match timer {
                Timer::Timeout(gid) => self.time_out(&gid, now),
                Timer::Retry(gid, at) => self.resend(&gid, at),
            }
        }
    }

    /// When [`Engine::tick`] has something to do next (already past if work was left).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    pub fn get(&self, gid: &str) -> Option<&Txn> {
        self.txns.get(gid)
    }

    /// Every transaction the engine holds, in no particular order.
    pub fn transactions(&self) -> impl Iterator<Item = &Txn> {
        self.txns.values()
    }

    /// The index of the last change (for blocking reads).
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Transactions not yet done.
    pub fn active(&self) -> usize {
        self.txns.len() - self.done.len()
    }

    /// Branches prepared but not yet told the outcome: the participants holding resources for
    /// the coordinator.
    pub fn in_doubt_branches(&self) -> usize {
        self.txns
            .values()
            .filter(|txn| !txn.state.is_done())
            .flat_map(|txn| &txn.branches)
            .filter(|branch| {
                matches!(
                    branch.state,
                    BranchState::Prepared | BranchState::Committing | BranchState::Aborting
                )
            })
            .count()
    }

    /// Timers pending (one per undecided transaction and per scheduled retry).
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    fn txn_mut(&mut self, gid: &str) -> Result<&mut Txn, CoordinatorError> {
        self.txns
            .get_mut(gid)
            .ok_or_else(|| CoordinatorError::UnknownTransaction(gid.to_string()))
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Marks `gid` changed at a new index and returns its shared key.
    fn touch(&mut self, gid: &str) -> Arc<str> {
        let index = self.next_index();
        let Some(txn) = self.txns.get_mut(gid) else {
            return Arc::from(gid);
        };
        txn.modify_index = index;
        let key = self
            .txns
            .get_key_value(gid)
            .map_or_else(|| Arc::from(gid), |(key, _)| Arc::clone(key));
        self.effects.changed.insert(Arc::clone(&key));
        key
    }

    fn set_branch(&mut self, gid: &str, at: usize, state: BranchState, error: Option<String>) {
        if let Some(branch) = self
            .txns
            .get_mut(gid)
            .and_then(|txn| txn.branches.get_mut(at))
        {
            branch.state = state;
            branch.last_error = error;
        }
    }

    /// Sends every branch of `gid` that awaits an answer and has no message on its way.
    fn send_pending(&mut self, gid: &Arc<str>) {
        let count = self.txns.get(gid).map_or(0, |txn| txn.branches.len());
        for at in 0..count {
            self.send(gid, at);
        }
    }

    fn send(&mut self, gid: &Arc<str>, at: usize) {
        let Some(branch) = self
            .txns
            .get_mut(gid)
            .and_then(|txn| txn.branches.get_mut(at))
        else {
            return;
        };
        let Some(phase) = branch.state.pending_phase() else {
            return;
        };
        if !self.in_flight.insert((Arc::clone(gid), at)) {
            return;
        }
        branch.attempts += 1;
        self.effects.sends.push(Message {
            gid: Arc::clone(gid),
            branch: branch.id.clone(),
            phase,
            target: branch.target.clone(),
            payload: Arc::clone(&branch.payload),
            attempt: branch.attempts,
        });
    }

    fn retry_later(&mut self, gid: &Arc<str>, at: usize, error: String, now: Millis) {
        let Some(branch) = self
            .txns
            .get_mut(gid)
            .and_then(|txn| txn.branches.get_mut(at))
        else {
            return;
        };
        branch.last_error = Some(error);
        let delay = self.config.retry.delay(branch.attempts, &mut self.rng);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
        self.timers.add(
            now.saturating_add(delay_ms),
            Timer::Retry(Arc::clone(gid), at),
        );
    }

    fn resend(&mut self, gid: &Arc<str>, at: usize) {
        if self.in_flight.contains(&(Arc::clone(gid), at)) {
            return;
        }
        let phase = self
            .txns
            .get(gid)
            .and_then(|txn| txn.branches.get(at))
            .and_then(|branch| branch.state.pending_phase());
        match phase {
            None => return,
            Some(Phase::Prepare) => self.stats.prepare_retries += 1,
            Some(Phase::Commit | Phase::Abort) => self.stats.phase2_retries += 1,
        }
        self.send(gid, at);
    }

    fn time_out(&mut self, gid: &Arc<str>, now: Millis) {
        let Some(txn) = self.txns.get(gid) else {
            return;
        };
        if txn.state.is_decided() || txn.deadline() > now {
            return;
        }
        let before = if txn.state == TxnState::Open {
            "commit was requested"
        } else {
            "every branch voted"
        };
        let waiting = txn
            .branches
            .iter()
            .find(|b| b.state == BranchState::Preparing);
        let last_error = waiting
            .and_then(|b| b.last_error.as_deref())
            .map(|error| format!(" (its last error: {error})"))
            .unwrap_or_default();
        let cause = AbortCause {
            branch: waiting.map(|b| b.id.clone()),
            reason: format!(
                "timed out after {} ms before {before}{last_error}",
                txn.timeout_ms
            ),
        };
        self.touch(gid);
        self.decide_abort(gid, cause, false, now);
    }

    fn decide_commit(&mut self, gid: &Arc<str>, now: Millis) {
        let Some(txn) = self.txns.get_mut(gid) else {
            return;
        };
        let deadline = txn.deadline();
        txn.state = TxnState::Committing;
        txn.decided_at = Some(now);
        for branch in &mut txn.branches {
            branch.state = BranchState::Committing;
            branch.attempts = 0;
            branch.last_error = None;
        }
        self.stats.committed += 1;
        self.decided(gid, deadline, now);
    }

    /// Decides abort. `prepares_sent` says whether branches may hold a prepared state (phase 1
    /// started, or unknown after a restart): then each is sent an abort; otherwise none ever
    /// heard of the transaction and they are aborted at once.
    fn decide_abort(
        &mut self,
        gid: &Arc<str>,
        cause: AbortCause,
        prepares_sent: bool,
        now: Millis,
    ) {
        let Some(txn) = self.txns.get_mut(gid) else {
            return;
        };
        let deadline = txn.deadline();
        let prepares_sent = prepares_sent || txn.state == TxnState::Preparing;
        txn.state = TxnState::Aborting;
        txn.decided_at = Some(now);
        txn.cause = Some(cause);
        for (at, branch) in txn.branches.iter_mut().enumerate() {
            branch.attempts = 0;
            self.in_flight.remove(&(Arc::clone(gid), at));
            if prepares_sent {
                // A refused branch keeps its reason until the abort is acknowledged.
                if branch.state != BranchState::Refused {
                    branch.last_error = None;
                }
                branch.state = BranchState::Aborting;
            } else {
                branch.state = BranchState::Aborted;
            }
        }
        self.stats.aborted += 1;
        self.decided(gid, deadline, now);
    }

    /// After either decision: the timeout goes, the decision is to be made durable, phase 2
    /// starts (or the transaction finishes at once when no branch needs telling).
    fn decided(&mut self, gid: &Arc<str>, deadline: Millis, now: Millis) {
        self.timers
            .remove(deadline, Timer::Timeout(Arc::clone(gid)));
        self.effects.persist.insert(Arc::clone(gid));
        self.effects.decided.push(Arc::clone(gid));
        self.send_pending(gid);
        self.finish_if_acknowledged(gid, now);
    }

    /// Finishes a decided transaction once every branch acknowledged phase 2.
    fn finish_if_acknowledged(&mut self, gid: &Arc<str>, now: Millis) {
        let Some(txn) = self.txns.get_mut(gid) else {
            return;
        };
        let (last, done) = match txn.state {
            TxnState::Committing => (BranchState::Committed, TxnState::Committed),
            TxnState::Aborting => (BranchState::Aborted, TxnState::Aborted),
            _ => return,
        };
        if !txn.branches.iter().all(|branch| branch.state == last) {
            return;
        }
        txn.state = done;
        txn.finished_at = Some(now);
        self.effects.persist.insert(Arc::clone(gid));
        self.effects.finished.push(Arc::clone(gid));
        self.effects.changed.insert(Arc::clone(gid));
        self.done.push_back(Arc::clone(gid));
        self.forget_beyond_retention();
    }

    fn forget_beyond_retention(&mut self) {
        while self.done.len() > self.config.retained_done {
            let Some(gid) = self.done.pop_front() else {
                return;
            };
            self.txns.remove(&gid);
            self.effects.persist.insert(gid);
        }
    }
}
