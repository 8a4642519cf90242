//! Script checks (`Args`) against the real binary: refused as Consul refuses them unless the
//! server runs with `--enable-script-checks`; when enabled, run without a shell, mapped by exit
//! code, killed on timeout, and kept across a restart.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{Server, eventually, http};

const DISABLED: &str = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";

async fn put(c: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    c.put(url).json(&body).send().await.unwrap()
}

async fn agent_check(c: &reqwest::Client, s: &Server, id: &str) -> Option<Value> {
    let checks: Value = c
        .get(s.url("/v1/agent/checks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    checks.get(id).cloned()
}

/// Waits until check `id` has `status` and some output (from a run, not its registration),
/// and returns it. The first run comes at a random point of the check's interval (up to 10 s
/// in these tests), so the bound is well beyond that.
async fn wait_for(c: &reqwest::Client, s: &Server, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let check = agent_check(c, s, id).await;
        if let Some(check) = &check
            && check["Status"] == status
            && check["Output"] != ""
        {
            return check.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never {status}: {check:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn sh(script: &str) -> Value {
    json!(["/bin/sh", "-c", script])
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn disabled_by_default_as_consul() {
    let s = Server::dev();
    let c = http();
    let r = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "script", "Args": ["/bin/true"], "Interval": "1s"}),
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap().trim_end(), DISABLED);
    let r = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "web", "Check": {"ScriptArgs": ["/bin/true"], "Interval": "1s"}}),
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap().trim_end(), DISABLED);
    let services: Value = c
        .get(s.url("/v1/agent/services"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(services, json!({}), "nothing was registered");
    assert_eq!(agent_check(&c, &s, "script").await, None);
}

#[tokio::test]
async fn exit_codes_map_to_status_with_output() {
    let s = Server::start(&["--dev", "--enable-script-checks"]);
    let c = http();
    for (code, status) in [(0, "passing"), (1, "warning"), (2, "critical")] {
        let r = put(
            &c,
            s.url("/v1/agent/check/register"),
            json!({"Name": format!("exit{code}"),
                   "Args": sh(&format!("echo out{code}; echo err{code} >&2; exit {code}")),
                   "Interval": "200ms", "Timeout": "5s"}),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let check = wait_for(&c, &s, &format!("exit{code}"), status).await;
        assert_eq!(check["Type"], "script");
        assert_eq!(check["Output"], format!("out{code}\nerr{code}\n"));
    }
    // A service's script check, with the alias `ScriptArgs`.
    let r = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "web", "ID": "web-1",
               "Check": {"ScriptArgs": ["/bin/echo", "ok"], "Interval": "200ms"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_for(&c, &s, "service:web-1", "passing").await;
    // A program that does not exist is critical, as a failed start in Consul.
    let r = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "missing", "Args": ["/nonexistent/check"], "Interval": "200ms"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_for(&c, &s, "missing", "critical").await;
    // Output beyond 4 KiB keeps its end, as Consul's.
    let r = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "long", "Args": sh("head -c 5000 /dev/zero | tr '\\0' a; echo END"),
               "Interval": "200ms", "Timeout": "5s"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let check = wait_for(&c, &s, "long", "passing").await;
    let output = check["Output"].as_str().unwrap();
    assert!(
        output.starts_with("Captured 4096 of 5004 bytes\n...\n"),
        "{output}"
    );
    assert!(output.ends_with("aaaEND\n"), "{output}");
}

#[tokio::test]
async fn a_script_past_its_timeout_is_critical_and_killed() {
    let s = Server::start(&["--dev", "--enable-script-checks"]);
    let c = http();
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.pid");
    let child = dir.path().join("child.pid");
    // The script and a process it starts both outlive the timeout unless killed.
    let script = format!(
        "sleep 60 & echo $! > {child}; echo $$ > {own}; echo started; wait",
        child = child.display(),
        own = own.display()
    );
    let r = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "slow", "Args": sh(&script), "Interval": "10s", "Timeout": "300ms",
               "Status": "passing"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let check = wait_for(&c, &s, "slow", "critical").await;
    let output = check["Output"].as_str().unwrap();
    assert!(
        output.starts_with("Timed out (300ms) running check"),
        "{output}"
    );
    assert!(output.ends_with("\n\nstarted\n"), "{output}");
    let own = read_pid(&own).expect("the script ran");
    let child = read_pid(&child).expect("the script started a child");
    eventually(
        Duration::from_secs(5),
        "the script and its child killed",
        || async move { gone(own) && gone(child) },
    )
    .await;
}

#[tokio::test]
async fn script_checks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let definition = json!({"Name": "durable", "Args": sh("echo alive"), "Interval": "200ms",
                            "Timeout": "2s"});
    let c = http();
    let before = {
        let s = Server::start(&["--data-dir", &data, "--enable-script-checks"]);
        let r = put(&c, s.url("/v1/agent/check/register"), definition.clone()).await;
        assert_eq!(r.status(), 200);
        let check = wait_for(&c, &s, "durable", "passing").await;
        assert!(s.terminate().success());
        check
    };
    let s = Server::start(&["--data-dir", &data, "--enable-script-checks"]);
    let after = wait_for(&c, &s, "durable", "passing").await;
    for field in ["Type", "Interval", "Timeout", "Name", "Output"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["Type"], "script");
    drop(s);
    // Restarted without the flag, the stored check stays but runs nothing.
    let s = Server::start(&["--data-dir", &data]);
    let check = wait_for(&c, &s, "durable", "critical").await;
    assert_eq!(check["Output"], DISABLED);
}
