//! `trellis server`'s listener and request log: `--http` takes a host name, and with
//! `TRELLIS_LOG=debug` every request is logged with method, path, status and duration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::{Proc, eventually, http};

#[tokio::test]
async fn http_accepts_a_host_name() {
    let server = Proc::start(&["server", "--dev", "--http", "localhost:0"], 1, None);
    let url = reqwest::Url::parse(&format!("http://{}", server.addr("API"))).unwrap();
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
    let leader = http()
        .get(format!("{url}v1/status/leader"))
        .send()
        .await
        .unwrap();
    assert_eq!(leader.status(), 200);
}

#[tokio::test]
async fn debug_logging_logs_every_request() {
    let server = Proc::start(
        &["server", "--dev", "--http", "127.0.0.1:0"],
        1,
        Some("debug"),
    );
    let r = http()
        .get(format!(
            "http://{}/v1/kv/missing?recurse",
            server.addr("API")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let is_the_request = |line: &str| {
        line.contains("DEBUG")
            && line.contains("method=GET")
            && line.contains("path=/v1/kv/missing?recurse")
            && line.contains("status=404")
    };
    let logged = || {
        let log = server.log();
        async move { log.lines().any(is_the_request) }
    };
    eventually(Duration::from_secs(10), "the request's log line", logged).await;
    let log = server.log();
    let line = log.lines().find(|l| is_the_request(l)).unwrap();
    let ms = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("ms="))
        .unwrap_or_else(|| panic!("no duration field in {line}"));
    assert!(ms.parse::<f64>().unwrap() >= 0.0, "{line}");
}
