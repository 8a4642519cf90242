//! The dashboard's server side: its files at `/ui/` (embedded, or from `--ui-dir`) with strict
//! security headers, writes refused when a browser sends them from another site, and the
//! endpoints only the dashboard reads (`/v1/internal/ui/services`, `/v1/trellis/checks/history`).
//! The pages themselves are tested in a real browser by `tests/ui/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Server, http};

async fn put(server: &Server, path: &str, body: Value) -> reqwest::Response {
    http()
        .put(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &Server, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let r = http().get(server.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let headers = r.headers().clone();
    (headers, r.json().await.unwrap())
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy() {
    let server = Server::dev();
    // Every page's URL answers the dashboard's index, which routes in the browser.
    for path in ["/ui/", "/ui/services/web", "/ui/kv/a/b/"] {
        let r = http().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(r.text().await.unwrap().contains("<html"));
    }
    // `/` and `/ui` lead to the dashboard.
    let r = http().get(server.url("/")).send().await.unwrap();
    assert_eq!(r.url().path(), "/ui/");
    // A missing file is a 404, not the index.
    let r = http()
        .get(server.url("/ui/assets/missing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Compressed when the browser takes gzip; revalidated by ETag.
    let r = http()
        .get(server.url("/ui/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let etag = r.headers()["etag"].clone();
    let r = http()
        .get(server.url("/ui/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test]
async fn ui_dir_serves_files_from_disk_and_nothing_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<html>edited</html>").unwrap();
    std::fs::create_dir(dir.path().join("js")).unwrap();
    std::fs::write(dir.path().join("js/app.js"), "export {};").unwrap();
    let server = Server::start(&["--dev", "--ui-dir", dir.path().to_str().unwrap()]);
    let page = http().get(server.url("/ui/topology")).send().await.unwrap();
    assert_eq!(page.text().await.unwrap(), "<html>edited</html>");
    let script = http()
        .get(server.url("/ui/assets/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // Edits show without a restart.
    std::fs::write(dir.path().join("js/app.js"), "export const x = 1;").unwrap();
    let script = http()
        .get(server.url("/ui/assets/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.text().await.unwrap(), "export const x = 1;");
    for escape in [
        "/ui/assets/..%2F..%2Fetc%2Fpasswd",
        "/ui/assets/js/..%2F..%2F..%2Fetc%2Fhostname",
    ] {
        let r = http().get(server.url(escape)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{escape}");
    }
}

#[tokio::test]
async fn writes_from_another_site_are_refused() {
    let server = Server::dev();
    let attempts = [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in attempts {
        let r = http()
            .put(server.url("/v1/kv/config/x"))
            .header(name, value)
            .body("forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert!(r.text().await.unwrap().contains("cross-origin"));
        let r = http()
            .post(server.url("/v1/trellis/txn/t1/abort"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    let r = http()
        .get(server.url("/v1/kv/config/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing was written");
    // The dashboard's own requests, and clients that are not browsers, pass; so do reads from
    // anywhere.
    let origin = server.url("");
    let r = http()
        .put(server.url("/v1/kv/config/x"))
        .header("origin", origin.trim_end_matches('/'))
        .header("sec-fetch-site", "same-origin")
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .get(server.url("/v1/kv/config/x?raw"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn services_summary_and_check_history_follow_check_changes() {
    let server = Server::dev();
    for (id, tags) in [("web-1", ["v1"]), ("web-2", ["v2"])] {
        let r = put(
            &server,
            "/v1/agent/service/register",
            json!({"Name": "web", "ID": id, "Tags": tags, "Check": {"TTL": "30s", "Status": "passing"}}),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let (headers, summary) = get_json(&server, "/v1/internal/ui/services").await;
    let web = summary
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["Tags"], json!(["v1", "v2"]));
    assert_eq!(web["InstanceCount"], 2);
    assert_eq!(
        (
            &web["ChecksPassing"],
            &web["InstancesPassing"],
            &web["InstancesCritical"]
        ),
        (&json!(2), &json!(2), &json!(0))
    );
    let index: u64 = headers["x-consul-index"].to_str().unwrap().parse().unwrap();

    // A blocking read of the summary wakes when a check fails.
    let waiting = {
        let url = server.url(&format!("/v1/internal/ui/services?index={index}&wait=10s"));
        tokio::spawn(async move { http().get(url).send().await.unwrap().json::<Value>().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = http()
        .put(server.url("/v1/agent/check/fail/service:web-2?note=disk%20full"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the blocking read wakes")
        .unwrap()
        .unwrap();
    let web = woken
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(
        (
            &web["ChecksCritical"],
            &web["InstancesPassing"],
            &web["InstancesCritical"]
        ),
        (&json!(1), &json!(1), &json!(1))
    );

    // The history has the change, newest first, and filters by service and status.
    let (_, history) = get_json(&server, "/v1/trellis/checks/history?service=WEB").await;
    let first = &history["transitions"][0];
    assert_eq!(
        (
            &first["checkId"],
            &first["from"],
            &first["to"],
            &first["output"]
        ),
        (
            &json!("service:web-2"),
            &json!("passing"),
            &json!("critical"),
            &json!("disk full")
        ),
        "{history}"
    );
    assert_eq!(history["transitions"].as_array().unwrap().len(), 3);
    let (_, critical) = get_json(
        &server,
        "/v1/trellis/checks/history?status=critical&limit=5",
    )
    .await;
    assert_eq!(critical["transitions"].as_array().unwrap().len(), 1);
    let (_, other) = get_json(&server, "/v1/trellis/checks/history?service=db").await;
    assert_eq!(other["transitions"], json!([]));
    for bad in ["status=sick", "limit=0", "limit=x"] {
        let r = http()
            .get(server.url(&format!("/v1/trellis/checks/history?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn json_answers_are_gzipped_for_clients_that_take_it() {
    use std::io::Read;
    let server = Server::dev();
    for i in 0..30 {
        let r = put(
            &server,
            "/v1/agent/service/register",
            json!({"Name": "web", "ID": format!("web-{i}"), "Port": 8000 + i}),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let path = "/v1/health/service/web";
    let plain = http().get(server.url(path)).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let gzipped = http()
        .get(server.url(path))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert!(gzipped.headers().contains_key("x-consul-index"));
    let compressed = gzipped.bytes().await.unwrap();
    assert!(
        compressed.len() * 4 < plain.len(),
        "{} of {}",
        compressed.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    // Small answers and text go as they are.
    let small = http()
        .get(server.url("/v1/status/leader"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
}
