//! End-to-end: `trellis demo` runs the whole example system and its flow (orders placed as
//! transactions across orders and inventory: committed, aborted, and finished after a
//! participant's crash), and leaves nothing behind; and the same, secured (`--secure`).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ports the demo uses above its base (registry, gateway, gateway admin, registry DNS, registry
/// OTLP/HTTP and OTLP/gRPC, 4 per instance for 5 instances).
fn demo_ports(base: u16) -> Vec<u16> {
    let mut ports = vec![base, base + 1, base + 2, base + 3, base + 4, base + 5];
    for k in 0..5 {
        let first = base + 10 + 10 * k;
        ports.extend(first..first + 4);
    }
    ports
}

fn all_free(base: u16) -> bool {
    demo_ports(base)
        .into_iter()
        .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// A base port whose whole range is free right now, below Linux's ephemeral ports (32768 and
/// up by default): the many connections the demos and other tests open take their local ports
/// from there and could take one of a demo's ports between its check and its bind. Each test
/// of this file names its own `slot` (0 to 3), a 64-port lane of every 256-port block, so two
/// demos started at once never pick overlapping ranges (both would pass the check, and one
/// would then fail to bind).
fn free_base(seed: u16, slot: u16) -> u16 {
    const LOW: u16 = 20_224;
    const BLOCKS: u16 = (32_768 - LOW) / 256;
    assert!(slot < 4 && demo_ports(0).into_iter().all(|p| p < 64));
    (0..200)
        .map(|i| LOW + (seed.wrapping_mul(131).wrapping_add(i * 97) % BLOCKS) * 256 + slot * 64)
        .find(|b| all_free(*b))
        .expect("a free port range")
}

fn wait_until_free(base: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if all_free(base) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("demo processes are still listening after the demo exited");
}

/// `GET path` over a fresh connection; the whole response, head and body.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "GET {path}: {answer}");
    answer
}

#[test]
fn demo_once_runs_the_whole_flow_and_exits_zero() {
    let base = free_base(std::process::id() as u16, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--once", "--base-port", &base.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "John, Jane",
        "Product A, Product B",
        "load-balanced across users-1, users-2",
        "GET /stock → Limited edition 1, Product A 100, Product B 100, Product C 100",
        // A committed transaction: the order and its stock together.
        "POST /orders for John, 2 × Product C → 201",
        "Product C stock 100 → 98 (0 reserved)",
        "→ 422",
        // An aborted one: nothing left behind in either database.
        "POST /orders for Jane, 2 × Limited edition → 409 only 1 of Limited edition left",
        "no order row left behind",
        "Limited edition stock 1, 0 reserved: no reservation left behind",
        // A participant killed between prepare and commit finishes the commit after restarting.
        "1 × Product B → 202 committing",
        "inventory-1 exited (exit status: 3) on receiving the commit",
        "inventory-1 restarted without --crash-before-commit",
        "transaction committed",
        "1 × Product B: the order is placed",
        "Product B stock 100 → 99 (0 reserved)",
        "200/200 requests succeeded",
        "removed from the registry",
        "users-1 serves traffic through the gateway again",
        // The waterfall of the first order's trace, read back from the collector.
        "The trace of the order of step 4: gateway → orders → users",
        "every step passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    let trace_id = stdout
        .split("trace id ")
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .unwrap_or_else(|| panic!("no trace id in\n{stdout}"));
    assert!(
        trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{trace_id}"
    );
    let waterfall = stdout
        .split(&format!("trace {trace_id}  "))
        .nth(1)
        .unwrap_or_else(|| panic!("no waterfall of {trace_id} in\n{stdout}"));
    let line_of = |what: &str| {
        waterfall
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the waterfall:\n{waterfall}"))
    };
    // orders' request span, its call to users and users' request span under it (indented one
    // level deeper), and a database query.
    let indent = |line: &str| line.find(|c: char| c.is_alphanumeric()).unwrap();
    let orders = line_of("POST /orders   ");
    let call = line_of("GET users /users/{id}");
    let users = line_of("GET /users/{id}  ");
    assert!(indent(call) > indent(orders), "{waterfall}");
    assert!(indent(users) > indent(call), "{waterfall}");
    assert!(line_of("SELECT users").contains("sqlite"), "{waterfall}");
    assert!(
        line_of("POST coordinator /v1/trellis/txn").contains("gid=order-"),
        "{waterfall}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");
    assert!(!stdout.contains("\x1b["), "no colour when piped");
    wait_until_free(base);
}

/// Runs `trellis ARGS` to its end, or stops it (SIGINT: the demo then stops its children)
/// after `limit`, failing with what it printed: a demo that hangs fails the test in bounded
/// time instead of holding the whole run.
fn run_bounded(args: &[&str], limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            let grace = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "trellis {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `--secure`: the same flow under ACL default deny with a least-privilege token per
/// component, mutual TLS between every sidecar and the gateway, and intentions allowing only
/// the calls the services make; then what nothing allows is refused.
#[test]
fn demo_once_secure_runs_the_whole_flow_under_deny_mtls_and_intentions() {
    let base = free_base(std::process::id() as u16 ^ 0x0f0f, 1);
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run_bounded(
        &[
            "demo",
            "--once",
            "--secure",
            "--base-port",
            &base.to_string(),
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "secure demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("secure demo took {:.1} s", started.elapsed().as_secs_f64());
    for expected in [
        // What was set up.
        "the registry denies what no token allows (--acl-default-policy deny)",
        r#"policy users-sidecar: service "users" write, key "trellis/config/users" read"#,
        r#"policy orders-sidecar: service "orders" write, service "users" read, key "trellis/config/orders" read, key "trellis/config/users" read"#,
        r#"policy inventory-sidecar: service "inventory" write, key "trellis/config/inventory" read"#,
        r#"policy gateway: service "gateway" write, service "users" read, service "orders" read, service "inventory" read"#,
        "policy orders-app: operator write",
        "intentions allow gateway → users, gateway → orders, gateway → inventory, orders → users, \
         trellis-coordinator → orders, trellis-coordinator → inventory; every other call is denied",
        // The whole flow still works through mutual TLS and the tokens.
        "load-balanced across users-1, users-2",
        "POST /orders for John, 2 × Product C → 201",
        "Product C stock 100 → 98 (0 reserved)",
        "POST /orders for Jane, 2 × Limited edition → 409 only 1 of Limited edition left",
        "1 × Product B → 202 committing",
        "transaction committed",
        "Product B stock 100 → 99 (0 reserved)",
        "200/200 requests succeeded",
        "users-1 serves traffic through the gateway again",
        // What nothing allows is refused.
        "calling orders-1's sidecar → 403 intention denied: no intention allows users → orders",
        "plain HTTP to orders-1's sidecar (no mesh certificate) → 403",
        "registering an orders instance without a token → 403 Permission denied",
        r#"registering an orders instance with the users sidecars' token → 403 Permission denied: token lacks permission 'service:write' on "orders""#,
        "The trace of the order of step 5: gateway → orders → users",
        "every step passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    assert!(!stdout.contains('✗'), "{stdout}");
    // Least privilege, yet enough: no component had a registry request refused along the way
    // (a refused policy or watch read would not fail the flow, only its log).
    for entry in std::fs::read_dir(data.path().join("logs")).unwrap() {
        let path = entry.unwrap().path();
        let log = std::fs::read_to_string(&path).unwrap();
        for refusal in ["Permission denied", "ACL not found", "refused"] {
            let line = log
                .lines()
                .find(|l| l.contains(refusal) && !l.contains("Connection refused"));
            assert!(line.is_none(), "{}: {line:?}", path.display());
        }
    }
    // The file holding the management token's secret is readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let config = data.path().join("registry.toml");
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", config.display());
    }
    wait_until_free(base);
}

#[test]
fn demo_names_a_port_that_is_taken() {
    let base = free_base(std::process::id() as u16 ^ 0x5a5a, 2);
    let _taken = TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--once", "--base-port", &base.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {}", base + 1)) && stderr.contains("gateway"),
        "{stderr}"
    );
}

#[test]
fn demo_keeps_serving_until_interrupted_and_leaves_no_process() {
    let base = free_base(std::process::id() as u16 ^ 0x1234, 3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let Some(line) = lines.next() else {
            panic!("demo ended before serving:\n{seen}");
        };
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    assert!(seen.contains("every step passed"), "{seen}");
    // The dashboard it points at shows the demo's services.
    let dashboard = seen
        .split("dashboard: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dashboard URL in\n{seen}"))
        .to_owned();
    let registry = dashboard
        .trim_start_matches("http://")
        .trim_end_matches("/ui/")
        .to_owned();
    let page = get(&registry, "/ui/");
    assert!(page.contains("<html"), "{page}");
    let services = get(&registry, "/v1/internal/ui/services");
    for name in ["users", "orders", "inventory"] {
        assert!(
            services.contains(&format!("\"Name\":\"{name}\"")),
            "{services}"
        );
    }
    // Still serving through the gateway.
    let gateway = format!("127.0.0.1:{}", base + 1);
    let mut stream = std::net::TcpStream::connect(&gateway).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /users HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("John"),
        "{answer}"
    );
    // What the transactions left, asked of the running system: the stock through the gateway,
    // the outcomes from the coordinator.
    let stock = get(&gateway, "/stock");
    for product in [
        r#"{"product":"Limited edition","stock":1,"reserved":0}"#,
        r#"{"product":"Product B","stock":99,"reserved":0}"#,
        r#"{"product":"Product C","stock":98,"reserved":0}"#,
    ] {
        assert!(stock.contains(product), "{product} in {stock}");
    }
    let registry = format!("127.0.0.1:{base}");
    for (state, count) in [("committed", 2), ("aborted", 1), ("committing", 0)] {
        let txns = get(&registry, &format!("/v1/trellis/txn?state={state}"));
        assert_eq!(
            txns.matches(r#""gid":"order-"#).count(),
            count,
            "{state}: {txns}"
        );
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean exit: {status}");
    wait_until_free(base);
}
