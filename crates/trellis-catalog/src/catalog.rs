//! The catalog: instances, checks and health views of services, and the per-service index rules
//! (see [`crate::index`] for the rules every index follows). KV is delegated to [`KvStore`]
//! (its writes decided by `txn.rs`), the books of sessions to [`SessionStore`] and the checks'
//! deadlines (TTL expiry, the reaper) to [`Deadlines`]; the catalog decides when a session is
//! invalidated (destroy, TTL, a bound check critical or gone) and what that does to its locks.
//! Config entries are kept by [`ConfigStore`]. Every command reports what changed (for
//! publishing) and what must be written (for durability) in [`Effects`]. A replica applies a
//! leader's committed records instead of commands, through the same helpers minus the writes
//! and the decisions (`catalog/replica.rs`).

use crate::check::Check;
use crate::command::{Command, Reply};
use crate::config_entry::{Change, ConfigStore};
use crate::effects::{CheckTransition, Effects, Write};
use crate::error::CatalogError;
use crate::index::GlobalIndex;
use crate::journal::Journal;
use crate::kv::{KvEntry, KvSnapshot, KvStore};
use crate::mutation::Mutation;
use crate::record::{CheckRecord, InstanceRecord};
use crate::session::{MAX_LOCK_DELAY, MAX_SESSIONS, SessionStore, session_ttl};
use crate::tick::{Deadlines, TICK_BUDGET};
use crate::txn::{self, Context, Failure, TxnOutcome};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use trellis_types::registration::service_key;
use trellis_types::session::SERF_CHECK_ID;
use trellis_types::txn::TxnError;
use trellis_types::{
    CheckDefinition, CheckKind, CheckStatus, ConfigEntry, KvOp, KvVerb, ServiceRegistration,
    Session, SessionBehavior,
};

mod renumber;
mod replica;

/// One instance with its checks (service checks and node checks) and their worst status.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub instance: Arc<InstanceRecord>,
    pub checks: Vec<Arc<Check>>,
    pub status: CheckStatus,
}

/// Everything the health and catalog endpoints show for one service name.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub name: String,
    pub index: u64,
    pub instances: Vec<InstanceView>,
}

/// A service as a dashboard lists it (see [`Catalog::service_summaries`]); counts are indexed
/// by [`CheckStatus`] (passing, warning, critical).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSummary {
    pub name: String,
    pub tags: BTreeSet<String>,
    pub instance_count: usize,
    pub checks: [usize; 3],
    pub instances: [usize; 3],
}

/// The registry state machine. Commands go through [`Catalog::apply`], time through
/// [`Catalog::tick`]; both only ever number changes with the global index (see `index.rs`).
#[derive(Debug, Clone)]
pub struct Catalog {
    index: GlobalIndex,
    /// Index of the last change that may have changed the list of service names or their tags
    /// (any registration or deregistration that changed something).
    services_index: u64,
    instances: BTreeMap<String, Arc<InstanceRecord>>,
    /// Instance IDs per service key ([`service_key`]: names match without regard to case).
    by_name: BTreeMap<String, BTreeSet<String>>,
    /// Index of the last change per service key, set only by [`Catalog::touch_name`].
    ///
    /// Kept after the last instance leaves: the emptied service keeps an index of its own, so
    /// its waiters see the deregistration and then wake only for its own changes. Falling back
    /// to the services index would move it with every other service's registrations. An entry
    /// stays until [`Catalog::restore`], which keeps only names with instances (the others fall
    /// back to the services index, which resumes at the same top).
    name_index: HashMap<String, u64>,
    checks: BTreeMap<String, Arc<Check>>,
    /// Check IDs per instance ID.
    checks_of: HashMap<String, IdSet>,
    /// Checks not bound to a service: they count for every service on the node.
    node_checks: BTreeSet<String>,
    kv: KvStore,
    sessions: SessionStore,
    config: ConfigStore,
    /// When each check next needs [`Catalog::tick`]: kept up to date by every change to a
    /// check, so a tick takes only the due ones (see `tick.rs`).
    deadlines: Deadlines,
    /// Whether status changes made in memory (heartbeats, probe results, TTL expiry) are also
    /// written, so that replicas see them (see [`Catalog::set_persist_status`]).
    persist_status: bool,
    /// Whether [`Catalog::tick`] turns TTL checks whose TTL ran out critical (see
    /// [`Catalog::set_ttl_expiry`]).
    ttl_expiry: bool,
    /// The instances and checks a leader's batch changed, as they were (see `journal.rs`).
    instances_journal: Journal<String, Arc<InstanceRecord>>,
    checks_journal: Journal<String, Arc<Check>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// An empty catalog; every index starts at 1 because Consul clients treat 0 as "no index".
    pub fn new() -> Self {
        Self {
            index: GlobalIndex::new(),
            services_index: 1,
            instances: BTreeMap::new(),
            by_name: BTreeMap::new(),
            name_index: HashMap::new(),
            checks: BTreeMap::new(),
            checks_of: HashMap::new(),
            node_checks: BTreeSet::new(),
            kv: KvStore::new(),
            sessions: SessionStore::new(),
            config: ConfigStore::new(),
            deadlines: Deadlines::default(),
            persist_status: false,
            ttl_expiry: true,
            instances_journal: Journal::default(),
            checks_journal: Journal::default(),
        }
    }

    /// Whether every visible status change that is otherwise memory-only (a TTL update or a
    /// probe result that changes the status, a TTL running out in [`Catalog::tick`]) also
    /// records the check's [`Write::Check`], so a leader commits it and its replicas see it. Off
    /// by default (heartbeats stay memory-only); session renewals stay memory-only either way.
    /// A catalog built by [`Catalog::restore`] starts with it off: set it again after a reload.
    pub fn set_persist_status(&mut self, on: bool) {
        self.persist_status = on;
    }

    /// Whether this catalog's own ticks expire TTL checks and sessions' TTLs (on by default).
    /// Among servers sharing a store each TTL check's expiry is owned by one server, which
    /// tells the leader with [`Command::ExpireTtl`], and each session's TTL is an etcd lease,
    /// whose end the leader applies with [`Command::SessionExpired`]: the leader's catalog then
    /// keeps no TTL deadline (`now` restarts them all when it is turned on). The reaper stays
    /// with the catalog either way. A catalog built by [`Catalog::restore`] starts with it on.
    pub fn set_ttl_expiry(&mut self, on: bool, now: Duration) {
        self.ttl_expiry = on;
        self.sessions.set_ttl_timers(on, now);
        for (id, check) in &self.checks {
            self.deadlines.set(id, due_at(check, on));
        }
    }

    /// Rebuilds a catalog from durable records (`index`: the highest index committed).
    ///
    /// Every index — global, services list, each service name, KV store, each KV prefix, config
    /// entries — resumes at the top: the highest of `index`, 1 and every record's `ModifyIndex`.
    /// Deletes and memory-only changes before the restart left no record, so a per-resource index
    /// computed from what is left could come back lower than a watcher last saw; starting all
    /// of them at the top means none goes backwards relative to anything persisted (a caller
    /// reloading a running catalog must pass an `index` at least as high as the indexes it has
    /// already published). Checks restart their TTL and critical-since timers at `now`, and so
    /// do sessions; a session bound to a check that is gone or critical is invalidated by the
    /// next tick.
    pub fn restore(
        index: u64,
        instances: Vec<InstanceRecord>,
        checks: Vec<CheckRecord>,
        kv: impl Into<KvSnapshot>,
        config_entries: Vec<ConfigEntry>,
        now: Duration,
    ) -> Self {
        let KvSnapshot { entries, sessions } = kv.into();
        let top = instances
            .iter()
            .map(|r| r.modify_index)
            .chain(checks.iter().map(|r| r.modify_index))
            .chain(entries.iter().map(|e| e.modify_index))
            .chain(sessions.iter().map(|s| s.modify_index))
            .chain(config_entries.iter().map(|e| e.modify_index))
            .fold(index.max(1), u64::max);
        let mut catalog = Self::new();
        for record in instances {
            let id = record.registration.id.clone();
            let key = service_key(&record.registration.name).into_owned();
            catalog
                .by_name
                .entry(key.clone())
                .or_default()
                .insert(id.clone());
            catalog.name_index.insert(key, top);
            catalog.instances.insert(id, Arc::new(record));
        }
        for record in checks {
            // A check whose service is gone went with it.
            if let Some(service_name) = catalog.owner_name(record.definition.service_id.as_deref())
            {
                catalog.link_check(Check::restore(record, service_name, now));
            }
        }
        catalog.sessions =
            SessionStore::restore(sessions, top, now, |check| catalog.check_is_healthy(check));
        let sessions = &catalog.sessions;
        catalog.kv = KvStore::restore(entries, top, |session| sessions.contains(session));
        catalog.config = ConfigStore::restore(config_entries, top);
        catalog.index = GlobalIndex::resume_at(top);
        catalog.services_index = top;
        catalog
    }

    /// The global index: the highest index of any change.
    pub fn index(&self) -> u64 {
        self.index.get()
    }

    /// Index of the list of services (`/v1/catalog/services`), also used for unknown names.
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// Index of one service name: its last change (also after its last instance left), or the
    /// services index for a name never registered since the last restore. A name's first
    /// registration sets both to the same new index, so switching from the fallback to its own
    /// entry never goes backwards.
    pub fn service_index(&self, name: &str) -> u64 {
        self.name_index
            .get(service_key(name).as_ref())
            .copied()
            .unwrap_or(self.services_index)
    }

    /// Index of the KV entries under a prefix (a key is a prefix of itself), never below 1;
    /// deletes count, through tombstones (see `KvStore::prefix_index`).
    pub fn kv_index(&self, prefix: &str) -> u64 {
        self.kv.prefix_index(prefix)
    }

    /// Index of the whole KV store: its last put or delete.
    pub fn kv_store_index(&self) -> u64 {
        self.kv.store_index()
    }

    pub fn instances(&self) -> impl Iterator<Item = &Arc<InstanceRecord>> {
        self.instances.values()
    }

    pub fn instance(&self, id: &str) -> Option<&Arc<InstanceRecord>> {
        self.instances.get(id)
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    pub fn checks(&self) -> impl Iterator<Item = &Arc<Check>> {
        self.checks.values()
    }

    pub fn check(&self, id: &str) -> Option<&Arc<Check>> {
        self.checks.get(id)
    }

    /// How many service names have instances.
    pub fn service_count(&self) -> usize {
        self.by_name.len()
    }

    /// Service names as registered with the union of their instances' tags, sorted.
    pub fn service_names(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for instance in self.instances.values() {
            let r = &instance.registration;
            names
                .entry(r.name.clone())
                .or_default()
                .extend(r.tags.iter().cloned());
        }
        names
    }

    /// Index of the sessions: the last session created or destroyed (renewals take none).
    pub fn sessions_index(&self) -> u64 {
        self.sessions.index()
    }

    pub fn session(&self, id: &str) -> Option<&Arc<Session>> {
        self.sessions.get(id)
    }

    /// Every session, by ID.
    pub fn sessions(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.sessions.iter()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// When a session's TTL runs out (twice its TTL after its last create or renew), if it has
    /// one.
    pub fn session_deadline(&self, id: &str) -> Option<Duration> {
        self.sessions.deadline(id)
    }

    /// Whether `key` may not be locked at `now` because the session that held it was
    /// invalidated less than its lock-delay ago.
    pub fn lock_delayed(&self, key: &str, now: Duration) -> bool {
        self.sessions.lock_delayed(key, now)
    }

    /// Runs a transaction of reads only (no operation [`KvVerb::is_write`]) without the writer:
    /// it changes nothing, and needs no clock (only a lock looks at time, for its lock-delay).
    pub fn txn_read(&self, ops: &[KvOp]) -> TxnOutcome {
        debug_assert!(ops.iter().all(|op| !op.verb.is_write()));
        let plan = txn::plan(&self.kv, ops, &self.txn_context(Duration::ZERO));
        outcome(plan.results, plan.failures)
    }

    fn txn_context(&self, now: Duration) -> Context<'_> {
        Context {
            sessions: &self.sessions,
            now,
            index: self.index.peek_next(),
        }
    }

    /// Index of the config entries: their last upsert or delete (what every config read
    /// answers, as Consul's table index).
    pub fn config_index(&self) -> u64 {
        self.config.index()
    }

    /// Index of the last upsert or delete of an entry of `kind` since the catalog was built or
    /// restored (0 if none): a kind's list waits for it to pass the client's index.
    pub fn config_kind_index(&self, kind: &str) -> u64 {
        self.config.kind_index(kind)
    }

    /// A config entry; names match without regard to case.
    pub fn config_entry(&self, kind: &str, name: &str) -> Option<&Arc<ConfigEntry>> {
        self.config.get(kind, name)
    }

    /// The config entries of `kind` in name order, or all of them (by kind, then name).
    pub fn config_entries<'a>(
        &'a self,
        kind: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<ConfigEntry>> + 'a {
        self.config.list(kind)
    }

    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.kv.get(key)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn kv_range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.kv.range(prefix)
    }

    /// The durable record of a check ([`Write::Check`]), or `None` if it must be deleted.
    pub fn check_record(&self, id: &str) -> Option<CheckRecord> {
        self.checks.get(id).map(|c| c.record())
    }

    /// The store operation that brings one record's durable copy up to date: its current
    /// record, or its delete if the catalog no longer has it.
    pub fn mutation(&self, write: &Write) -> Mutation {
        match write {
            Write::Instance(id) => match self.instance(id) {
                Some(record) => Mutation::PutInstance(record.as_ref().clone()),
                None => Mutation::DeleteInstance(id.clone()),
            },
            Write::Check { id, owner } => match self.check_record(id) {
                Some(record) if record.definition.service_id == *owner => {
                    Mutation::PutCheck(record)
                }
                _ => Mutation::DeleteCheck {
                    id: id.clone(),
                    owner: owner.clone(),
                },
            },
            Write::Kv(key) => match self.kv_get(key) {
                Some(entry) => Mutation::PutKv(entry.clone()),
                None => Mutation::DeleteKv(key.clone()),
            },
            Write::Session(id) => match self.session(id) {
                Some(session) => Mutation::PutSession(session.as_ref().clone()),
                None => Mutation::DeleteSession(id.clone()),
            },
            Write::ConfigEntry { kind, name } => match self.config_entry(kind, name) {
                Some(entry) => Mutation::PutConfigEntry(entry.as_ref().clone()),
                None => Mutation::DeleteConfigEntry {
                    kind: kind.clone(),
                    name: name.clone(),
                },
            },
        }
    }

    /// How many instances are passing, warning and critical (service and node checks count).
    pub fn health_counts(&self) -> [(CheckStatus, usize); 3] {
        let node_worst = self
            .node_checks
            .iter()
            .filter_map(|id| self.checks.get(id))
            .map(|c| c.status)
            .max()
            .unwrap_or(CheckStatus::Passing);
        let mut counts = [
            (CheckStatus::Passing, 0),
            (CheckStatus::Warning, 0),
            (CheckStatus::Critical, 0),
        ];
        for id in self.instances.keys() {
            let worst = self
                .checks_of
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|cid| self.checks.get(cid))
                .map(|c| c.status)
                .fold(node_worst, CheckStatus::max);
            counts[worst as usize].1 += 1;
        }
        counts
    }

    /// One line per service name (as registered), sorted: its tags, instance count, and how
    /// many of its checks and of its instances (by their worst check, node checks included)
    /// are passing, warning and critical. What a dashboard lists, in one pass over the catalog.
    pub fn service_summaries(&self) -> Vec<ServiceSummary> {
        let node_statuses: Vec<CheckStatus> = self
            .node_checks
            .iter()
            .filter_map(|id| self.checks.get(id))
            .map(|c| c.status)
            .collect();
        let node_worst = node_statuses
            .iter()
            .copied()
            .max()
            .unwrap_or(CheckStatus::Passing);
        let mut summaries: Vec<ServiceSummary> = Vec::with_capacity(self.by_name.len());
        for ids in self.by_name.values() {
            let mut summary: Option<ServiceSummary> = None;
            for instance in ids.iter().filter_map(|id| self.instances.get(id)) {
                let r = &instance.registration;
                let summary = summary.get_or_insert_with(|| ServiceSummary {
                    name: r.name.clone(),
                    ..ServiceSummary::default()
                });
                summary.tags.extend(r.tags.iter().cloned());
                summary.instance_count += 1;
                let mut worst = node_worst;
                let own = self.checks_of.get(&r.id).into_iter().flatten();
                for status in own
                    .filter_map(|cid| self.checks.get(cid))
                    .map(|c| c.status)
                    .chain(node_statuses.iter().copied())
                {
                    summary.checks[status as usize] += 1;
                    worst = worst.max(status);
                }
                summary.instances[worst as usize] += 1;
            }
            summaries.extend(summary);
        }
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }

    /// Health view of one service name, matched without regard to case.
    pub fn service_view(&self, name: &str) -> ServiceView {
        let node_checks: Vec<Arc<Check>> = self
            .node_checks
            .iter()
            .filter_map(|id| self.checks.get(id).cloned())
            .collect();
        let instances: Vec<InstanceView> = self
            .by_name
            .get(service_key(name).as_ref())
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id))
            .map(|instance| {
                let mut checks: Vec<Arc<Check>> = self
                    .checks_of
                    .get(&instance.registration.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|cid| self.checks.get(cid).cloned())
                    .collect();
                checks.extend(node_checks.iter().cloned());
                let status = checks
                    .iter()
                    .map(|c| c.status)
                    .max()
                    .unwrap_or(CheckStatus::Passing);
                InstanceView {
                    instance: instance.clone(),
                    checks,
                    status,
                }
            })
            .collect();
        ServiceView {
            // The registered spelling when there is an instance, else the one asked for.
            name: instances
                .first()
                .map_or(name, |i| i.instance.registration.name.as_str())
                .to_owned(),
            index: self.service_index(name),
            instances,
        }
    }

    /// Records that service `name` changed at `index` (the change's freshly bumped global
    /// index, so a service's index only moves forward) and marks its view for republishing.
    ///
    /// Every change to an instance of the service, or to a check counted in its health (its own
    /// checks and every node check), comes through here, and nothing else sets a service's
    /// index: a change to one service wakes only that service's waiters. A name's entry is
    /// created here and kept after its last instance leaves (see `name_index`).
    fn touch_name(&mut self, name: &str, index: u64, fx: &mut Effects) {
        touch_name(&mut self.name_index, name, index, fx);
    }

    /// Marks the services a check belongs to as changed (all of them for a node check).
    fn touch_check_owner(&mut self, check_id: &str, index: u64, fx: &mut Effects) {
        // A shared handle, not a copy: a tick expiring thousands of checks comes through here
        // for each.
        if let Some(check) = self.checks.get(check_id).map(Arc::clone) {
            self.touch_owner_of(&check, index, fx);
        }
    }

    /// [`Catalog::touch_check_owner`] for a check no longer in the catalog.
    fn touch_owner_of(&mut self, check: &Check, index: u64, fx: &mut Effects) {
        touch_owner(
            &mut self.name_index,
            &self.by_name,
            check.service_name.as_deref(),
            index,
            fx,
        );
    }

    /// The service name a check owned by `service_id` counts for: `Some(None)` for a node
    /// check, `None` if its instance does not exist.
    fn owner_name(&self, service_id: Option<&str>) -> Option<Option<String>> {
        match service_id {
            None => Some(None),
            Some(sid) => self
                .instances
                .get(sid)
                .map(|i| Some(i.registration.name.clone())),
        }
    }

    /// Applies one command at time `now`, accumulating its effects.
    pub fn apply(
        &mut self,
        command: Command,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<Reply, CatalogError> {
        match command {
            Command::Register {
                registration,
                replace_existing_checks,
            } => self
                .register(registration, replace_existing_checks, now, fx)
                .map(|()| Reply::Done),
            Command::Deregister { service_id } => {
                self.deregister(&service_id, now, fx).map(|()| Reply::Done)
            }
            Command::RegisterCheck { check } => {
                self.register_check(check, now, fx).map(|()| Reply::Done)
            }
            Command::DeregisterCheck { check_id } => self
                .deregister_check(&check_id, now, fx)
                .map(|()| Reply::Done),
            Command::UpdateTtl {
                check_id,
                status,
                output,
            } => self
                .update_ttl(&check_id, status, output, now, fx)
                .map(|()| Reply::Done),
            Command::ReportCheck {
                check_id,
                result,
                output,
            } => self
                .report_check(&check_id, result, output, now, fx)
                .map(|()| Reply::Done),
            Command::ExpireTtl { check_id } => {
                self.expire_ttl_now(&check_id, now, fx);
                Ok(Reply::Done)
            }
            Command::KvPut {
                key,
                value,
                flags,
                cas,
            } => {
                let verb = if cas.is_some() {
                    KvVerb::Cas
                } else {
                    KvVerb::Set
                };
                self.kv_write(
                    KvOp {
                        value,
                        flags,
                        index: cas.unwrap_or(0),
                        ..KvOp::new(verb, key)
                    },
                    now,
                    fx,
                )
            }
            Command::KvDelete { key, recurse, cas } => {
                let verb = match (recurse, cas) {
                    (true, Some(_)) => {
                        return Err(CatalogError::Invalid(
                            "cas cannot be used with recurse".into(),
                        ));
                    }
                    (true, None) => KvVerb::DeleteTree,
                    (false, Some(_)) => KvVerb::DeleteCas,
                    (false, None) => KvVerb::Delete,
                };
                self.kv_write(
                    KvOp {
                        index: cas.unwrap_or(0),
                        ..KvOp::new(verb, key)
                    },
                    now,
                    fx,
                )
            }
            Command::KvLock {
                key,
                value,
                flags,
                session,
            } => self.kv_write(lock_op(KvVerb::Lock, key, value, flags, session), now, fx),
            Command::KvUnlock {
                key,
                value,
                flags,
                session,
            } => self.kv_write(lock_op(KvVerb::Unlock, key, value, flags, session), now, fx),
            Command::Txn { ops } => Ok(Reply::Txn(self.txn(&ops, now, fx))),
            Command::SessionCreate { session } => {
                self.create_session(session, now, fx).map(|()| Reply::Done)
            }
            Command::SessionDestroy { id } => {
                if self.sessions.contains(&id) {
                    let index = self.index.bump();
                    self.invalidate_session(&id, index, now, fx);
                }
                // Destroying a session that is not there is fine, and changes nothing.
                Ok(Reply::Done)
            }
            Command::SessionRenew { id } => Ok(Reply::Session(self.sessions.renew(&id, now))),
            Command::SessionExpired { id } => {
                if self.sessions.contains(&id) {
                    let index = self.index.bump();
                    self.invalidate_session(&id, index, now, fx);
                }
                Ok(Reply::Done)
            }
            Command::ConfigUpsert { entry, cas } => {
                let (kind, name) = (entry.kind.clone(), entry.name.clone());
                let change = self.config.plan_upsert(entry, cas);
                Ok(Reply::Bool(self.apply_config(&kind, &name, change, fx)))
            }
            Command::ConfigDelete { kind, name, cas } => {
                let change = self.config.plan_delete(&kind, &name, cas);
                Ok(Reply::Bool(self.apply_config(&kind, &name, change, fx)))
            }
        }
    }

    /// Applies a decided config entry write at a new index, if it changes anything.
    fn apply_config(&mut self, kind: &str, name: &str, change: Change, fx: &mut Effects) -> bool {
        match change {
            Change::Unchanged(answer) => answer,
            Change::Apply(Some(entry)) => {
                let index = self.index.bump();
                self.config.put(entry, index, fx);
                true
            }
            Change::Apply(None) => {
                let index = self.index.bump();
                self.config.delete(kind, name, index, fx);
                true
            }
        }
    }

    /// A single KV write: a transaction of one operation, whose refusal (a stale CAS, a lock
    /// held by another session) answers `false` and whose error is an error.
    fn kv_write(
        &mut self,
        op: KvOp,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<Reply, CatalogError> {
        let plan = txn::plan(&self.kv, std::slice::from_ref(&op), &self.txn_context(now));
        match plan.failures.into_iter().next() {
            Some((_, Failure::Refused(_))) => Ok(Reply::Bool(false)),
            Some((_, Failure::Error(reason))) => Err(CatalogError::Invalid(reason)),
            None => {
                self.apply_kv_writes(plan.writes, fx);
                Ok(Reply::Bool(true))
            }
        }
    }

    /// Runs a transaction: all its writes apply at one new index, or, if any operation fails,
    /// nothing applies and no index is taken.
    fn txn(&mut self, ops: &[KvOp], now: Duration, fx: &mut Effects) -> TxnOutcome {
        let plan = txn::plan(&self.kv, ops, &self.txn_context(now));
        if plan.failures.is_empty() {
            self.apply_kv_writes(plan.writes, fx);
        }
        outcome(plan.results, plan.failures)
    }

    /// Applies decided KV writes at the index they were numbered with (the next one), taking it
    /// only if something changes: deleting a key that was never there changes nothing.
    fn apply_kv_writes(&mut self, writes: BTreeMap<String, Option<KvEntry>>, fx: &mut Effects) {
        let effective: Vec<(String, Option<KvEntry>)> = writes
            .into_iter()
            .filter(|(key, entry)| entry.is_some() || self.kv.get(key).is_some())
            .collect();
        if effective.is_empty() {
            return;
        }
        let index = self.index.bump();
        debug_assert!(
            effective
                .iter()
                .all(|(_, e)| e.as_ref().is_none_or(|e| e.modify_index == index)),
            "writes are numbered with the index they apply at"
        );
        self.kv.apply(effective, index, fx);
    }

    /// Creates a session as Consul's state store does: within the bound, with a valid TTL, and
    /// bound only to checks that exist and are not critical (the node's `serfHealth`, which the
    /// server synthesises, always passes unless a check of that ID is registered).
    fn create_session(
        &mut self,
        mut session: Session,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(CatalogError::Invalid(format!(
                "too many sessions (at most {MAX_SESSIONS}); destroy unused ones"
            )));
        }
        if self.sessions.contains(&session.id) {
            return Err(CatalogError::Invalid(format!(
                "session {:?} already exists",
                session.id
            )));
        }
        session_ttl(&session.ttl)?;
        for check_id in session.check_ids() {
            if check_id == SERF_CHECK_ID && !self.checks.contains_key(check_id) {
                continue;
            }
            match self.checks.get(check_id) {
                None => {
                    return Err(CatalogError::Invalid(format!(
                        "Missing check '{check_id}' registration"
                    )));
                }
                Some(check) if check.status == CheckStatus::Critical => {
                    return Err(CatalogError::Invalid(format!(
                        "Check '{check_id}' is in critical state"
                    )));
                }
                Some(_) => {}
            }
        }
        let index = self.index.bump();
        session.create_index = index;
        session.modify_index = index;
        fx.sessions = true;
        fx.writes.insert(Write::Session(session.id.clone()));
        self.sessions.insert(session, now);
        self.sessions.set_index(index);
        Ok(())
    }

    /// Whether a session may be bound to a check: it exists (or is the synthesised
    /// `serfHealth`) and is not critical.
    fn check_is_healthy(&self, check_id: &str) -> bool {
        match self.checks.get(check_id) {
            Some(check) => check.status != CheckStatus::Critical,
            None => check_id == SERF_CHECK_ID,
        }
    }

    /// Invalidates a session as part of a change numbered `index`: it goes, every lock it holds
    /// is released (`Session` cleared, `ModifyIndex` moved, `LockIndex` kept) or its key
    /// deleted, by its behavior, and each of those keys may not be locked again for the
    /// session's lock-delay (at most [`MAX_LOCK_DELAY`]).
    fn invalidate_session(&mut self, id: &str, index: u64, now: Duration, fx: &mut Effects) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        self.sessions.set_index(index);
        fx.sessions = true;
        fx.writes.insert(Write::Session(id.to_owned()));
        let delay = session.lock_delay().min(MAX_LOCK_DELAY);
        let mut writes = Vec::new();
        for key in self.kv.held_by(id) {
            let Some(entry) = self.kv.get(&key) else {
                continue;
            };
            let after = match session.behavior {
                SessionBehavior::Release => Some(KvEntry {
                    session: None,
                    modify_index: index,
                    ..entry.clone()
                }),
                SessionBehavior::Delete => None,
            };
            if !delay.is_zero() {
                self.sessions.delay_lock(&key, now + delay);
            }
            writes.push((key, after));
        }
        if !writes.is_empty() {
            self.kv.apply(writes, index, fx);
        }
    }

    /// Invalidates the sessions bound to a check that went critical or away, as part of the
    /// change numbered `index`.
    fn invalidate_sessions_of_check(
        &mut self,
        check_id: &str,
        index: u64,
        now: Duration,
        fx: &mut Effects,
    ) {
        for id in self.sessions.bound_to(check_id) {
            self.invalidate_session(&id, index, now, fx);
        }
    }

    /// The check is critical now (or gone): its sessions go, at the current index.
    fn check_failed(&mut self, check_id: &str, now: Duration, fx: &mut Effects) {
        if self.check_is_healthy(check_id) {
            return;
        }
        let index = self.index.get();
        self.invalidate_sessions_of_check(check_id, index, now, fx);
    }

    /// Registers or replaces an instance (and its checks) at one new index, which becomes the
    /// instance's `ModifyIndex`, its service's index (and the old name's on a rename) and the
    /// services index. Re-registering exactly what is there takes no index and has no effects.
    fn register(
        &mut self,
        mut registration: ServiceRegistration,
        replace_existing_checks: bool,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        let definitions = normalise_service_checks(&mut registration)?;
        let id = registration.id.clone();
        let name = registration.name.clone();
        let existing = self.instances.get(&id).cloned();
        let new_ids: BTreeSet<String> = definitions.iter().filter_map(|d| d.id.clone()).collect();
        let stale_checks: Vec<String> = if replace_existing_checks {
            self.checks_of
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|cid| !new_ids.contains(*cid))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let unchanged = existing
            .as_ref()
            .is_some_and(|e| e.registration == registration)
            && stale_checks.is_empty()
            && definitions.iter().all(|d| {
                d.id.as_ref()
                    .and_then(|cid| self.checks.get(cid))
                    .is_some_and(|c| c.same_definition(d))
            });
        if unchanged {
            return Ok(()); // re-registering what is there changes nothing, as in Consul
        }
        let index = self.index.bump();
        let create_index = existing.as_ref().map_or(index, |e| e.create_index);
        let record = InstanceRecord {
            registration,
            create_index,
            modify_index: index,
        };
        self.insert_instance(record, index, fx);
        fx.writes.insert(Write::Instance(id));
        for check_id in stale_checks {
            self.remove_check(&check_id, now, fx);
        }
        for definition in definitions {
            self.put_check(definition, Some(name.clone()), index, now, fx);
        }
        Ok(())
    }

    /// Puts an instance's record in place as a change numbered `index`: its service (and the
    /// old one on a rename) and the services list change, and the checks it already has follow
    /// a new name. Writes nothing: shared by [`Catalog::register`] and a replica.
    fn insert_instance(&mut self, record: InstanceRecord, index: u64, fx: &mut Effects) {
        let id = record.registration.id.clone();
        let name = record.registration.name.clone();
        let old_name = self
            .instances
            .get(&id)
            .map(|old| old.registration.name.clone())
            .filter(|old| *old != name);
        if let Some(old_name) = old_name {
            self.remove_from_name(&old_name, &id, index, fx);
        }
        self.by_name
            .entry(service_key(&name).into_owned())
            .or_default()
            .insert(id.clone());
        self.instances_journal
            .note(&id, || self.instances.get(&id).cloned());
        self.instances.insert(id.clone(), Arc::new(record));
        self.services_index = self.services_index.max(index);
        fx.services_list = true;
        self.touch_name(&name, index, fx);
        // Checks kept from before follow a renamed service (the leader writes none of them).
        for check_id in self.checks_of.get(&id).into_iter().flatten() {
            if let Some(check) = self.checks.get_mut(check_id)
                && check.service_name.as_deref() != Some(name.as_str())
            {
                self.checks_journal
                    .note(check_id, || Some(Arc::clone(check)));
                Arc::make_mut(check).service_name = Some(name.clone());
            }
        }
    }

    /// Takes an instance out as a change numbered `index`: its service and the services list
    /// change (the list even if the instance is not there: on a replica, it may have come and
    /// gone within one commit of the leader's). Answers the IDs of its checks, for the caller
    /// to remove. Writes nothing: shared by [`Catalog::deregister`] and a replica.
    fn remove_instance(&mut self, id: &str, index: u64, fx: &mut Effects) -> IdSet {
        self.services_index = self.services_index.max(index);
        fx.services_list = true;
        let removed = self.instances.remove(id);
        if let Some(record) = &removed {
            self.instances_journal.note(id, || Some(Arc::clone(record)));
        }
        let Some(record) = removed else {
            return IdSet::default();
        };
        self.remove_from_name(&record.registration.name, id, index, fx);
        self.checks_of.remove(id).unwrap_or_default()
    }

    /// Takes an instance out of its service name at `index`. The name's index is kept when the
    /// last instance leaves (see `name_index`), so it reports the departure and stays put after.
    fn remove_from_name(&mut self, name: &str, id: &str, index: u64, fx: &mut Effects) {
        let key = service_key(name);
        if let Some(ids) = self.by_name.get_mut(key.as_ref()) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_name.remove(key.as_ref());
            }
        }
        self.touch_name(name, index, fx);
    }

    /// Inserts or replaces a check; an unchanged definition keeps its state.
    fn put_check(
        &mut self,
        definition: CheckDefinition,
        service_name: Option<String>,
        index: u64,
        now: Duration,
        fx: &mut Effects,
    ) {
        let Some(check_id) = definition.id.clone() else {
            return;
        };
        let previous = self.checks.get(&check_id);
        if previous.is_some_and(|p| p.same_definition(&definition)) {
            return;
        }
        let explicit_status = definition.status.is_some();
        let mut check = Check::new(definition, service_name, index, now);
        if let Some(previous) = previous {
            check.create_index = previous.create_index;
            if !explicit_status && previous.definition.kind == check.definition.kind {
                check.keep_status_of(previous, now);
            }
            // The ID may move from one owner to another: the old owner's copy goes.
            if previous.service_id() != check.service_id() {
                fx.writes.insert(Write::Check {
                    id: check_id.clone(),
                    owner: previous.service_id().map(str::to_owned),
                });
            }
        }
        fx.writes.insert(Write::Check {
            id: check_id.clone(),
            owner: check.service_id().map(str::to_owned),
        });
        self.replace_check(check, index, fx);
        self.check_failed(&check_id, now, fx);
    }

    /// Puts a check in place of the one with its ID, if any, as a change numbered `index`: the
    /// services of both take the index, the status change is reported, and its probing
    /// (re)starts if its definition is new. Writes nothing and invalidates no session: shared by
    /// [`Catalog::put_check`] and a replica.
    fn replace_check(&mut self, check: Check, index: u64, fx: &mut Effects) {
        let check_id = check.id().to_owned();
        let previous = self.unlink_check(&check_id);
        if let Some(previous) = &previous {
            self.touch_owner_of(previous, index, fx);
        }
        // A new status alone (a replica's copy of a heartbeat) leaves the probing as it is.
        if previous
            .as_ref()
            .is_none_or(|p| !p.same_definition(&check.definition))
        {
            fx.checks.insert(check_id.clone());
        }
        self.link_check(check);
        self.touch_check_owner(&check_id, index, fx);
        self.record_transition(&check_id, previous.map(|p| p.status), fx);
    }

    /// Adds a check to the maps that find it (by ID, by owner, by deadline).
    fn link_check(&mut self, check: Check) {
        let id = check.id().to_owned();
        match check.service_id() {
            Some(sid) => {
                self.checks_of
                    .entry(sid.to_owned())
                    .or_default()
                    .insert(id.clone());
            }
            None => {
                self.node_checks.insert(id.clone());
            }
        }
        self.deadlines.set(&id, due_at(&check, self.ttl_expiry));
        self.checks_journal
            .note(&id, || self.checks.get(&id).cloned());
        self.checks.insert(id, Arc::new(check));
    }

    /// Takes a check out as a change numbered `index`, if it is there: its services take the
    /// index and its probing stops. Writes nothing and invalidates no session: shared by
    /// [`Catalog::remove_check`], [`Catalog::replace_check`] and a replica.
    fn unregister_check(
        &mut self,
        check_id: &str,
        index: u64,
        fx: &mut Effects,
    ) -> Option<Arc<Check>> {
        let check = self.unlink_check(check_id)?;
        self.touch_owner_of(&check, index, fx);
        fx.checks.insert(check_id.to_owned());
        Some(check)
    }

    /// Takes a check out of the maps that find it, answering it; the opposite of
    /// [`Catalog::link_check`].
    fn unlink_check(&mut self, check_id: &str) -> Option<Arc<Check>> {
        let check = self.checks.remove(check_id)?;
        self.checks_journal
            .note(check_id, || Some(Arc::clone(&check)));
        self.deadlines.clear(check_id);
        match check.service_id() {
            Some(sid) => {
                if let Some(set) = self.checks_of.get_mut(sid) {
                    set.remove(check_id);
                }
            }
            None => {
                self.node_checks.remove(check_id);
            }
        }
        Some(check)
    }

    /// Removes a check as part of a change the caller has already numbered: its services take
    /// the current global index, and the sessions bound to it are invalidated.
    fn remove_check(&mut self, check_id: &str, now: Duration, fx: &mut Effects) {
        let index = self.index.get();
        if let Some(check) = self.unregister_check(check_id, index, fx) {
            fx.writes.insert(Write::Check {
                id: check_id.to_owned(),
                owner: check.service_id().map(str::to_owned),
            });
            self.check_failed(check_id, now, fx);
        }
    }

    fn deregister(
        &mut self,
        service_id: &str,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        if !self.instances.contains_key(service_id) {
            return Err(CatalogError::NotFound(format!(
                "unknown service ID {service_id:?}"
            )));
        }
        let index = self.index.bump();
        fx.writes.insert(Write::Instance(service_id.to_owned()));
        for check_id in self.remove_instance(service_id, index, fx) {
            self.remove_check(&check_id, now, fx);
        }
        Ok(())
    }

    /// Adds or replaces a check at a new index. Registering the same definition again (ignoring
    /// its initial status) takes no index and keeps the check's state.
    fn register_check(
        &mut self,
        mut definition: CheckDefinition,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        let name = definition
            .name
            .clone()
            .ok_or_else(|| CatalogError::Invalid("missing check Name".into()))?;
        let check_id = definition.id.get_or_insert_with(|| name.clone()).clone();
        trellis_types::registration::validate_id("CheckID", &check_id)
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let service_name = match &definition.service_id {
            None => None,
            Some(sid) => Some(
                self.instances
                    .get(sid)
                    .map(|i| i.registration.name.clone())
                    .ok_or_else(|| {
                        CatalogError::Invalid(format!("ServiceID {sid:?} does not exist"))
                    })?,
            ),
        };
        if self
            .checks
            .get(&check_id)
            .is_some_and(|c| c.same_definition(&definition))
        {
            return Ok(());
        }
        let index = self.index.bump();
        self.put_check(definition, service_name, index, now, fx);
        Ok(())
    }

    fn deregister_check(
        &mut self,
        check_id: &str,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        if !self.checks.contains_key(check_id) {
            return Err(CatalogError::NotFound(format!(
                "unknown check ID {check_id:?}"
            )));
        }
        self.index.bump();
        self.remove_check(check_id, now, fx);
        Ok(())
    }

    /// A TTL heartbeat: memory-only (no write, it is not acknowledged after a commit). The TTL
    /// restarts either way (its deadline moves in O(log n)), but indexes move only if the
    /// status or the output changed: the usual heartbeat repeating the same status takes no
    /// index and wakes nobody.
    fn update_ttl(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: String,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        let check = ttl_target(self.checks.get_mut(check_id), check_id)?;
        let from = check.status;
        self.checks_journal
            .note(check_id, || Some(Arc::clone(check)));
        let changed = Arc::make_mut(check).update_ttl(status, output, now);
        self.deadlines.set(check_id, due_at(check, self.ttl_expiry));
        if changed {
            self.mark_check_changed(check_id, fx);
            self.record_transition(check_id, Some(from), fx);
            self.check_failed(check_id, now, fx);
        }
        Ok(())
    }

    /// A probe result: memory-only, through the check's hysteresis. Indexes move only if the
    /// status changed; the output is kept but a new output alone takes no index, or every probe
    /// of a check whose output carries a timestamp would wake every watcher.
    fn report_check(
        &mut self,
        check_id: &str,
        result: CheckStatus,
        output: String,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        let check = self
            .checks
            .get_mut(check_id)
            .ok_or_else(|| CatalogError::NotFound(format!("unknown check ID {check_id:?}")))?;
        let from = check.status;
        self.checks_journal
            .note(check_id, || Some(Arc::clone(check)));
        let changed = Arc::make_mut(check).report(result, output, now);
        // Going critical starts the reaper's clock; recovering stops it.
        self.deadlines.set(check_id, due_at(check, self.ttl_expiry));
        if changed {
            self.mark_check_changed(check_id, fx);
            self.record_transition(check_id, Some(from), fx);
            self.check_failed(check_id, now, fx);
        }
        Ok(())
    }

    /// A visible memory-only change: the check's `ModifyIndex` and its services' indexes take a
    /// new index, and nothing is written (a restart restores the last written status and
    /// restarts the timers) unless status changes are persisted.
    fn mark_check_changed(&mut self, check_id: &str, fx: &mut Effects) {
        let index = self.index.bump();
        self.set_check_modified(check_id, index, fx);
        self.touch_check_owner(check_id, index, fx);
    }

    /// Numbers a check's status change `index`, and records its write if status changes are
    /// persisted (see [`Catalog::set_persist_status`]).
    fn set_check_modified(&mut self, check_id: &str, index: u64, fx: &mut Effects) {
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        self.checks_journal
            .note(check_id, || Some(Arc::clone(check)));
        Arc::make_mut(check).modify_index = index;
        if self.persist_status {
            fx.writes.insert(Write::Check {
                id: check_id.to_owned(),
                owner: check.service_id().map(str::to_owned),
            });
        }
    }

    /// Notes in `fx` that check `check_id` went from `from` to its current status, if that
    /// is a change (a new check, `from` = `None`, always is).
    fn record_transition(&self, check_id: &str, from: Option<CheckStatus>, fx: &mut Effects) {
        let Some(check) = self.checks.get(check_id) else {
            return;
        };
        if from == Some(check.status) {
            return;
        }
        fx.transitions.push(CheckTransition {
            check_id: check_id.to_owned(),
            name: check.definition.name.clone().unwrap_or_default(),
            service_id: check.service_id().map(str::to_owned),
            service_name: check.service_name.clone(),
            from,
            to: check.status,
            output: check.output.clone(),
            index: check.modify_index,
        });
    }

    /// The earliest time [`Catalog::tick`] has something to do: a TTL check running out, a
    /// service due for the reaper, a session's TTL running out (or a restored session doomed by
    /// its checks). A deadline at or before the last tick's `now` means due already (a tick left
    /// work for the next one, see [`crate::TICK_BUDGET`]): tick again at once. `None` when
    /// nothing is pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.deadlines.next(), self.sessions.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passes: expired TTL checks turn critical (invalidating the sessions bound to them),
    /// services whose check has been critical longer than its `DeregisterCriticalServiceAfter`
    /// are deregistered (a durable write), sessions whose TTL ran out are invalidated, and
    /// lock-delays that passed are forgotten. Checks and sessions are kept in deadline order, so
    /// only due ones are looked at, at most [`crate::TICK_BUDGET`] of them per call (checks
    /// first); what is left stays due, and [`Catalog::next_deadline`] says so.
    pub fn tick(&mut self, now: Duration, fx: &mut Effects) {
        let due = self.deadlines.pop_due(now, TICK_BUDGET);
        let budget_left = TICK_BUDGET - due.len();
        let mut expired = Vec::new();
        let mut reap = BTreeSet::new();
        for check_id in due {
            let Some(check) = self.checks.get_mut(&*check_id) else {
                continue;
            };
            // Test before make_mut: published views share these Arcs.
            let from = check.status;
            if self.ttl_expiry && check.ttl_due(now) {
                self.checks_journal
                    .note(&*check_id, || Some(Arc::clone(check)));
            }
            if self.ttl_expiry && check.ttl_due(now) && Arc::make_mut(check).expire_ttl(now) {
                expired.push((check_id.clone(), from));
            }
            if check.should_reap(now)
                && let Some(service_id) = check.service_id()
            {
                reap.insert(service_id.to_owned());
            }
            // Everything due by `now` was just acted on (an expiry with a zero reaper delay is
            // reaped in the same tick): only a later deadline goes back in the queue.
            let next = due_at(check, self.ttl_expiry).filter(|deadline| *deadline > now);
            self.deadlines.set(&check_id, next);
        }
        self.mark_expired(expired, now, fx);
        for service_id in reap {
            // Already gone is fine: the reaper and a client may race.
            let _ = self.deregister(&service_id, now, fx);
        }
        let due = self.sessions.due(now, budget_left);
        if !due.is_empty() {
            let index = self.index.bump();
            for id in due {
                self.invalidate_session(&id, index, now, fx);
            }
        }
        self.sessions.prune_lock_delays(now);
    }

    /// Checks whose TTL ran out, with the status each had, change at one index, as one
    /// batch: thousands of TTLs running out together take one number and wake each waiter
    /// once. Their sessions go at that index.
    fn mark_expired(
        &mut self,
        expired: Vec<(Arc<str>, CheckStatus)>,
        now: Duration,
        fx: &mut Effects,
    ) {
        if expired.is_empty() {
            return;
        }
        let index = self.index.bump();
        for (check_id, from) in expired {
            self.set_check_modified(&check_id, index, fx);
            self.touch_check_owner(&check_id, index, fx);
            self.record_transition(&check_id, Some(from), fx);
            self.invalidate_sessions_of_check(&check_id, index, now, fx);
        }
    }

    /// [`Command::ExpireTtl`]: the server that owns the check's expiry saw its TTL run out.
    /// A check that is gone, not a TTL check, or critical already is left as it is (the
    /// owner's view may be behind the leader's).
    fn expire_ttl_now(&mut self, check_id: &str, now: Duration, fx: &mut Effects) {
        let Some(check) = self.checks.get_mut(check_id) else {
            return;
        };
        let from = check.status;
        if !matches!(check.definition.kind, CheckKind::Ttl { .. }) || from == CheckStatus::Critical
        {
            return;
        }
        self.checks_journal
            .note(check_id, || Some(Arc::clone(check)));
        let check = Arc::make_mut(check);
        check.force_expire(now);
        let id: Arc<str> = Arc::from(check_id);
        // Critical now: the reaper's clock runs.
        self.deadlines.set(&id, due_at(check, self.ttl_expiry));
        self.mark_expired(vec![(id, from)], now, fx);
    }

    /// Whether a TTL heartbeat of `status` and `output` would change check `check_id` as this
    /// catalog has it: a heartbeat that changes nothing is only a new deadline, which the
    /// server owning the check's expiry keeps in memory, with no write. Refused as
    /// [`Command::UpdateTtl`] would refuse it (an unknown check, a check that is not a TTL
    /// check).
    pub fn ttl_heartbeat_changes(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<bool, CatalogError> {
        let check = ttl_target(self.checks.get(check_id), check_id)?;
        Ok(check.status != status || check.output != output)
    }
}

/// The check a TTL heartbeat for `check_id` updates: refused if there is none or it is not a
/// TTL check.
fn ttl_target<C: AsRef<Check>>(check: Option<C>, check_id: &str) -> Result<C, CatalogError> {
    let check =
        check.ok_or_else(|| CatalogError::NotFound(format!("unknown check ID {check_id:?}")))?;
    if !matches!(check.as_ref().definition.kind, CheckKind::Ttl { .. }) {
        return Err(CatalogError::Invalid(format!(
            "check {check_id:?} is not a TTL check"
        )));
    }
    Ok(check)
}

/// When `check` next needs a tick: its own next deadline, without the TTL's when the catalog
/// does not expire TTLs itself (see [`Catalog::set_ttl_expiry`]).
fn due_at(check: &Check, ttl_expiry: bool) -> Option<Duration> {
    if ttl_expiry || check.status == CheckStatus::Critical {
        check.next_deadline()
    } else {
        None
    }
}

/// [`Catalog::touch_name`] on the name index alone, so that callers may borrow the name from the
/// catalog's other maps. The index only rises: a leader's `index` is always the newest, but a
/// replica touches a name with each record's own index, in any order within one commit.
fn touch_name(name_index: &mut HashMap<String, u64>, name: &str, index: u64, fx: &mut Effects) {
    let key = service_key(name);
    // Mass changes (thousands of TTLs expiring in one tick) touch the same few names over and
    // over: update in place instead of allocating a key each time.
    match name_index.get_mut(key.as_ref()) {
        Some(existing) => *existing = (*existing).max(index),
        None => {
            name_index.insert(key.clone().into_owned(), index);
        }
    }
    if !fx.services.contains(key.as_ref()) {
        fx.services.insert(key.into_owned());
    }
}

/// Touches the services a check counts for: its own (`service_name`), or every service with
/// instances for a node check (`None`).
fn touch_owner(
    name_index: &mut HashMap<String, u64>,
    by_name: &BTreeMap<String, BTreeSet<String>>,
    service_name: Option<&str>,
    index: u64,
    fx: &mut Effects,
) {
    match service_name {
        Some(name) => touch_name(name_index, name, index, fx),
        None => {
            for name in by_name.keys() {
                touch_name(name_index, name, index, fx);
            }
        }
    }
}

/// The operation of `?acquire=` / `?release=`: `verb` (lock or unlock) writing `value`.
fn lock_op(verb: KvVerb, key: String, value: Vec<u8>, flags: u64, session: String) -> KvOp {
    KvOp {
        value,
        flags,
        session,
        ..KvOp::new(verb, key)
    }
}

/// A transaction's answer from what its plan found.
fn outcome(results: Vec<KvEntry>, failures: Vec<(usize, Failure)>) -> TxnOutcome {
    TxnOutcome {
        results,
        errors: failures
            .into_iter()
            .map(|(op_index, failure)| TxnError {
                op_index,
                what: failure.text().to_owned(),
            })
            .collect(),
    }
}

/// Gives a registration's checks their default IDs and names and binds them to the service.
fn normalise_service_checks(
    registration: &mut ServiceRegistration,
) -> Result<Vec<CheckDefinition>, CatalogError> {
    let definitions = std::mem::take(&mut registration.checks);
    let several = definitions.len() > 1;
    let mut seen = BTreeSet::new();
    definitions
        .into_iter()
        .enumerate()
        .map(|(n, mut d)| {
            let id = d.id.get_or_insert_with(|| {
                if several {
                    format!("service:{}:{}", registration.id, n + 1)
                } else {
                    format!("service:{}", registration.id)
                }
            });
            if !seen.insert(id.clone()) {
                return Err(CatalogError::Invalid(format!("duplicate CheckID {id:?}")));
            }
            d.name
                .get_or_insert_with(|| format!("Service '{}' check", registration.name));
            d.service_id = Some(registration.id.clone());
            Ok(d)
        })
        .collect()
}

/// A small sorted set of IDs. An instance has one or two checks, and a `BTreeSet` would
/// allocate a whole B-tree node (about 280 bytes) for each instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IdSet(Vec<String>);

impl IdSet {
    fn insert(&mut self, id: String) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(pos) => {
                self.0.insert(pos, id);
                true
            }
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.0.binary_search_by(|probe| probe.as_str().cmp(id)) {
            Ok(pos) => {
                self.0.remove(pos);
                true
            }
            Err(_) => false,
        }
    }
}

impl IntoIterator for IdSet {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
