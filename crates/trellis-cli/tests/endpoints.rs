//! The node, state, maintenance, catalog-write, agent-health, members and host endpoints, and
//! hash-based blocking of the agent's listings: the real binary, answering as Consul does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Server, eventually, http, index_of};

const NODE: &str = "node-1";

fn server() -> Server {
    Server::start(&["--dev", "--node-name", NODE])
}

async fn put(c: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    c.put(url).json(&body).send().await.unwrap()
}

async fn put_ok(c: &reqwest::Client, url: String) {
    let r = c.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}: {}", r.text().await.unwrap());
}

async fn get_json(c: &reqwest::Client, url: String) -> (Value, u64) {
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let index = index_of(&r);
    (r.json().await.unwrap(), index)
}

/// Status and body text of a request expected to fail.
async fn refused(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn register(c: &reqwest::Client, s: &Server, body: Value) {
    let r = put(c, s.url("/v1/agent/service/register"), body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

fn check_ids(checks: &Value) -> Vec<String> {
    checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn catalog_and_health_node_reads() {
    let s = server();
    let c = http();
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"],
               "Check": {"TTL": "30s"}}),
    )
    .await;
    let (node, index) = get_json(&c, s.url(&format!("/v1/catalog/node/{NODE}"))).await;
    assert!(index > 1);
    assert_eq!(node["Node"]["Node"], NODE);
    assert_eq!(node["Services"]["web-1"]["Service"], "web");
    assert_eq!(node["Services"]["web-1"]["Port"], 8080);
    assert_eq!(node["Services"]["web-1"]["Tags"], json!(["v1"]));
    // The node by its ID, and its name without regard to case.
    let id = node["Node"]["ID"].as_str().unwrap().to_owned();
    let (by_id, _) = get_json(&c, s.url(&format!("/v1/catalog/node/{id}"))).await;
    assert_eq!(by_id, node);
    let (upper, _) = get_json(&c, s.url("/v1/catalog/node/NODE-1")).await;
    assert_eq!(upper["Node"]["Node"], NODE);
    // An unknown node: what Consul answers.
    let (unknown, _) = get_json(&c, s.url("/v1/catalog/node/elsewhere")).await;
    assert_eq!(unknown, Value::Null);

    let (list, _) = get_json(&c, s.url(&format!("/v1/catalog/node-services/{NODE}"))).await;
    assert_eq!(list["Node"]["Node"], NODE);
    let web = list["Services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ID"] == "web-1")
        .unwrap_or_else(|| panic!("no web-1 in {list}"));
    assert_eq!(web["Service"], "web");
    let (unknown, _) = get_json(&c, s.url("/v1/catalog/node-services/elsewhere")).await;
    assert_eq!(unknown, json!({"Node": null, "Services": null}));

    let (checks, _) = get_json(&c, s.url(&format!("/v1/health/node/{NODE}"))).await;
    assert_eq!(check_ids(&checks), ["serfHealth", "service:web-1"]);
    assert_eq!(checks[0]["Status"], "passing");
    assert_eq!(checks[1]["Status"], "critical");
    assert_eq!(checks[1]["ServiceName"], "web");
    assert_eq!(checks[1]["Node"], NODE);
    let (none, _) = get_json(&c, s.url("/v1/health/node/elsewhere")).await;
    assert_eq!(none, json!([]));

    for path in [
        "/v1/catalog/node/",
        "/v1/catalog/node-services/",
        "/v1/health/node/",
    ] {
        let (status, text) = refused(c.get(s.url(path)).send().await.unwrap()).await;
        assert_eq!((status, text.trim()), (400, "Missing node name"), "{path}");
    }
    let (status, _) = refused(
        c.get(s.url(&format!("/v1/catalog/node/{NODE}?dc=other")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500, "an unknown datacenter, as Consul answers it");

    // Catalog node reads block on the services index: a registration wakes them.
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/catalog/node/{NODE}?index={index}&wait=30s"));
        tokio::spawn(async move { get_json(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished());
    register(&c, &s, json!({"Name": "db", "ID": "db-1"})).await;
    let (node, newer) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("woken by the registration")
        .unwrap();
    assert!(newer > index);
    assert_eq!(node["Services"]["db-1"]["Service"], "db");
}

#[tokio::test]
async fn health_state_lists_checks_and_blocks_until_one_fails() {
    let s = server();
    let c = http();
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1",
               "Checks": [{"CheckID": "web-ttl", "TTL": "30s", "Status": "passing"},
                          {"CheckID": "web-short", "TTL": "3s", "Status": "passing"}]}),
    )
    .await;
    let (passing, _) = get_json(&c, s.url("/v1/health/state/passing")).await;
    assert_eq!(
        check_ids(&passing),
        ["serfHealth", "web-short", "web-ttl"],
        "node checks included, serfHealth passing"
    );
    let (critical, index) = get_json(&c, s.url("/v1/health/state/critical")).await;
    assert_eq!(critical, json!([]));
    let (any, _) = get_json(&c, s.url("/v1/health/state/any")).await;
    assert_eq!(any.as_array().unwrap().len(), 3);
    let (none, _) = get_json(&c, s.url("/v1/health/state/any?node-meta=rack:r1")).await;
    assert_eq!(none, json!([]));
    let (status, text) = refused(
        c.get(s.url("/v1/health/state/sleepy"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("any, passing, warning or critical"), "{text}");

    // A blocking read of critical checks is woken by a check failing (a TTL fail).
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/health/state/critical?index={index}&wait=30s"));
        tokio::spawn(async move { get_json(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "nothing changed yet");
    put_ok(&c, s.url("/v1/agent/check/fail/web-ttl?note=down")).await;
    let started = Instant::now();
    let (critical, newer) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("woken by the failing check")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(newer > index);
    assert_eq!(check_ids(&critical), ["web-ttl"]);
    assert_eq!(critical[0]["Output"], "down");

    // And by a TTL running out, which no request causes (3 s after the registration: long
    // enough that it cannot run out before the blocking read above is woken by the fail).
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/health/state/critical?index={newer}&wait=30s"));
        tokio::spawn(async move { get_json(&c, url).await })
    };
    let (critical, _) = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("woken by the TTL expiring")
        .unwrap();
    assert_eq!(check_ids(&critical), ["web-short", "web-ttl"]);

    // A wait that ends answers the same index.
    let (_, again) = get_json(&c, s.url("/v1/health/state/critical")).await;
    let started = Instant::now();
    let (_, same) = get_json(
        &c,
        s.url(&format!(
            "/v1/health/state/critical?index={again}&wait=300ms"
        )),
    )
    .await;
    assert_eq!(same, again);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

fn statuses_by_instance(health: &Value) -> Vec<(String, Vec<String>)> {
    health
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Service"]["ID"].as_str().unwrap().to_owned(),
                check_ids(&e["Checks"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn maintenance_mode_shows_in_health_reads_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", data, "--node-name", NODE]);
    let c = http();
    for id in ["web-1", "web-2"] {
        register(
            &c,
            &s,
            json!({"Name": "web", "ID": id, "Check": {"TTL": "10m", "Status": "passing"}}),
        )
        .await;
    }
    let (healthy, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(healthy.as_array().unwrap().len(), 2);

    // Service maintenance without a reason: Consul's check, name and default note.
    put_ok(&c, s.url("/v1/agent/service/maintenance/web-1?enable=true")).await;
    let (health, _) = get_json(&c, s.url("/v1/health/service/web")).await;
    let web1 = &health[0];
    assert_eq!(web1["Service"]["ID"], "web-1");
    let maint = web1["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:web-1")
        .expect("maintenance check");
    assert_eq!(maint["Name"], "Service Maintenance Mode");
    assert_eq!(maint["Status"], "critical");
    assert_eq!(maint["Type"], "maintenance");
    assert_eq!(maint["ServiceID"], "web-1");
    assert_eq!(
        maint["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a \
         default message."
    );
    let (passing, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(statuses_by_instance(&passing)[0].0, "web-2");
    assert_eq!(passing.as_array().unwrap().len(), 1);
    let r = c
        .get(s.url("/v1/agent/health/service/id/web-1?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "maintenance");
    // Enabling again keeps the first reason, as Consul; a TTL update cannot pass it.
    put_ok(
        &c,
        s.url("/v1/agent/service/maintenance/web-1?enable=true&reason=again"),
    )
    .await;
    let (checks, _) = get_json(&c, s.url("/v1/agent/checks")).await;
    assert!(
        checks["_service_maintenance:web-1"]["Notes"]
            .as_str()
            .unwrap()
            .starts_with("Maintenance mode is enabled")
    );
    let r = c
        .put(s.url("/v1/agent/check/pass/_service_maintenance:web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    put_ok(
        &c,
        s.url("/v1/agent/service/maintenance/web-1?enable=false"),
    )
    .await;
    let (passing, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(passing.as_array().unwrap().len(), 2);
    put_ok(
        &c,
        s.url("/v1/agent/service/maintenance/web-1?enable=false"),
    )
    .await;

    // Bad requests.
    for (path, status, reason) in [
        (
            "/v1/agent/service/maintenance/web-1",
            400,
            "Missing value for enable",
        ),
        (
            "/v1/agent/service/maintenance/web-1?enable=maybe",
            400,
            "Invalid value for enable: \"maybe\"",
        ),
        (
            "/v1/agent/service/maintenance/nope?enable=true",
            404,
            "No service registered with ID \"nope\"",
        ),
        (
            "/v1/agent/service/maintenance/?enable=true",
            400,
            "Missing service ID",
        ),
        ("/v1/agent/maintenance", 400, "Missing value for enable"),
    ] {
        let (got, text) = refused(c.put(s.url(path)).send().await.unwrap()).await;
        assert_eq!((got, text.trim()), (status, reason), "{path}");
    }
    let r = c
        .get(s.url("/v1/agent/maintenance?enable=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "maintenance is PUT only");

    // Node maintenance makes every instance critical, and it is durable.
    put_ok(
        &c,
        s.url("/v1/agent/maintenance?enable=true&reason=kernel%20upgrade"),
    )
    .await;
    let (passing, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(passing, json!([]));
    let (health, _) = get_json(&c, s.url("/v1/health/service/web")).await;
    for (id, checks) in statuses_by_instance(&health) {
        assert!(checks.contains(&"_node_maintenance".to_owned()), "{id}");
    }
    let (critical, _) = get_json(&c, s.url("/v1/health/state/critical")).await;
    assert_eq!(check_ids(&critical), ["_node_maintenance"]);
    assert_eq!(critical[0]["Name"], "Node Maintenance Mode");
    assert_eq!(critical[0]["Notes"], "kernel upgrade");
    assert_eq!(critical[0]["ServiceID"], "");

    s.kill9();
    let s = Server::start(&["--data-dir", data, "--node-name", NODE]);
    let (critical, _) = get_json(&c, s.url("/v1/health/state/critical")).await;
    assert_eq!(check_ids(&critical), ["_node_maintenance"]);
    assert_eq!(critical[0]["Notes"], "kernel upgrade");
    put_ok(&c, s.url("/v1/agent/maintenance?enable=false")).await;
    let (passing, _) = get_json(&c, s.url("/v1/health/service/web?passing")).await;
    assert_eq!(passing.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn agent_health_answers_with_status_codes() {
    let s = server();
    let c = http();
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1", "Check": {"CheckID": "t1", "TTL": "10m", "Status": "passing"}}),
    )
    .await;
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-2", "Check": {"CheckID": "t2", "TTL": "10m", "Status": "passing"}}),
    )
    .await;
    let by_id = |id: &str| s.url(&format!("/v1/agent/health/service/id/{id}"));

    let r = c.get(by_id("web-1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["AggregatedStatus"], "passing");
    assert_eq!(body["Service"]["ID"], "web-1");
    assert_eq!(body["Service"]["Service"], "web");
    assert_eq!(
        check_ids(&body["Checks"]),
        ["t1"],
        "no serfHealth: agent checks only"
    );

    put_ok(&c, s.url("/v1/agent/check/warn/t1")).await;
    let r = c.get(by_id("web-1")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let r = c
        .get(by_id("web-1"))
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "warning");

    // By name: every instance, and the worst status.
    let r = c
        .get(s.url("/v1/agent/health/service/name/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let all: Value = r.json().await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    put_ok(&c, s.url("/v1/agent/check/fail/t2")).await;
    let r = c
        .get(s.url("/v1/agent/health/service/name/web?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "critical");
    let r = c.get(by_id("web-2")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    // Unknown: 404, in both forms.
    let r = c.get(by_id("nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"AggregatedStatus": "critical", "Service": null, "Checks": null})
    );
    let r = c
        .get(s.url("/v1/agent/health/service/id/nope?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "ServiceId nope not found");
    let r = c
        .get(s.url("/v1/agent/health/service/name/nope?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "ServiceName nope Not Found");
    let r = c
        .get(s.url("/v1/agent/health/service/name/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let (status, text) = refused(
        c.get(s.url("/v1/agent/health/service/id/"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, text.trim()), (400, "Missing serviceID"));
}

#[tokio::test]
async fn catalog_register_and_deregister_on_the_servers_node() {
    let s = server();
    let c = http();
    let register = |body: Value| put(&c, s.url("/v1/catalog/register"), body);
    // A service and a check without a definition: its status is the registered one.
    let r = register(json!({
        "Node": NODE, "Address": "127.0.0.1",
        "Service": {"ID": "db-1", "Service": "db", "Port": 5432, "Tags": ["primary"]},
        "Check": {"CheckID": "db-ok", "Name": "db ok", "ServiceID": "db-1",
                  "Status": "passing", "Output": "all good"}
    }))
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!(true));
    let (health, _) = get_json(&c, s.url("/v1/health/service/db?passing")).await;
    assert_eq!(health[0]["Service"]["Port"], 5432);
    let check = &health[0]["Checks"][1];
    assert_eq!(check["CheckID"], "db-ok");
    assert_eq!(check["Output"], "all good");
    // Registering it again with another status changes it (what catalog clients do).
    let r = register(json!({
        "Node": NODE,
        "Checks": [{"CheckID": "db-ok", "Name": "db ok", "ServiceID": "db-1", "Status": "critical"}]
    }))
    .await;
    assert_eq!(r.status(), 200);
    let (passing, _) = get_json(&c, s.url("/v1/health/service/db?passing")).await;
    assert_eq!(passing, json!([]));
    // A check with a definition is run by this server, the agent of its node.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = register(json!({
        "Node": NODE,
        "Check": {"CheckID": "db-tcp", "Name": "db port", "ServiceID": "db-1",
                  "Definition": {"TCP": addr.to_string(), "Interval": "100ms", "Timeout": "1s",
                                 "HTTP": "", "GRPC": "", "TLSSkipVerify": false}}
    }))
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually(Duration::from_secs(5), "the TCP check passes", || async {
        let (checks, _) = get_json(&c, s.url("/v1/agent/checks")).await;
        checks["db-tcp"]["Status"] == "passing" && checks["db-tcp"]["Type"] == "tcp"
    })
    .await;

    // What is refused, with a reason.
    for (body, reason) in [
        (json!({"Service": {"Service": "x"}}), "Must provide node"),
        (
            json!({"Node": "elsewhere", "Service": {"Service": "x"}}),
            "is not this server's node",
        ),
        (
            json!({"Node": NODE, "Check": {"Name": "c", "ServiceID": "nope"}}),
            "does not exist",
        ),
        (
            json!({"Node": NODE, "Check": {"Name": "c", "Status": "sleepy"}}),
            "sleepy",
        ),
        (
            json!({"Node": NODE, "Service": {"Service": "bad name"}}),
            "service",
        ),
        (
            json!({"Node": NODE, "Check": {"Name": "s", "Definition": {"ScriptArgs": ["true"], "Interval": "1s"}}}),
            "not supported",
        ),
    ] {
        let (status, text) = refused(register(body.clone()).await).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(reason), "{body}: {text}");
    }
    let (status, text) = refused(
        c.put(s.url("/v1/catalog/register"))
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.starts_with("Request decode failed"), "{text}");

    // Deregistration: a check, a service, an unknown ID (true, as Consul), not the node.
    let deregister = |body: Value| put(&c, s.url("/v1/catalog/deregister"), body);
    let r = deregister(json!({"Node": NODE, "CheckID": "db-tcp"})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!(true));
    let (checks, _) = get_json(&c, s.url("/v1/agent/checks")).await;
    assert!(checks.get("db-tcp").is_none());
    let r = deregister(json!({"Node": NODE, "ServiceID": "db-1"})).await;
    assert_eq!(r.status(), 200);
    let (services, _) = get_json(&c, s.url("/v1/agent/services")).await;
    assert_eq!(services, json!({}));
    let r = deregister(json!({"Node": NODE, "ServiceID": "db-1"})).await;
    assert_eq!(r.status(), 200);
    let (status, text) = refused(deregister(json!({"Node": NODE})).await).await;
    assert_eq!(status, 400);
    assert!(text.contains("give ServiceID or CheckID"), "{text}");
    let (status, _) =
        refused(deregister(json!({"Node": "elsewhere", "ServiceID": "x"})).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn agent_members_and_host() {
    let s = server();
    let c = http();
    let (members, _) = get_json(&c, s.url("/v1/agent/members")).await;
    assert_eq!(members.as_array().unwrap().len(), 1);
    let m = &members[0];
    assert_eq!(m["Name"], NODE);
    assert_eq!(m["Addr"], "127.0.0.1");
    assert_eq!(m["Port"], 8301);
    assert_eq!(m["Status"], 1);
    assert_eq!(m["Tags"]["dc"], "dc1");
    assert_eq!(m["Tags"]["role"], "consul");
    for field in [
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ] {
        assert!(m[field].is_u64(), "{field}");
    }
    let (wan, _) = get_json(&c, s.url("/v1/agent/members?wan=1")).await;
    assert_eq!(wan[0]["Name"], format!("{NODE}.dc1"));
    assert_eq!(wan[0]["Port"], 8302);
    let (other, _) = get_json(&c, s.url("/v1/agent/members?segment=alpha")).await;
    assert_eq!(other, json!([]));
    let (status, text) = refused(
        c.get(s.url("/v1/agent/members?wan=1&segment=alpha"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, text.trim()),
        (400, "Cannot provide a segment with wan=true")
    );

    let (host, _) = get_json(&c, s.url("/v1/agent/host")).await;
    assert!(host["Memory"]["total"].as_u64().unwrap() > 0);
    assert!(host["Memory"]["available"].is_u64());
    assert!(!host["CPU"].as_array().unwrap().is_empty());
    assert!(host["CPU"][0]["modelName"].is_string());
    assert!(!host["Host"]["hostname"].as_str().unwrap().is_empty());
    assert_eq!(host["Host"]["os"], "linux");
    assert!(host["Disk"]["total"].as_u64().unwrap() > 0);
    assert_eq!(host["Disk"]["path"], "/");
    assert!(host["CollectionTime"].as_i64().unwrap() > 0);
    assert_eq!(host["Errors"], Value::Null);
}

fn content_hash(r: &reqwest::Response) -> String {
    r.headers()["x-consul-contenthash"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// GETs `url`, answering the content hash and the body.
async fn hashed(c: &reqwest::Client, url: String) -> (String, Value) {
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let hash = content_hash(&r);
    (hash, r.json().await.unwrap())
}

#[tokio::test]
async fn agent_listings_block_by_content_hash() {
    let s = server();
    let c = http();
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1", "Port": 80,
               "Check": {"CheckID": "t1", "TTL": "10m", "Status": "passing"}}),
    )
    .await;

    // /v1/agent/service/:id: the body carries the hash the header does (Consul's contract).
    let (hash, service) = hashed(&c, s.url("/v1/agent/service/web-1")).await;
    assert_eq!(service["ContentHash"], hash.as_str());
    let (again, _) = hashed(&c, s.url("/v1/agent/service/web-1")).await;
    assert_eq!(again, hash, "the same content has the same hash");
    let started = Instant::now();
    let (same, _) = hashed(
        &c,
        s.url(&format!("/v1/agent/service/web-1?hash={hash}&wait=300ms")),
    )
    .await;
    assert_eq!(same, hash);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/agent/service/web-1?hash={hash}&wait=30s"));
        tokio::spawn(async move { hashed(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished());
    register(
        &c,
        &s,
        json!({"Name": "web", "ID": "web-1", "Port": 81,
               "Check": {"CheckID": "t1", "TTL": "10m", "Status": "passing"}}),
    )
    .await;
    let (newer, service) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("woken by the re-registration")
        .unwrap();
    assert_ne!(newer, hash);
    assert_eq!(service["Port"], 81);
    let r = c
        .get(s.url("/v1/agent/service/nope?hash=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // /v1/agent/services: woken by a new instance.
    let (hash, _) = hashed(&c, s.url("/v1/agent/services")).await;
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/agent/services?hash={hash}&wait=30s"));
        tokio::spawn(async move { hashed(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished());
    register(&c, &s, json!({"Name": "db", "ID": "db-1"})).await;
    let (newer, services) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("woken by the registration")
        .unwrap();
    assert_ne!(newer, hash);
    assert!(services.get("db-1").is_some());

    // /v1/agent/checks: woken by a check changing status.
    let (hash, _) = hashed(&c, s.url("/v1/agent/checks")).await;
    let blocked = {
        let c = c.clone();
        let url = s.url(&format!("/v1/agent/checks?hash={hash}&wait=30s"));
        tokio::spawn(async move { hashed(&c, url).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished());
    put_ok(&c, s.url("/v1/agent/check/fail/t1")).await;
    let (newer, checks) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("woken by the check failing")
        .unwrap();
    assert_ne!(newer, hash);
    assert_eq!(checks["t1"]["Status"], "critical");
    let (status, _) = refused(
        c.get(s.url(&format!("/v1/agent/checks?hash={newer}&wait=soon")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
}
