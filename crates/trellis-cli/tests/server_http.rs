//! `trellis server`'s listener and request log: `--http` takes a host name, and with
//! `TRELLIS_LOG=debug` every request is logged with method, path, status and duration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A server started with `args` and `TRELLIS_LOG=log`, its base URL and its stderr lines.
struct Started {
    child: Child,
    url: String,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], log: &str) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("server")
        .args(args)
        .env("TRELLIS_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis server");
    let (tx, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(strip_ansi(&line)).is_err() {
                return;
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server exited before printing its address")
            .unwrap();
        if let Some(pos) = line.find("http://") {
            break line[pos..].trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Started { child, url, stderr }
}

/// Log lines may be coloured when the logger thinks it writes to a terminal.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn http_accepts_a_host_name() {
    let server = start(&["--dev", "--http", "localhost:0"], "warn");
    let url = reqwest::Url::parse(&server.url).unwrap();
    assert_ne!(url.port(), Some(0), "the bound port is printed: {url}");
    let ip: std::net::IpAddr = url
        .host_str()
        .unwrap()
        .trim_matches(['[', ']'])
        .parse()
        .unwrap();
    assert!(
        ip.is_loopback(),
        "localhost binds a loopback address: {url}"
    );
    let leader = client()
        .get(format!("{}/v1/status/leader", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(leader.status(), 200);
}

#[tokio::test]
async fn debug_logging_logs_every_request() {
    let server = start(&["--dev", "--http", "127.0.0.1:0"], "debug");
    let r = client()
        .get(format!("{}/v1/kv/missing?recurse", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = server.stderr.recv_timeout(wait) else {
            panic!("no request log line; stderr was:\n{}", seen.join("\n"));
        };
        if line.contains("DEBUG")
            && line.contains("method=GET")
            && line.contains("path=/v1/kv/missing?recurse")
            && line.contains("status=404")
        {
            let ms = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("ms="))
                .expect("duration field");
            assert!(ms.parse::<f64>().unwrap() >= 0.0, "{line}");
            return;
        }
        seen.push(line);
    }
}
