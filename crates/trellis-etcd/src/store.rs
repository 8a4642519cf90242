//! The catalog's [`Store`] on an etcd cluster: each commit is one etcd transaction (acknowledged
//! by etcd only once a quorum has it), the state read back with paged ranges at one revision.

use crate::layout::{Layout, encode_index, transactions};
use crate::reader::revisions;
use crate::reader::{ReadFailed, Reader, explain};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, KeyValue, KvClient, LeaseClient, LeaseGrantOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use trellis_catalog::{Numbering, Revisions};
use trellis_store::{Mutation, RecordLog, Records, Snapshot, Store, StoreError};

/// How to reach the cluster and where Trellis keeps its state in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://` or, with TLS, `https://`); the client fails over
    /// between them.
    pub endpoints: Vec<String>,
    /// Everything Trellis writes is under this prefix (see [`Layout`]).
    pub prefix: String,
    /// etcd's own authentication, if the cluster has it on.
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate (PEM) that the members' certificates are checked against.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for a cluster that requires them.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Most operations etcd takes in one transaction (its `--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
    /// How long one request to etcd may take before the commit or load fails.
    pub timeout: Duration,
    /// Who holds the store, as written in its lock key for operators (the server's node name).
    pub holder: String,
    /// The lock's lease: a server that stops renewing it (killed, cut off) loses the store
    /// this long after its last renewal, and a waiting server takes over.
    pub lease_ttl: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with the defaults: prefix `/trellis/`, no authentication, no
    /// TLS, 128 operations per transaction, 5 s per request.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/trellis/".into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_txn_ops: 128,
            timeout: Duration::from_secs(5),
            holder: "trellis".into(),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// The catalog's store in etcd, held by one server at a time: `connect` waits until it holds
/// the prefix's lock (a key bound to a lease it keeps renewing), and every commit is fenced on
/// that lock, so a server that lost it (cut off from etcd past the lease) can write nothing.
/// The ACL log and the decision log ([`EtcdStore::records`]) share its connection and lock.
/// Each commit is numbered by etcd: its revision, and each key's revisions (see [`Layout`]).
#[derive(Clone)]
pub struct EtcdStore {
    conn: Arc<Connection>,
}

/// A table of records under `<prefix><name>/records/` with its index at `<prefix><name>/index`,
/// fenced on the store's lock: the ACL log and the coordinator's decision log in etcd.
pub struct EtcdRecords {
    conn: Arc<Connection>,
    records: String,
    index_key: String,
    index: Mutex<u64>,
}

/// Gives the store's lock up (see [`EtcdStore::releaser`]).
pub struct Release(Arc<Connection>);

impl Release {
    /// Revokes the lease, so a standby takes the store over at once; this server's later
    /// commits fail, fenced. Blocks for at most the request timeout.
    pub fn release(&self) {
        let conn = &self.0;
        conn.tenure.closed.store(true, Ordering::SeqCst);
        conn.tenure.lost.store(true, Ordering::SeqCst);
        let (mut lease, id) = (conn.lease.clone(), conn.tenure.lease());
        match conn.block_on("cannot revoke the lease", async move {
            lease.revoke(id).await.map(drop)
        }) {
            Ok(()) => tracing::info!(lock = %conn.layout.lock_key(), "gave the store up"),
            Err(error) => {
                tracing::warn!(%error, "the store's lock will be free when its lease ends")
            }
        }
    }
}

/// The client, the lease and the lock that an [`EtcdStore`] and its record tables share; the
/// lease is revoked when the last of them is dropped.
pub(crate) struct Connection {
    /// The client's own runtime: the store is called from the writer's thread and at start-up
    /// from inside the server's runtime, where it may not `block_on`.
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    pub(crate) kv: KvClient,
    lease: LeaseClient,
    pub(crate) tenure: Arc<Tenure>,
    lease_ttl: Duration,
    pub(crate) watch: WatchClient,
    pub(crate) layout: Layout,
    max_txn_ops: usize,
    timeout: Duration,
    pub(crate) endpoints: String,
}

/// The lease and the lock as the keeper, the campaign and the commits share them.
pub(crate) struct Tenure {
    lease_id: AtomicI64,
    /// The lock key's create revision while this store holds it (0 while it does not).
    lock_revision: AtomicI64,
    /// The lease may have expired: nothing is committed until a new lease and the lock again.
    lost: AtomicBool,
    /// Given up for good (a clean stop): no new lease is taken.
    closed: AtomicBool,
    /// When a renewal last succeeded: the last contact with a quorum.
    renewed: Mutex<Instant>,
    /// Told by the feed when the lock key goes: the campaign tries at once rather than at its
    /// next poll.
    pub(crate) lock_freed: tokio::sync::Notify,
    /// This server's member key and value once announced: put again under each new lease.
    announced: Mutex<Option<(String, String)>>,
}

impl Tenure {
    pub(crate) fn lease(&self) -> i64 {
        self.lease_id.load(Ordering::SeqCst)
    }

    fn holds_lock(&self) -> bool {
        self.lock_revision.load(Ordering::SeqCst) != 0 && !self.lost.load(Ordering::SeqCst)
    }

    /// The lock key, created at `revision` under this store's lease, is this store's: the
    /// campaign's answer or the watch's event, whichever comes first, says so.
    pub(crate) fn took_lock(&self, revision: i64) {
        self.lock_revision.store(revision, Ordering::SeqCst);
    }
}

fn failure(endpoints: &str, what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Remote(format!("etcd at {endpoints}: {what}: {error}"))
}

impl EtcdStore {
    /// Connects to the cluster (failing if no member answers within the timeout), makes sure
    /// the index key exists, and waits until this store holds the prefix's lock.
    pub fn connect(options: &EtcdOptions) -> Result<Self, StoreError> {
        Self::open(options, true)
    }

    /// Connects to the cluster and takes a lease, without waiting for the lock: a server that
    /// follows the holder's commits ([`EtcdStore::follow`]) and [campaigns](EtcdStore::campaign)
    /// to take over. It can commit only once it holds the lock.
    pub fn join(options: &EtcdOptions) -> Result<Self, StoreError> {
        Self::open(options, false)
    }

    fn open(options: &EtcdOptions, wait_for_lock: bool) -> Result<Self, StoreError> {
        let conn = Connection::open(options, wait_for_lock)?;
        Ok(Self {
            conn: Arc::new(conn),
        })
    }

    /// Tries to take the lock in the background until it is taken (or the lease is lost):
    /// this store can commit from then on, and the feed says so with a
    /// [`Feed::Holder`](crate::Feed::Holder) that is `ours`.
    /// `holder` is what the lock key says while this store holds it.
    pub fn campaign(&self, holder: String) {
        let conn = &self.conn;
        let Some(runtime) = &conn.runtime else {
            return;
        };
        let (kv, lock, tenure) = (conn.kv.clone(), conn.layout.lock_key(), conn.tenure.clone());
        let pause = (conn.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        runtime.spawn(async move {
            // For as long as the store lives: a server that lost its lease (cut off from the
            // quorum) campaigns again under the new lease its keeper takes once it is back.
            while !tenure.closed.load(Ordering::SeqCst) {
                let wants = tenure.lock_revision.load(Ordering::SeqCst) == 0
                    && !tenure.lost.load(Ordering::SeqCst);
                if wants {
                    let attempt =
                        try_acquire(kv.clone(), lock.clone(), holder.clone(), tenure.lease());
                    if let Ok((true, revision, _)) = attempt.await {
                        tenure.took_lock(revision);
                        tracing::info!(lock = %lock, "took the store's lock: this server now writes");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = tenure.lock_freed.notified() => {}
                }
            }
        });
    }

    /// Announces this server as a member (`value`: its node and address) under its lease, so
    /// it goes when the server does; announced again under every new lease.
    pub fn announce(&self, id: &str, value: String) -> Result<(), StoreError> {
        let conn = &self.conn;
        let key = conn.layout.member_key(id);
        *conn.tenure.announced.lock() = Some((key.clone(), value.clone()));
        let (mut kv, lease) = (conn.kv.clone(), conn.tenure.lease());
        conn.block_on("cannot announce this server", async move {
            kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .map(drop)
        })
    }

    /// The secret the servers of this prefix share: `proposal` if none was set yet.
    pub fn shared_secret(&self, proposal: String) -> Result<String, StoreError> {
        let conn = &self.conn;
        let key = conn.layout.secret_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), proposal, None)]);
        conn.txn(txn, "cannot set the shared secret")?;
        let mut kv = conn.kv.clone();
        conn.block_on("cannot read the shared secret", async move {
            let answer = kv.get(key, None).await?;
            Ok(answer
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default())
        })
    }

    /// Whether this store holds the lock (and has not lost its lease).
    pub fn holds_lock(&self) -> bool {
        self.conn.tenure.holds_lock()
    }

    /// Asks a quorum whether this store still holds the lock: a linearizable read of the lock
    /// key, which must still be the one this store created under its current lease. What a
    /// leader checks before a `?consistent` read, since it may have been deposed (its lease
    /// run out while cut off) without having heard so yet. Runs on the client's own runtime,
    /// so it may be awaited from any other.
    pub fn confirm_lock(&self) -> impl Future<Output = bool> + Send + 'static {
        let conn = &self.conn;
        let tenure = &conn.tenure;
        let (revision, lease) = (tenure.lock_revision.load(Ordering::SeqCst), tenure.lease());
        let (reader, lock) = (conn.reader(), conn.layout.lock_key());
        let asked = tenure
            .holds_lock()
            .then(|| conn.detach(async move { reader.key(lock, 0).await }));
        async move {
            let Some(asked) = asked else {
                return false;
            };
            matches!(asked.await, Some(Ok(Some(kv)))
                if kv.create_revision() == revision && kv.lease() == lease)
        }
    }

    /// Ends the lease of the lock's holder, when the lock is another store's and its value is
    /// one `is_holder` accepts: the lock goes at once rather than when that lease runs out,
    /// and a live server takes it. For a holder known to be gone (its address refuses
    /// connections). Safe even if that guess is wrong: every commit is fenced on the lock, so
    /// a deposed holder can write nothing more, and a live one campaigns again. Whether a
    /// lease was ended. Runs on the client's own runtime, so it may be awaited from any other.
    pub fn depose(
        &self,
        is_holder: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> impl Future<Output = bool> + Send + 'static {
        let conn = &self.conn;
        let (reader, lock, ours) = (conn.reader(), conn.layout.lock_key(), conn.tenure.lease());
        let (mut leases, timeout) = (conn.lease.clone(), conn.timeout);
        let ended = conn.detach(async move {
            let Ok(Some(held)) = reader.key(lock, 0).await else {
                return false;
            };
            if held.lease() == ours || held.lease() == 0 || !is_holder(held.value()) {
                return false;
            }
            let revoked = tokio::time::timeout(timeout, leases.revoke(held.lease()));
            matches!(revoked.await, Ok(Ok(_)))
        });
        async move { ended.await.unwrap_or(false) }
    }

    /// How long since this store last heard from a quorum (its lease's last renewal).
    pub fn last_contact(&self) -> Duration {
        self.conn.tenure.renewed.lock().elapsed()
    }

    /// The state as [`Store::load`] reads it, and the revision it was read at: the feed of
    /// [`EtcdStore::follow`] resumes after it.
    pub fn load_at(&self) -> Result<(Snapshot, i64), StoreError> {
        let conn = &self.conn;
        let (reader, layout) = (conn.reader(), conn.layout.clone());
        conn.wait(async move { reader.snapshot(&layout).await })
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// What gives the store up on a clean stop: the store and its record tables live on other
    /// threads until the process exits, so the lock would otherwise wait out its lease.
    pub fn releaser(&self) -> Release {
        Release(Arc::clone(&self.conn))
    }

    /// The record table `name` (`acl`, `transactions`) on this store's connection and lock.
    pub fn records(&self, name: &str) -> Result<EtcdRecords, StoreError> {
        let base = format!("{}{name}/", self.conn.layout.prefix());
        let index_key = format!("{base}index");
        let index = self.conn.read_index(index_key.clone())?.0;
        Ok(EtcdRecords {
            conn: Arc::clone(&self.conn),
            records: format!("{base}records/"),
            index_key,
            index: Mutex::new(index),
        })
    }
}

impl Connection {
    /// Connects, makes sure the index key exists and takes a lease; with `wait_for_lock`, also
    /// waits until this store holds the lock.
    fn open(options: &EtcdOptions, wait_for_lock: bool) -> Result<Self, StoreError> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(StoreError::Remote(
                "no etcd endpoint given: pass --etcd URL[,URL...]".into(),
            ));
        }
        let layout = Layout::new(&options.prefix).map_err(StoreError::Remote)?;
        let connect = connect_options(options).map_err(StoreError::Remote)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| failure(&endpoints, "cannot start its runtime", e))?;
        let urls = options.endpoints.clone();
        let client = run_on(&runtime, options.timeout, async move {
            Client::connect(urls, Some(connect)).await
        })
        .map_err(|e| failure(&endpoints, "cannot connect", e))?;
        let kv = client.kv_client();
        let layout_ref = layout.clone();
        let store = Self {
            runtime: Some(runtime),
            kv,
            lease: client.lease_client(),
            watch: client.watch_client(),
            tenure: Arc::new(Tenure {
                lease_id: AtomicI64::new(0),
                lock_revision: AtomicI64::new(0),
                lost: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                renewed: Mutex::new(Instant::now()),
                lock_freed: tokio::sync::Notify::new(),
                announced: Mutex::new(None),
            }),
            lease_ttl: options.lease_ttl,
            layout,
            max_txn_ops: options.max_txn_ops,
            timeout: options.timeout,
            endpoints,
        };
        // The index key exists from the start. The client connects lazily: this first request
        // is where an unreachable cluster shows.
        let index_key = layout_ref.index_key();
        let create = Txn::new()
            .when([Compare::create_revision(
                index_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(index_key, encode_index(0), None)]);
        store.txn(create, "cannot connect")?;
        let lease = store.grant_lease(options.lease_ttl)?;
        store.tenure.lease_id.store(lease, Ordering::SeqCst);
        // Renewed while standing by too, so the lease is alive when the lock is free.
        store.keep_lease(options.lease_ttl);
        if wait_for_lock {
            let revision = store.acquire(&options.holder, options.lease_ttl)?;
            store.tenure.lock_revision.store(revision, Ordering::SeqCst);
        }
        Ok(store)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut lease = self.lease.clone();
        let seconds = ttl.as_secs().max(2) as i64;
        self.block_on("cannot take a lease", async move {
            Ok(lease.grant(seconds, None).await?.id())
        })
    }

    /// Waits until this store holds the lock key, and answers its create revision. While
    /// another server holds it, says so once and polls.
    fn acquire(&self, holder: &str, ttl: Duration) -> Result<i64, StoreError> {
        let lock = self.layout.lock_key();
        let mut waiting_for = None;
        loop {
            let attempt = try_acquire(
                self.kv.clone(),
                lock.clone(),
                holder.to_owned(),
                self.tenure.lease(),
            );
            let (acquired, revision, current) =
                self.block_on("cannot take the store's lock", attempt)?;
            if acquired {
                if waiting_for.is_some() {
                    tracing::info!(lock = %lock, "took over the store");
                }
                return Ok(revision);
            }
            if waiting_for != current {
                tracing::warn!(
                    lock = %lock,
                    holder = current.as_deref().unwrap_or("?"),
                    "another server holds the store; standing by until it stops"
                );
                waiting_for = current;
            }
            std::thread::sleep(
                (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            );
        }
    }

    /// Renews the lease for as long as this store lives. Once a renewal has not succeeded for
    /// the lease's whole TTL, the lease may be gone: the lock is no longer this store's, and
    /// every commit fails until the cluster answers again, when the keeper takes a new lease
    /// (and the campaign, if one runs, tries for the lock again).
    fn keep_lease(&self, ttl: Duration) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let (lease, tenure) = (self.lease.clone(), self.tenure.clone());
        let (endpoints, kv) = (self.endpoints.clone(), self.kv.clone());
        runtime.spawn(async move {
            let period = ttl / 3;
            while !tenure.closed.load(Ordering::SeqCst) {
                let mut lease = lease.clone();
                if tenure.lost.load(Ordering::SeqCst) {
                    let seconds = ttl.as_secs().max(2) as i64;
                    if let Ok(Ok(granted)) =
                        tokio::time::timeout(period, lease.grant(seconds, None)).await
                        && !tenure.closed.load(Ordering::SeqCst)
                    {
                        tenure.lease_id.store(granted.id(), Ordering::SeqCst);
                        *tenure.renewed.lock() = Instant::now();
                        tenure.lost.store(false, Ordering::SeqCst);
                        let announced = tenure.announced.lock().clone();
                        if let Some((key, value)) = announced {
                            let options = PutOptions::new().with_lease(granted.id());
                            let _ = kv.clone().put(key, value, Some(options)).await;
                        }
                        tracing::warn!(etcd = %endpoints, "the store answers again: took a new lease");
                    }
                } else {
                    let id = tenure.lease();
                    let attempt = async {
                        let (mut keeper, mut answers) = lease.keep_alive(id).await?;
                        keeper.keep_alive().await?;
                        Ok::<_, etcd_client::Error>(answers.message().await?.map(|a| a.ttl()))
                    };
                    let expired = match tokio::time::timeout(period, attempt).await {
                        Ok(Ok(Some(left))) if left > 0 => {
                            *tenure.renewed.lock() = Instant::now();
                            false
                        }
                        // Expired: no renewal brings it back.
                        Ok(Ok(_)) => true,
                        _ => tenure.renewed.lock().elapsed() >= ttl,
                    };
                    if expired {
                        tenure.lost.store(true, Ordering::SeqCst);
                        tenure.lock_revision.store(0, Ordering::SeqCst);
                        tracing::error!(
                            etcd = %endpoints,
                            "the store's lease could not be renewed: this server no longer holds the store"
                        );
                    }
                }
                tokio::time::sleep(period).await;
            }
        });
    }

    /// The index stored at `index_key` (0 if none) and the revision it was read at.
    fn read_index(&self, index_key: String) -> Result<(u64, i64), StoreError> {
        let reader = self.reader();
        self.wait(async move { reader.index(index_key).await })
    }

    /// A reader on this connection's client.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            kv: self.kv.clone(),
            timeout: self.timeout,
            endpoints: self.endpoints.clone(),
        }
    }

    /// Runs `future` on the client's own runtime, for a caller on any other runtime to await
    /// (`None` once the client is closed).
    fn detach<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static {
        let task = self.runtime.as_ref().map(|runtime| runtime.spawn(future));
        async move { task?.await.ok() }
    }

    /// Waits, from any thread, for a read on the client's runtime (each of its requests is
    /// bounded by the store's timeout).
    pub(crate) fn wait<T: Send + 'static>(
        &self,
        read: impl Future<Output = Result<T, ReadFailed>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().ok_or_else(|| {
            StoreError::Remote(format!("etcd at {}: the client is closed", self.endpoints))
        })?;
        wait_on(runtime, async move { read.await.map_err(StoreError::from) }).unwrap_or_else(|| {
            Err(StoreError::Remote(format!(
                "etcd at {}: the client's runtime stopped",
                self.endpoints
            )))
        })
    }

    /// Fails once this store may no longer hold the lock.
    fn still_held(&self) -> Result<(), StoreError> {
        if self.tenure.lost.load(Ordering::SeqCst) {
            return Err(self.not_held());
        }
        Ok(())
    }

    fn not_held(&self) -> StoreError {
        StoreError::Remote(format!(
            "etcd at {}: this server no longer holds the store ({}): its lease was not renewed in time, and another server may have taken over",
            self.endpoints,
            self.layout.lock_key()
        ))
    }

    /// The compare every commit makes: the lock is still the one this store took.
    fn fence(&self) -> Compare {
        Compare::create_revision(
            self.layout.lock_key(),
            CompareOp::Equal,
            self.tenure.lock_revision.load(Ordering::SeqCst),
        )
    }

    pub(crate) fn block_on<T>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| {
            StoreError::Remote(format!("etcd at {}: the client is closed", self.endpoints))
        })?;
        run_on(runtime, self.timeout, async move {
            future.await.map_err(|e| explain(&e))
        })
        .map_err(|e| failure(&self.endpoints, what, e))
    }

    /// One transaction. A member that cannot be reached (killed, cut off) fails the request
    /// rather than the client moving to another: it is tried again, twice, since the client
    /// then picks another member. Trying again is safe: each transaction puts final values,
    /// fenced on the lock, so one that did apply changes nothing the second time (but its
    /// revision: a commit that fails is reloaded, never renumbered).
    fn txn(&self, txn: Txn, what: &str) -> Result<TxnResponse, StoreError> {
        let mut kv = self.kv.clone();
        self.block_on(what, async move {
            let mut attempts = 0;
            loop {
                match kv.txn(txn.clone()).await {
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.code() == tonic::Code::Unavailable && attempts < 2 =>
                    {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    answer => return answer,
                }
            }
        })
    }

    /// Every key under `start` at `revision` (0: the newest), page by page.
    pub(crate) fn read_range(
        &self,
        start: String,
        revision: i64,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let reader = self.reader();
        self.wait(async move { reader.range(start, revision).await })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Hand the store over at once rather than after the lease's TTL.
        self.tenure.closed.store(true, Ordering::SeqCst);
        if self.tenure.lease() != 0 {
            let (mut lease, id) = (self.lease.clone(), self.tenure.lease());
            let _ = self.block_on("cannot revoke the lease", async move {
                lease.revoke(id).await.map(drop)
            });
        }
        // Dropping a runtime inside another blocks and panics; this one owes nothing.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One attempt to take the lock `lock` for `lease`: whether it was taken, the revision of the
/// attempt, and the holder's value when another has it.
async fn try_acquire(
    mut kv: KvClient,
    lock: String,
    holder: String,
    lease: i64,
) -> Result<(bool, i64, Option<String>), etcd_client::Error> {
    let txn = Txn::new()
        .when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            lock.clone(),
            holder,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(lock, None)]);
    let answer = kv.txn(txn).await?;
    let revision = answer.header().map_or(0, |h| h.revision());
    let current = answer.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    });
    Ok((answer.succeeded(), revision, current))
}

/// Runs `future` on `runtime` from any thread, inside a runtime or not, waiting for it at
/// most `timeout`.
fn run_on<T, E>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    future: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let bounded = async move {
        match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    };
    wait_on(runtime, bounded).unwrap_or_else(|| Err("the client's runtime stopped".into()))
}

/// Runs `future` on `runtime` and waits for its output from any thread, inside a runtime or
/// not (`None` if the runtime stopped first).
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done.send(future.await);
    });
    outcome.recv().ok()
}

fn connect_options(options: &EtcdOptions) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.timeout)
        .with_timeout(options.timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    match (&options.username, &options.password) {
        (Some(user), Some(password)) => connect = connect.with_user(user, password),
        (None, None) => {}
        _ => return Err("etcd authentication needs both a user name and a password".into()),
    }
    let tls_wanted = options.ca_file.is_some()
        || options.cert_file.is_some()
        || options.endpoints.iter().any(|e| e.starts_with("https://"));
    if tls_wanted {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &options.ca_file {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err("an etcd client certificate needs both its file and its key".into()),
        }
        connect = connect.with_tls(tls);
    }
    Ok(connect)
}

impl Connection {
    /// Writes `writes` fenced on the lock, in as many transactions as etcd's limit needs, with
    /// `last` added to the last: each transaction's answer, in order.
    fn send(
        &self,
        writes: Vec<TxnOp>,
        last: Option<TxnOp>,
    ) -> Result<Vec<TxnResponse>, StoreError> {
        self.still_held()?;
        if self.tenure.lock_revision.load(Ordering::SeqCst) == 0 {
            return Err(StoreError::Remote(format!(
                "etcd at {}: this server does not hold the store ({}); another server writes it",
                self.endpoints,
                self.layout.lock_key()
            )));
        }
        let txns = transactions(&writes, self.max_txn_ops);
        let split = txns.len().saturating_sub(1);
        // A batch larger than one transaction goes in several, the index with the last: the
        // batch is answered only after all of them, but a crash between two leaves the first
        // ones applied (see the README's note on etcd's --max-txn-ops).
        let mut answers = Vec::with_capacity(txns.len());
        for (n, chunk) in txns.iter().enumerate() {
            let mut ops = chunk.to_vec();
            if n == split {
                ops.extend(last.clone());
            }
            let answer = self.txn(
                Txn::new().when([self.fence()]).and_then(ops),
                "cannot commit",
            )?;
            if !answer.succeeded() {
                return Err(self.not_held());
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}

impl EtcdStore {
    /// Grants the lease of each session with a TTL that `mutations` put (its TTL times
    /// [`trellis_catalog::SESSION_TTL_MULTIPLIER`], as Consul waits), so that its key goes with
    /// the lease: the session's keys by lease ID. A lease that exists already (the session was
    /// put before) is kept as it is.
    fn session_leases(&self, mutations: &[Mutation]) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut leases = BTreeMap::new();
        let mut grants = Vec::new();
        for mutation in mutations {
            let Mutation::PutSession(session) = mutation else {
                continue;
            };
            let Ok(Some(ttl)) = trellis_catalog::session_ttl(&session.ttl) else {
                continue;
            };
            let id = crate::layout::session_lease(&session.id);
            let seconds = (ttl * trellis_catalog::SESSION_TTL_MULTIPLIER)
                .as_secs()
                .max(1) as i64;
            let mut lease = self.conn.lease.clone();
            grants.push(async move {
                match lease
                    .grant(seconds, Some(LeaseGrantOptions::new().with_id(id)))
                    .await
                {
                    Err(etcd_client::Error::GRpcStatus(status))
                        if status.message().contains("lease already exists") =>
                    {
                        Ok(())
                    }
                    answer => answer.map(drop),
                }
            });
            leases.insert(self.conn.layout.session_key(&session.id), id);
        }
        if !grants.is_empty() {
            // All of a batch's leases in one round trip's time, before its transaction.
            self.conn
                .block_on("cannot grant a session's lease", async move {
                    futures_util::future::try_join_all(grants).await.map(drop)
                })?;
        }
        Ok(leases)
    }

    /// Ends the leases of the sessions `mutations` deleted (destroyed, invalidated), so that
    /// etcd keeps no lease for a session that is gone. In the background: a lease left over
    /// (the revoke failed) holds no key and ends with its TTL.
    fn revoke_session_leases(&self, mutations: &[Mutation]) {
        for mutation in mutations {
            if let Mutation::DeleteSession(id) = mutation {
                let (mut lease, id) = (self.conn.lease.clone(), crate::layout::session_lease(id));
                drop(self.conn.detach(async move { lease.revoke(id).await }));
            }
        }
    }

    /// Renews session `session_id`'s TTL: keeps its lease alive, from any server, with no
    /// write. Whether the lease was still there (a session whose lease ended is gone, or about
    /// to be once the leader applies its end).
    pub fn renew_session(
        &self,
        session_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let (mut lease, id) = (
            self.conn.lease.clone(),
            crate::layout::session_lease(session_id),
        );
        let (timeout, endpoints) = (self.conn.timeout, self.conn.endpoints.clone());
        let renewed = self.conn.detach(async move {
            let attempt = async {
                let (mut keeper, mut answers) = lease.keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(answers.message().await?.map(|a| a.ttl()))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(left)) => Ok(left.is_some_and(|left| left > 0)),
                Ok(Err(error)) => Err(StoreError::Remote(format!(
                    "etcd at {endpoints}: cannot renew the session: {}",
                    explain(&error)
                ))),
                Err(_) => Err(StoreError::Remote(format!(
                    "etcd at {endpoints}: cannot renew the session: no answer in {timeout:?}"
                ))),
            }
        });
        async move {
            renewed
                .await
                .unwrap_or_else(|| Err(StoreError::Remote("the etcd client is closed".to_owned())))
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.load_at().map(|(snapshot, _)| snapshot)
    }

    /// Commits `mutations` and the index key (its value: `index`, the leader's tentative
    /// number) in one transaction, or several past etcd's limit, and answers how etcd numbered
    /// them: each key put its create revision (the key's previous version's, which each put
    /// asks for, or the put's own) and the revision of its transaction, the commit the last
    /// one's.
    fn commit(&self, index: u64, mutations: &[Mutation]) -> Result<Option<Numbering>, StoreError> {
        let layout = &self.conn.layout;
        let leases = self.session_leases(mutations)?;
        let writes = layout.final_writes(mutations)?;
        let ops = writes
            .iter()
            .map(|(key, value)| match value {
                Some(value) => {
                    let mut options = PutOptions::new().with_prev_key();
                    if let Some(lease) = leases.get(key) {
                        options = options.with_lease(*lease);
                    }
                    TxnOp::put(key.as_str(), value.as_slice(), Some(options))
                }
                None => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let index_op = TxnOp::put(layout.index_key(), encode_index(index), None);
        let answers = self.conn.send(ops, Some(index_op))?;
        self.revoke_session_leases(mutations);
        let mut numbered = HashMap::with_capacity(writes.len());
        let mut keys = writes.keys();
        let mut commit = 0;
        for answer in answers {
            let revision = answer
                .header()
                .map_or(0, |h| u64::try_from(h.revision()).unwrap_or_default());
            commit = revision;
            // In the order of the operations; the index key's put comes last, after every key.
            for (op, key) in answer.op_responses().into_iter().zip(keys.by_ref()) {
                if let TxnOpResponse::Put(put) = op {
                    let create = put.prev_key().map_or(revision, |kv| revisions(kv).create);
                    numbered.insert(
                        key.as_str(),
                        Revisions {
                            create,
                            modify: revision,
                        },
                    );
                }
            }
        }
        let records = mutations
            .iter()
            .map(|mutation| {
                let put = mutation.is_put().then(|| layout.key(mutation))?;
                numbered.get(put.as_str()).copied()
            })
            .collect();
        Ok(Some(Numbering {
            index: commit,
            records,
        }))
    }
}

impl RecordLog for EtcdRecords {
    fn load(&self) -> Result<Records, StoreError> {
        // A read: a follower reads the tables too, whether or not its lease is current.
        let (index, revision) = self.conn.read_index(self.index_key.clone())?;
        let records = self
            .conn
            .read_range(self.records.clone(), revision)?
            .into_iter()
            .map(|kv| {
                let key = &kv.key()[self.records.len()..];
                (
                    String::from_utf8_lossy(key).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((index, records))
    }

    fn commit(
        &self,
        index: u64,
        puts: &[(&str, &[u8])],
        deletes: &[&str],
    ) -> Result<(), StoreError> {
        // The last word on each key wins, as in one etcd transaction a key may appear once.
        let mut writes = std::collections::BTreeMap::new();
        for (key, value) in puts {
            writes.insert(format!("{}{key}", self.records), Some(value.to_vec()));
        }
        for key in deletes {
            writes.insert(format!("{}{key}", self.records), None);
        }
        let writes = writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        // The index only goes up.
        let mut stored = self.index.lock();
        let last = (index > *stored)
            .then(|| TxnOp::put(self.index_key.as_str(), encode_index(index), None));
        self.conn.send(writes, last)?;
        *stored = (*stored).max(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_given_credentials_are_refused() {
        let mut options = EtcdOptions::new(vec!["http://127.0.0.1:2379".into()]);
        options.username = Some("trellis".into());
        assert!(connect_options(&options).unwrap_err().contains("both"));
        options.username = None;
        options.cert_file = Some("client.pem".into());
        assert!(connect_options(&options).unwrap_err().contains("both"));
    }
}
