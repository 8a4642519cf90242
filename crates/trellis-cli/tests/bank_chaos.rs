//! The bank chaos test of the two-phase-commit coordinator: accounts spread over three `trellis
//! bank` participants (two on SQLite, one on a PostgreSQL server the test starts), many
//! concurrent transfers submitted through a durable `trellis server`, and every 0.3–1 s a
//! SIGKILL of the coordinator or of a participant (sometimes two at once), restarted on the
//! same port with the same data. Afterwards, with everything recovered and no transaction
//! unfinished: the total balance is unchanged, every account's balance is its initial one plus
//! the committed transfers' deltas, no branch is still prepared anywhere, every transfer the
//! coordinator reported committed is recorded by both of its participants and every aborted
//! one by neither, and no participant saw a protocol violation.
//!
//! `BANK_CHAOS_CRASHES` sets the number of crashes (default 25; `bench/bank_chaos.sh` runs
//! 500), `BANK_CHAOS_SEED` the random seed (printed at the start; the timing of the processes
//! still differs from run to run), and `BANK_CHAOS_DEBUG=1` prints the end of each process's
//! log.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use trellis_participant::testing::PgServer;

const DEFAULT_CRASHES: usize = 25;
const ACCOUNTS_PER_BANK: usize = 4;
const INITIAL: i64 = 1_000;
const WORKERS: usize = 16;
/// Largest transfer: big enough that some debits find too little money and vote no.
const MAX_AMOUNT: i64 = 300;
/// The coordinator's prepare timeout for each transfer: long enough to ride out a participant's
/// restart, short enough that a transfer stuck behind a dead one aborts.
const TXN_TIMEOUT: &str = "5s";
/// A transfer that has no outcome after this long fails the test.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(180);
/// Time allowed for the coordinator to finish every transaction once the crashes stop.
const QUIESCE_DEADLINE: Duration = Duration::from_secs(180);
/// A restarted process must print its address within this long.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A small xorshift generator: the test needs no statistical quality, only reproducible runs
/// without another dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A loopback port below Linux's ephemeral range (32768 and up), free a moment ago. Outside
/// that range no outgoing connection (the coordinator's, the workers') can take the port while
/// its process is down and being restarted.
fn fixed_port(rng: &mut Rng, taken: &[u16]) -> u16 {
    loop {
        let port = 20_000 + rng.below(12_000) as u16;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One `trellis` process of the test, restartable with the same arguments: its stderr is
/// appended to `log` across restarts.
struct Node {
    name: &'static str,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    fn new(name: &'static str, args: Vec<String>, dir: &Path) -> Node {
        Node {
            name,
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    /// Starts the process and waits for its "listening on" line; tries again while it exits
    /// before that (its port not yet free, or its database not reachable).
    fn start(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.try_start() {
                self.child = Some(child);
                self.starts += 1;
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "{} did not start within {START_DEADLINE:?}; its log:\n{}",
                self.name,
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_start(&self) -> Option<Child> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(&self.args)
            .env("TRELLIS_LOG", "warn,trellis_example=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start trellis");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address line, then keeps draining stdout so the child never blocks.
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(" listening on ")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(START_DEADLINE) {
            Ok(()) => Some(child),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                None
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} printed no address within {START_DEADLINE:?}; its log:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
        }
    }

    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `lines` lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One participant as the workers see it.
#[derive(Clone)]
struct BankInfo {
    name: &'static str,
    url: String,
    accounts: Vec<String>,
}

/// What one transfer was and what the coordinator said of it.
#[derive(Debug, Clone)]
struct Record {
    gid: String,
    from: (usize, String),
    to: (usize, String),
    amount: i64,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Committed,
    /// With the cause's reason.
    Aborted(String),
}

#[derive(Default)]
struct Counters {
    /// Submissions repeated after a connection error, a timeout, a 5xx or a 202.
    resubmits: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_stay_atomic_through_random_crashes() {
    let crashes: usize = std::env::var("BANK_CHAOS_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CRASHES);
    let seed: u64 = std::env::var("BANK_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("bank chaos: {crashes} crashes, BANK_CHAOS_SEED={seed}");
    let mut rng = Rng::new(seed);

    let pg = tokio::task::spawn_blocking(|| {
        PgServer::start_with(&[
            ("max_prepared_transactions", "100"),
            ("max_connections", "100"),
        ])
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ports = Vec::new();
    for _ in 0..4 {
        let port = fixed_port(&mut rng, &ports);
        ports.push(port);
    }
    let coordinator = format!("http://127.0.0.1:{}", ports[0]);

    let names = ["bank-a", "bank-b", "bank-pg"];
    let banks: Vec<BankInfo> = names
        .iter()
        .enumerate()
        .map(|(i, name)| BankInfo {
            name,
            url: format!("http://127.0.0.1:{}", ports[i + 1]),
            accounts: (1..=ACCOUNTS_PER_BANK)
                .map(|n| format!("{}{n}", ["a", "b", "p"][i]))
                .collect(),
        })
        .collect();
    let data = dir.path().join("coordinator");
    let mut nodes = vec![Node::new(
        "coordinator",
        vec![
            "server".into(),
            "--http".into(),
            format!("127.0.0.1:{}", ports[0]),
            "--dns".into(),
            "off".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ],
        dir.path(),
    )];
    for (i, bank) in banks.iter().enumerate() {
        let mut args = vec![
            "bank".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i + 1]),
            "--accounts".into(),
            bank.accounts.join(","),
            "--initial".into(),
            INITIAL.to_string(),
        ];
        if i < 2 {
            args.push("--sqlite".into());
            args.push(
                dir.path()
                    .join(format!("{}.db", bank.name))
                    .display()
                    .to_string(),
            );
        } else {
            args.extend([
                "--postgres".into(),
                pg.connection_string(),
                "--coordinator".into(),
                coordinator.clone(),
            ]);
        }
        nodes.push(Node::new(bank.name, args, dir.path()));
    }
    let mut nodes = tokio::task::spawn_blocking(move || {
        for node in &mut nodes {
            node.start();
        }
        nodes
    })
    .await
    .unwrap();

    // The workers: random transfers between accounts of two different banks, each resubmitted
    // under its own gid until it has an outcome.
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (stop, records, counters) = (stop.clone(), records.clone(), counters.clone());
        let (banks, coordinator) = (banks.clone(), coordinator.clone());
        let mut rng = Rng::new(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w as u64 + 1)));
        workers.push(tokio::spawn(async move {
            let http = support::http_with_timeout(Duration::from_secs(30));
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let from_bank = rng.below(3) as usize;
                let to_bank = (from_bank + 1 + rng.below(2) as usize) % 3;
                let pick = |rng: &mut Rng, bank: usize| {
                    let accounts = &banks[bank].accounts;
                    accounts[rng.below(accounts.len() as u64) as usize].clone()
                };
                let from = (from_bank, pick(&mut rng, from_bank));
                let to = (to_bank, pick(&mut rng, to_bank));
                let amount = 1 + rng.below(MAX_AMOUNT as u64) as i64;
                let gid = format!("t{w}-{n}");
                let outcome = submit(
                    &http,
                    &coordinator,
                    &banks,
                    &gid,
                    (&from, &to, amount),
                    &counters,
                )
                .await;
                records.lock().unwrap().push(Record {
                    gid,
                    from,
                    to,
                    amount,
                    outcome,
                });
            }
        }));
    }

    // The chaos: every 0.3–1 s SIGKILL the coordinator or a bank (one time in five two of
    // them at once), and start it again after up to 0.2 s. The first rounds take each process
    // in turn, so that every one crashes at least once.
    let chaos_rng = Rng::new(seed.rotate_left(17));
    let (nodes, kills, chaos_time) = tokio::task::spawn_blocking(move || {
        let mut rng = chaos_rng;
        let mut kills: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let started = Instant::now();
        let mut crashed = 0;
        while crashed < crashes {
            std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
            let first = match order.get(crashed) {
                Some(&node) => node,
                None => rng.below(nodes.len() as u64) as usize,
            };
            let mut victims = vec![first];
            if crashed + 1 < crashes && rng.below(5) == 0 {
                victims
                    .push((first + 1 + rng.below(nodes.len() as u64 - 1) as usize) % nodes.len());
            }
            for &victim in &victims {
                nodes[victim].kill9();
                *kills.entry(nodes[victim].name).or_default() += 1;
                crashed += 1;
            }
            std::thread::sleep(Duration::from_millis(rng.below(200)));
            for &victim in &victims {
                nodes[victim].start();
            }
        }
        (nodes, kills, started.elapsed())
    })
    .await
    .unwrap();

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let load_time = started.elapsed();

    // Everything recovered: wait until the coordinator has no unfinished transaction.
    let http = support::http_with_timeout(Duration::from_secs(30));
    let quiesce_started = Instant::now();
    loop {
        let mut unfinished = Vec::new();
        for state in ["open", "preparing", "committing", "aborting"] {
            let page = get_json(
                &http,
                &format!("{coordinator}/v1/trellis/txn?state={state}&limit=1000"),
            )
            .await;
            for txn in page["transactions"].as_array().unwrap() {
                unfinished.push(txn.clone());
            }
        }
        if unfinished.is_empty() {
            break;
        }
        // A participant refusing phase 2 (409) is a protocol violation the coordinator keeps
        // retrying forever: fail now rather than at the deadline.
        let refused = unfinished.iter().find(|txn| {
            txn["branches"].as_array().is_some_and(|branches| {
                branches.iter().any(|b| {
                    b["last_error"].as_str().is_some_and(|e| {
                        e.contains("/commit answered 409") || e.contains("/abort answered 409")
                    })
                })
            })
        });
        if let Some(txn) = refused {
            panic!("a participant refuses phase 2 of {txn}");
        }
        assert!(
            quiesce_started.elapsed() < QUIESCE_DEADLINE,
            "{} transactions still unfinished {QUIESCE_DEADLINE:?} after the last crash, e.g. {}",
            unfinished.len(),
            unfinished[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiesce_time = quiesce_started.elapsed();

    let records = std::mem::take(&mut *records.lock().unwrap());
    let report = check(&http, &coordinator, &banks, &records, &nodes).await;

    let committed = records
        .iter()
        .filter(|r| r.outcome == Outcome::Committed)
        .count();
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        if let Outcome::Aborted(reason) = &record.outcome {
            *causes.entry(abort_kind(reason)).or_default() += 1;
        }
    }
    let kills_text: Vec<String> = kills.iter().map(|(n, k)| format!("{n} {k}")).collect();
    let causes_text: Vec<String> = causes.iter().map(|(c, k)| format!("{k} {c}")).collect();
    println!(
        "bank chaos (seed {seed}): {crashes} crashes ({}) in {:.1} s of chaos",
        kills_text.join(", "),
        chaos_time.as_secs_f64()
    );
    println!(
        "bank chaos: {} transfers in {:.1} s ({:.0}/s): {committed} committed, {} aborted ({}); \
         {} resubmissions",
        records.len(),
        load_time.as_secs_f64(),
        records.len() as f64 / load_time.as_secs_f64(),
        records.len() - committed,
        causes_text.join(", "),
        counters.resubmits.load(Ordering::Relaxed),
    );
    println!(
        "bank chaos: quiesced {:.2} s after the last crash; total balance {} unchanged; \
         0 branches in doubt; {} transfer rows checked; the coordinator still holds {} of the \
         transactions and agrees on every one",
        quiesce_time.as_secs_f64(),
        report.total,
        report.rows,
        report.known_to_coordinator
    );
    let settled = settled_at_restarts(&nodes[3].log);
    println!(
        "bank chaos: bank-pg found {} branches prepared at its restarts: {} committed, {} \
         rolled back, {} left to the coordinator (still deciding), {} left (coordinator down)",
        settled.iter().sum::<u64>(),
        settled[0],
        settled[1],
        settled[2],
        settled[3]
    );
    if std::env::var_os("BANK_CHAOS_DEBUG").is_some() {
        for node in &nodes {
            eprintln!("==== {}\n{}", node.name, tail(&node.log, 30));
        }
    }
    drop(nodes);
    drop(pg);
}

/// What the PostgreSQL bank's start-up recovery did over all its starts, from its log:
/// (committed, aborted, left, failed).
fn settled_at_restarts(log: &Path) -> [u64; 4] {
    let mut sums = [0; 4];
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.contains("in doubt at start settled"))
    {
        for (i, key) in ["committed=", "aborted=", "left=", "failed="]
            .iter()
            .enumerate()
        {
            let value = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .and_then(|v| v.parse::<u64>().ok());
            sums[i] += value.unwrap_or(0);
        }
    }
    sums
}

/// Submits one transfer under `gid` until the coordinator gives an outcome, resubmitting the
/// same gid after connection errors, timeouts, 5xx and 202 (still preparing).
async fn submit(
    http: &reqwest::Client,
    coordinator: &str,
    banks: &[BankInfo],
    gid: &str,
    (from, to, amount): (&(usize, String), &(usize, String), i64),
    counters: &Counters,
) -> Outcome {
    let branch = |id: &str, (bank, account): &(usize, String), delta: i64| {
        json!({
            "branch_id": id,
            "url": format!("{}{}", banks[*bank].url, trellis_example::TRANSFER_PATH),
            "payload": {"account": account, "delta": delta},
        })
    };
    let body = json!({
        "gid": gid,
        "timeout": TXN_TIMEOUT,
        "branches": [branch("debit", from, -amount), branch("credit", to, amount)],
        "commit": true,
    });
    let started = Instant::now();
    let mut first = true;
    loop {
        assert!(
            started.elapsed() < TRANSFER_DEADLINE,
            "transfer {gid} has no outcome after {TRANSFER_DEADLINE:?}"
        );
        if !first {
            counters.resubmits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first = false;
        let response = match http
            .post(format!("{coordinator}/v1/trellis/txn"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(_) => continue,
        };
        let status = response.status().as_u16();
        let Ok(text) = response.text().await else {
            continue;
        };
        let txn: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match (status, txn["state"].as_str()) {
            (200, Some("committed" | "committing")) => return Outcome::Committed,
            (409, Some("aborted" | "aborting")) => {
                let reason = txn["cause"]["reason"].as_str().unwrap_or("").to_string();
                return Outcome::Aborted(reason);
            }
            (202, _) | (429, _) | (500..=599, _) => continue,
            _ => panic!("transfer {gid}: unexpected answer {status} {text}"),
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// Groups abort reasons for the figures: no votes by their reason, everything else by kind.
fn abort_kind(reason: &str) -> String {
    if reason.contains("insufficient funds") {
        "insufficient funds".into()
    } else if reason.contains("timed out") {
        "prepare timed out".into()
    } else if reason.contains("restarted") {
        "coordinator restarted before deciding".into()
    } else {
        reason.to_string()
    }
}

struct Report {
    total: i64,
    rows: usize,
    known_to_coordinator: usize,
}

/// Every check once the system is quiet; panics with what is wrong.
async fn check(
    http: &reqwest::Client,
    coordinator: &str,
    banks: &[BankInfo],
    records: &[Record],
    nodes: &[Node],
) -> Report {
    // No participant saw a call a correct coordinator never makes.
    for node in nodes {
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        let violations: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("protocol violation"))
            .collect();
        assert!(
            violations.is_empty(),
            "{} logged protocol violations:\n{}",
            node.name,
            violations.join("\n")
        );
    }

    // No branch in doubt anywhere.
    for bank in banks {
        let in_doubt = get_json(http, &format!("{}/in-doubt", bank.url)).await;
        assert_eq!(
            in_doubt["count"], 0,
            "{} still has branches in doubt with nothing unfinished at the coordinator: {in_doubt}",
            bank.name
        );
    }

    // The money: every account is its initial balance plus its committed deltas, nothing is
    // frozen, and so the total is unchanged.
    let mut expected: HashMap<(usize, String), i64> = HashMap::new();
    for (i, bank) in banks.iter().enumerate() {
        for account in &bank.accounts {
            expected.insert((i, account.clone()), INITIAL);
        }
    }
    for record in records.iter().filter(|r| r.outcome == Outcome::Committed) {
        *expected.get_mut(&record.from).unwrap() -= record.amount;
        *expected.get_mut(&record.to).unwrap() += record.amount;
    }
    let mut total = 0;
    for (i, bank) in banks.iter().enumerate() {
        let accounts = get_json(http, &format!("{}/accounts", bank.url)).await;
        let accounts = accounts.as_array().unwrap();
        assert_eq!(accounts.len(), bank.accounts.len(), "{}", bank.name);
        for account in accounts {
            let id = account["id"].as_str().unwrap().to_string();
            let balance = account["balance"].as_i64().unwrap();
            assert_eq!(account["frozen"], 0, "{}: {account}", bank.name);
            assert_eq!(
                Some(&balance),
                expected.get(&(i, id.clone())),
                "{} account {id}: the balance is not its initial one plus its committed \
                 transfers",
                bank.name
            );
            total += balance;
        }
    }
    let initial_total = INITIAL * (banks.len() * ACCOUNTS_PER_BANK) as i64;
    assert_eq!(total, initial_total, "the total balance changed");

    // Every committed transfer is recorded on both sides, every aborted one on neither, and
    // nothing else is recorded.
    let mut recorded: HashMap<String, Vec<(usize, String, String, i64)>> = HashMap::new();
    let mut rows = 0;
    for (i, bank) in banks.iter().enumerate() {
        let transfers = get_json(http, &format!("{}/transfers", bank.url)).await;
        for row in transfers.as_array().unwrap() {
            rows += 1;
            recorded
                .entry(row["gid"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    i,
                    row["branch_id"].as_str().unwrap().to_string(),
                    row["account"].as_str().unwrap().to_string(),
                    row["delta"].as_i64().unwrap(),
                ));
        }
    }
    let mut known = HashSet::new();
    for record in records {
        known.insert(record.gid.as_str());
        let mut found = recorded.get(&record.gid).cloned().unwrap_or_default();
        found.sort();
        match &record.outcome {
            Outcome::Committed => {
                let mut want = vec![
                    (
                        record.from.0,
                        "debit".to_string(),
                        record.from.1.clone(),
                        -record.amount,
                    ),
                    (
                        record.to.0,
                        "credit".to_string(),
                        record.to.1.clone(),
                        record.amount,
                    ),
                ];
                want.sort();
                assert_eq!(
                    found, want,
                    "transfer {} was reported committed: {record:?}",
                    record.gid
                );
            }
            Outcome::Aborted(_) => assert!(
                found.is_empty(),
                "transfer {} was reported aborted but is recorded: {found:?} ({record:?})",
                record.gid
            ),
        }
    }
    let unknown: Vec<&String> = recorded
        .keys()
        .filter(|gid| !known.contains(gid.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "transfers recorded that no worker submitted: {unknown:?}"
    );

    // The coordinator agrees on every transaction it still holds (it forgets the oldest
    // finished ones beyond its retention).
    let outcomes: HashMap<&str, &Outcome> = records
        .iter()
        .map(|r| (r.gid.as_str(), &r.outcome))
        .collect();
    let mut known_to_coordinator = 0;
    let mut after = 0u64;
    loop {
        let page = get_json(
            http,
            &format!("{coordinator}/v1/trellis/txn?after={after}&limit=1000"),
        )
        .await;
        for txn in page["transactions"].as_array().unwrap() {
            let gid = txn["gid"].as_str().unwrap();
            let state = txn["state"].as_str().unwrap();
            let Some(outcome) = outcomes.get(gid) else {
                panic!("the coordinator holds a transaction nobody submitted: {txn}");
            };
            let agrees = match outcome {
                Outcome::Committed => state == "committed",
                Outcome::Aborted(_) => state == "aborted",
            };
            assert!(
                agrees,
                "reported {outcome:?}, the coordinator now says {txn}"
            );
            known_to_coordinator += 1;
        }
        match page["next"].as_u64() {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }

    Report {
        total,
        rows,
        known_to_coordinator,
    }
}
