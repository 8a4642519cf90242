//! The two-phase-commit coordinator of the real binary, `/v1/trellis/txn`, against scripted
//! participants served by the test: the one-shot submit and the step-by-step API, votes, the
//! prepare timeout, phase-2 retries, services resolved through the registry, bad input, the
//! list, metrics, and recovery after `kill -9` with the decision log on disk.

#![allow(clippy::unwrap_used)]

mod support;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Server, eventually, http};

/// Per (branch, phase), the statuses to give in turn (the last one repeats).
type Script = HashMap<(String, String), Vec<u16>>;

/// A call's `traceparent` and `tracestate`, when it had them.
type TraceHeaders = (Option<String>, Option<String>);

/// How a scripted participant answers: by its [`Script`]; 200 when nothing is scripted.
#[derive(Clone, Default)]
struct Participant {
    script: Arc<Mutex<Script>>,
    /// Every call: (phase, body).
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    /// Every call's `traceparent` and `tracestate` headers.
    trace_headers: Arc<Mutex<Vec<TraceHeaders>>>,
}

impl Participant {
    /// Serves on a loopback port; answers the participant's base URL.
    async fn serve(&self) -> String {
        let app = Router::new()
            .route("/txn/{phase}", post(answer))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/txn")
    }

    fn script(&self, branch: &str, phase: &str, statuses: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .insert((branch.into(), phase.into()), statuses.to_vec());
    }

    /// The phases called for `branch`, in order.
    fn phases(&self, branch: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["branch_id"] == branch)
            .map(|(phase, _)| phase.clone())
            .collect()
    }
}

async fn answer(
    State(p): State<Participant>,
    Path(phase): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::Json<Value>,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    p.trace_headers
        .lock()
        .unwrap()
        .push((header("traceparent"), header("tracestate")));
    let branch = body["branch_id"].as_str().unwrap_or_default().to_string();
    p.calls.lock().unwrap().push((phase.clone(), body.0));
    let status = {
        let mut script = p.script.lock().unwrap();
        match script.get_mut(&(branch, phase)) {
            Some(statuses) if statuses.len() > 1 => statuses.remove(0),
            Some(statuses) => statuses[0],
            None => 200,
        }
    };
    let body = if status == 409 {
        json!({"reason": "insufficient funds"}).to_string()
    } else {
        String::new()
    };
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let r = http().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn branch(id: &str, url: &str, payload: Value) -> Value {
    json!({"branch_id": id, "url": url, "payload": payload})
}

#[tokio::test]
async fn a_one_shot_submit_commits_when_every_branch_votes_yes() {
    let s = Server::dev();
    let (a, b) = (Participant::default(), Participant::default());
    let (url_a, url_b) = (a.serve().await, b.serve().await);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({
            "gid": "order-1",
            "branches": [
                branch("debit", &url_a, json!({"account": "alice", "amount": 5})),
                branch("credit", &url_b, json!({"account": "bob", "amount": 5})),
            ],
            "commit": true
        }),
    )
    .await;
    assert_eq!(status, 200, "{txn}");
    assert_eq!(txn["state"], "committed", "{txn}");
    assert_eq!(txn["gid"], "order-1");
    assert_eq!(a.phases("debit"), ["prepare", "commit"]);
    assert_eq!(b.phases("credit"), ["prepare", "commit"]);
    let call = a.calls.lock().unwrap()[0].1.clone();
    assert_eq!(
        call,
        json!({"gid": "order-1", "branch_id": "debit", "payload": {"account": "alice", "amount": 5}})
    );
    for field in [
        "created_at",
        "prepare_started_at",
        "decided_at",
        "finished_at",
    ] {
        assert!(txn[field].as_u64().is_some(), "{field}: {txn}");
    }
    assert_eq!(txn["branches"][0]["state"], "committed");

    // Submitting the same transaction again (a client retry) changes nothing.
    let (status, again) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"gid": "order-1", "branches": [
            branch("debit", &url_a, json!({"account": "alice", "amount": 5})),
            branch("credit", &url_b, json!({"account": "bob", "amount": 5})),
        ], "commit": true}),
    )
    .await;
    assert_eq!((status, &again["state"]), (200, &json!("committed")));
    assert_eq!(a.phases("debit").len(), 2, "no second round");
}

#[tokio::test]
async fn phase_messages_carry_the_trace_context_of_the_request() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http()
        .post(s.url("/v1/trellis/txn"))
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=x")
        .json(&json!({"gid": "traced", "branches": [branch("only", &url, json!({}))], "commit": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The transaction names its trace (the dashboard links to it).
    let txn: serde_json::Value = r.json().await.unwrap();
    assert_eq!(txn["trace_id"], json!("4bf92f3577b34da6a3ce929d0e0e4736"));
    let seen = p.trace_headers.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "prepare and commit: {seen:?}");
    for (parent, state) in seen {
        assert_eq!(parent.as_deref(), Some(traceparent));
        assert_eq!(state.as_deref(), Some("vendor=x"));
    }

    // Without a trace context, none is made up.
    let (status, _) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"gid": "untraced", "branches": [branch("only", &url, json!({}))], "commit": true}),
    )
    .await;
    assert_eq!(status, 200);
    let seen = p.trace_headers.lock().unwrap().clone();
    assert_eq!(seen[2..], [(None, None), (None, None)]);
    let (_, untraced) = get_json(&s.url("/v1/trellis/txn/untraced")).await;
    assert_eq!(untraced["trace_id"], json!(null));
}

#[tokio::test]
async fn a_no_vote_aborts_with_its_branch_and_reason() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    p.script("credit", "prepare", &[409]);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"branches": [branch("debit", &url, json!(1)), branch("credit", &url, json!(2))],
               "commit": true}),
    )
    .await;
    assert_eq!(status, 409, "{txn}");
    assert_eq!(txn["state"], "aborted");
    assert_eq!(
        txn["cause"],
        json!({"branch": "credit", "reason": "insufficient funds"})
    );
    assert!(txn["gid"].as_str().unwrap().len() >= 32, "a generated gid");
    // Debit's prepare may still be on its way when credit's no arrives: its abort can then
    // reach the participant first (the anomaly the participant's barrier is there for).
    let mut debit = p.phases("debit");
    debit.sort();
    assert_eq!(debit, ["abort", "prepare"]);
    assert_eq!(p.phases("credit"), ["prepare", "abort"]);
}

#[tokio::test]
async fn step_by_step_with_blocking_reads() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    let begin = json!({"gid": "g-1", "timeout": "30s"});
    let (status, first) = post_json(&s.url("/v1/trellis/txn"), begin.clone()).await;
    assert_eq!((status, &first["state"]), (200, &json!("open")));
    assert_eq!(first["timeout_ms"], 30_000);
    let (_, second) = post_json(&s.url("/v1/trellis/txn"), begin).await;
    assert_eq!(
        second["create_index"], first["create_index"],
        "begin is idempotent"
    );

    let branches = s.url("/v1/trellis/txn/g-1/branches");
    let (status, _) = post_json(&branches, branch("a", &url, json!({"n": 1}))).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&branches, branch("a", &url, json!({"n": 1}))).await;
    assert_eq!(status, 200, "the same branch again");
    let (status, body) = post_json(&branches, branch("a", &url, json!({"n": 2}))).await;
    assert_eq!(status, 409, "{body}");

    // Phase 1 is held by a participant that is busy twice.
    p.script("a", "prepare", &[503, 503, 200]);
    let r = http()
        .post(s.url("/v1/trellis/txn/g-1/commit?wait=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let index = support::index_of(&r);
    let r = http()
        .get(s.url(&format!("/v1/trellis/txn/g-1?index={index}&wait=10s")))
        .send()
        .await
        .unwrap();
    assert!(support::index_of(&r) > index, "woken by a change");
    eventually(Duration::from_secs(10), "committed", || async {
        get_json(&s.url("/v1/trellis/txn/g-1")).await.1["state"] == "committed"
    })
    .await;
    let (_, txn) = get_json(&s.url("/v1/trellis/txn/g-1")).await;
    assert_eq!(p.phases("a"), ["prepare", "prepare", "prepare", "commit"]);
    assert_eq!(
        txn["branches"][0]["attempts"], 1,
        "attempts of the last phase"
    );

    let (status, body) = post_json(&branches, branch("b", &url, json!(null))).await;
    assert_eq!(status, 409, "no branch after the decision: {body}");
    let (status, body) = post_json(&s.url("/v1/trellis/txn/g-1/abort"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.as_str().unwrap().contains("already committing"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unanswered_prepare_times_out_and_aborts() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    p.script("slow", "prepare", &[503]);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"timeout": 400, "branches": [branch("slow", &url, json!(0))], "commit": true}),
    )
    .await;
    assert_eq!(status, 409, "{txn}");
    assert_eq!(txn["cause"]["branch"], "slow");
    let reason = txn["cause"]["reason"].as_str().unwrap();
    assert!(reason.contains("timed out after 400 ms"), "{reason}");
    assert!(
        txn["decided_at"].as_u64().unwrap() - txn["created_at"].as_u64().unwrap() < 2_000,
        "{txn}"
    );
    eventually(Duration::from_secs(5), "the abort is sent", || async {
        p.phases("slow").last().map(String::as_str) == Some("abort")
    })
    .await;
}

#[tokio::test]
async fn phase_two_is_retried_until_the_participant_answers() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    p.script("a", "commit", &[503, 500, 503, 200]);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"gid": "retry", "branches": [branch("a", &url, json!(0))], "commit": true}),
    )
    .await;
    // The outcome is fixed once decided: the answer comes when phase 2 needs retries.
    assert_eq!(status, 200, "{txn}");
    assert!(
        ["committing", "committed"].contains(&txn["state"].as_str().unwrap()),
        "{txn}"
    );
    eventually(Duration::from_secs(10), "committed", || async {
        get_json(&s.url("/v1/trellis/txn/retry")).await.1["state"] == "committed"
    })
    .await;
    assert_eq!(
        p.phases("a"),
        ["prepare", "commit", "commit", "commit", "commit"]
    );
    let metrics = http()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trellis_txn_phase2_retries_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_txn_committed_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn participants_named_by_service_are_found_in_the_registry() {
    let s = Server::dev();
    let p = Participant::default();
    let url = p.serve().await;
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/txn")
        .parse()
        .unwrap();
    let r = http()
        .put(s.url("/v1/agent/service/register"))
        .json(
            &json!({"Name": "accounts", "ID": "accounts-1", "Address": "127.0.0.1", "Port": port}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"branches": [{"branch_id": "x", "service": "accounts", "path": "/txn", "payload": {}}],
               "commit": true}),
    )
    .await;
    assert_eq!(status, 200, "{txn}");
    assert_eq!(txn["branches"][0]["service"], "accounts");
    assert_eq!(p.phases("x"), ["prepare", "commit"]);

    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"timeout": "300ms", "branches": [{"branch_id": "y", "service": "nobody", "payload": {}}],
               "commit": true}),
    )
    .await;
    assert_eq!(status, 409, "{txn}");
    let error = txn["branches"][0]["last_error"].to_string();
    assert!(error.contains("no passing instance of service"), "{txn}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let s = Server::dev();
    let cases = [
        (json!({"gid": "bad gid!"}), "invalid gid"),
        (json!({"gid": "x", "surprise": 1}), "unknown field"),
        (json!({"timeout": "soon"}), "invalid timeout"),
        (
            json!({"branches": [{"branch_id": "a", "payload": 1}]}),
            "give either",
        ),
        (
            json!({"branches": [{"branch_id": "a", "url": "ftp://x/y"}]}),
            "http:// URL",
        ),
        (
            json!({"branches": [{"branch_id": "a", "url": "http://x", "service": "s"}]}),
            "give either",
        ),
        (
            json!({"branches": [{"branch_id": "", "url": "http://x"}]}),
            "invalid branch_id",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post_json(&s.url("/v1/trellis/txn"), body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer.to_string().contains(expected), "{body} → {answer}");
    }
    let r = http()
        .post(s.url("/v1/trellis/txn"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, _) = get_json(&s.url("/v1/trellis/txn/nope")).await;
    assert_eq!(status, 404);
    let (status, _) = post_json(&s.url("/v1/trellis/txn/nope/commit"), json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = get_json(&s.url("/v1/trellis/txn?state=limbo")).await;
    assert_eq!(status, 400, "{body}");
    let big = "x".repeat(70 * 1024);
    let (status, body) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"branches": [branch("a", "http://127.0.0.1:1/txn", json!(big))]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_list_pages_and_filters_by_state() {
    let s = Server::dev();
    for n in 0..5 {
        let (status, _) =
            post_json(&s.url("/v1/trellis/txn"), json!({"gid": format!("t{n}")})).await;
        assert_eq!(status, 200);
    }
    post_json(&s.url("/v1/trellis/txn/t1/commit"), json!({})).await;
    let (_, page) = get_json(&s.url("/v1/trellis/txn?limit=2")).await;
    let gids = |page: &Value| -> Vec<String> {
        page["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["gid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(gids(&page), ["t0", "t1"]);
    let next = page["next"].as_u64().unwrap();
    let (_, rest) = get_json(&s.url(&format!("/v1/trellis/txn?after={next}&limit=10"))).await;
    assert_eq!(gids(&rest), ["t2", "t3", "t4"]);
    assert_eq!(rest["next"], Value::Null);
    let (_, committed) = get_json(&s.url("/v1/trellis/txn?state=committed")).await;
    assert_eq!(gids(&committed), ["t1"]);
}

#[tokio::test]
async fn after_kill_9_decided_transactions_finish_and_undecided_ones_abort() {
    let dir = tempfile::tempdir().unwrap();
    let p = Participant::default();
    let url = p.serve().await;
    let s = Server::durable(dir.path());
    // "decided": committed, but its participant is down for phase 2.
    p.script("d", "commit", &[503]);
    let (status, txn) = post_json(
        &s.url("/v1/trellis/txn"),
        json!({"gid": "decided", "branches": [branch("d", &url, json!(0))], "commit": true}),
    )
    .await;
    assert_eq!(
        (status, &txn["state"]),
        (200, &json!("committing")),
        "{txn}"
    );
    // "undecided": begun with a branch, never committed.
    post_json(
        &s.url("/v1/trellis/txn"),
        json!({"gid": "undecided", "branches": [branch("u", &url, json!(0))]}),
    )
    .await;
    s.kill9();

    p.script("d", "commit", &[200]);
    let s = Server::durable(dir.path());
    eventually(
        Duration::from_secs(10),
        "phase 2 finished after the restart",
        || async { get_json(&s.url("/v1/trellis/txn/decided")).await.1["state"] == "committed" },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the undecided one aborted",
        || async { get_json(&s.url("/v1/trellis/txn/undecided")).await.1["state"] == "aborted" },
    )
    .await;
    let (_, undecided) = get_json(&s.url("/v1/trellis/txn/undecided")).await;
    assert_eq!(
        undecided["cause"]["reason"],
        "the coordinator restarted before a decision"
    );
    assert_eq!(
        p.phases("u"),
        ["abort"],
        "presumed abort tells every branch"
    );
    assert_eq!(p.phases("d").first().map(String::as_str), Some("prepare"));
    assert_eq!(p.phases("d").last().map(String::as_str), Some("commit"));
}
