//! A server's place among several sharing one etcd store: alone (the embedded store), the
//! leader (it holds the store's lock and writes), or a follower (it keeps a replica from the
//! leader's commits and hands writes to the leader), and who the leader is.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a server is to the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The only server of its store (embedded or in memory): it decides everything.
    Alone,
    /// It holds the shared store's lock: it applies every write and runs every timer.
    Leader,
    /// Another server writes; `leader` is who, if anybody holds the lock now.
    Follower { leader: Option<Holder> },
}

/// Who holds the shared store, as written in its lock key (JSON, so that an operator reading
/// it with `etcdctl` sees the node and where to reach it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    #[serde(rename = "Node")]
    pub node: String,
    /// The leader's HTTP API, `host:port`.
    #[serde(rename = "Address")]
    pub address: String,
}

impl Holder {
    /// The lock's value as written; a value another program wrote is a holder without an
    /// address (nobody to forward to).
    pub fn parse(value: &str) -> Self {
        serde_json::from_str(value).unwrap_or_else(|_| Self {
            node: value.to_owned(),
            address: String::new(),
        })
    }

    pub fn to_value(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The server's role, shared by the writer (which changes it as the store's feed says), the
/// API (which forwards writes while following), the checker and the coordinator (which run only
/// on the leader).
pub struct Cluster {
    role: watch::Sender<Role>,
    /// Bumped each time the ACL records changed in the shared store (a follower reloads them).
    acl_changed: watch::Sender<u64>,
    /// When the role last changed, for `LastContact`-style reporting.
    since: parking_lot::Mutex<Instant>,
    /// How long since the shared store last answered (its lease's last renewal), and beyond
    /// which age this server no longer claims to know a leader.
    contact: Option<(Contact, Duration)>,
    /// Whether this server holds the shared store's lock.
    holds_lock: Option<HoldsLock>,
}

/// Whether this server holds the shared store's lock now.
pub type HoldsLock = Box<dyn Fn() -> bool + Send + Sync>;

/// Time since the shared store last answered.
pub type Contact = Box<dyn Fn() -> Duration + Send + Sync>;

impl Cluster {
    pub fn new(role: Role) -> Self {
        Self {
            role: watch::channel(role).0,
            acl_changed: watch::channel(0).0,
            since: parking_lot::Mutex::new(Instant::now()),
            contact: None,
            holds_lock: None,
        }
    }

    /// A server sharing a store: it follows until the store says otherwise, and knows no
    /// leader while the store has not answered for `limit`.
    pub fn shared(contact: Contact, limit: Duration, holds_lock: HoldsLock) -> Self {
        Self {
            contact: Some((contact, limit)),
            holds_lock: Some(holds_lock),
            ..Self::new(Role::Follower { leader: None })
        }
    }

    /// How long since the store last answered, when that is past the limit.
    fn out_of_contact(&self) -> Option<Duration> {
        let (contact, limit) = self.contact.as_ref()?;
        Some(contact()).filter(|age| age > limit)
    }

    /// What `X-Consul-LastContact` says: 0 while a leader is known and the store answers,
    /// else for how long that has not been so (milliseconds).
    pub fn last_contact(&self) -> Duration {
        if let Some(age) = self.out_of_contact() {
            return age;
        }
        if self.known_leader() {
            Duration::ZERO
        } else {
            self.role_age()
        }
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Whether this server applies writes itself (alone, or the leader).
    pub fn writes(&self) -> bool {
        matches!(*self.role.borrow(), Role::Alone | Role::Leader)
    }

    /// Whether a leader is known (this server or another) and the store answers.
    pub fn known_leader(&self) -> bool {
        if self.out_of_contact().is_some() {
            return false;
        }
        match &*self.role.borrow() {
            Role::Alone | Role::Leader => true,
            Role::Follower { leader } => leader.is_some(),
        }
    }

    /// The leader to forward to, when it is another server that said where to reach it.
    pub fn leader(&self) -> Option<Holder> {
        match &*self.role.borrow() {
            Role::Follower {
                leader: Some(holder),
            } if !holder.address.is_empty() => Some(holder.clone()),
            _ => None,
        }
    }

    /// Whether this server holds the shared store's lock (false without a shared store).
    pub fn holds_lock(&self) -> bool {
        self.holds_lock.as_ref().is_some_and(|holds| holds())
    }

    pub fn set_role(&self, role: Role) {
        let changed = self.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
        if changed {
            *self.since.lock() = Instant::now();
        }
    }

    /// How long the role has been what it is.
    pub fn role_age(&self) -> Duration {
        self.since.lock().elapsed()
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Waits until this server writes (alone or the leader).
    pub async fn until_writing(&self) {
        let mut role = self.subscribe();
        let _ = role
            .wait_for(|role| matches!(role, Role::Alone | Role::Leader))
            .await;
    }

    pub fn acl_changed(&self) {
        self.acl_changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe_acl(&self) -> watch::Receiver<u64> {
        self.acl_changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_value_round_trips_and_a_foreign_value_has_no_address() {
        let holder = Holder {
            node: "server-a".into(),
            address: "127.0.0.1:8500".into(),
        };
        assert_eq!(Holder::parse(&holder.to_value()), holder);
        assert_eq!(Holder::parse("someone").address, "");
    }

    #[test]
    fn only_a_follower_forwards_and_only_to_a_leader_with_an_address() {
        let cluster = Cluster::new(Role::Alone);
        assert!(cluster.writes() && cluster.known_leader() && cluster.leader().is_none());
        cluster.set_role(Role::Follower { leader: None });
        assert!(!cluster.writes() && !cluster.known_leader());
        cluster.set_role(Role::Follower {
            leader: Some(Holder::parse("someone")),
        });
        assert!(cluster.known_leader() && cluster.leader().is_none());
        let holder = Holder {
            node: "b".into(),
            address: "127.0.0.1:1".into(),
        };
        cluster.set_role(Role::Follower {
            leader: Some(holder.clone()),
        });
        assert_eq!(cluster.leader(), Some(holder));
    }
}
