//! `?filter=` (Consul's filter expressions) on every endpoint Consul filters, against the real
//! binary: each endpoint with a matching and a non-matching filter and its own selectors, the
//! operators, 400s with a position, and blocking queries with a filter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{Server, http, index_of};

const NODE: &str = "node-1";

struct Registry {
    server: Server,
    client: reqwest::Client,
}

impl Registry {
    /// A server with `web-1` (prod, passing), `web-2` (dev, critical) and `db-1` (prod, no
    /// checks).
    async fn start() -> Registry {
        let registry = Registry {
            server: Server::start(&["--dev", "--node-name", NODE]),
            client: http(),
        };
        registry
            .register(json!({
                "Name": "web", "ID": "web-1", "Address": "10.0.0.1", "Port": 8080,
                "Tags": ["v1", "primary"], "Meta": {"env": "prod", "version": "2"},
                "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 8080}},
                "Check": {"TTL": "30s", "Status": "passing"}
            }))
            .await;
        registry
            .register(json!({
                "Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2"],
                "Meta": {"env": "dev"}, "Check": {"TTL": "30s"}
            }))
            .await;
        registry
            .register(json!({
                "Name": "db", "ID": "db-1", "Port": 5432, "Tags": ["primary"],
                "Meta": {"env": "prod"}
            }))
            .await;
        registry
    }

    async fn register(&self, body: Value) {
        let r = self
            .client
            .put(self.server.url("/v1/agent/service/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn send(&self, path: &str, filter: &str) -> reqwest::Response {
        self.client
            .get(self.server.url(path))
            .query(&[("filter", filter)])
            .send()
            .await
            .unwrap()
    }

    /// `path` with `?filter=`: the answer and its index.
    async fn get(&self, path: &str, filter: &str) -> (Value, u64) {
        let r = self.send(path, filter).await;
        let status = r.status();
        let index = index_of(&r);
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{path} ?filter={filter}: {text}");
        (serde_json::from_str(&text).unwrap(), index)
    }

    async fn answer(&self, path: &str, filter: &str) -> Value {
        self.get(path, filter).await.0
    }

    /// A blocking read of `/v1/health/service/web` from `index` with `filter`, in the
    /// background: its answer, its index and how long it took.
    fn wait_on_web(
        &self,
        index: u64,
        wait: &str,
        filter: &'static str,
    ) -> tokio::task::JoinHandle<(Value, u64, Duration)> {
        let client = self.client.clone();
        let url = self
            .server
            .url(&format!("/v1/health/service/web?index={index}&wait={wait}"));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client
                .get(url)
                .query(&[("filter", filter)])
                .send()
                .await
                .unwrap();
            let index = index_of(&resp);
            let answer = resp.json::<Value>().await.unwrap();
            (answer, index, started.elapsed())
        })
    }

    /// The 400 answer's text.
    async fn refused(&self, path: &str, filter: &str) -> String {
        let r = self.send(path, filter).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{path} ?filter={filter}: {text}");
        text.trim().to_owned()
    }
}

/// The keys of an object answer (agent listings, `/v1/catalog/services`).
fn keys(answer: &Value) -> Vec<String> {
    answer.as_object().unwrap().keys().cloned().collect()
}

/// `field` (a JSON pointer) of each entry of a list answer.
fn each(answer: &Value, field: &str) -> Vec<String> {
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.pointer(field).unwrap().as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn agent_listings() {
    let r = Registry::start().await;
    let services = r.answer("/v1/agent/services", "Meta.env == prod").await;
    assert_eq!(keys(&services), ["db-1", "web-1"]);
    assert_eq!(services["web-1"]["Port"], 8080);
    let services = r.answer("/v1/agent/services", r#""v2" in Tags"#).await;
    assert_eq!(keys(&services), ["web-2"]);
    let none = r.answer("/v1/agent/services", "Service == cache").await;
    assert_eq!(none, json!({}));

    let checks = r.answer("/v1/agent/checks", "Status == critical").await;
    assert_eq!(keys(&checks), ["service:web-2"]);
    let checks = r
        .answer(
            "/v1/agent/checks",
            r#"ServiceName == web and "v1" in ServiceTags"#,
        )
        .await;
    assert_eq!(keys(&checks), ["service:web-1"]);
    let none = r.answer("/v1/agent/checks", "ServiceName == db").await;
    assert_eq!(none, json!({}));
}

#[tokio::test]
async fn catalog_reads() {
    let r = Registry::start().await;
    // Instances are filtered, then grouped by name with the tags of the matching ones only.
    let services = r
        .answer("/v1/catalog/services", "ServiceMeta.env == prod")
        .await;
    assert_eq!(
        services,
        json!({"db": ["primary"], "web": ["primary", "v1"]})
    );
    let services = r
        .answer("/v1/catalog/services", "ServicePort == 8081")
        .await;
    assert_eq!(services, json!({"web": ["v2"]}));
    let none = r
        .answer("/v1/catalog/services", "ServiceName == cache")
        .await;
    assert_eq!(none, json!({}));

    let web = r
        .answer("/v1/catalog/service/web", r#"ServiceMeta["env"] == "prod""#)
        .await;
    assert_eq!(each(&web, "/ServiceID"), ["web-1"]);
    let web = r
        .answer(
            "/v1/catalog/service/web",
            "NodeMeta is not empty and Node == \"node-1\"",
        )
        .await;
    assert_eq!(each(&web, "/ServiceID"), ["web-1", "web-2"]);
    let none = r
        .answer("/v1/catalog/service/web", "ServiceTags contains v9")
        .await;
    assert_eq!(none, json!([]));

    let nodes = r
        .answer(
            "/v1/catalog/nodes",
            r#"Node == "node-1" and "lan" in TaggedAddresses"#,
        )
        .await;
    assert_eq!(each(&nodes, "/Node"), [NODE]);
    let none = r.answer("/v1/catalog/nodes", "Datacenter == dc2").await;
    assert_eq!(none, json!([]));

    let node = r
        .answer(&format!("/v1/catalog/node/{NODE}"), "Service == db")
        .await;
    assert_eq!(node["Node"]["Node"], NODE);
    assert_eq!(keys(&node["Services"]), ["db-1"]);
    let node = r
        .answer(&format!("/v1/catalog/node/{NODE}"), "Port == 1")
        .await;
    assert_eq!(node["Services"], json!({}));
    let other = r.answer("/v1/catalog/node/elsewhere", "Port == 1").await;
    assert_eq!(other, Value::Null);

    let list = r
        .answer(
            &format!("/v1/catalog/node-services/{NODE}"),
            "TaggedAddresses.lan.Port == 8080",
        )
        .await;
    assert_eq!(each(&list["Services"], "/ID"), ["web-1"]);
    let list = r
        .answer(
            &format!("/v1/catalog/node-services/{NODE}"),
            "Weights.Passing == 7",
        )
        .await;
    assert_eq!(list["Services"], json!([]));
}

#[tokio::test]
async fn health_reads() {
    let r = Registry::start().await;
    let web = r
        .answer("/v1/health/service/web", "Service.Meta.env == prod")
        .await;
    assert_eq!(each(&web, "/Service/ID"), ["web-1"]);
    let web = r
        .answer("/v1/health/service/web", "Checks.Status == critical")
        .await;
    assert_eq!(each(&web, "/Service/ID"), ["web-2"]);
    let web = r
        .answer(
            "/v1/health/service/web",
            r#"Node.TaggedAddresses.lan is not empty"#,
        )
        .await;
    assert_eq!(web.as_array().unwrap().len(), 2);
    let none = r
        .answer("/v1/health/service/web", "Service.Meta.env == staging")
        .await;
    assert_eq!(none, json!([]));
    // With the other parameters: both apply.
    let (passing, _) = r
        .get(
            "/v1/health/service/web?passing&tag=v2",
            "Service.Port == 8081",
        )
        .await;
    assert_eq!(passing, json!([]));

    let checks = r.answer("/v1/health/checks/web", "Status == passing").await;
    assert_eq!(each(&checks, "/CheckID"), ["service:web-1"]);
    let none = r.answer("/v1/health/checks/web", "Status == warning").await;
    assert_eq!(none, json!([]));

    let state = r
        .answer(
            "/v1/health/state/any",
            "ServiceName == web and Status == critical",
        )
        .await;
    assert_eq!(each(&state, "/CheckID"), ["service:web-2"]);
    let state = r
        .answer("/v1/health/state/passing", "CheckID == serfHealth")
        .await;
    assert_eq!(each(&state, "/CheckID"), ["serfHealth"]);
    let none = r
        .answer("/v1/health/state/critical", "ServiceName == db")
        .await;
    assert_eq!(none, json!([]));

    let node = r
        .answer(&format!("/v1/health/node/{NODE}"), "ServiceID is empty")
        .await;
    assert_eq!(each(&node, "/CheckID"), ["serfHealth"]);
    let none = r
        .answer(&format!("/v1/health/node/{NODE}"), "Name == nope")
        .await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn operators() {
    let r = Registry::start().await;
    let cases: &[(&str, &[&str])] = &[
        (r#""primary" in Service.Tags"#, &["web-1"]),
        ("Service.Tags contains v2", &["web-2"]),
        ("v2 not in Service.Tags", &["web-1"]),
        (r#"Service.Service matches "^w.b$""#, &["web-1", "web-2"]),
        (r#"Service.Meta.env not matches "^p""#, &["web-2"]),
        (r#""-2" in Service.ID"#, &["web-2"]),
        ("Service.Meta.version is empty", &["web-2"]),
        ("Service.Meta.version is not empty", &["web-1"]),
        ("Service.Tags is empty", &[]),
        (r#""env" in Service.Meta"#, &["web-1", "web-2"]),
        ("not Service.Meta.env == prod", &["web-2"]),
        (
            "not (Service.Meta.env == prod or Service.Port == 8081)",
            &[],
        ),
        (
            r#"Service.Port == 8080 or "v2" in Service.Tags"#,
            &["web-1", "web-2"],
        ),
        (r#"Service.Port == 8080 and "v2" in Service.Tags"#, &[]),
        ("Service.Port != 8080", &["web-2"]),
        ("Service.TaggedAddresses.lan.Port == 8080", &["web-1"]),
        ("Service.Weights.Passing == 1", &["web-1", "web-2"]),
        ("Service.EnableTagOverride == false", &["web-1", "web-2"]),
        // Fields a plain service does not have read as Go's zero values, as in Consul.
        (r#"Service.Kind == """#, &["web-1", "web-2"]),
        ("Service.Proxy.Upstreams is empty", &["web-1", "web-2"]),
    ];
    for (filter, want) in cases {
        let web = r.answer("/v1/health/service/web", filter).await;
        assert_eq!(each(&web, "/Service/ID"), *want, "{filter}");
    }
    // The same expression however it is spelled.
    let a = r
        .answer("/v1/health/service/web", "Service.Meta.env == prod")
        .await;
    let b = r
        .answer(
            "/v1/health/service/web",
            "( Service.Meta[\"env\"] == `prod` )",
        )
        .await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn bad_filters_are_400_with_a_position() {
    let r = Registry::start().await;
    let text = r.refused("/v1/health/service/web", "Service.Port ==").await;
    assert!(text.starts_with("invalid filter: 1:16: "), "{text}");
    let text = r.refused("/v1/health/service/web", "Foo == 1").await;
    assert_eq!(text, r#"invalid filter: 1:1: Selector "Foo" is not valid"#);
    let text = r
        .refused(
            "/v1/health/service/web",
            r#"Service.Port == 80 and Service.Meta.x.y == "z""#,
        )
        .await;
    assert!(
        text.starts_with(r#"invalid filter: 1:24: Selector "Service.Meta.x.y""#),
        "{text}"
    );
    let text = r
        .refused("/v1/health/service/web", "Service.Tags == v1")
        .await;
    assert!(text.contains(r#"operator "==" is not valid"#), "{text}");
    let text = r
        .refused("/v1/health/service/web", "Service.Port == http")
        .await;
    assert!(text.contains("is not an integer"), "{text}");
    let text = r
        .refused("/v1/health/service/web", r#"Service.Service matches "(""#)
        .await;
    assert!(text.contains("invalid regular expression"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");

    // Each endpoint has its own selectors.
    let text = r.refused("/v1/agent/services", "ServiceName == web").await;
    assert!(
        text.contains(r#"Selector "ServiceName" is not valid"#),
        "{text}"
    );
    r.answer("/v1/health/checks/web", "ServiceName == web")
        .await;

    // Every filtering endpoint refuses a bad filter, whatever else it is asked.
    for path in [
        "/v1/agent/services",
        "/v1/agent/checks",
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/catalog/nodes",
        "/v1/catalog/node/node-1",
        "/v1/catalog/node/elsewhere",
        "/v1/catalog/node-services/node-1",
        "/v1/health/service/web",
        "/v1/health/checks/web",
        "/v1/health/state/any",
        "/v1/health/node/node-1",
    ] {
        let text = r.refused(path, "Nope == 1").await;
        assert!(
            text.contains(r#"1:1: Selector "Nope" is not valid"#),
            "{path}: {text}"
        );
    }

    // An empty filter is no filter.
    let all = r.answer("/v1/agent/services", "").await;
    assert_eq!(keys(&all), ["db-1", "web-1", "web-2"]);
    // Endpoints Consul does not filter refuse one rather than ignore it.
    let text = r.refused("/v1/kv/anything", "Key == x").await;
    assert!(text.contains("does not support filter"), "{text}");
}

#[tokio::test]
async fn blocking_queries_with_a_filter() {
    let r = Registry::start().await;
    let filter = "Service.Meta.env == prod";
    let (web, index) = r.get("/v1/health/service/web", filter).await;
    assert_eq!(each(&web, "/Service/ID"), ["web-1"]);

    // Two waiters with the same filter, spelled differently: both woken by a change that
    // affects what they see, with the same answer.
    let first = r.wait_on_web(index, "30s", "Service.Meta.env == prod");
    let second = r.wait_on_web(index, "30s", r#"Service.Meta["env"] == "prod""#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "nothing changed yet"
    );
    r.register(json!({"Name": "web", "ID": "web-3", "Port": 8082, "Meta": {"env": "prod"}}))
        .await;
    let wait = Duration::from_secs(5);
    let (a, a_index, _) = tokio::time::timeout(wait, first)
        .await
        .expect("woken")
        .unwrap();
    let (b, b_index, _) = tokio::time::timeout(wait, second)
        .await
        .expect("woken")
        .unwrap();
    assert!(a_index > index);
    assert_eq!((&a, a_index), (&b, b_index));
    assert_eq!(each(&a, "/Service/ID"), ["web-1", "web-3"]);

    // The index stays the service's (as in Consul): a change the filter leaves out wakes the
    // waiter too, with the same entries at the newer index.
    let blocked = r.wait_on_web(a_index, "30s", filter);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished());
    r.register(json!({"Name": "web", "ID": "web-2", "Port": 9090, "Meta": {"env": "dev"}}))
        .await;
    let (same, newer, _) = tokio::time::timeout(wait, blocked)
        .await
        .expect("woken")
        .unwrap();
    assert!(newer > a_index);
    assert_eq!(same, a);

    // Another service's change does not wake it: it waits out its full second.
    let blocked = r.wait_on_web(newer, "1s", filter);
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.register(json!({"Name": "db", "ID": "db-2", "Meta": {"env": "prod"}}))
        .await;
    let (_, index, took) = tokio::time::timeout(wait, blocked).await.unwrap().unwrap();
    assert_eq!(index, newer, "the wait ran out with the same index");
    assert!(
        took >= Duration::from_secs(1),
        "answered after {took:?}, before its wait ran out"
    );
}

#[tokio::test]
async fn checks_nobody_probes_have_no_timeout() {
    let r = Registry::start().await;
    r.register(json!({"Name": "api", "ID": "api-1",
                      "Check": {"HTTP": "http://127.0.0.1:1/health", "Interval": "10s"}}))
        .await;
    let url = r
        .server
        .url("/v1/agent/service/maintenance/web-2?enable=true&reason=upgrade");
    let put = r.client.put(url).send().await.unwrap();
    assert_eq!(put.status(), 200);

    let maintenance = r
        .answer("/v1/health/checks/web", "Type == maintenance")
        .await;
    assert_eq!(
        each(&maintenance, "/CheckID"),
        ["_service_maintenance:web-2"]
    );
    assert_eq!(
        maintenance[0]["Timeout"], "",
        "a maintenance check is not probed"
    );
    assert_eq!(maintenance[0]["Notes"], "upgrade");

    let checks = r.answer("/v1/agent/checks", "").await;
    let timeouts: BTreeSet<(String, String)> = checks
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap().to_owned(),
                c["Timeout"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("_service_maintenance:web-2", ""),
        ("service:api-1", "10s"),
        ("service:web-1", ""),
        ("service:web-2", ""),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(timeouts, want);
    // Only the probed one has a timeout to filter on.
    let probed = r.answer("/v1/agent/checks", "Timeout is not empty").await;
    assert_eq!(keys(&probed), ["service:api-1"]);
}
