//! Open-loop load generator and failure drills for `bench/proxy.sh`.
//!
//! ```text
//! loadgen rate URL [--host H] [--rate 5000] [--duration 10] [--connections 50]
//!     Sends at a fixed request rate (each connection sends every connections/rate seconds,
//!     like wrk2) and prints latency percentiles. A request that could not be sent on time
//!     because its connection was still busy is timed from when it should have been sent, so
//!     a stall shows up in the percentiles instead of silently lowering the rate.
//! loadgen dereg URL --registry R [--host H] [--service S] [--rate 2000] [--rounds 5]
//!     Starts three upstreams in this process that note when each request arrives, registers
//!     them as service S, sends load through the proxy, deregisters one instance through the
//!     registry API and reports the time from the deregistration request to the last request
//!     that instance received (negative: none arrived after it).
//! loadgen kill URL --registry R [--host H] [--service S] [--rate 2000] [--duration 8]
//!     Starts three upstream processes, registers them (no health checks: the proxy has to
//!     notice by itself), sends load, SIGKILLs one after a third of the run and prints the
//!     share of requests that succeeded.
//! loadgen serve PORT
//!     An upstream answering `ok` (used by `kill`).
//! ```
//! One line of `key=value` results on stdout.

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Load {
    /// Proxy URL to send to
    url: String,
    /// Host header (the sidecar's outbound listener routes by it)
    #[arg(long)]
    host: Option<String>,
    /// Requests per second, in total
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 50)]
    connections: u64,
}

#[derive(Subcommand)]
enum Command {
    Rate(Load),
    Dereg {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = "bench-dereg")]
        service: String,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    Kill {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = "bench-kill")]
        service: String,
    },
    Serve {
        port: u16,
    },
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

type Client = http1::SendRequest<Empty<Bytes>>;

async fn connect(authority: &str) -> Option<Client> {
    let stream = TcpStream::connect(authority).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// Runs `load` until `stop` and returns what happened. Connection `k` sends its `j`-th
/// request at `start + (k + j·connections) / rate`.
async fn run_load(load: &Load, stop: Instant) -> Tally {
    let uri: Uri = load.url.parse().expect("URL");
    let authority = uri.authority().expect("URL with host:port").to_string();
    let host = load.host.clone().unwrap_or_else(|| authority.clone());
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let interval = Duration::from_secs_f64(load.connections as f64 / load.rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for k in 0..load.connections {
        let (authority, host, path) = (authority.clone(), host.clone(), path.clone());
        let first = start + Duration::from_secs_f64(k as f64 / load.rate as f64);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut client: Option<Client> = None;
            let mut due = first;
            while due < stop {
                let now = Instant::now();
                // Timed from the moment it was due only when this connection made it late.
                let from = if now < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                due += interval;
                if client.is_none() {
                    client = connect(&authority).await;
                }
                let Some(sender) = client.as_mut() else {
                    tally.errors += 1;
                    continue;
                };
                let request = Request::get(path.as_str())
                    .header("host", host.as_str())
                    .body(Empty::new())
                    .expect("request");
                let sent = match sender.ready().await {
                    Ok(()) => sender.send_request(request).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(response) => {
                        let status = response.status();
                        if response.into_body().collect().await.is_err() {
                            tally.errors += 1;
                            client = None;
                            continue;
                        }
                        tally.latencies_us.push(from.elapsed().as_micros() as u64);
                        if status.is_success() {
                            tally.ok += 1;
                        } else {
                            tally.non_2xx += 1;
                        }
                    }
                    Err(_) => {
                        tally.errors += 1;
                        client = None;
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("load task");
        all.latencies_us.extend(t.latencies_us);
        all.ok += t.ok;
        all.non_2xx += t.non_2xx;
        all.errors += t.errors;
    }
    all
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

async fn rate(load: Load) {
    let duration = Duration::from_secs_f64(load.duration);
    // Warm-up: connections and pools, not measured.
    let warm = Load {
        duration: 1.0,
        ..load.clone()
    };
    run_load(&warm, Instant::now() + Duration::from_secs(1)).await;
    let began = Instant::now();
    let mut tally = run_load(&load, began + duration).await;
    let took = began.elapsed().as_secs_f64();
    tally.latencies_us.sort_unstable();
    let l = &tally.latencies_us;
    println!(
        "requests={} ok={} non2xx={} errors={} achieved_rps={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        tally.ok + tally.non_2xx + tally.errors,
        tally.ok,
        tally.non_2xx,
        tally.errors,
        (tally.ok + tally.non_2xx) as f64 / took,
        percentile(l, 0.50),
        percentile(l, 0.90),
        percentile(l, 0.99),
        percentile(l, 0.999),
        l.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
    );
}

async fn registry_call(registry: &str, path: &str, body: String) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(format!("{}{path}", registry.trim_end_matches('/')))
        .body(body)
        .send()
        .await
        .expect("registry reachable")
        .status()
}

async fn register(registry: &str, service: &str, id: &str, port: u16) {
    let body = format!(r#"{{"Name":"{service}","ID":"{id}","Address":"127.0.0.1","Port":{port}}}"#);
    let status = registry_call(registry, "/v1/agent/service/register", body).await;
    assert!(status.is_success(), "registering {id}: {status}");
}

/// Deregisters `id`; false if the registry did not know it.
async fn deregister(registry: &str, id: &str) -> bool {
    registry_call(
        registry,
        &format!("/v1/agent/service/deregister/{id}"),
        String::new(),
    )
    .await
    .is_success()
}

/// An upstream answering `ok`, calling `on_request` for each request.
async fn upstream(listener: TcpListener, on_request: Arc<dyn Fn() + Send + Sync>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let on_request = on_request.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                on_request();
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn dereg(load: Load, registry: String, service: String, rounds: u32) {
    let epoch = Instant::now();
    let mut last_seen = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        ports.push(listener.local_addr().expect("addr").port());
        let last = Arc::new(AtomicU64::new(0));
        last_seen.push(last.clone());
        tokio::spawn(upstream(
            listener,
            Arc::new(move || {
                last.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
            }),
        ));
    }
    let ids: Vec<String> = (1..=3).map(|i| format!("{service}-{i}")).collect();
    let mut gaps_ms = Vec::new();
    for round in 0..rounds {
        let victim = (round % 3) as usize;
        for (id, port) in ids.iter().zip(&ports) {
            register(&registry, &service, id, *port).await;
        }
        let until = Instant::now() + Duration::from_secs(3);
        let driver = {
            let load = load.clone();
            tokio::spawn(async move { run_load(&load, until).await })
        };
        // Let the victim carry traffic for a while, then take it away.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let before = last_seen[victim].load(Ordering::Relaxed);
        assert!(
            epoch.elapsed().as_micros() as u64 - before < 200_000,
            "instance {} received no traffic before deregistration",
            ids[victim]
        );
        let at = epoch.elapsed().as_micros() as u64;
        assert!(deregister(&registry, &ids[victim]).await, "deregistering");
        let tally = driver.await.expect("load");
        let last = last_seen[victim].load(Ordering::Relaxed);
        // Negative: nothing arrived after the deregistration was sent.
        let gap = (last as f64 - at as f64) / 1000.0;
        eprintln!(
            "round {round}: {} deregistered, last request {gap:.1} ms later ({} ok, {} failed)",
            ids[victim],
            tally.ok,
            tally.non_2xx + tally.errors
        );
        gaps_ms.push(gap.max(0.0));
    }
    for id in &ids {
        deregister(&registry, id).await;
    }
    gaps_ms.sort_by(f64::total_cmp);
    println!(
        "rounds={} median_ms={:.1} max_ms={:.1} all_ms={}",
        gaps_ms.len(),
        gaps_ms[gaps_ms.len() / 2],
        gaps_ms[gaps_ms.len() - 1],
        gaps_ms
            .iter()
            .map(|g| format!("{g:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    );
}

async fn kill(load: Load, registry: String, service: String) {
    let exe = std::env::current_exe().expect("own path");
    let mut children = Vec::new();
    for i in 1..=3 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let child = tokio::process::Command::new(&exe)
            .args(["serve", &port.to_string()])
            .kill_on_drop(true)
            .spawn()
            .expect("start upstream");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let id = format!("{service}-{i}");
        register(&registry, &service, &id, port).await;
        children.push((id, child));
    }
    // Let the proxy learn all three before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let duration = Duration::from_secs_f64(load.duration);
    let until = Instant::now() + duration;
    let driver = {
        let load = load.clone();
        tokio::spawn(async move { run_load(&load, until).await })
    };
    tokio::time::sleep(duration / 3).await;
    let (victim, child) = &mut children[0];
    child.start_kill().expect("SIGKILL"); // SIGKILL on Unix
    let _ = child.wait().await;
    eprintln!("killed {victim}");
    let mut tally = driver.await.expect("load");
    for (id, _) in &children {
        deregister(&registry, id).await;
    }
    let total = tally.ok + tally.non_2xx + tally.errors;
    tally.latencies_us.sort_unstable();
    println!(
        "requests={total} ok={} non2xx={} errors={} success_pct={:.3} p99_ms={:.3} max_ms={:.3}",
        tally.ok,
        tally.non_2xx,
        tally.errors,
        100.0 * tally.ok as f64 / total.max(1) as f64,
        percentile(&tally.latencies_us, 0.99),
        tally
            .latencies_us
            .last()
            .map_or(f64::NAN, |&m| m as f64 / 1000.0),
    );
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        match args.command {
            Command::Rate(load) => rate(load).await,
            Command::Dereg {
                load,
                registry,
                service,
                rounds,
            } => dereg(load, registry, service, rounds).await,
            Command::Kill {
                load,
                registry,
                service,
            } => kill(load, registry, service).await,
            Command::Serve { port } => {
                let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
                upstream(listener, Arc::new(|| {})).await;
            }
        }
    });
}
