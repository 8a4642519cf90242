//! A catalog kept as a replica of a leader's: [`Catalog::replicate`] applies the mutations the
//! leader committed, as they are, leaving every derived structure as `apply` left it on the
//! leader and deciding nothing by itself; [`Catalog::rearm_timers`] restarts the timers when the
//! replica's server becomes the leader.
//!
//! Indexes follow the leader's (see `index.rs`): records keep theirs (among servers sharing
//! etcd, their keys' revisions), and what a commit changed (a service, the services list, the
//! KV store, the sessions and config tables) takes the commit's index. A leader sharing etcd
//! numbers each batch as one change ([`Catalog::begin_batch`]) and takes the commit's revision
//! for all of it ([`Catalog::renumber`]), so every index matches the leader's. A commit of
//! several changes at several indexes (a catalog not numbering by batch) may leave an index
//! ahead of the leader's, never behind, and never above the commit's: a reader sees at worst a
//! spurious wake-up, never an index going backwards. A record that came and went within one
//! commit still moves what its delete names (a tombstone, the sessions, config and services
//! indexes, a check's owner); only an instance that came and went leaves no name to touch, so a
//! name the replica already knows keeps its index there (nothing a reader of it sees changed).
//!
//! Lock-delays are kept in memory on every server, as Consul's servers each record them when
//! they apply a session's end: a replica starts the delay of each key a deleted session held
//! before the commit, from when it applies the commit (so one a client released explicitly in
//! the same commit as the session's end is delayed too, on the replica only). What the leader
//! keeps in memory only is not replicated: session renewals and TTL deadlines (see
//! [`Catalog::rearm_timers`]), and a probe's output when its status does not change (it takes no
//! index even with [`Catalog::set_persist_status`], or a timestamp in the output would wake every
//! watcher on each probe), so a replica shows the output of the check's last status change.

use super::{Catalog, MAX_LOCK_DELAY, touch_owner};
use crate::check::Check;
use crate::effects::Effects;
use crate::mutation::Mutation;
use crate::record::CheckRecord;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

impl Catalog {
    /// Applies the mutations a leader committed at `index` (its global index after that
    /// commit); `now` starts the timers of the checks and sessions they bring. A commit at or
    /// below [`Catalog::index`] was applied already (an echo of the watch) and changes nothing.
    ///
    /// The mutations of one commit may come in any order: the result is the same. A replica
    /// decides nothing: no session is invalidated because a check is critical or gone, nothing
    /// is reaped: the leader's own mutations (the session's delete, its locks released) are in
    /// the same commit. The lock-delays of the sessions deleted start from `now`. `fx` says what changed, for readers to be woken, and
    /// which checks' probing to start or stop; `fx.writes` stays empty (a replica writes
    /// nothing). A check's `transitions` are its net change over the commit, numbered with its
    /// `ModifyIndex` as on the leader.
    ///
    /// A replica must not be ticked: its check and session timers run only once its server
    /// leads, after [`Catalog::rearm_timers`].
    pub fn replicate(
        &mut self,
        index: u64,
        mutations: Vec<Mutation>,
        now: Duration,
        fx: &mut Effects,
    ) {
        if index <= self.index.get() {
            return;
        }
        self.index.advance_to(index);
        self.put_in_place(index, mutations, now, fx);
    }

    /// Puts `mutations` in place as a change numbered `index`, as they are (what
    /// [`Catalog::replicate`] does once it knows the commit is new).
    pub(super) fn put_in_place(
        &mut self,
        index: u64,
        mut mutations: Vec<Mutation>,
        now: Duration,
        fx: &mut Effects,
    ) {
        mutations.sort_by(|a, b| order(a).cmp(&order(b)));
        self.sessions.prune_lock_delays(now);
        let lock_delays = self.lock_delays_of_deleted_sessions(&mutations, now);
        // A check that moved to another instance comes as the old owner's delete and the new
        // owner's put: the put replaces it (and reports its status change, as on the leader).
        let put_checks: BTreeSet<String> = mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::PutCheck(record) => record.definition.id.clone(),
                _ => None,
            })
            .collect();
        for mutation in mutations {
            match mutation {
                Mutation::DeleteCheck { id, owner } => {
                    let owned = self
                        .checks
                        .get(&id)
                        .is_some_and(|c| c.service_id() == owner.as_deref());
                    if put_checks.contains(&id) {
                        // Replaced by the put, which touches the old owner.
                    } else if owned {
                        self.unregister_check(&id, index, fx);
                    } else if let Some(name) = self.owner_name(owner.as_deref()) {
                        // A copy the replica never had (the check came, or moved, and went
                        // within the commit): its owner changed all the same on the leader.
                        let (name_index, by_name) = (&mut self.name_index, &self.by_name);
                        touch_owner(name_index, by_name, name.as_deref(), index, fx);
                    }
                }
                Mutation::PutInstance(record) => self.insert_instance(record, index, fx),
                Mutation::PutCheck(record) => self.replicate_check(record, index, now, fx),
                Mutation::DeleteInstance(id) => {
                    // Its checks' deletes came first; any left would belong to nobody.
                    for check_id in self.remove_instance(&id, index, fx) {
                        self.unregister_check(&check_id, index, fx);
                    }
                }
                Mutation::DeleteSession(id) => {
                    // Also for a session the replica never had: it came and went within the
                    // commit, which moved the leader's sessions index.
                    self.sessions.remove(&id);
                    self.sessions.set_index(index);
                    fx.sessions = true;
                }
                Mutation::PutSession(session) => {
                    self.sessions.remove(&session.id);
                    self.sessions.insert(session, now);
                    self.sessions.set_index(index);
                    fx.sessions = true;
                }
                Mutation::PutKv(entry) => {
                    let key = entry.key.clone();
                    self.kv.replicate(&key, Some(entry), index, fx);
                }
                Mutation::DeleteKv(key) => self.kv.replicate(&key, None, index, fx),
                Mutation::PutConfigEntry(entry) => self.config.insert(entry, index, fx),
                Mutation::DeleteConfigEntry { kind, name } => {
                    self.config.remove(&kind, &name, index, fx);
                }
            }
        }
        for (key, until) in lock_delays {
            self.sessions.delay_lock(&key, until);
        }
    }

    /// The lock-delays the leader started when it invalidated the sessions this commit deletes:
    /// each key such a session held, until `now` plus the session's lock-delay, as every
    /// Consul server records them when it applies a session's end. Kept so that a follower
    /// promoted to leader refuses those locks as its old leader would have.
    fn lock_delays_of_deleted_sessions(
        &self,
        mutations: &[Mutation],
        now: Duration,
    ) -> Vec<(String, Duration)> {
        let mut delays = Vec::new();
        for mutation in mutations {
            let Mutation::DeleteSession(id) = mutation else {
                continue;
            };
            let Some(session) = self.sessions.get(id) else {
                continue;
            };
            let delay = session.lock_delay().min(MAX_LOCK_DELAY);
            if !delay.is_zero() {
                delays.extend(
                    self.kv
                        .held_by(id)
                        .into_iter()
                        .map(|key| (key, now + delay)),
                );
            }
        }
        delays
    }

    /// A check as the leader committed it (status and output included) in place of the
    /// replica's, in a commit numbered `index`. Kept only if its instance exists (instances
    /// are applied first): a leader never commits a check without one.
    fn replicate_check(
        &mut self,
        record: CheckRecord,
        index: u64,
        now: Duration,
        fx: &mut Effects,
    ) {
        let Some(id) = record.definition.id.clone() else {
            return;
        };
        match self.owner_name(record.definition.service_id.as_deref()) {
            Some(service_name) => {
                self.replace_check(Check::restore(record, service_name, now), index, fx);
            }
            None => {
                self.unregister_check(&id, index, fx);
            }
        }
    }

    /// Restarts every check's TTL and critical-since timers and every session's TTL at `now`,
    /// for a replica whose server becomes the leader, as after [`Catalog::restore`]: the
    /// reaper's clock, and the TTLs where this catalog runs them (among servers sharing a
    /// store it does not: see [`Catalog::set_ttl_expiry`]). A
    /// session bound to a check that is gone or critical is invalidated by the next tick.
    pub fn rearm_timers(&mut self, now: Duration) {
        for (id, check) in &mut self.checks {
            // Arcs shared with published views are copied once, here, not on every heartbeat.
            let check = Arc::make_mut(check);
            check.reset_timers(now);
            self.deadlines
                .set(id, super::due_at(check, self.ttl_expiry));
        }
        let doomed = self
            .sessions
            .iter()
            .filter(|s| !s.check_ids().all(|c| self.check_is_healthy(c)))
            .map(|s| s.id.clone())
            .collect();
        self.sessions.rearm(now, doomed);
    }
}

/// Where a mutation goes in a commit's canonical order: deletes of checks, then instances put,
/// checks put, instances deleted (so a check finds its instance, and an instance goes after
/// its checks), then the rest; within a kind by the record's index (so transitions come in the
/// order they happened), then by key.
fn order(mutation: &Mutation) -> (u8, u64, &str) {
    match mutation {
        Mutation::DeleteCheck { id, .. } => (0, 0, id),
        Mutation::PutInstance(r) => (1, r.modify_index, &r.registration.id),
        Mutation::PutCheck(r) => (2, r.modify_index, r.definition.id.as_deref().unwrap_or("")),
        Mutation::DeleteInstance(id) => (3, 0, id),
        Mutation::DeleteSession(id) => (4, 0, id),
        Mutation::PutSession(s) => (5, s.modify_index, &s.id),
        Mutation::DeleteKv(key) => (6, 0, key),
        Mutation::PutKv(e) => (6, e.modify_index, &e.key),
        Mutation::DeleteConfigEntry { kind, .. } => (7, 0, kind),
        Mutation::PutConfigEntry(e) => (7, e.modify_index, &e.kind),
    }
}
