//! A server's place among several sharing one etcd store: alone (the embedded store), the
//! leader (it holds the store's lock and writes), or a follower (it keeps a replica from the
//! leader's commits and hands writes to the leader), and who the leader is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Whether that API speaks HTTPS.
    #[serde(rename = "TLS", default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

impl Holder {
    /// The lock's value as written; a value another program wrote is a holder without an
    /// address (nobody to forward to).
    pub fn parse(value: &str) -> Self {
        serde_json::from_str(value).unwrap_or_else(|_| Self {
            node: value.to_owned(),
            address: String::new(),
            tls: false,
        })
    }

    /// The URL of `path` (with its query) on this server's HTTP API.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
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
    /// Bumped each time the CA's records changed in the shared store (every server takes it).
    ca_changed: watch::Sender<u64>,
    /// When the role last changed, for `LastContact`-style reporting.
    since: parking_lot::Mutex<Instant>,
    /// The shared store, and the age of its last answer beyond which this server no longer
    /// claims to know a leader.
    store: Option<(Arc<dyn SharedStore>, Duration)>,
    /// This server's member ID, and the live members (their IDs and holders) as the store's
    /// feed reports them: among them the active probes are shared out.
    me: String,
    members: parking_lot::RwLock<BTreeMap<String, Holder>>,
    /// Bumped each time the members changed (the checks each server owns move).
    members_changed: watch::Sender<u64>,
    /// The secret the servers of the store share (see `trellis_etcd::EtcdStore::shared_secret`).
    secret: std::sync::OnceLock<String>,
    /// The client this server talks to the others with, once set (HTTPS among servers with
    /// TLS); plain HTTP until then.
    peer: std::sync::OnceLock<reqwest::Client>,
    /// When this server last tried to depose a leader it could not reach.
    deposed_at: parking_lot::Mutex<Option<Instant>>,
}

/// What a server asks of the store it shares with others.
pub trait SharedStore: Send + Sync {
    /// Time since the store last answered (its lease's last renewal).
    fn last_contact(&self) -> Duration;
    /// Whether this server holds the store's lock, as far as it knows.
    fn holds_lock(&self) -> bool;
    /// Whether a quorum of the store confirms, now, that this server holds its lock.
    fn confirm_lock(&self) -> Pin<Box<dyn Future<Output = bool> + Send>>;
    /// Ends the lease of the lock's holder if the lock still names `holder` (another server);
    /// whether it did.
    fn depose(&self, holder: Holder) -> Pin<Box<dyn Future<Output = bool> + Send>>;
    /// Renews a session's TTL (its lease, with no write); whether it was still alive.
    fn renew_session(&self, id: &str)
    -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;
}

impl SharedStore for trellis_etcd::EtcdStore {
    fn last_contact(&self) -> Duration {
        trellis_etcd::EtcdStore::last_contact(self)
    }

    fn holds_lock(&self) -> bool {
        trellis_etcd::EtcdStore::holds_lock(self)
    }

    fn confirm_lock(&self) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(trellis_etcd::EtcdStore::confirm_lock(self))
    }

    fn depose(&self, holder: Holder) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(trellis_etcd::EtcdStore::depose(self, move |value| {
            Holder::parse(&String::from_utf8_lossy(value)) == holder
        }))
    }

    fn renew_session(
        &self,
        id: &str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
        let renewed = trellis_etcd::EtcdStore::renew_session(self, id);
        Box::pin(async move { renewed.await.map_err(|error| error.to_string()) })
    }
}

impl Cluster {
    pub fn new(role: Role) -> Self {
        Self {
            role: watch::channel(role).0,
            acl_changed: watch::channel(0).0,
            ca_changed: watch::channel(0).0,
            since: parking_lot::Mutex::new(Instant::now()),
            store: None,
            me: String::new(),
            members: parking_lot::RwLock::new(BTreeMap::new()),
            members_changed: watch::channel(0).0,
            secret: std::sync::OnceLock::new(),
            peer: std::sync::OnceLock::new(),
            deposed_at: parking_lot::Mutex::new(None),
        }
    }

    /// A server sharing a store: it follows until the store says otherwise, and knows no
    /// leader while the store has not answered for `limit`.
    pub fn shared(store: Arc<dyn SharedStore>, limit: Duration, me: String) -> Self {
        Self {
            me,
            store: Some((store, limit)),
            ..Self::new(Role::Follower { leader: None })
        }
    }

    /// How long since the store last answered, when that is past the limit.
    fn out_of_contact(&self) -> Option<Duration> {
        let (store, limit) = self.store.as_ref()?;
        Some(store.last_contact()).filter(|age| age > limit)
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

    /// This server's member ID (empty when alone).
    pub fn member_id(&self) -> &str {
        &self.me
    }

    /// A member announced itself (`Some`) or went (`None`).
    pub fn set_member(&self, id: String, holder: Option<Holder>) {
        let mut members = self.members.write();
        match holder {
            Some(holder) => members.insert(id, holder),
            None => members.remove(&id),
        };
        drop(members);
        self.members_changed.send_modify(|n| *n += 1);
    }

    /// Forgets every member: the store's feed names the live ones again.
    pub fn clear_members(&self) {
        self.members.write().clear();
        self.members_changed.send_modify(|n| *n += 1);
    }

    /// Changes each time the members change.
    pub fn subscribe_members(&self) -> watch::Receiver<u64> {
        self.members_changed.subscribe()
    }

    /// The live members sharing the store, as they announced themselves.
    pub fn members(&self) -> Vec<Holder> {
        self.members.read().values().cloned().collect()
    }

    /// The client for the other servers (see `tls::peer_client`).
    pub fn set_peer_client(&self, client: reqwest::Client) {
        let _ = self.peer.set(client);
    }

    /// The client this server forwards requests and hands probe results over with.
    pub fn peer(&self) -> &reqwest::Client {
        self.peer
            .get_or_init(|| peer_client_builder().build().unwrap_or_default())
    }

    pub fn set_secret(&self, secret: String) {
        let _ = self.secret.set(secret);
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.get().map(String::as_str)
    }

    /// Whether this server runs the active probes of check `check_id`: alone, always; among
    /// servers sharing a store, the live member that rendezvous hashing picks for it, so each
    /// probe runs on exactly one server and a server's share moves to the others when it goes.
    /// Until this server knows itself a member, the leader probes everything.
    pub fn probes(&self, check_id: &str) -> bool {
        if self.role() == Role::Alone {
            return true;
        }
        let members = self.members.read();
        if !members.contains_key(&self.me) {
            return self.writes();
        }
        rendezvous(members.keys().map(String::as_str), check_id) == Some(self.me.as_str())
    }

    /// Who owns check `check_id`'s probes and TTL expiry ([`Cluster::probes`]): this server,
    /// or another live member and where to reach it.
    pub fn owner(&self, check_id: &str) -> Owner {
        if self.probes(check_id) {
            return Owner::Me;
        }
        let members = self.members.read();
        let owner = rendezvous(members.keys().map(String::as_str), check_id)
            .and_then(|id| members.get(id))
            .filter(|holder| !holder.address.is_empty());
        match owner.cloned().or_else(|| self.leader()) {
            Some(holder) => Owner::Other(holder),
            // Nobody else to hand it to: this server does what it can.
            None => Owner::Me,
        }
    }

    /// Hands what a check's owner found to the leader, which writes it; the leader's index
    /// once it has (to catch up with), or why not.
    pub async fn report(&self, report: &CheckReport) -> Result<u64, String> {
        let (Some(leader), Some(secret)) = (self.leader(), self.secret()) else {
            return Err("no cluster leader".to_owned());
        };
        let request = self
            .peer()
            .put(leader.url(REPORT_PATH))
            .timeout(Duration::from_secs(10))
            .header(SECRET_HEADER, secret)
            .json(report);
        let answer = self
            .send_to_leader(&leader, request)
            .await
            .map_err(|error| format!("cannot reach the cluster leader {}: {error}", leader.node))?;
        if !answer.status().is_success() {
            let status = answer.status();
            let reason = answer.text().await.unwrap_or_default();
            return Err(format!("the leader answered {status}: {}", reason.trim()));
        }
        Ok(answer
            .headers()
            .get(LEADER_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Sends `request` (made with [`Cluster::peer`]) to `leader`. When no connection can be
    /// made, it first checks whether the leader is gone and deposes it if so
    /// ([`Cluster::depose_if_gone`]), so that a retry finds a new leader.
    pub async fn send_to_leader(
        &self,
        leader: &Holder,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let sent = request.send().await;
        if sent.as_ref().is_err_and(reqwest::Error::is_connect) {
            self.depose_if_gone(leader).await;
        }
        sent
    }

    /// Renews session `id`'s TTL in the shared store (its etcd lease), from any server:
    /// whether it was still alive. `None` without a shared store (the catalog renews it).
    pub async fn renew_session(&self, id: &str) -> Option<Result<bool, String>> {
        let (store, _) = self.store.as_ref()?;
        Some(store.renew_session(id).await)
    }

    /// Whether this server holds the shared store's lock (false without a shared store).
    pub fn holds_lock(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|(store, _)| store.holds_lock())
    }

    /// Whether this server may answer a `?consistent` read: alone, always; sharing a store,
    /// only as the leader and once a quorum of the store has confirmed that it still is (as
    /// Consul's leader verifies its leadership before such a read).
    pub async fn confirm_leadership(&self) -> bool {
        match (self.role(), &self.store) {
            (Role::Alone, _) => true,
            (Role::Leader, Some((store, _))) => store.confirm_lock().await,
            _ => false,
        }
    }

    /// Called when the leader could not be connected to: if its address refuses connections, twice
    /// in a row, nothing listens there any more (the process is gone; a live but busy or cut
    /// off server does not refuse, it just does not answer), so its lease is ended and a live
    /// server takes over at once rather than once the lease runs out (etcd's shortest lease is
    /// 2 s). Safe even if wrong: commits are fenced on the lock. At most once per
    /// [`DEPOSE_PAUSE`], so a misconfigured address cannot make the leadership flap faster.
    /// Whether the leader was deposed.
    pub async fn depose_if_gone(&self, leader: &Holder) -> bool {
        let Some((store, _)) = &self.store else {
            return false;
        };
        {
            let mut last = self.deposed_at.lock();
            if last.is_some_and(|at| at.elapsed() < DEPOSE_PAUSE) {
                return false;
            }
            *last = Some(Instant::now());
        }
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let probe = tokio::net::TcpStream::connect(leader.address.as_str());
            match tokio::time::timeout(Duration::from_secs(1), probe).await {
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => return false,
            }
        }
        let deposed = store.depose(leader.clone()).await;
        if deposed {
            tracing::warn!(
                leader = %leader.node,
                address = %leader.address,
                "the leader's address refuses connections: ended its lease, so a live server takes over now"
            );
        }
        deposed
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

    pub fn ca_changed(&self) {
        self.ca_changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe_ca(&self) -> watch::Receiver<u64> {
        self.ca_changed.subscribe()
    }
}

/// How one server's HTTP client to another is built (forwarded requests, probe results): no
/// proxy, no redirects, a short connect timeout so a dead leader is noticed at once. Plain
/// HTTP as it is; `tls::peer_client` adds HTTPS for servers with TLS.
pub fn peer_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// How long a server waits for its replica to catch up with a write it handed the leader.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Waits (at most [`CATCH_UP`]) until the replica's index, as `changed` reports it, reaches
/// `index`: the leader's after a write this server handed it.
pub async fn catch_up(changed: &mut watch::Receiver<u64>, index: u64) {
    let reached = tokio::time::timeout(CATCH_UP, changed.wait_for(|seen| *seen >= index)).await;
    if reached.is_err() {
        tracing::warn!(
            index,
            "the replica did not reach the leader's index in time"
        );
    }
}

/// The least time between two attempts of one server to depose an unreachable leader.
pub const DEPOSE_PAUSE: Duration = Duration::from_secs(1);

/// Where a check's owner hands the leader what it found (the leader's HTTP API, internal).
pub const REPORT_PATH: &str = "/v1/trellis/internal/check-report";
/// The leader's global index when it answered a request another server sent it.
pub const LEADER_INDEX: &str = "x-trellis-index";

/// Who owns a check's probes and TTL expiry (see [`Cluster::owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Me,
    Other(Holder),
}

/// What a check's owner hands the leader: a probe's result, a TTL heartbeat that changes the
/// check, or TTL checks whose TTL ran out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckReport {
    Probe(CheckStatusReport),
    Heartbeat(CheckStatusReport),
    Expired(Vec<String>),
}

/// A check's status and output as its owner found them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatusReport {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Status")]
    pub status: trellis_types::CheckStatus,
    #[serde(rename = "Output", default)]
    pub output: String,
}

impl CheckReport {
    /// The commands the leader applies for it.
    pub fn into_commands(self) -> Vec<trellis_catalog::Command> {
        use trellis_catalog::Command;
        match self {
            Self::Probe(r) => vec![Command::ReportCheck {
                check_id: r.check_id,
                result: r.status,
                output: r.output,
            }],
            Self::Heartbeat(r) => vec![Command::UpdateTtl {
                check_id: r.check_id,
                status: r.status,
                output: r.output,
            }],
            Self::Expired(ids) => ids
                .into_iter()
                .map(|check_id| Command::ExpireTtl { check_id })
                .collect(),
        }
    }
}
/// The header carrying the servers' shared secret on that route.
pub const SECRET_HEADER: &str = "x-trellis-cluster-secret";

/// The member that owns `key` by rendezvous (highest random weight) hashing: each key's owner
/// changes only when that owner goes or a new member outscores it.
fn rendezvous<'a>(members: impl Iterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    members.max_by_key(|member| (weight(member, key), *member))
}

/// A stable 64-bit hash of (member, key): FNV-1a, then a SplitMix64 finaliser to spread
/// similar strings. The same on every server and build, unlike std's hasher.
fn weight(member: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_shares_keys_out_evenly_and_moves_only_a_gone_members_share() {
        let members = ["a1b2", "c3d4", "e5f6"];
        let keys: Vec<String> = (0..3000).map(|i| format!("service:web-{i}")).collect();
        let owner =
            |members: &[&'static str], key: &str| rendezvous(members.iter().copied(), key).unwrap();
        for member in members {
            let share = keys.iter().filter(|k| owner(&members, k) == member).count();
            assert!((800..1200).contains(&share), "{member}: {share} of 3000");
        }
        let survivors = ["a1b2", "e5f6"];
        for key in &keys {
            let before = owner(&members, key);
            if before != "c3d4" {
                assert_eq!(owner(&survivors, key), before, "{key} moved needlessly");
            }
        }
    }

    /// A store that answers, holds no lock and counts the depositions asked of it.
    #[derive(Default)]
    struct Answering {
        deposed: std::sync::atomic::AtomicUsize,
    }

    impl SharedStore for Answering {
        fn last_contact(&self) -> Duration {
            Duration::ZERO
        }
        fn holds_lock(&self) -> bool {
            false
        }
        fn confirm_lock(&self) -> Pin<Box<dyn Future<Output = bool> + Send>> {
            Box::pin(async { false })
        }
        fn depose(&self, _: Holder) -> Pin<Box<dyn Future<Output = bool> + Send>> {
            self.deposed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { true })
        }

        fn renew_session(
            &self,
            _: &str,
        ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send>> {
            Box::pin(async { Ok(true) })
        }
    }

    #[tokio::test]
    async fn only_a_leader_whose_address_refuses_connections_is_deposed_and_not_twice_at_once() {
        let store = Arc::new(Answering::default());
        let cluster = Cluster::shared(store.clone(), Duration::from_secs(1), "me".into());
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let alive = Holder {
            node: "alive".into(),
            address: listening.local_addr().unwrap().to_string(),
            tls: false,
        };
        let gone = Holder {
            node: "gone".into(),
            address: {
                let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                closed.local_addr().unwrap().to_string()
            },
            tls: false,
        };
        assert!(!cluster.depose_if_gone(&alive).await, "it still listens");
        *cluster.deposed_at.lock() = None;
        assert!(cluster.depose_if_gone(&gone).await);
        assert!(
            !cluster.depose_if_gone(&gone).await,
            "again within the pause"
        );
        let asked = store.deposed.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(asked, 1, "the store was asked once");
    }

    #[test]
    fn only_the_member_picked_probes_and_a_stranger_leaves_it_to_the_leader() {
        let cluster = Cluster::shared(
            Arc::new(Answering::default()),
            Duration::from_secs(1),
            "me".into(),
        );
        let holder = |node: &str| Holder {
            node: node.into(),
            address: "127.0.0.1:1".into(),
            tls: false,
        };
        // Not a member yet, following: nothing.
        assert!(!cluster.probes("web"));
        cluster.set_role(Role::Leader);
        assert!(
            cluster.probes("web"),
            "the leader probes until members are known"
        );
        cluster.set_member("me".into(), Some(holder("a")));
        cluster.set_member("other".into(), Some(holder("b")));
        let mine = (0..100)
            .filter(|i| cluster.probes(&format!("check-{i}")))
            .count();
        assert!((20..80).contains(&mine), "{mine} of 100");
        cluster.set_member("other".into(), None);
        assert!((0..100).all(|i| cluster.probes(&format!("check-{i}"))));
    }

    #[test]
    fn the_lock_value_round_trips_and_a_foreign_value_has_no_address() {
        let holder = Holder {
            node: "server-a".into(),
            address: "127.0.0.1:8500".into(),
            tls: false,
        };
        assert_eq!(
            holder.to_value(),
            r#"{"Node":"server-a","Address":"127.0.0.1:8500"}"#
        );
        assert_eq!(Holder::parse(&holder.to_value()), holder);
        let https = Holder {
            tls: true,
            ..holder
        };
        assert_eq!(Holder::parse(&https.to_value()), https);
        assert_eq!(
            https.url("/v1/kv/a?cas=1"),
            "https://127.0.0.1:8500/v1/kv/a?cas=1"
        );
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
            tls: false,
        };
        cluster.set_role(Role::Follower {
            leader: Some(holder.clone()),
        });
        assert_eq!(cluster.leader(), Some(holder));
    }
}
