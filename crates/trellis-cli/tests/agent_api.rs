//! User events, agent metrics, coordinates, operator reads, reload/leave and the log monitor:
//! the real binary, answering as Consul does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, eventually, http, index_of};

const NODE: &str = "node-1";

fn server() -> Server {
    Server::start(&["--dev", "--node-name", NODE])
}

async fn get_json(c: &reqwest::Client, url: String) -> (Value, u64) {
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(r.headers()["x-consul-knownleader"], "true", "{url}");
    let index = index_of(&r);
    (r.json().await.unwrap(), index)
}

/// Status and body text of a request expected to fail.
async fn refused(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn fire(c: &reqwest::Client, s: &Server, path: &str, body: &'static str) -> Value {
    let r = c
        .put(s.url(&format!("/v1/event/fire/{path}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn events_fire_list_and_block_on_consuls_event_index() {
    let s = server();
    let c = http();

    // Nothing fired: an empty list at index 1.
    let (list, index) = get_json(&c, s.url("/v1/event/list")).await;
    assert_eq!(list, json!([]));
    assert_eq!(index, 1);

    let event = fire(&c, &s, "deploy?node=node", "hello").await;
    assert_eq!(event["Name"], "deploy");
    assert_eq!(event["Payload"], "aGVsbG8="); // base64("hello")
    assert_eq!(event["NodeFilter"], "node");
    assert_eq!(event["ServiceFilter"], "");
    assert_eq!(event["TagFilter"], "");
    assert_eq!(event["Version"], 1);
    assert_eq!(event["LTime"], 0);
    let id = event["ID"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let (list, index) = get_json(&c, s.url("/v1/event/list")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["ID"], id.as_str());
    assert_eq!(list[0]["LTime"], 1);
    // Consul's index for events: the ID's halves XORed.
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let high = u64::from_str_radix(&hex[..16], 16).unwrap();
    let low = u64::from_str_radix(&hex[16..], 16).unwrap();
    assert_eq!(index, high ^ low);

    // An empty payload is null; a name filter on the list.
    let other = fire(&c, &s, "restart", "").await;
    assert_eq!(other["Payload"], Value::Null);
    let (list, _) = get_json(&c, s.url("/v1/event/list?name=deploy")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (list, none_index) = get_json(&c, s.url("/v1/event/list?name=none")).await;
    assert_eq!((list, none_index), (json!([]), 1));
    let (list, _) = get_json(&c, s.url("/v1/event/list")).await;
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Name"].clone())
        .collect();
    assert_eq!(names, [json!("deploy"), json!("restart")]);

    // Filters that do not match this agent: answered, but not kept here (as in Consul).
    fire(&c, &s, "elsewhere?node=other-node", "").await;
    fire(&c, &s, "no-service?service=web", "").await;
    let (list, _) = get_json(&c, s.url("/v1/event/list")).await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // A blocking list wakes on the next event.
    let (_, index) = get_json(&c, s.url("/v1/event/list?name=deploy")).await;
    let waiter = {
        let c = c.clone();
        let url = s.url(&format!(
            "/v1/event/list?name=deploy&index={index}&wait=10s"
        ));
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c.get(url).send().await.unwrap();
            let index = index_of(&r);
            let list: Value = r.json().await.unwrap();
            (started.elapsed(), index, list)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another name does not wake it for good: its index is unchanged.
    fire(&c, &s, "restart", "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let second = fire(&c, &s, "deploy", "again").await;
    let (elapsed, new_index, list) = waiter.await.unwrap();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_ne!(new_index, index);
    assert_eq!(list.as_array().unwrap().last().unwrap()["ID"], second["ID"]);

    // A blocking list times out with the same index.
    let started = Instant::now();
    let (_, same) = get_json(
        &c,
        s.url(&format!(
            "/v1/event/list?name=deploy&index={new_index}&wait=300ms"
        )),
    )
    .await;
    assert_eq!(same, new_index);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn events_are_validated_and_bounded() {
    let s = server();
    let c = http();
    let (status, text) = refused(c.put(s.url("/v1/event/fire/")).send().await.unwrap()).await;
    assert_eq!((status, text.trim()), (400, "Missing name"));
    let (status, text) = refused(
        c.put(s.url("/v1/event/fire/x?tag=blue"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("tag filter without service filter"), "{text}");
    let (status, text) = refused(
        c.put(s.url("/v1/event/fire/x?node=%28"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.starts_with("Invalid NodeFilter"), "{text}");
    let (status, text) = refused(
        c.put(s.url("/v1/event/fire/x"))
            .body(vec![b'a'; 600])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("512 bytes"), "{text}");
    let (status, _) = refused(c.get(s.url("/v1/event/fire/x")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    let (status, _) = refused(
        c.get(s.url("/v1/event/list?index=abc"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);

    // The ring keeps the last 256.
    for i in 0..260 {
        let r = c
            .put(s.url(&format!("/v1/event/fire/e{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (list, _) = get_json(&c, s.url("/v1/event/list")).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 256);
    assert_eq!(list[0]["Name"], "e4");
    assert_eq!(list[255]["Name"], "e259");
    assert_eq!(list[255]["LTime"], 260);
}

#[tokio::test]
async fn agent_metrics_in_consuls_shape_and_as_prometheus_text() {
    let s = server();
    let c = http();
    // Something to count and a service to gauge.
    let r = c
        .put(s.url("/v1/agent/service/register"))
        .json(&json!({"Name": "web", "ID": "web-1", "Port": 8080}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (m, _) = get_json(&c, s.url("/v1/agent/metrics")).await;
    let stamp = m["Timestamp"].as_str().unwrap();
    assert!(stamp.ends_with(" +0000 UTC"), "{stamp}");
    assert_eq!(m["Points"], json!([]));
    let gauge = |name: &str| {
        m["Gauges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["Name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no gauge {name}: {m}"))
    };
    assert_eq!(gauge("trellis.services")["Value"], 1.0);
    assert!(gauge("trellis.watchers")["Value"].is_number());
    let register = m["Counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["Name"] == "trellis.http_requests"
                && c["Labels"]["route"] == "/v1/agent/service/register"
        })
        .expect("a counter of registrations");
    assert_eq!(register["Count"], 1.0);
    assert_eq!(register["Labels"]["method"], "PUT");
    let samples = m["Samples"].as_array().unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s["Name"] == "trellis.http_request_duration_seconds"),
        "{m}"
    );

    let r = c
        .get(s.url("/v1/agent/metrics?format=prometheus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-consul-index"));
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE trellis_services gauge"), "{text}");
    assert!(text.contains("trellis_services 1"), "{text}");
    let (status, text) = refused(
        c.get(s.url("/v1/agent/metrics?format=xml"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("prometheus"), "{text}");
}

#[tokio::test]
async fn coordinates_of_this_server_match_agent_self() {
    let s = server();
    let c = http();
    let (agent, _) = get_json(&c, s.url("/v1/agent/self")).await;
    let coord = agent["Coord"].clone();
    let dc = agent["Config"]["Datacenter"].as_str().unwrap().to_owned();

    let (dcs, _) = get_json(&c, s.url("/v1/coordinate/datacenters")).await;
    assert_eq!(
        dcs,
        json!([{
            "Datacenter": dc,
            "AreaID": "wan",
            "Coordinates": [{"Node": format!("{NODE}.{dc}"), "Segment": "", "Coord": coord}],
        }])
    );
    let this = json!([{"Node": NODE, "Segment": "", "Coord": coord}]);
    let (nodes, index) = get_json(&c, s.url("/v1/coordinate/nodes")).await;
    assert_eq!((nodes, index), (this.clone(), 1));
    let (nodes, _) = get_json(&c, s.url("/v1/coordinate/nodes?segment=alpha")).await;
    assert_eq!(nodes, json!([]));
    let (node, _) = get_json(&c, s.url(&format!("/v1/coordinate/node/{NODE}"))).await;
    assert_eq!(node, this);

    // Coordinates never change: a blocking read at their index waits out its wait.
    let started = Instant::now();
    let (_, index) = get_json(&c, s.url("/v1/coordinate/nodes?index=1&wait=300ms")).await;
    assert_eq!(index, 1);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (status, text) = refused(
        c.get(s.url("/v1/coordinate/node/other"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(text.contains("other"), "{text}");
    let (status, _) = refused(
        c.get(s.url("/v1/coordinate/nodes?dc=elsewhere"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    let (status, _) = refused(
        c.get(s.url("/v1/coordinate/nodes?index=x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn operator_reads_show_this_server_as_the_only_voter_and_leader() {
    let s = server();
    let c = http();
    let (leader, _) = get_json(&c, s.url("/v1/status/leader")).await;
    let (agent, _) = get_json(&c, s.url("/v1/agent/self")).await;
    let id = agent["Config"]["NodeID"].clone();

    let (raft, index) = get_json(&c, s.url("/v1/operator/raft/configuration")).await;
    let servers = raft["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["ID"], id);
    assert_eq!(servers[0]["Node"], NODE);
    assert_eq!(servers[0]["Address"], leader);
    assert_eq!(servers[0]["Leader"], true);
    assert_eq!(servers[0]["Voter"], true);
    assert_eq!(servers[0]["ProtocolVersion"], "3");
    assert_eq!(raft["Index"], index);

    let (health, _) = get_json(&c, s.url("/v1/operator/autopilot/health")).await;
    assert_eq!(health["Healthy"], true);
    assert_eq!(health["FailureTolerance"], 0);
    let server = &health["Servers"][0];
    assert_eq!(server["ID"], id);
    assert_eq!(server["Name"], NODE);
    assert_eq!(server["Leader"], true);
    assert_eq!(server["Voter"], true);
    assert_eq!(server["Healthy"], true);
    assert_eq!(server["SerfStatus"], "alive");
    assert_eq!(server["LastContact"], "0s");
    let since = server["StableSince"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.contains('T'), "{since}");

    let (status, _) = refused(
        c.get(s.url("/v1/operator/raft/configuration?stale=maybe"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = refused(
        c.get(s.url("/v1/operator/autopilot/health?dc=elsewhere"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
}

/// A `PUT /v1/agent/reload` expected to fail: status and body.
async fn reload(c: &reqwest::Client, s: &Server) -> (u16, String) {
    refused(c.put(s.url("/v1/agent/reload")).send().await.unwrap()).await
}

#[tokio::test]
async fn reload_reads_the_config_file_again_with_the_flags_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "max_queue = 100\ndatacenter = \"dc1\"\n").unwrap();
    let s = Server::start(&[
        "--dev",
        "--node-name",
        NODE,
        "--datacenter",
        "dc7",
        "--config",
        file.to_str().unwrap(),
    ]);
    let c = http();
    assert_eq!(reload(&c, &s).await, (200, String::new()));
    let mut warn = c
        .get(s.url("/v1/agent/monitor?loglevel=WARN"))
        .send()
        .await
        .unwrap();
    assert_eq!(warn.status(), 200);

    // Invalid: 500 with the one-line reason, as Consul answers a failed reload.
    std::fs::write(&file, "max_queue = 0\n").unwrap();
    let (status, text) = reload(&c, &s).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("max_queue must be positive"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    std::fs::write(&file, "max_queue = \"many\"\n").unwrap();
    let (status, text) = reload(&c, &s).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.starts_with("invalid configuration file "), "{text}");
    assert!(text.contains("line 1, column 13"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");

    // Valid: 200, and a warning naming what changed and needs a restart. `--datacenter` still
    // overrides the file, so the file's invalid datacenter is neither refused nor a change.
    std::fs::write(&file, "max_queue = 200\ndatacenter = \"not a dc!\"\n").unwrap();
    assert_eq!(reload(&c, &s).await, (200, String::new()));
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = warn.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("restart") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    let line = seen.lines().find(|l| l.contains("restart")).unwrap();
    assert!(line.contains(" [WARN]  "), "{line}");
    assert!(line.contains("max_queue"), "{line}");
    assert!(!line.contains("datacenter"), "{line}");
    // The running configuration is unchanged.
    let (me, _) = get_json(&c, s.url("/v1/agent/self")).await;
    assert_eq!(me["Config"]["Datacenter"], "dc7");

    // A file that is gone cannot be reloaded either.
    drop(dir);
    let (status, text) = reload(&c, &s).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.starts_with("cannot read "), "{text}");
}

#[tokio::test]
async fn reload_answers_and_leave_shuts_the_server_down_cleanly() {
    let mut s = server();
    let c = http();
    let r = c.put(s.url("/v1/agent/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-consul-index"));
    let (status, _) = refused(c.get(s.url("/v1/agent/reload")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    let (status, _) = refused(c.get(s.url("/v1/agent/leave")).send().await.unwrap()).await;
    assert_eq!(status, 405);
    let (status, _) = refused(
        c.put(s.url("/v1/agent/leave?dc=elsewhere"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);

    // A blocking query in flight (coordinates never change: it would wait its full minute) is
    // released by the leave.
    let waiter = {
        let c = c.clone();
        let url = s.url("/v1/coordinate/nodes?index=1&wait=60s");
        tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    // Leave only once the server holds it (it counts it as a watcher).
    eventually(
        Duration::from_secs(10),
        "the blocking query to arrive",
        || async {
            let metrics = c.get(s.url("/metrics")).send().await.unwrap();
            let text = metrics.text().await.unwrap();
            text.lines().any(|l| l == "trellis_watchers 1")
        },
    )
    .await;

    let r = c.put(s.url("/v1/agent/leave")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after leave"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let answered = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the blocking query was released")
        .unwrap();
    assert_eq!(answered.ok(), Some(200));
}

#[tokio::test]
async fn coordinate_updates_set_this_nodes_lan_coordinate() {
    let s = server();
    let c = http();
    let (before, index) = get_json(&c, s.url("/v1/coordinate/nodes")).await;
    assert_eq!(index, 1);
    // A blocking read of the LAN coordinates wakes at the update.
    let waiter = {
        let (c, url) = (c.clone(), s.url("/v1/coordinate/nodes?index=1&wait=20s"));
        tokio::spawn(async move { get_json(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let coord = json!({"Vec": [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.2], "Error": 0.4,
        "Adjustment": 0.01, "Height": 0.0002});
    let put = |body: Value| c.put(s.url("/v1/coordinate/update")).json(&body).send();
    // Keys in any case, as Go decodes them.
    let r = put(json!({"node": NODE, "coord": coord})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
    let (nodes, after) = waiter.await.unwrap();
    assert_eq!(after, 2);
    assert_eq!(
        nodes,
        json!([{"Node": NODE, "Segment": "", "Coord": coord}])
    );
    let (node, _) = get_json(&c, s.url(&format!("/v1/coordinate/node/{NODE}"))).await;
    assert_eq!(node, nodes);
    // The WAN coordinate (Serf's, as /v1/agent/self reports it) does not move.
    let (dcs, _) = get_json(&c, s.url("/v1/coordinate/datacenters")).await;
    assert_eq!(dcs[0]["Coordinates"][0]["Coord"], before[0]["Coord"]);
    // The same coordinate again changes nothing; another node's is dropped, as Consul drops a
    // coordinate for a node the catalog does not have.
    put(json!({"Node": NODE, "Coord": coord})).await.unwrap();
    let other = put(json!({"Node": "elsewhere", "Coord": coord}))
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        get_json(&c, s.url("/v1/coordinate/nodes")).await,
        (nodes, 2)
    );
    // Consul's refusals.
    let (status, text) = refused(put(json!({"Node": NODE})).await.unwrap()).await;
    assert_eq!((status, text.trim()), (500, "invalid coordinate"));
    let (status, text) = refused(
        put(json!({"Node": NODE, "Coord": {"Vec": [1.0, 2.0]}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, text.trim()), (500, "incompatible coordinate"));
    let (status, text) = refused(put(json!({"Node": 7})).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("Request decode failed: json: cannot unmarshal number"),
        "{text}"
    );
    let (status, _) = refused(
        put(json!({"Node": NODE, "Datacenter": "elsewhere", "Coord": coord}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn monitor_streams_json_lines_with_logjson() {
    let s = server();
    let c = http();
    // `logjson` counts by its presence, as in Consul.
    let mut json_lines = c
        .get(s.url("/v1/agent/monitor?loglevel=debug&logjson"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_lines.status(), 200);
    get_json(&c, s.url("/v1/catalog/nodes?json-monitored")).await;
    let mut seen = String::new();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = json_lines
                .chunk()
                .await
                .unwrap()
                .expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = seen.lines().find(|l| l.contains("json-monitored")) {
                return line.to_owned();
            }
        }
    })
    .await
    .expect("the request's debug line");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["@level"], "debug", "{line}");
    assert_eq!(event["@message"], "request", "{line}");
    assert!(
        event["@module"].as_str().unwrap().starts_with("trellis"),
        "{line}"
    );
    assert!(
        event["@timestamp"].as_str().unwrap().ends_with('Z'),
        "{line}"
    );
    assert_eq!(event["status"], 200, "fields keep their types: {line}");
    assert_eq!(event["method"], "GET", "{line}");
}

#[tokio::test]
async fn monitor_streams_the_log_at_the_level_asked_for() {
    // The server logs at warn to stderr; the monitor still gets debug lines.
    let s = server();
    let c = http();
    let (status, text) = refused(
        c.get(s.url("/v1/agent/monitor?loglevel=loud"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, text.trim()), (400, "Unknown log level: loud"));

    let mut debug = c
        .get(s.url("/v1/agent/monitor?loglevel=debug"))
        .send()
        .await
        .unwrap();
    assert_eq!(debug.status(), 200);
    assert!(debug.headers().contains_key("x-consul-index"));
    let mut info = c
        .get(s.url("/v1/agent/monitor?loglevel=INFO"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);

    // Each request is logged at debug: the debug monitor sees it.
    get_json(&c, s.url("/v1/catalog/nodes?monitored")).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = debug.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("/v1/catalog/nodes?monitored") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    let line = seen
        .lines()
        .find(|l| l.contains("/v1/catalog/nodes?monitored"))
        .unwrap();
    assert!(line.contains(" [DEBUG] "), "{line}");
    assert!(line.contains("request"), "{line}");

    // The info monitor gets no debug lines; it does get the line a reload logs (without a
    // configuration file there is nothing to reload).
    let r = c.put(s.url("/v1/agent/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let chunk = tokio::time::timeout(Duration::from_secs(10), info.chunk())
        .await
        .expect("a line")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk).into_owned();
    assert!(text.contains(" [INFO]  "), "{text}");
    assert!(text.contains("reload"), "{text}");
    assert!(!text.contains("[DEBUG]"), "{text}");

    // Shutting down ends the streams.
    drop(debug);
    let status = s.terminate();
    assert!(status.success());
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while info.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the monitor stream did not end at shutdown");
}
