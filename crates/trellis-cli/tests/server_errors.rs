//! `trellis server` refusing to start: each failure is one `error:` line that names the cause
//! and the fix, and never repeats the operating system's text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `trellis server ARGS` to its exit (it must fail to start) and answers its stderr.
fn fails_to_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("server")
        .args(args)
        .env_remove("TRELLIS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trellis server {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output { status, stderr, .. } = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(stderr).unwrap();
    assert!(!status.success(), "{args:?} started: {stderr}");
    stderr
}

/// The one `error:` line of `stderr`, after checking there is exactly one.
fn the_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line in:\n{stderr}");
    assert!(
        !stderr.contains("os error"),
        "no OS error text in:\n{stderr}"
    );
    errors[0]
}

/// `needle` is said once in all of `stderr` (not repeated by a cause chain or a log line).
fn said_once(stderr: &str, needle: &str) {
    assert_eq!(
        stderr
            .to_lowercase()
            .matches(&needle.to_lowercase())
            .count(),
        1,
        "{needle:?} exactly once in:\n{stderr}"
    );
}

#[test]
fn a_taken_port_names_the_address_and_the_fix() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = fails_to_start(&["--dev", "--http", &addr]);
    let line = the_error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: cannot listen on {addr}: address already in use"
        )),
        "{line}"
    );
    assert!(line.contains("another trellis server"), "{line}");
    assert!(line.contains("--http"), "{line}");
    said_once(&stderr, "already in use");
}

#[test]
fn a_bad_config_file_is_one_line_with_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, "dev = true\nhtp = \"127.0.0.1:8500\"\n").unwrap();
    let stderr = fails_to_start(&["--config", path.to_str().unwrap()]);
    let line = the_error_line(&stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "nothing else on stderr:\n{stderr}"
    );
    assert!(
        line.starts_with(&format!(
            "error: invalid configuration file {}: line 2, column 1: unknown field `htp`",
            path.display()
        )),
        "{line}"
    );
    said_once(&stderr, "unknown field");
}

#[test]
fn a_bad_address_in_the_config_file_points_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, "http = \"localhost\"\n").unwrap();
    let stderr = fails_to_start(&["--config", path.to_str().unwrap()]);
    let line = the_error_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: invalid configuration file {}: line 1, column 8: missing port; expected HOST:PORT",
            path.display()
        )),
        "{line}"
    );
}

#[test]
fn a_data_dir_in_use_names_the_directory_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let _first = support::Server::durable(dir.path());
    let data_dir = dir.path().to_str().unwrap();
    let stderr = fails_to_start(&["--data-dir", data_dir, "--http", "127.0.0.1:0"]);
    let line = the_error_line(&stderr);
    assert_eq!(
        line,
        format!(
            "error: data directory {data_dir} is in use by another trellis server; stop it or \
             choose another --data-dir"
        )
    );
    said_once(&stderr, "in use");
}

#[test]
fn an_invalid_http_flag_is_refused_before_anything_binds() {
    for (value, reason) in [
        ("localhost", "missing port"),
        ("localhost:http", "the port must be a number"),
        ("127.0.0.1:65536", "the port must be a number"),
        ("::1:8500", "IPv6 addresses go in brackets"),
    ] {
        let stderr = fails_to_start(&["--dev", "--http", value]);
        let line = the_error_line(&stderr);
        assert!(
            line.contains(&format!("'{value}'")) && line.contains(reason),
            "{value}: {line}"
        );
        assert!(line.contains("expected HOST:PORT"), "{value}: {line}");
        said_once(&stderr, reason);
    }
}
