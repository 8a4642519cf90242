//! Three etcd members and three Trellis servers, each pair in a network namespace of its own
//! (created by the test: a bridge in a hub namespace, one veth per node, addresses in
//! 10.231.77.0/24 that exist only there), under a concurrent workload through random servers,
//! while members and servers are killed and a node's link is cut and healed. At the end a
//! checker proves that no acknowledged write was lost, and a general linearizability checker
//! (`linearizability/`: a Wing–Gong–Lowe search, as Knossos and Porcupine do) proves the
//! counter's history of consistent reads and CAS increments and the lock's history of acquires
//! and releases linearizable, operations with no answer included. When the leading server is
//! killed, its share of the active probes and a sidecar heartbeating to it move to the others,
//! and no healthy instance stays critical for longer than one lease TTL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod linearizability;
mod support;

use linearizability::{
    CasRegister, Lock, LockInput, Operation, Outcome, RegisterInput, RegisterOutput,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{eventually, http_with_timeout};
use tokio::sync::Mutex;

const NODES: usize = 3;
const SUBNET: &str = "10.231.77";

/// The namespaces, the bridge and the veths; deleted (with everything in them) when dropped.
struct Topology {
    tag: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Topology {
    fn create() -> Topology {
        let tag = format!("t{}", std::process::id() % 100_000);
        let topology = Topology { tag };
        let hub = topology.hub();
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &hub])?;
            ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", "br0", "up"])?;
            // The test itself reaches the nodes through one more veth, from this namespace.
            let (outside, inside) = (format!("{}c", topology.tag), format!("{}h", topology.tag));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &hub])?;
            ip(&["-n", &hub, "link", "set", &inside, "master", "br0", "up"])?;
            ip(&["addr", "add", &format!("{SUBNET}.100/24"), "dev", &outside])?;
            ip(&["link", "set", &outside, "up"])?;
            for node in 1..=NODES {
                let ns = topology.ns(node);
                ip(&["netns", "add", &ns])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
                let (near, far) = (format!("{}n{node}", topology.tag), topology.hub_port(node));
                ip(&[
                    "-n", &ns, "link", "add", &near, "type", "veth", "peer", "name", &far,
                ])?;
                ip(&["-n", &ns, "link", "set", &far, "netns", &hub])?;
                ip(&["-n", &hub, "link", "set", &far, "master", "br0", "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", addr(node)),
                    "dev",
                    &near,
                ])?;
                ip(&["-n", &ns, "link", "set", &near, "up"])?;
            }
            Ok(())
        };
        if let Err(error) = setup() {
            panic!("cannot build the test's network namespaces (needs root and iproute2): {error}");
        }
        topology
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    fn ns(&self, node: usize) -> String {
        format!("{}-n{node}", self.tag)
    }

    fn hub_port(&self, node: usize) -> String {
        format!("{}p{node}", self.tag)
    }

    /// Cuts (or heals) node `node`'s only link: its member and its server see nobody else.
    fn set_link(&self, node: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.hub_port(node),
            state,
        ])
        .unwrap();
    }

    /// `program args` inside node `node`'s namespace.
    fn spawn(&self, node: usize, program: &str, args: &[String]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(node), program])
            .args(args)
            .env("TRELLIS_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Errors only (TRELLIS_LOG, etcd's --log-level): what explains a failure.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &format!("{}c", self.tag)]);
        for node in 1..=NODES {
            let _ = ip(&["netns", "del", &self.ns(node)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

fn addr(node: usize) -> String {
    format!("{SUBNET}.{node}")
}

fn server_url(node: usize) -> String {
    format!("http://{}:8500", addr(node))
}

/// The cluster's processes, killed by pid when dropped.
struct Cluster {
    topology: Topology,
    data: tempfile::TempDir,
    members: Vec<Option<Child>>,
    servers: Vec<Option<Child>>,
}

impl Cluster {
    fn start() -> Cluster {
        let topology = Topology::create();
        let mut cluster = Cluster {
            topology,
            data: tempfile::tempdir().unwrap(),
            members: (0..NODES).map(|_| None).collect(),
            servers: (0..NODES).map(|_| None).collect(),
        };
        for node in 1..=NODES {
            cluster.start_member(node, "new");
        }
        // A server refuses to start on a cluster that does not answer yet.
        let endpoints: Vec<String> = (1..=NODES)
            .map(|n| format!("http://{}:2379", addr(n)))
            .collect();
        let started = Instant::now();
        while trellis_etcd::testing::etcdctl(
            &endpoints.join(","),
            &["endpoint", "health", "--cluster"],
        )
        .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "etcd never became healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for node in 1..=NODES {
            cluster.start_server(node);
        }
        cluster
    }

    fn start_member(&mut self, node: usize, state: &str) {
        let peers: Vec<String> = (1..=NODES)
            .map(|n| format!("m{n}=http://{}:2380", addr(n)))
            .collect();
        let args: Vec<String> = [
            "--name",
            &format!("m{node}"),
            "--data-dir",
            self.data.path().join(format!("m{node}")).to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://{}:2379", addr(node)),
            "--advertise-client-urls",
            &format!("http://{}:2379", addr(node)),
            "--listen-peer-urls",
            &format!("http://{}:2380", addr(node)),
            "--initial-advertise-peer-urls",
            &format!("http://{}:2380", addr(node)),
            "--initial-cluster",
            &peers.join(","),
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.members[node - 1] = Some(self.topology.spawn(node, "etcd", &args));
    }

    fn start_server(&mut self, node: usize) {
        let endpoints: Vec<String> = (1..=NODES)
            .map(|n| format!("http://{}:2379", addr(n)))
            .collect();
        let args: Vec<String> = [
            "server",
            "--http",
            &format!("{}:8500", addr(node)),
            "--node-name",
            &format!("server-{node}"),
            "--store",
            "etcd",
            "--etcd",
            &endpoints.join(","),
            "--etcd-lease-ttl",
            &format!("{}s", LEASE_TTL.as_secs()),
            "--data-dir",
            self.data.path().join(format!("s{node}")).to_str().unwrap(),
            "--dns",
            "off",
            "--otlp",
            "off",
            "--otlp-grpc",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.servers[node - 1] = Some(self.topology.spawn(
            node,
            env!("CARGO_BIN_EXE_trellis"),
            &args,
        ));
    }

    fn kill(slot: &mut Option<Child>) {
        if let Some(mut child) = slot.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_member(&mut self, node: usize) {
        Self::kill(&mut self.members[node - 1]);
    }

    fn kill_server(&mut self, node: usize) {
        Self::kill(&mut self.servers[node - 1]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in self.servers.iter_mut().chain(self.members.iter_mut()) {
            Self::kill(slot);
        }
    }
}

/// Which server leads, as `/v1/status/leader` on `node` says (its host), if it answers.
async fn leader_of(client: &reqwest::Client, node: usize) -> Option<String> {
    let answer = client
        .get(format!("{}/v1/status/leader", server_url(node)))
        .send()
        .await
        .ok()?;
    let leader: String = answer.json().await.ok()?;
    leader
        .split(':')
        .next()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// The lease TTL the servers run with (`--etcd-lease-ttl`).
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How many instances have an active HTTP check (shared out among the servers).
const PROBED: usize = 12;

/// The IDs of `service`'s passing instances, as server `node` lists them (none if it does not
/// answer).
async fn passing(node: usize, service: &str) -> BTreeSet<String> {
    let url = format!("{}/v1/health/service/{service}?passing", server_url(node));
    let Ok(answer) = http_with_timeout(Duration::from_secs(2))
        .get(url)
        .send()
        .await
    else {
        return BTreeSet::new();
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body.as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["Service"]["ID"].as_str().map(str::to_owned))
        .collect()
}

/// An HTTP endpoint the servers probe, on the test's own address in the cluster's subnet,
/// answering 200 or 500 as told.
struct ProbeTarget {
    address: std::net::SocketAddr,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeTarget {
    async fn start() -> ProbeTarget {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(format!("{SUBNET}.100:0"))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let answers = healthy.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let status = if answers.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        ProbeTarget {
            address,
            healthy,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for ProbeTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the workload did, as its clients saw it.
struct History {
    /// The clock every operation's call and return times are read on.
    clock: Clock,
    /// Registrations answered 200.
    registered: BTreeSet<String>,
    /// Registrations answered otherwise or not at all: may or may not be there.
    uncertain: BTreeSet<String>,
    /// Every consistent read and CAS increment of the counter key.
    counter: Vec<Operation<RegisterInput, RegisterOutput>>,
    /// Every acquire and release of the lock key.
    lock: Vec<Operation<LockInput, bool>>,
    /// Writes answered 200, per phase of the test.
    ok_writes: usize,
}

/// Nanoseconds since the history began, one clock for every client.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

impl History {
    fn new() -> History {
        History {
            clock: Clock(Instant::now()),
            registered: BTreeSet::new(),
            uncertain: BTreeSet::new(),
            counter: Vec::new(),
            lock: Vec::new(),
            ok_writes: 0,
        }
    }
}

/// How many operations `ops` has, and how many of them got no answer.
fn described<I, O>(ops: &[Operation<I, O>]) -> String {
    let unknown = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown))
        .count();
    format!("{} ({unknown} with no answer)", ops.len())
}

/// An operation's outcome from a write answered `true`/`false` with 200; anything else (an
/// error, a timeout, a 503 from a leader that may have committed it) may or may not have
/// taken effect.
async fn bool_outcome(answer: reqwest::Result<reqwest::Response>) -> Outcome<bool> {
    match answer {
        Ok(r) if r.status() == 200 => match r.text().await.as_deref() {
            Ok("true") => Outcome::Returned(true),
            Ok("false") => Outcome::Returned(false),
            _ => Outcome::Unknown,
        },
        _ => Outcome::Unknown,
    }
}

/// Adds an operation called at `call` and answered (or given up on) at `ret` to `ops`; the
/// checker takes an operation with no answer as returning never, whatever `ret` says.
fn record<I, O>(
    ops: &mut Vec<Operation<I, O>>,
    client: usize,
    (call, ret): (u64, u64),
    input: I,
    outcome: Outcome<O>,
) {
    ops.push(Operation {
        client,
        call,
        ret: Some(ret),
        input,
        outcome,
    });
}

/// One workload client: registrations, CAS increments of a counter (after a consistent read)
/// and lock rounds, against random servers, every operation recorded with its call and return
/// times for the linearizability checker.
async fn workload(id: usize, history: Arc<Mutex<History>>, stop: Arc<AtomicBool>) {
    // A node that is cut off answers nothing: give up on connecting to it quickly.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(8))
        .no_proxy()
        .build()
        .unwrap();
    let clock = history.lock().await.clock;
    let mut round = 0usize;
    let mut session: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let node = 1 + (id + round) % NODES;
        let base = server_url(node);
        // A registration with a unique ID.
        let instance = format!("w{id}-{round}");
        let registered = client
            .put(format!("{base}/v1/agent/service/register"))
            .json(&json!({"ID": instance, "Name": "load", "Port": 1000 + id}))
            .send()
            .await;
        let unreachable = registered.as_ref().is_err_and(reqwest::Error::is_connect);
        {
            let mut h = history.lock().await;
            match registered {
                Ok(r) if r.status() == 200 => {
                    h.registered.insert(instance);
                    h.ok_writes += 1;
                }
                _ => {
                    h.uncertain.insert(instance);
                }
            }
        }
        if unreachable {
            continue; // on to the next node
        }
        // A consistent read of the counter, then a CAS increment on the index it read. The
        // model compares values, not indexes: each applied CAS writes one more than the value
        // it read, so within a correct history an index names one value.
        let call = clock.now();
        let read = client
            .get(format!("{base}/v1/kv/counter?consistent"))
            .send()
            .await;
        let Ok(read) = read else { continue };
        if read.status() != 200 {
            continue; // a read that failed changes nothing: left out
        }
        let entries: serde_json::Value = read.json().await.unwrap();
        let ret = clock.now();
        let index = entries[0]["ModifyIndex"].as_u64().unwrap();
        let value: u64 =
            std::str::from_utf8(&base64_decode(entries[0]["Value"].as_str().unwrap_or("")))
                .unwrap()
                .parse()
                .unwrap();
        let read_op = Operation::returned(
            id,
            call,
            ret,
            RegisterInput::Read,
            RegisterOutput::Value(Some(value)),
        );
        history.lock().await.counter.push(read_op);
        let call = clock.now();
        let written = client
            .put(format!("{base}/v1/kv/counter?cas={index}"))
            .body((value + 1).to_string())
            .send()
            .await;
        let outcome = bool_outcome(written).await;
        let ret = clock.now();
        {
            let mut h = history.lock().await;
            if outcome == Outcome::Returned(true) {
                h.ok_writes += 1;
            }
            let input = RegisterInput::Cas {
                expect: value,
                new: value + 1,
            };
            let outcome = match outcome {
                Outcome::Returned(applied) => Outcome::Returned(RegisterOutput::Applied(applied)),
                Outcome::Unknown => Outcome::Unknown,
            };
            record(&mut h.counter, id, (call, ret), input, outcome);
        }
        // A lock round: acquire with the client's session, hold a moment, release. The session
        // has no TTL (and only the node's always-passing check), so nothing but these requests
        // moves the lock.
        if session.is_none() {
            let created = client
                .put(format!("{base}/v1/session/create"))
                .json(&json!({"LockDelay": "0s", "Name": format!("client-{id}")}))
                .send()
                .await;
            if let Ok(answer) = created
                && answer.status() == 200
                && let Ok(body) = answer.json::<serde_json::Value>().await
            {
                session = body["ID"].as_str().map(str::to_owned);
            }
        }
        if let Some(session) = &session {
            let call = clock.now();
            let acquired = client
                .put(format!("{base}/v1/kv/lock?acquire={session}"))
                .body(format!("client-{id}"))
                .send()
                .await;
            let outcome = bool_outcome(acquired).await;
            let ret = clock.now();
            let input = LockInput::Acquire(session.clone());
            record(
                &mut history.lock().await.lock,
                id,
                (call, ret),
                input,
                outcome.clone(),
            );
            if outcome == Outcome::Returned(true) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Released whatever the answer but a refusal: an acquire with no answer may have
            // taken it.
            if outcome != Outcome::Returned(false) {
                let call = clock.now();
                let released = client
                    .put(format!("{base}/v1/kv/lock?release={session}"))
                    .send()
                    .await;
                let outcome = bool_outcome(released).await;
                let ret = clock.now();
                let input = LockInput::Release(session.clone());
                record(
                    &mut history.lock().await.lock,
                    id,
                    (call, ret),
                    input,
                    outcome,
                );
            }
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// How many writes the workload has had answered 200 so far.
async fn ok_writes(history: &Arc<Mutex<History>>) -> usize {
    history.lock().await.ok_writes
}

/// Waits until the workload has had `more` writes answered 200.
async fn progress(history: &Arc<Mutex<History>>, more: usize, what: &str) {
    let start = ok_writes(history).await;
    eventually(Duration::from_secs(60), what, || async {
        ok_writes(history).await >= start + more
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_in_namespaces_keeps_every_acknowledged_write_through_kills_and_a_cut() {
    let mut cluster = Cluster::start();
    let client = http_with_timeout(Duration::from_secs(8));
    // Every server serves and names the same leader.
    eventually(
        Duration::from_secs(60),
        "three servers agree on a leader",
        || async {
            let mut leaders = BTreeSet::new();
            for node in 1..=NODES {
                match leader_of(&client, node).await {
                    Some(leader) => leaders.insert(leader),
                    None => return false,
                };
            }
            leaders.len() == 1
        },
    )
    .await;
    // Every server lists the three as its peers, as Consul lists its Raft peers.
    let expected: Vec<String> = (1..=NODES).map(|n| format!("{}:8300", addr(n))).collect();
    for node in 1..=NODES {
        let url = format!("{}/v1/status/peers", server_url(node));
        eventually(
            Duration::from_secs(10),
            "every server lists its peers",
            || async {
                let mut peers: Vec<String> =
                    serde_json::from_value(support::get_json(&url).await).unwrap();
                peers.sort();
                peers == expected
            },
        )
        .await;
    }
    let put = client
        .put(format!("{}/v1/kv/counter", server_url(1)))
        .body("0")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Writes through every server; a watcher on every server converges on all of them.
    for node in 1..=NODES {
        let answer = client
            .put(format!("{}/v1/agent/service/register", server_url(node)))
            .json(&json!({"ID": format!("web-{node}"), "Name": "web", "Port": 80}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let mut indexes = BTreeSet::new();
    for node in 1..=NODES {
        let answer = client
            .get(format!("{}/v1/catalog/service/web", server_url(node)))
            .send()
            .await
            .unwrap();
        let index = support::index_of(&answer);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(
            body.as_array().unwrap().len(),
            NODES,
            "server {node}: {body}"
        );
        indexes.insert(index);
    }
    assert_eq!(
        indexes.len(),
        1,
        "the servers' indexes for web: {indexes:?}"
    );

    let history = Arc::new(Mutex::new(History::new()));
    // The counter was set to 0 above, before the history's clock started.
    history.lock().await.counter.push(Operation::returned(
        NODES + 1,
        0,
        0,
        RegisterInput::Write(0),
        RegisterOutput::Written,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|id| tokio::spawn(workload(id, history.clone(), stop.clone())))
        .collect();
    progress(&history, 20, "the workload runs").await;

    // One etcd member killed: writes go on.
    cluster.kill_member(3);
    progress(&history, 20, "writes with one member down").await;
    cluster.start_member(3, "existing");

    // The leading Trellis server killed under load, with active probes shared out among the
    // servers and a sidecar heartbeating to one of them: another takes over, the workload goes
    // on, the probes move, the sidecar moves, and nothing healthy is marked critical.
    let target = ProbeTarget::start().await;
    for i in 0..PROBED {
        let answer = client
            .put(format!(
                "{}/v1/agent/service/register",
                server_url(1 + i % NODES)
            ))
            .json(
                &json!({"ID": format!("probed-{i}"), "Name": "probed", "Port": 1,
                "Check": {"HTTP": target.url(), "Interval": "300ms"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let leader = leader_of(&client, 1).await.unwrap();
    let leading = (1..=NODES).find(|n| addr(*n) == leader).unwrap();
    let survivor = (1..=NODES).find(|n| *n != leading).unwrap();
    // The sidecar lists the leader first, so it heartbeats to the server that is killed and
    // has to move.
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registries: Vec<String> = std::iter::once(leading)
        .chain((1..=NODES).filter(|n| *n != leading))
        .map(server_url)
        .collect();
    let sidecar = support::sidecar(
        &registries.join(","),
        "api",
        app.local_addr().unwrap().port(),
        &["--id", "api-1"],
        None,
    );
    for node in 1..=NODES {
        eventually(
            Duration::from_secs(30),
            "the probed instances and the sidecar's pass on every server",
            || async {
                let (probed, api) = (passing(node, "probed").await, passing(node, "api").await);
                probed.len() == PROBED && api.len() == 1
            },
        )
        .await;
    }
    assert_eq!(
        leader_of(&client, survivor).await.as_deref(),
        Some(leader.as_str()),
        "the leader did not change meanwhile"
    );
    cluster.kill_server(leading);
    let killed = Instant::now();
    // For three lease TTLs, no instance is critical on a survivor for longer than one.
    let mut critical_since: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut longest = Duration::ZERO;
    while killed.elapsed() < 3 * LEASE_TTL {
        let now = Instant::now();
        let mut passing_now = passing(survivor, "probed").await;
        passing_now.extend(passing(survivor, "api").await);
        critical_since.retain(|id, _| !passing_now.contains(id));
        for id in (0..PROBED)
            .map(|i| format!("probed-{i}"))
            .chain(["api-1".to_owned()])
        {
            if !passing_now.contains(&id) {
                let since = *critical_since.entry(id).or_insert(now);
                longest = longest.max(now - since);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        longest <= LEASE_TTL,
        "an instance was not passing for {longest:?} after the leader was killed: {critical_since:?}"
    );
    progress(&history, 20, "writes after the leader was killed").await;
    eprintln!(
        "writes resumed {:?} after the leader was killed; the longest an instance was not \
         passing on a survivor meanwhile: {longest:?}",
        killed.elapsed()
    );
    // The killed server's share of the probes moved to the survivors: when the target fails,
    // every check turns critical, and passes again when it recovers.
    target.set_healthy(false);
    eventually(
        Duration::from_secs(15),
        "every probed instance critical once its target fails",
        || async { passing(survivor, "probed").await.is_empty() },
    )
    .await;
    target.set_healthy(true);
    eventually(
        Duration::from_secs(15),
        "every probed instance passing again",
        || async { passing(survivor, "probed").await.len() == PROBED },
    )
    .await;
    // The sidecar moved to a survivor: past its 3 s TTL only heartbeats there keep it passing.
    assert_eq!(
        passing(survivor, "api").await.len(),
        1,
        "the sidecar's heartbeats"
    );
    drop(sidecar);
    cluster.start_server(leading);
    eventually(
        Duration::from_secs(30),
        "the restarted server serves",
        || async { leader_of(&client, leading).await.is_some() },
    )
    .await;

    // Two members killed: no quorum, writes refused with 503, reads say no leader is known.
    cluster.kill_member(1);
    cluster.kill_member(2);
    eventually(
        Duration::from_secs(20),
        "writes refused without quorum",
        || async {
            let answer = client
                .put(format!("{}/v1/kv/no-quorum", server_url(3)))
                .body("x")
                .send()
                .await;
            answer.is_ok_and(|a| a.status() == 503)
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "reads say no leader is known",
        || async {
            let Ok(answer) = client
                .get(format!("{}/v1/catalog/service/web", server_url(3)))
                .send()
                .await
            else {
                return false;
            };
            answer
                .headers()
                .get("x-consul-knownleader")
                .is_some_and(|v| v == "false")
        },
    )
    .await;
    cluster.start_member(1, "existing");
    cluster.start_member(2, "existing");
    progress(&history, 20, "writes after quorum returned").await;

    // One node cut off (its member and its server): that server refuses writes, the others
    // go on; healed, it catches up.
    cluster.topology.set_link(2, false);
    // Asked from inside its namespace, where it can still be reached.
    let topology = &cluster.topology;
    eventually(
        Duration::from_secs(30),
        "the cut-off server refuses writes",
        || async {
            let output = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &topology.ns(2),
                    env!("CARGO_BIN_EXE_trellis"),
                ])
                .args([
                    "kv",
                    "put",
                    "--addr",
                    &format!("{}:8500", addr(2)),
                    "cut",
                    "x",
                ])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr);
            !output.status.success() && said.contains("503")
        },
    )
    .await;
    progress(&history, 20, "writes while a node is cut off").await;
    cluster.topology.set_link(2, true);
    progress(&history, 10, "writes after healing").await;

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    // Every server converges on the same state: the same instances, the same counter (with
    // the same ModifyIndex: records carry the leader's indexes).
    let history = history.lock().await;
    let state_of = |node: usize| async move {
        let instances: BTreeSet<String> =
            support::get_json(&format!("{}/v1/catalog/service/load", server_url(node)))
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["ServiceID"].as_str().unwrap().to_owned())
                .collect();
        let counter = support::get_json(&format!("{}/v1/kv/counter", server_url(node))).await;
        (instances, counter[0]["ModifyIndex"].as_u64().unwrap())
    };
    let reference = state_of(1).await;
    for node in 2..=NODES {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state = state_of(node).await;
            if state == reference {
                break;
            }
            if std::time::Instant::now() > deadline {
                let only_here: Vec<_> = state.0.difference(&reference.0).collect();
                let only_there: Vec<_> = reference.0.difference(&state.0).collect();
                panic!(
                    "server {node} did not converge with server 1 in 30 s: instances only on \
                     it {only_here:?}, only on server 1 {only_there:?}; the counter's \
                     ModifyIndex {} there, {} on server 1",
                    state.1, reference.1
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let listed = reference.0;
    // No acknowledged registration lost, nothing that was never asked for.
    let lost: Vec<_> = history.registered.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged registrations lost: {lost:?}");
    assert!(
        listed
            .iter()
            .all(|id| history.registered.contains(id) || history.uncertain.contains(id)),
        "an instance nobody registered"
    );
    // The counter's and the lock's histories, with the counter's final value read last, are
    // linearizable: some order of the operations, each taking effect between its call and its
    // return (or at any time after its call, or never, for those with no answer), explains
    // every answer a client got.
    let mut counter_ops = history.counter.clone();
    // A consistent read may meet a leader change (503): read until one is answered.
    let clock = history.clock;
    let (mut call, mut answered) = (clock.now(), None);
    for _ in 0..100 {
        call = clock.now();
        let url = format!("{}/v1/kv/counter?raw&consistent", server_url(1));
        if let Ok(answer) = client.get(url).send().await
            && answer.status() == 200
        {
            answered = Some(answer.text().await.unwrap().parse::<u64>().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = answered.expect("a consistent read of the counter");
    counter_ops.push(Operation::returned(
        NODES + 1,
        call,
        clock.now(),
        RegisterInput::Read,
        RegisterOutput::Value(Some(last)),
    ));
    let checked = Instant::now();
    let counter_verdict = linearizability::check(&CasRegister, &counter_ops);
    let lock_verdict = linearizability::check(&Lock, &history.lock);
    let checked = checked.elapsed();
    let applied = counter_ops
        .iter()
        .filter(|op| op.outcome == Outcome::Returned(RegisterOutput::Applied(true)))
        .count();
    let held = history
        .lock
        .iter()
        .filter(|op| {
            matches!(op.input, LockInput::Acquire(_)) && op.outcome == Outcome::Returned(true)
        })
        .count();
    eprintln!(
        "{} registrations acknowledged ({} uncertain); counter {last}: {} operations, {applied} CAS applied; lock: {} operations, {held} acquired; checked in {checked:?}",
        history.registered.len(),
        history.uncertain.len(),
        described(&counter_ops),
        described(&history.lock),
    );
    assert!(
        counter_verdict.is_linearizable(),
        "the counter's history: {counter_verdict}"
    );
    assert!(
        lock_verdict.is_linearizable(),
        "the lock's history: {lock_verdict}"
    );
    assert!(applied >= 5, "the counter was hardly ever incremented");
    assert!(held >= 5, "the lock was hardly ever taken");
}
