//! End-to-end: `trellis demo` runs the whole example system and its flow, and leaves nothing
//! behind.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ports the demo uses above its base (registry, gateway, gateway admin, 4 × 4 per instance).
fn demo_ports(base: u16) -> Vec<u16> {
    let mut ports = vec![base, base + 1, base + 2];
    for k in 0..4 {
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

/// A base port whose whole range is free right now.
fn free_base(seed: u16) -> u16 {
    (0..200)
        .map(|i| 20_000 + (seed.wrapping_mul(131).wrapping_add(i * 97)) % 30_000)
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

#[test]
fn demo_once_runs_the_whole_flow_and_exits_zero() {
    let base = free_base(std::process::id() as u16);
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
        "POST /orders for John → 201",
        "→ 422",
        "200/200 requests succeeded",
        "removed from the registry",
        "users-1 serves traffic through the gateway again",
        "every step passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    assert!(!stdout.contains('✗'), "{stdout}");
    assert!(!stdout.contains("\x1b["), "no colour when piped");
    wait_until_free(base);
}

#[test]
fn demo_names_a_port_that_is_taken() {
    let base = free_base(std::process::id() as u16 ^ 0x5a5a);
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
    let base = free_base(std::process::id() as u16 ^ 0x1234);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["demo", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let line = lines.next().expect("demo ended before serving").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    assert!(seen.contains("every step passed"), "{seen}");
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
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean exit: {status}");
    wait_until_free(base);
}
