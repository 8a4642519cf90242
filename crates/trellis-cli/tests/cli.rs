//! The `trellis` binary as a user meets it: one-line errors that say what to do, client flags
//! and their help, `--version`, shell completions, man pages, `trellis health`, and the log
//! output every command shares.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env_remove("TRELLIS_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("TRELLIS_LOG")
        .env_remove("TRELLIS_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .expect("run trellis")
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The failure's stderr, which must be exactly one `error:` line.
fn one_error_line(output: &Output) -> String {
    assert!(!output.status.success(), "the command should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[test]
fn a_client_command_without_a_registry_says_how_to_get_one() {
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let line = one_error_line(&trellis(&["services", "--addr", &addr]));
    assert!(
        line.starts_with(&format!("error: no registry at http://{addr} ")),
        "{line}"
    );
    assert!(line.contains("`trellis server`") && line.contains("TRELLIS_HTTP_ADDR"));
    assert!(
        !line.contains("os error"),
        "no nested transport errors: {line}"
    );

    // The address also comes from the environment, and --addr may follow the subcommand.
    let output = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["kv", "get", "app/x"])
        .env("TRELLIS_HTTP_ADDR", &addr)
        .output()
        .expect("run trellis");
    assert!(one_error_line(&output).contains(&format!("no registry at http://{addr}")));
    let line = one_error_line(&trellis(&["kv", "get", "app/x", "--addr", &addr]));
    assert!(
        line.contains(&format!("no registry at http://{addr}")),
        "{line}"
    );
}

#[test]
fn an_invalid_registry_address_is_named() {
    let line = one_error_line(&trellis(&["services", "--addr", "ftp://somewhere"]));
    assert!(
        line.contains("invalid registry address \"ftp://somewhere\""),
        "{line}"
    );
}

#[test]
fn client_help_names_the_address_settings_and_describes_every_argument() {
    for command in [
        &["services"][..],
        &["instances"],
        &["watch"],
        &["kv", "get"],
        &["kv", "put"],
        &["kv", "delete"],
        &["register"],
        &["deregister"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let output = trellis(&args);
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        for needle in ["--addr", "TRELLIS_HTTP_ADDR", "CONSUL_HTTP_ADDR"] {
            assert!(
                help.contains(needle),
                "{args:?} --help lacks {needle}:\n{help}"
            );
        }
        // Every entry under Arguments/Options has a description after its name.
        let mut in_list = false;
        for line in help.lines() {
            if line == "Arguments:" || line == "Options:" {
                in_list = true;
                continue;
            }
            if line.is_empty() {
                in_list = false;
                continue;
            }
            if in_list && line.starts_with("  ") && !line.starts_with("   ") {
                let entry = line.trim();
                let described = entry.contains("  ");
                assert!(described, "{args:?}: {entry:?} has no description:\n{help}");
            }
        }
    }
}

#[test]
fn version_names_the_commit() {
    let output = trellis(&["--version"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("trellis "), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match head {
        // Built from a checkout: a real commit (the one built, which is HEAD or an ancestor).
        Some(_) => {
            let commit = text
                .split("(commit ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_default();
            assert_eq!(commit.len(), 12, "{text}");
            assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        }
        None => assert!(text.contains("(commit "), "{text}"),
    }
}

#[test]
fn completions_cover_every_command_in_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _trellis"),
        ("zsh", "#compdef trellis"),
        ("fish", "complete -c trellis"),
    ] {
        let output = trellis(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell} lacks {marker:?}");
        // Fish names a long flag `-l addr`.
        for command in ["server", "sidecar", "gateway", "kv", "health", "addr"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let unknown = trellis(&["completions", "tcsh"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
}

#[test]
fn bash_completes_subcommands_and_flags() {
    // Completion driven the way bash does it: COMP_WORDS/COMP_CWORD, then the function.
    let script = String::from_utf8(trellis(&["completions", "bash"]).stdout).expect("utf-8");
    let complete = |words: &str| {
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _trellis trellis \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = Command::new("bash")
            .args(["-c", &program])
            .output()
            .expect("run bash");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let commands = complete("trellis se");
    assert!(commands.lines().any(|l| l == "server"), "{commands}");
    assert!(commands.lines().any(|l| l == "services"), "{commands}");
    let flags = complete("trellis sidecar --mt");
    assert!(flags.lines().any(|l| l == "--mtls"), "{flags}");
}

#[test]
fn man_pages_document_every_visible_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = trellis(&["manpages", dir.path().to_str().expect("utf-8")]);
    assert!(output.status.success(), "{output:?}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "trellis.1",
        "trellis-server.1",
        "trellis-sidecar.1",
        "trellis-kv-put.1",
        "trellis-txn-abort.1",
        "trellis-health.1",
    ] {
        assert!(
            pages.iter().any(|p| p == page),
            "{page} missing from {pages:?}"
        );
    }
    // Not the hidden bank participant, nor clap's help subcommands.
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("bank") || p.contains("help")),
        "{pages:?}"
    );
    // Each file written is listed on stdout.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        pages.len()
    );
    let server = std::fs::read_to_string(dir.path().join("trellis-server.1")).expect("page");
    assert!(
        server.starts_with(".ie"),
        "not roff: {}",
        &server[..40.min(server.len())]
    );
    assert!(server.contains(".TH trellis-server 1"), "{server}");
    assert!(
        server.contains("acl\\-default\\-policy"),
        "a flag is missing"
    );
    assert!(
        server.contains("trellis-server 0.1.0 (commit "),
        "no version in the footer"
    );
}

#[test]
fn health_exits_zero_only_on_a_success_answer() {
    let server = support::Server::dev();
    let ok = trellis(&["health", &server.url("/v1/status/leader")]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("200 OK"));
    // The URL may come from the environment, as the image's HEALTHCHECK takes it.
    let from_env = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("health")
        .env("TRELLIS_HEALTH_URL", server.url("/v1/status/leader"))
        .output()
        .expect("run trellis");
    assert!(from_env.status.success(), "{from_env:?}");

    let missing = one_error_line(&trellis(&["health", &server.url("/v1/no-such-thing")]));
    assert!(missing.contains("404"), "{missing}");
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    let refused = one_error_line(&trellis(&["health", &closed]));
    assert!(refused.contains("cannot connect"), "{refused}");
    let bad = one_error_line(&trellis(&["health", "ftp://example"]));
    assert!(bad.contains("not an http:// or https:// URL"), "{bad}");

    // An address that accepts and never answers: the timeout bounds the wait.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let slow = one_error_line(&trellis(&["health", "--timeout=300ms", &url]));
    assert!(slow.contains("no answer within"), "{slow}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_demo_rejects_a_base_port_without_room_above_it() {
    let line = one_error_line(&trellis(&["demo", "--once", "--base-port", "65530"]));
    assert!(line.contains("--base-port 65530"), "{line}");
    assert!(line.contains("up to 65482"), "{line}");
    assert!(!line.contains("integral"), "{line}");
}

/// Starts a dev server with the given log settings and returns the first `n` stderr lines.
fn server_log_lines(env: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["server", "--dev", "--http", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trellis server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while lines.len() < n && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logs_are_plain_text_on_a_pipe_and_json_on_request() {
    let text = server_log_lines(&[("TRELLIS_LOG", "info")], 1);
    assert_eq!(text.len(), 1, "the server logs at info");
    assert!(
        !text[0].contains('\u{1b}'),
        "no colour codes on a pipe: {text:?}"
    );
    assert!(text[0].contains("INFO"), "{text:?}");

    let json = server_log_lines(
        &[("TRELLIS_LOG", "info"), ("TRELLIS_LOG_FORMAT", "json")],
        1,
    );
    assert_eq!(json.len(), 1);
    let event: serde_json::Value =
        serde_json::from_str(&json[0]).unwrap_or_else(|e| panic!("{e}: {:?}", json[0]));
    assert_eq!(event["level"], "INFO", "{event}");
    assert!(event["message"].is_string(), "{event}");
    assert!(event["timestamp"].is_string(), "{event}");
}
