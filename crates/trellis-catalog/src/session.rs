//! Sessions: the live set with their TTL deadlines (a session expires at twice its TTL after its
//! last create or renew), the checks each is bound to, the per-key lock-delays that follow an
//! invalidation, and the sessions index. The catalog decides when a session is invalidated and
//! what happens to its locks; this module only keeps the books.

use crate::error::CatalogError;
use crate::journal::Journal;
use crate::numbering::{Indexed, Revisions, renumber};
use crate::tick::Deadlines;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use trellis_types::Session;
use trellis_types::duration::{format_go_duration, parse_go_duration};

/// Most sessions a server keeps; creating another is refused until some are destroyed.
pub const MAX_SESSIONS: usize = 65_536;

/// Shortest and longest session TTL, as in Consul (`session_ttl_min` defaults to 10 s).
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// A session with a TTL expires this many TTLs after its last create or renew: the grace Consul
/// gives clients for network and processing delays.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;

/// Longest lock-delay enforced, whatever a session asked for (Consul's `MaxLockDelay`).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// A session's TTL as a duration: `None` for no TTL (`""` or a zero duration). Refuses what
/// Consul refuses, with its words.
pub fn session_ttl(ttl: &str) -> Result<Option<Duration>, CatalogError> {
    if ttl.is_empty() {
        return Ok(None);
    }
    let parsed = parse_go_duration(ttl)
        .map_err(|e| CatalogError::Invalid(format!("Session TTL '{ttl}' invalid: {e}")))?;
    if parsed.is_zero() {
        return Ok(None);
    }
    if !(SESSION_TTL_MIN..=SESSION_TTL_MAX).contains(&parsed) {
        return Err(CatalogError::Invalid(format!(
            "Invalid Session TTL '{}', must be between [{}={}]",
            parsed.as_nanos(),
            format_go_duration(SESSION_TTL_MIN),
            format_go_duration(SESSION_TTL_MAX)
        )));
    }
    Ok(Some(parsed))
}

/// The live sessions and what hangs off them.
#[derive(Debug, Clone)]
pub(crate) struct SessionStore {
    sessions: BTreeMap<String, Arc<Session>>,
    /// When each session with a TTL runs out, soonest first: a tick looks only at the sessions
    /// that are due.
    timers: Deadlines,
    /// Session IDs per check ID they are bound to.
    by_check: HashMap<String, BTreeSet<String>>,
    /// Until when each key may not be locked, after the session holding it was invalidated.
    /// Memory only, as in Consul (a restart forgets them), and known only to the server that
    /// invalidated the session: a replica never starts one (`Catalog::replicate`), so a
    /// follower promoted to leader does not enforce the lock-delays its old leader started.
    lock_delays: HashMap<String, Duration>,
    /// Restored sessions bound to a check that is gone or critical: the next tick invalidates
    /// them (restoring cannot write).
    doomed: Vec<String>,
    /// Index of the last session created or destroyed (Consul's sessions table index).
    index: u64,
    /// Whether sessions' TTLs run here (see `Catalog::set_ttl_expiry`).
    ttl_timers: bool,
    /// The sessions a leader's batch changed, as they were (see `journal.rs`).
    pub(crate) journal: Journal<String, Arc<Session>>,
}

impl SessionStore {
    pub(crate) fn new() -> Self {
        Self {
            sessions: BTreeMap::new(),
            timers: Deadlines::default(),
            by_check: HashMap::new(),
            lock_delays: HashMap::new(),
            doomed: Vec::new(),
            index: 1,
            ttl_timers: true,
            journal: Journal::default(),
        }
    }

    /// The sessions from their durable records, with TTL timers starting again at `now` and the
    /// index at `top`. `healthy(check)` says whether a check exists and is not critical; a
    /// session bound to one that is not is doomed (heartbeats are memory-only, so a TTL check
    /// comes back with the last status written).
    pub(crate) fn restore(
        sessions: Vec<Session>,
        top: u64,
        now: Duration,
        healthy: impl Fn(&str) -> bool,
    ) -> Self {
        let mut store = Self::new();
        for session in sessions {
            if !session.check_ids().all(&healthy) {
                store.doomed.push(session.id.clone());
            }
            store.insert(session, now);
        }
        store.index = top.max(1);
        store
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// Records a create or destroy at `index` (a fresh global index, or on a replica the
    /// index of a leader's change, which may come in any order within a commit: it only rises).
    pub(crate) fn set_index(&mut self, index: u64) {
        self.index = self.index.max(index);
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Session>> {
        self.sessions.get(id)
    }

    /// Takes a shared store's numbers for a batch numbered `tentative` (see
    /// `Catalog::renumber`): each session `put` its key's revisions, the table's index the
    /// commit's `index`.
    pub(crate) fn renumber<'a>(
        &mut self,
        tentative: u64,
        index: u64,
        put: impl IntoIterator<Item = (&'a str, Revisions)>,
    ) {
        for (id, revisions) in put {
            if let Some(session) = self.sessions.get_mut(id)
                && (session.create_index, session.modify_index)
                    != (revisions.create, revisions.modify)
            {
                Arc::make_mut(session).set_indexes(revisions);
            }
        }
        renumber(&mut self.index, tentative, index);
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// Every session, by ID.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.sessions.values()
    }

    /// Adds a session (already numbered) and starts its TTL timer at `now`.
    pub(crate) fn insert(&mut self, session: Session, now: Duration) {
        let id = session.id.clone();
        for check in session.check_ids() {
            self.by_check
                .entry(check.to_owned())
                .or_default()
                .insert(id.clone());
        }
        let session = Arc::new(session);
        self.journal.note(&id, || self.sessions.get(&id).cloned());
        self.sessions.insert(id.clone(), session.clone());
        self.start_timer(&session, now);
    }

    /// Removes a session, its timer and its check bindings.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.remove(id)?;
        self.journal.note(id, || Some(Arc::clone(&session)));
        self.timers.clear(id);
        for check in session.check_ids() {
            if let Some(ids) = self.by_check.get_mut(check) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_check.remove(check);
                }
            }
        }
        Some(session)
    }

    /// Restarts a session's TTL timer at `now`; `None` for an unknown session.
    pub(crate) fn renew(&mut self, id: &str, now: Duration) -> Option<Arc<Session>> {
        let session = self.sessions.get(id)?.clone();
        self.start_timer(&session, now);
        Some(session)
    }

    /// Restarts every session's TTL at `now` (a follower promoted to leader: the renewals went
    /// to the old one); `doomed` are sessions bound to a check that is gone or critical, which
    /// the next tick invalidates, as after a restore.
    pub(crate) fn rearm(&mut self, now: Duration, doomed: Vec<String>) {
        self.set_ttl_timers(self.ttl_timers, now);
        self.doomed.extend(doomed);
    }

    /// Whether sessions' TTLs run here; off, no session has a deadline (their TTLs run out
    /// elsewhere: etcd leases, among servers sharing a store). On again, every TTL starts at
    /// `now`.
    pub(crate) fn set_ttl_timers(&mut self, on: bool, now: Duration) {
        self.ttl_timers = on;
        for session in self.sessions.values() {
            self.timers
                .set(&session.id, ttl_deadline(session, now, self.ttl_timers));
        }
    }

    /// Starts (or restarts) a session's TTL timer at `now`.
    fn start_timer(&mut self, session: &Session, now: Duration) {
        self.timers
            .set(&session.id, ttl_deadline(session, now, self.ttl_timers));
    }

    /// Restored sessions doomed by their checks, and at most `limit` sessions whose TTL has run
    /// out at `now`, soonest first. They stay until the caller invalidates them.
    pub(crate) fn due(&mut self, now: Duration, limit: usize) -> Vec<String> {
        let mut due: Vec<String> = std::mem::take(&mut self.doomed);
        due.extend(self.timers.due(now, limit).map(str::to_owned));
        due.retain(|id| self.sessions.contains_key(id));
        due.sort();
        due.dedup();
        due
    }

    /// The earliest session deadline; `Duration::ZERO` (due at once) while restored sessions
    /// wait to be invalidated.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        if !self.doomed.is_empty() {
            return Some(Duration::ZERO);
        }
        self.timers.next()
    }

    /// When `id`'s TTL runs out, if it has one.
    pub(crate) fn deadline(&self, id: &str) -> Option<Duration> {
        self.timers.get(id)
    }

    /// Sessions bound to a check.
    pub(crate) fn bound_to(&self, check_id: &str) -> Vec<String> {
        self.by_check
            .get(check_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forbids locking `key` until `until`.
    pub(crate) fn delay_lock(&mut self, key: &str, until: Duration) {
        let entry = self.lock_delays.entry(key.to_owned()).or_default();
        *entry = (*entry).max(until);
    }

    /// Whether `key` is still within a lock-delay at `now`.
    pub(crate) fn lock_delayed(&self, key: &str, now: Duration) -> bool {
        self.lock_delays.get(key).is_some_and(|until| now < *until)
    }

    /// Forgets lock-delays that have passed.
    pub(crate) fn prune_lock_delays(&mut self, now: Duration) {
        if !self.lock_delays.is_empty() {
            self.lock_delays.retain(|_, until| now < *until);
        }
    }
}

/// When a session whose TTL starts at `now` runs out, if it has a TTL and TTLs run here
/// (`timers`).
fn ttl_deadline(session: &Session, now: Duration, timers: bool) -> Option<Duration> {
    // Validated when created; a record that no longer parses simply has no TTL.
    let ttl = session_ttl(&session.ttl).ok().flatten().filter(|_| timers);
    ttl.map(|ttl| now + ttl * SESSION_TTL_MULTIPLIER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules_and_words_are_consuls() {
        assert_eq!(session_ttl(""), Ok(None));
        assert_eq!(session_ttl("0s"), Ok(None));
        assert_eq!(session_ttl("15.0s"), Ok(Some(Duration::from_secs(15))));
        assert_eq!(session_ttl("24h"), Ok(Some(SESSION_TTL_MAX)));
        let Err(CatalogError::Invalid(short)) = session_ttl("5s") else {
            panic!("5s is too short")
        };
        assert_eq!(
            short,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
        );
        assert!(session_ttl("86401s").is_err());
        let Err(CatalogError::Invalid(garbage)) = session_ttl("soon") else {
            panic!("not a duration")
        };
        assert!(
            garbage.starts_with("Session TTL 'soon' invalid"),
            "{garbage}"
        );
    }
}
