//! The catalog: applies commands to services, checks and KV, keeps the Consul index rules, and
//! reports what changed (for publishing) and what must be written (for durability).

use crate::CatalogError;
use crate::check::Check;
use crate::kv::{KvEntry, Tombstones};
use crate::record::{CheckRecord, InstanceRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use trellis_types::registration::service_key;
use trellis_types::{CheckDefinition, CheckKind, CheckStatus, ServiceRegistration};

/// Most checks [`Catalog::tick`] examines per call.
pub const TICK_BUDGET: usize = 16_384;

/// Longest KV key accepted.
pub const MAX_KEY_LEN: usize = 512;

/// A state change requested through the API (or by the server's own health checker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register {
        registration: ServiceRegistration,
        replace_existing_checks: bool,
    },
    Deregister {
        service_id: String,
    },
    RegisterCheck {
        check: CheckDefinition,
    },
    DeregisterCheck {
        check_id: String,
    },
    /// A TTL check update from the application (memory-only).
    UpdateTtl {
        check_id: String,
        status: CheckStatus,
        output: String,
    },
    /// A probe result of an HTTP or TCP check (memory-only, through hysteresis).
    ReportCheck {
        check_id: String,
        result: CheckStatus,
        output: String,
    },
    KvPut {
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
}

impl Command {
    /// Whether a successful command needs a durable write before it is acknowledged.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Self::UpdateTtl { .. } | Self::ReportCheck { .. })
    }
}

/// The answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// KV writes answer `true`/`false` (a failed CAS is `false`).
    Bool(bool),
}

/// A record whose durable copy must be brought up to date: written if it still exists in the
/// catalog, deleted otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Write {
    Instance(String),
    /// A check, with the instance it belongs to (none for a node check): the store keeps a
    /// service's checks next to its instance.
    Check {
        id: String,
        owner: Option<String>,
    },
    Kv(String),
}

/// What a batch of commands changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Service keys ([`service_key`]) whose views must be republished.
    pub services: BTreeSet<String>,
    /// The list of service names or their tags may have changed.
    pub services_list: bool,
    /// Some KV entry changed.
    pub kv: bool,
    /// Records to persist.
    pub writes: BTreeSet<Write>,
    /// Check IDs whose active (HTTP/TCP) probing must be started, restarted or stopped.
    pub checks: BTreeSet<String>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.services_list
            && !self.kv
            && self.writes.is_empty()
            && self.checks.is_empty()
    }
}

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

#[derive(Debug, Clone)]
pub struct Catalog {
    index: u64,
    services_index: u64,
    kv_index: u64,
    instances: BTreeMap<String, Arc<InstanceRecord>>,
    /// Instance IDs per service key ([`service_key`]: names match without regard to case).
    by_name: BTreeMap<String, BTreeSet<String>>,
    /// Last change per service key; kept after the last instance leaves so watchers see it.
    name_index: HashMap<String, u64>,
    checks: BTreeMap<String, Arc<Check>>,
    /// Check IDs per instance ID.
    checks_of: HashMap<String, IdSet>,
    /// Checks not bound to a service: they count for every service on the node.
    node_checks: BTreeSet<String>,
    kv: BTreeMap<String, KvEntry>,
    tombstones: Tombstones,
    /// The last check [`Catalog::tick`] examined; the next tick resumes after it.
    tick_cursor: Option<String>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// An empty catalog; indexes start at 1 because Consul clients treat 0 as "no index".
    pub fn new() -> Self {
        Self {
            index: 1,
            services_index: 1,
            kv_index: 1,
            instances: BTreeMap::new(),
            by_name: BTreeMap::new(),
            name_index: HashMap::new(),
            checks: BTreeMap::new(),
            checks_of: HashMap::new(),
            node_checks: BTreeSet::new(),
            kv: BTreeMap::new(),
            tombstones: Tombstones::default(),
            tick_cursor: None,
        }
    }

    /// Rebuilds a catalog from durable records. Indexes continue above everything restored.
    pub fn restore(
        index: u64,
        instances: Vec<InstanceRecord>,
        checks: Vec<CheckRecord>,
        kv: Vec<KvEntry>,
        now: Duration,
    ) -> Self {
        let mut catalog = Self::new();
        let mut top = index.max(1);
        for record in instances {
            top = top.max(record.modify_index);
            let id = record.registration.id.clone();
            let key = service_key(&record.registration.name).into_owned();
            catalog
                .by_name
                .entry(key.clone())
                .or_default()
                .insert(id.clone());
            let entry = catalog.name_index.entry(key).or_insert(0);
            *entry = (*entry).max(record.modify_index);
            catalog.instances.insert(id, Arc::new(record));
        }
        for record in checks {
            top = top.max(record.modify_index);
            let service_id = record.definition.service_id.clone();
            let service_name = service_id
                .as_ref()
                .and_then(|sid| catalog.instances.get(sid))
                .map(|i| i.registration.name.clone());
            if service_id.is_some() && service_name.is_none() {
                continue; // its service is gone; the check went with it
            }
            let check = Check::restore(record, service_name.clone(), now);
            let id = check.id().to_owned();
            match service_id {
                Some(sid) => {
                    catalog.checks_of.entry(sid).or_default().insert(id.clone());
                }
                None => {
                    catalog.node_checks.insert(id.clone());
                }
            }
            catalog.checks.insert(id, Arc::new(check));
        }
        for entry in kv {
            top = top.max(entry.modify_index);
            catalog.kv.insert(entry.key.clone(), entry);
        }
        // Start every index at the restored top: deletes before the restart left no trace, and
        // a per-resource index must never go backwards across a restart.
        catalog.index = top;
        catalog.services_index = top;
        catalog.kv_index = top;
        for index in catalog.name_index.values_mut() {
            *index = top;
        }
        catalog.tombstones.raise_floor(top);
        catalog
    }

    /// The global index: the highest index of any change.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Index of the list of services (`/v1/catalog/services`), also used for unknown names.
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// Index of one service name: its last change, or the services index if never seen.
    pub fn service_index(&self, name: &str) -> u64 {
        self.name_index
            .get(service_key(name).as_ref())
            .copied()
            .unwrap_or(self.services_index)
    }

    /// Index of the KV entries under a prefix (a key is a prefix of itself), never below 1.
    pub fn kv_index(&self, prefix: &str) -> u64 {
        let live = self
            .kv_range(prefix)
            .map(|e| e.modify_index)
            .max()
            .unwrap_or(0);
        live.max(self.tombstones.max_under(prefix)).max(1)
    }

    /// Index of the whole KV store.
    pub fn kv_store_index(&self) -> u64 {
        self.kv_index
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

    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.kv.get(key)
    }

    pub fn kv_range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.kv
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// The durable record of a check ([`Write::Check`]), or `None` if it must be deleted.
    pub fn check_record(&self, id: &str) -> Option<CheckRecord> {
        self.checks.get(id).map(|c| c.record())
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

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn touch_name(&mut self, name: &str, index: u64, fx: &mut Effects) {
        let key = service_key(name);
        // Mass changes (thousands of TTLs expiring in one tick) touch the same few names over
        // and over: update in place instead of allocating a key each time.
        match self.name_index.get_mut(key.as_ref()) {
            Some(existing) => *existing = index,
            None => {
                self.name_index.insert(key.clone().into_owned(), index);
            }
        }
        if !fx.services.contains(key.as_ref()) {
            fx.services.insert(key.into_owned());
        }
    }

    /// Marks the services a check belongs to as changed (all of them for a node check).
    fn touch_check_owner(&mut self, check_id: &str, index: u64, fx: &mut Effects) {
        let Some(check) = self.checks.get(check_id) else {
            return;
        };
        match check.service_name.clone() {
            Some(name) => self.touch_name(&name, index, fx),
            None => {
                let names: Vec<String> = self.by_name.keys().cloned().collect();
                for name in names {
                    self.touch_name(&name, index, fx);
                }
            }
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
                self.deregister(&service_id, fx).map(|()| Reply::Done)
            }
            Command::RegisterCheck { check } => {
                self.register_check(check, now, fx).map(|()| Reply::Done)
            }
            Command::DeregisterCheck { check_id } => {
                self.deregister_check(&check_id, fx).map(|()| Reply::Done)
            }
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
            Command::KvPut {
                key,
                value,
                flags,
                cas,
            } => self.kv_put(key, value, flags, cas, fx).map(Reply::Bool),
            Command::KvDelete { key, recurse, cas } => {
                self.kv_delete(&key, recurse, cas, fx).map(Reply::Bool)
            }
        }
    }

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
        let index = self.bump();
        if let Some(old) = &existing
            && old.registration.name != name
        {
            self.remove_from_name(&old.registration.name, &id, index, fx);
        }
        let create_index = existing.as_ref().map_or(index, |e| e.create_index);
        self.instances.insert(
            id.clone(),
            Arc::new(InstanceRecord {
                registration,
                create_index,
                modify_index: index,
            }),
        );
        self.by_name
            .entry(service_key(&name).into_owned())
            .or_default()
            .insert(id.clone());
        self.services_index = index;
        fx.services_list = true;
        fx.writes.insert(Write::Instance(id.clone()));
        self.touch_name(&name, index, fx);
        for check_id in stale_checks {
            self.remove_check(&check_id, fx);
        }
        // Checks kept from before follow a renamed service.
        for check_id in self.checks_of.get(&id).cloned().unwrap_or_default() {
            if let Some(check) = self.checks.get_mut(&check_id)
                && check.service_name.as_deref() != Some(name.as_str())
            {
                Arc::make_mut(check).service_name = Some(name.clone());
            }
        }
        for definition in definitions {
            self.put_check(definition, Some(name.clone()), index, now, fx);
        }
        Ok(())
    }

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
        if let Some(existing) = self.checks.get(&check_id)
            && existing.same_definition(&definition)
        {
            return;
        }
        let previous = self.checks.get(&check_id).cloned();
        let service_id = definition.service_id.clone();
        if let Some(previous) = &previous {
            // The ID may move from one owner to another: the old owner's copy goes.
            self.unlink_check(previous);
            self.touch_check_owner(&check_id, index, fx);
            let old_owner = previous.service_id().map(str::to_owned);
            if old_owner != service_id {
                fx.writes.insert(Write::Check {
                    id: check_id.clone(),
                    owner: old_owner,
                });
            }
        }
        let explicit_status = definition.status.is_some();
        let mut check = Check::new(definition, service_name, index, now);
        if let Some(previous) = previous {
            check.create_index = previous.create_index;
            if !explicit_status && previous.definition.kind == check.definition.kind {
                check.status = previous.status;
                check.output = previous.output.clone();
            }
        }
        match &service_id {
            Some(sid) => {
                self.checks_of
                    .entry(sid.clone())
                    .or_default()
                    .insert(check_id.clone());
            }
            None => {
                self.node_checks.insert(check_id.clone());
            }
        }
        self.checks.insert(check_id.clone(), Arc::new(check));
        self.touch_check_owner(&check_id, index, fx);
        fx.writes.insert(Write::Check {
            id: check_id.clone(),
            owner: service_id,
        });
        fx.checks.insert(check_id);
    }

    fn unlink_check(&mut self, check: &Check) {
        match check.service_id() {
            Some(sid) => {
                if let Some(set) = self.checks_of.get_mut(sid) {
                    set.remove(check.id());
                }
            }
            None => {
                self.node_checks.remove(check.id());
            }
        }
    }

    fn remove_check(&mut self, check_id: &str, fx: &mut Effects) {
        let index = self.index;
        self.touch_check_owner(check_id, index, fx);
        if let Some(check) = self.checks.remove(check_id) {
            self.unlink_check(&check);
            fx.writes.insert(Write::Check {
                id: check_id.to_owned(),
                owner: check.service_id().map(str::to_owned),
            });
            fx.checks.insert(check_id.to_owned());
        }
    }

    fn deregister(&mut self, service_id: &str, fx: &mut Effects) -> Result<(), CatalogError> {
        let Some(record) = self.instances.remove(service_id) else {
            return Err(CatalogError::NotFound(format!(
                "unknown service ID {service_id:?}"
            )));
        };
        let index = self.bump();
        self.remove_from_name(&record.registration.name, service_id, index, fx);
        self.services_index = index;
        fx.services_list = true;
        fx.writes.insert(Write::Instance(service_id.to_owned()));
        for check_id in self.checks_of.remove(service_id).unwrap_or_default() {
            self.checks.remove(&check_id);
            fx.writes.insert(Write::Check {
                id: check_id.clone(),
                owner: Some(service_id.to_owned()),
            });
            fx.checks.insert(check_id);
        }
        Ok(())
    }

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
        let index = self.bump();
        self.put_check(definition, service_name, index, now, fx);
        Ok(())
    }

    fn deregister_check(&mut self, check_id: &str, fx: &mut Effects) -> Result<(), CatalogError> {
        if !self.checks.contains_key(check_id) {
            return Err(CatalogError::NotFound(format!(
                "unknown check ID {check_id:?}"
            )));
        }
        self.bump();
        self.remove_check(check_id, fx);
        Ok(())
    }

    fn update_ttl(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: String,
        now: Duration,
        fx: &mut Effects,
    ) -> Result<(), CatalogError> {
        let check = self
            .checks
            .get_mut(check_id)
            .ok_or_else(|| CatalogError::NotFound(format!("unknown check ID {check_id:?}")))?;
        if !matches!(check.definition.kind, CheckKind::Ttl { .. }) {
            return Err(CatalogError::Invalid(format!(
                "check {check_id:?} is not a TTL check"
            )));
        }
        if Arc::make_mut(check).update_ttl(status, output, now) {
            self.mark_check_changed(check_id, fx);
        }
        Ok(())
    }

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
        if Arc::make_mut(check).report(result, output, now) {
            self.mark_check_changed(check_id, fx);
        }
        Ok(())
    }

    /// A status change: bumps the check's and its services' indexes (memory-only, no write).
    fn mark_check_changed(&mut self, check_id: &str, fx: &mut Effects) {
        let index = self.bump();
        if let Some(check) = self.checks.get_mut(check_id) {
            Arc::make_mut(check).modify_index = index;
        }
        self.touch_check_owner(check_id, index, fx);
    }

    fn kv_put(
        &mut self,
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
        fx: &mut Effects,
    ) -> Result<bool, CatalogError> {
        validate_key(&key)?;
        let existing = self.kv.get(&key);
        let allowed = match (cas, existing) {
            (None, _) => true,
            (Some(0), found) => found.is_none(),
            (Some(want), Some(found)) => found.modify_index == want,
            (Some(_), None) => false,
        };
        if !allowed {
            return Ok(false);
        }
        let create_index = existing.map(|e| e.create_index);
        let index = self.bump();
        self.kv_index = index;
        self.tombstones.remove(&key);
        self.kv.insert(
            key.clone(),
            KvEntry {
                key: key.clone(),
                value,
                flags,
                create_index: create_index.unwrap_or(index),
                modify_index: index,
            },
        );
        fx.kv = true;
        fx.writes.insert(Write::Kv(key));
        Ok(true)
    }

    fn kv_delete(
        &mut self,
        key: &str,
        recurse: bool,
        cas: Option<u64>,
        fx: &mut Effects,
    ) -> Result<bool, CatalogError> {
        let doomed: Vec<String> = if recurse {
            if cas.is_some() {
                return Err(CatalogError::Invalid(
                    "cas cannot be used with recurse".into(),
                ));
            }
            self.kv_range(key).map(|e| e.key.clone()).collect()
        } else {
            match (self.kv.get(key), cas) {
                (Some(entry), Some(want)) if entry.modify_index != want => return Ok(false),
                (None, Some(_)) => return Ok(false),
                (Some(_), _) => vec![key.to_owned()],
                (None, None) => Vec::new(),
            }
        };
        if doomed.is_empty() {
            return Ok(true);
        }
        let index = self.bump();
        self.kv_index = index;
        for key in doomed {
            self.kv.remove(&key);
            self.tombstones.insert(key.clone(), index);
            fx.writes.insert(Write::Kv(key));
        }
        fx.kv = true;
        Ok(true)
    }

    /// Time passes: expired TTL checks turn critical, and services whose check has been critical
    /// longer than its `DeregisterCriticalServiceAfter` are deregistered (a durable write).
    pub fn tick(&mut self, now: Duration, fx: &mut Effects) {
        let mut expired = Vec::new();
        let mut doomed = BTreeSet::new();
        let mut examine = |id: &String, check: &mut Arc<Check>| {
            // Test before make_mut: published views share these Arcs, and cloning every check
            // on every tick would cost far more than the scan.
            if check.ttl_due(now) && Arc::make_mut(check).expire_ttl(now) {
                expired.push(id.clone());
            }
            if check.should_reap(now)
                && let Some(service_id) = check.service_id()
            {
                doomed.insert(service_id.to_owned());
            }
        };
        // At most TICK_BUDGET checks per tick, resuming after the last one examined: with
        // hundreds of thousands of checks a full pass (pointer chasing through every check)
        // would hold the writer for tens of milliseconds each tick; this way a pass spans a
        // few ticks instead.
        let budget = self.checks.len().min(TICK_BUDGET);
        let mut seen = 0;
        let mut last: Option<String> = None;
        if let Some(cursor) = self.tick_cursor.take() {
            let mut tail_last = None;
            for (id, check) in self
                .checks
                .range_mut::<str, _>((Bound::Excluded(cursor.as_str()), Bound::Unbounded))
                .take(budget)
            {
                examine(id, check);
                tail_last = Some(id);
                seen += 1;
            }
            last = tail_last.cloned();
        }
        let mut head_last = None;
        for (id, check) in self.checks.iter_mut().take(budget - seen) {
            examine(id, check);
            head_last = Some(id);
        }
        if let Some(id) = head_last {
            last = Some(id.clone());
        }
        self.tick_cursor = last;
        if !expired.is_empty() {
            // Everything that expired in this tick changes at one index, as one batch.
            let index = self.bump();
            for check_id in expired {
                if let Some(check) = self.checks.get_mut(&check_id) {
                    Arc::make_mut(check).modify_index = index;
                }
                self.touch_check_owner(&check_id, index, fx);
            }
        }
        for service_id in doomed {
            // Already gone is fine: the reaper and a client may race.
            let _ = self.deregister(&service_id, fx);
        }
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

fn validate_key(key: &str) -> Result<(), CatalogError> {
    if key.is_empty() {
        return Err(CatalogError::Invalid("missing key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(CatalogError::Invalid(format!(
            "key longer than {MAX_KEY_LEN} bytes"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(CatalogError::Invalid(
            "key contains control characters".into(),
        ));
    }
    Ok(())
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
