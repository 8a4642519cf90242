//! The access-control state of this server: `trellis-acl`'s pure `AclState` made durable in its
//! own log (`acl.redb`), with each resolved token's authorizer cached with the state it was
//! resolved from, so a change never leaves a stale grant behind.
//!
//! Reads never wait for a write's fsync: a write is applied to a copy of the state, made durable,
//! then swapped in; writes are serialised by their own lock.

use crate::cluster::Cluster;
use crate::ids::random_uuid;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use trellis_acl::{AclError, AclState, Authorizer, DefaultPolicy, Policy, Token};
use trellis_store::{AclLog, StoreError};

/// Why an ACL write was not made.
#[derive(Debug, thiserror::Error)]
pub enum AclWriteError {
    #[error("{0}")]
    Refused(#[from] AclError),
    #[error("storage failure: {0}")]
    Storage(#[from] StoreError),
}

/// What a token may do: its authorizer, and whether it may do everything but ACL management
/// (no rule restricts it under the default policy `allow`, or it is a management token), so
/// list endpoints can answer their shared, unfiltered rendering.
#[derive(Debug)]
pub struct Grant {
    pub authorizer: Authorizer,
    pub unrestricted: bool,
    /// The last `/v1/catalog/services` answer filtered for this grant, with the services index
    /// it is for: a token's list is the same until a service changes, so it is filtered once.
    pub services_list: Mutex<Option<(u64, bytes::Bytes)>>,
}

/// One version of the state and the grants resolved from it (by the secret's hash: secrets are
/// never kept). A write makes a new generation, so grants resolved from an old one go with it,
/// even those a reader was computing while the write was made current.
pub struct Generation {
    state: AclState,
    grants: DashMap<String, Arc<Grant>>,
}

impl std::ops::Deref for Generation {
    type Target = AclState;
    fn deref(&self) -> &AclState {
        &self.state
    }
}

impl Generation {
    fn new(state: AclState) -> Arc<Self> {
        Arc::new(Self {
            state,
            grants: DashMap::new(),
        })
    }
}

pub struct Acl {
    current: RwLock<Arc<Generation>>,
    /// Serialises writes (apply to a copy, commit, swap).
    writing: Mutex<()>,
    log: Box<dyn AclLog>,
    default_policy: DefaultPolicy,
    /// Policies limited to other datacenters do not apply here.
    datacenter: String,
}

const TOKEN_PREFIX: &str = "token/";
const POLICY_PREFIX: &str = "policy/";
const BOOTSTRAP_KEY: &str = "meta/bootstrap";

impl Acl {
    /// Loads the state from `log`; with `initial_management` (a secret), an unbootstrapped
    /// state is bootstrapped with it, as Consul's `acl.tokens.initial_management`.
    pub fn open(
        log: Box<dyn AclLog>,
        default_policy: DefaultPolicy,
        datacenter: &str,
        initial_management: Option<&str>,
        now_ms: u64,
    ) -> Result<Self, AclWriteError> {
        let state = load_state(log.as_ref())?;
        let acl = Self {
            current: RwLock::new(Generation::new(state)),
            writing: Mutex::new(()),
            log,
            default_policy,
            datacenter: datacenter.to_owned(),
        };
        if let Some(secret) = initial_management
            && acl.state().bootstrapped().is_none()
        {
            let accessor = random_uuid();
            acl.write(|state| state.bootstrap(&accessor, secret, now_ms).map(drop))?;
        }
        Ok(acl)
    }

    /// Reads the state again from the log (another server changed it).
    pub fn reload(&self) -> Result<(), StoreError> {
        let _writing = self.writing.lock();
        let state = load_state(self.log.as_ref())?;
        *self.current.write() = Generation::new(state);
        Ok(())
    }

    /// The current state (a snapshot: later writes do not change it).
    pub fn state(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read())
    }

    /// What `secret` may do (none or empty: the anonymous token); `Err` for an unknown secret
    /// ("ACL not found").
    pub fn authorize(&self, secret: Option<&str>) -> Result<Arc<Grant>, AclError> {
        let secret = secret.filter(|s| !s.is_empty());
        let state = self.state();
        let key = secret.map(trellis_acl::hash_secret).unwrap_or_default();
        if let Some(found) = state.grants.get(&key) {
            return Ok(Arc::clone(&found));
        }
        let authorizer = state.authorize_in(secret, self.default_policy, &self.datacenter)?;
        let no_rules = match secret {
            Some(secret) => state.token_by_secret(secret),
            None => state.token(trellis_acl::ANONYMOUS_ACCESSOR_ID),
        }
        .is_some_and(|token| token.policies.is_empty());
        let unrestricted = authorizer.is_management()
            || (no_rules && matches!(self.default_policy, DefaultPolicy::Allow));
        let grant = Arc::new(Grant {
            authorizer,
            unrestricted,
            services_list: Mutex::new(None),
        });
        // Bounded by the tokens that exist: an unknown secret fails above and caches nothing.
        state.grants.insert(key, Arc::clone(&grant));
        Ok(grant)
    }

    /// Applies `change` to a copy of the state, makes every record it changed durable, then
    /// makes the copy current. Nothing is visible, and nothing is answered, before the commit.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut AclState) -> Result<T, AclError>,
    ) -> Result<T, AclWriteError> {
        let _writing = self.writing.lock();
        let before = self.state();
        let mut after = before.state.clone();
        let value = change(&mut after)?;
        let (puts, deletes) = diff(&before, &after)?;
        let puts: Vec<(&str, &[u8])> = puts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let deletes: Vec<&str> = deletes.iter().map(String::as_str).collect();
        self.log.commit(after.index(), &puts, &deletes)?;
        *self.current.write() = Generation::new(after);
        Ok(value)
    }
}

/// The ACL state as its log holds it.
fn load_state(log: &dyn AclLog) -> Result<AclState, StoreError> {
    let snapshot = log.load()?;
    let mut tokens = Vec::new();
    let mut policies = Vec::new();
    let mut bootstrap_index = None;
    for (key, bytes) in &snapshot.records {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        };
        if key.starts_with(TOKEN_PREFIX) {
            tokens.push(serde_json::from_slice::<Token>(bytes).map_err(corrupt)?);
        } else if key.starts_with(POLICY_PREFIX) {
            policies.push(serde_json::from_slice::<Policy>(bytes).map_err(corrupt)?);
        } else if key == BOOTSTRAP_KEY {
            bootstrap_index = Some(serde_json::from_slice::<u64>(bytes).map_err(corrupt)?);
        }
    }
    Ok(AclState::restore(
        tokens,
        policies,
        bootstrap_index,
        snapshot.index,
    ))
}

/// On a server sharing its store with others: reloads the ACL state whenever the leader
/// changed it, and, once this server leads, bootstraps it with `initial_management` if nobody
/// has yet (Consul's `acl.tokens.initial_management`, applied by the leader).
pub async fn follow(acl: Arc<Acl>, cluster: Arc<Cluster>, initial_management: Option<String>) {
    let mut changed = cluster.subscribe_acl();
    let mut role = cluster.subscribe();
    let mut failed = false;
    loop {
        if failed {
            // The store did not answer: try again soon rather than at the next change.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        } else {
            tokio::select! {
                moved = changed.changed() => if moved.is_err() { return },
                moved = role.changed() => if moved.is_err() { return },
            }
        }
        let (acl, writes, secret) = (acl.clone(), cluster.writes(), initial_management.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            acl.reload()?;
            if writes
                && let Some(secret) = secret
                && acl.state().bootstrapped().is_none()
            {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let accessor = random_uuid();
                acl.write(|state| state.bootstrap(&accessor, &secret, now_ms).map(drop))?;
            }
            Ok::<_, AclWriteError>(())
        })
        .await;
        failed = matches!(outcome, Ok(Err(_)));
        if let Ok(Err(error)) = outcome {
            tracing::error!(%error, "cannot bring the ACL state up to date with the store");
        }
    }
}

/// Records to write (key, JSON) and keys to delete.
type Changes = (Vec<(String, Vec<u8>)>, Vec<String>);

/// The records to write and delete to go from `before` to `after`.
fn diff(before: &AclState, after: &AclState) -> Result<Changes, StoreError> {
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for token in after.tokens() {
        if before.token(&token.accessor_id) != Some(token) {
            puts.push((
                format!("{TOKEN_PREFIX}{}", token.accessor_id),
                serde_json::to_vec(token)?,
            ));
        }
    }
    for token in before.tokens() {
        if after.token(&token.accessor_id).is_none() {
            deletes.push(format!("{TOKEN_PREFIX}{}", token.accessor_id));
        }
    }
    for policy in after.policies() {
        if before.policy(&policy.id) != Some(policy) {
            puts.push((
                format!("{POLICY_PREFIX}{}", policy.id),
                serde_json::to_vec(policy)?,
            ));
        }
    }
    for policy in before.policies() {
        if after.policy(&policy.id).is_none() {
            deletes.push(format!("{POLICY_PREFIX}{}", policy.id));
        }
    }
    if let Some(index) = after.bootstrapped()
        && before.bootstrapped().is_none()
    {
        puts.push((BOOTSTRAP_KEY.to_owned(), serde_json::to_vec(&index)?));
    }
    Ok((puts, deletes))
}
