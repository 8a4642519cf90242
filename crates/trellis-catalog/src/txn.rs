//! KV operations with Consul's rules, run as a transaction: every operation of a batch sees the
//! ones before it (through an overlay on the store), and the batch either applies whole, at one
//! index, or not at all. A single KV write (`PUT`, `DELETE`, `?acquire`, `?release`) is a
//! transaction of one operation, so both paths follow the same rules.

use crate::kv::{KvEntry, KvStore, validate_key};
use crate::session::SessionStore;
use std::collections::BTreeMap;
use std::time::Duration;
use trellis_types::txn::TxnError;
use trellis_types::{KvOp, KvVerb};

/// What a transaction did: the entries its operations answer (writes without their values), or
/// why it failed (then nothing was applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnOutcome {
    pub results: Vec<KvEntry>,
    pub errors: Vec<TxnError>,
}

/// Why one operation failed. A single KV write answers a refusal `false` and an error as an
/// error; in a transaction both are an entry of `Errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The write did not apply: a stale CAS, a lock held by another session or within its
    /// lock-delay, an unlock by a session that does not hold the lock.
    Refused(String),
    /// The operation is wrong: a missing or unknown session, a bad key, a failed check.
    Error(String),
}

impl Failure {
    pub(crate) fn text(&self) -> &str {
        match self {
            Self::Refused(t) | Self::Error(t) => t,
        }
    }
}

/// What running the operations decided, before anything is applied.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The new state of every key written: an entry numbered with the transaction's index, or
    /// `None` for a delete.
    pub(crate) writes: BTreeMap<String, Option<KvEntry>>,
    pub(crate) results: Vec<KvEntry>,
    pub(crate) failures: Vec<(usize, Failure)>,
}

/// What the operations may consult besides the store.
pub(crate) struct Context<'a> {
    pub(crate) sessions: &'a SessionStore,
    pub(crate) now: Duration,
    /// The index the transaction's writes will take if it applies.
    pub(crate) index: u64,
}

/// Runs `ops` against `kv` without changing it. As in Consul, checks that need no state (a
/// missing key, a bad key, the lock-delay) run first for every operation and fail the batch
/// alone; then every operation runs in order, each failure is collected, and the batch fails if
/// any operation did.
pub(crate) fn plan(kv: &KvStore, ops: &[KvOp], cx: &Context<'_>) -> Plan {
    let mut plan = Plan::default();
    for (n, op) in ops.iter().enumerate() {
        if let Err(failure) = precheck(op, cx) {
            plan.failures.push((n, failure));
        }
    }
    if !plan.failures.is_empty() {
        return plan;
    }
    let mut view = View {
        base: kv,
        writes: BTreeMap::new(),
    };
    for (n, op) in ops.iter().enumerate() {
        match run(&mut view, op, cx) {
            Ok(results) => plan.results.extend(results),
            Err(failure) => plan.failures.push((n, failure)),
        }
    }
    if plan.failures.is_empty() {
        plan.writes = view.writes;
    } else {
        plan.results.clear();
    }
    plan
}

fn precheck(op: &KvOp, cx: &Context<'_>) -> Result<(), Failure> {
    let prefix_op = matches!(op.verb, KvVerb::DeleteTree | KvVerb::GetTree);
    if op.key.is_empty() && !prefix_op {
        return Err(Failure::Error("Must provide key".into()));
    }
    if !op.key.is_empty() {
        validate_key(&op.key).map_err(|e| Failure::Error(e.to_string()))?;
    }
    if op.verb == KvVerb::Lock && cx.sessions.lock_delayed(&op.key, cx.now) {
        return Err(Failure::Refused(format!(
            "failed to lock key {:?} due to lock delay",
            op.key
        )));
    }
    Ok(())
}

/// The store as the transaction has changed it so far.
struct View<'a> {
    base: &'a KvStore,
    writes: BTreeMap<String, Option<KvEntry>>,
}

impl View<'_> {
    fn get(&self, key: &str) -> Option<&KvEntry> {
        match self.writes.get(key) {
            Some(written) => written.as_ref(),
            None => self.base.get(key),
        }
    }

    fn range(&self, prefix: &str) -> Vec<KvEntry> {
        self.merged(prefix).into_values().cloned().collect()
    }

    /// The keys under `prefix`, without copying their entries.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.merged(prefix).into_keys().map(str::to_owned).collect()
    }

    /// The entries under `prefix` as the transaction left them, by key.
    fn merged<'s>(&'s self, prefix: &'s str) -> BTreeMap<&'s str, &'s KvEntry> {
        let mut merged: BTreeMap<&str, &KvEntry> = self
            .base
            .range(prefix)
            .map(|e| (e.key.as_str(), e))
            .collect();
        for (key, written) in self
            .writes
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match written {
                Some(entry) => merged.insert(key.as_str(), entry),
                None => merged.remove(key.as_str()),
            };
        }
        merged
    }

    /// Writes `entry` unless the key already has the same content (then the entry stays as it
    /// is). Answers the entry the key now has, without its value, as a write's result.
    fn put(&mut self, entry: KvEntry) -> KvEntry {
        if let Some(existing) = self.get(&entry.key)
            && existing.same_content(&entry)
        {
            return existing.without_value();
        }
        let answer = entry.without_value();
        self.writes.insert(entry.key.clone(), Some(entry));
        answer
    }

    fn delete(&mut self, key: &str) {
        if self.get(key).is_some() {
            self.writes.insert(key.to_owned(), None);
        }
    }
}

/// One operation; answers the entries it reports.
fn run(view: &mut View<'_>, op: &KvOp, cx: &Context<'_>) -> Result<Vec<KvEntry>, Failure> {
    let key = op.key.as_str();
    // Borrowed, not cloned: a value may be 512 KiB, and most operations only look at indexes.
    let existing = view.get(key);
    let create_index = existing.map_or(cx.index, |e| e.create_index);
    let entry = |lock_index: u64, session: Option<String>| KvEntry {
        key: op.key.clone(),
        value: op.value.clone(),
        flags: op.flags,
        lock_index,
        session,
        create_index,
        modify_index: cx.index,
    };
    let written = |view: &mut View<'_>, new: KvEntry| Ok(vec![view.put(new)]);
    match &op.verb {
        // A plain write keeps the key's lock holder; like Consul's, it does not carry the
        // LockIndex over (a client's PUT sets it to 0).
        KvVerb::Set => {
            let holder = existing.and_then(|e| e.session.clone());
            written(view, entry(0, holder))
        }
        KvVerb::Cas => {
            let fresh = match (existing, op.index) {
                (None, 0) => true,
                (Some(e), want) => want != 0 && e.modify_index == want,
                (None, _) => false,
            };
            if !fresh {
                return Err(Failure::Refused(format!(
                    "failed to set key {key:?}, index is stale"
                )));
            }
            let holder = existing.and_then(|e| e.session.clone());
            written(view, entry(0, holder))
        }
        KvVerb::Lock => {
            let session = known_session(op, cx)?;
            let lock_index = match existing {
                None => 1,
                Some(e) => match e.session.as_deref() {
                    Some(holder) if holder == session => e.lock_index,
                    Some(_) => {
                        return Err(Failure::Refused(format!(
                            "failed to lock key {key:?}, lock is already held"
                        )));
                    }
                    None => e.lock_index + 1,
                },
            };
            written(view, entry(lock_index, Some(session.to_owned())))
        }
        KvVerb::Unlock => {
            if op.session.is_empty() {
                return Err(Failure::Error("missing session".into()));
            }
            match existing {
                Some(e) if e.session.as_deref() == Some(op.session.as_str()) => {
                    written(view, entry(e.lock_index, None))
                }
                _ => Err(Failure::Refused(format!(
                    "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                ))),
            }
        }
        KvVerb::Get => existing
            .map(|e| vec![e.clone()])
            .ok_or_else(|| Failure::Error(format!("key {key:?} doesn't exist"))),
        KvVerb::GetOrEmpty => Ok(vec![existing.cloned().unwrap_or_else(|| KvEntry {
            key: op.key.clone(),
            value: Vec::new(),
            flags: op.flags,
            lock_index: 0,
            session: (!op.session.is_empty()).then(|| op.session.clone()),
            create_index: 0,
            modify_index: op.index,
        })]),
        KvVerb::GetTree => Ok(view.range(key)),
        KvVerb::CheckIndex => match existing {
            None => Err(Failure::Error(format!(
                "failed to check index, key {key:?} doesn't exist"
            ))),
            Some(e) if e.modify_index != op.index => Err(Failure::Error(format!(
                "failed index check for key {key:?}, current modify index {} != {}",
                e.modify_index, op.index
            ))),
            Some(e) => Ok(vec![e.without_value()]),
        },
        KvVerb::CheckSession => match existing {
            None => Err(Failure::Error(format!(
                "failed to check session, key {key:?} doesn't exist"
            ))),
            Some(e) if e.session.as_deref().unwrap_or_default() != op.session => {
                Err(Failure::Error(format!(
                    "failed session check for key {key:?}, current session {:?} != {:?}",
                    e.session.as_deref().unwrap_or_default(),
                    op.session
                )))
            }
            Some(e) => Ok(vec![e.without_value()]),
        },
        KvVerb::CheckNotExists => match existing {
            Some(_) => Err(Failure::Error(format!("key {key:?} exists"))),
            None => Ok(Vec::new()),
        },
        KvVerb::Delete => {
            view.delete(key);
            Ok(Vec::new())
        }
        KvVerb::DeleteCas => match existing {
            // Deleting what is already gone succeeds, as in Consul.
            None => Ok(Vec::new()),
            Some(e) if e.modify_index != op.index => Err(Failure::Refused(format!(
                "failed to delete key {key:?}, index is stale"
            ))),
            Some(_) => {
                view.delete(key);
                Ok(Vec::new())
            }
        },
        KvVerb::DeleteTree => {
            for key in view.keys_under(key) {
                view.delete(&key);
            }
            Ok(Vec::new())
        }
        KvVerb::Unknown(verb) => Err(Failure::Error(format!("unknown KV verb {verb:?}"))),
    }
}

/// The session a lock names, which must exist.
fn known_session<'a>(op: &'a KvOp, cx: &Context<'_>) -> Result<&'a str, Failure> {
    if op.session.is_empty() {
        return Err(Failure::Error("missing session".into()));
    }
    if !cx.sessions.contains(&op.session) {
        return Err(Failure::Error(format!("invalid session {:?}", op.session)));
    }
    Ok(&op.session)
}
