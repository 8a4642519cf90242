//! Fidelity to Consul of what the registry already serves (issue 16, item 1), against the real
//! binary: names, status codes, `/v1/agent/self`, which empty fields are left out, the server's
//! own `consul` service, and the `dc`/`ns`/`partition`/`peer` parameters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Server, http};

async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn put(c: &reqwest::Client, url: String, body: Value) -> (u16, String) {
    let r = c.put(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn any_printable_service_name_is_accepted_as_in_consul() {
    let s = Server::dev();
    let c = http();
    let name = "app#127.0.0.1#3000";
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": name, "Port": 3000}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let encoded = "app%23127.0.0.1%233000";
    let (status, health) = get(&c, s.url(&format!("/v1/health/service/{encoded}"))).await;
    assert_eq!(status, 200);
    assert_eq!(health[0]["Service"]["Service"], name);
    let (_, catalog) = get(&c, s.url(&format!("/v1/catalog/service/{encoded}"))).await;
    assert_eq!(catalog[0]["ServiceName"], name);
    assert_eq!(catalog[0]["ServicePort"], 3000);
    let (_, services) = get(&c, s.url("/v1/catalog/services")).await;
    assert!(services.get(name).is_some(), "{services}");
    let (_, agent) = get(&c, s.url("/v1/agent/services")).await;
    assert_eq!(agent[name]["Service"], name);

    // A name with a space needs an ID usable in paths; the name itself is fine.
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "Billing API", "ID": "billing-1"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // Empty, control characters and overlong names are still refused.
    for bad in [
        json!({"Name": ""}),
        json!({"Name": "a\u{1}b", "ID": "x"}),
        json!({"Name": "n".repeat(129), "ID": "x"}),
    ] {
        let (status, text) = put(&c, s.url("/v1/agent/service/register"), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
}

#[tokio::test]
async fn check_on_a_missing_service_is_404_as_in_consul() {
    let s = Server::dev();
    let c = http();
    let (status, text) = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "c", "TTL": "10s", "ServiceID": "nope"}),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(text.trim(), r#"ServiceID "nope" does not exist"#);
    // Other invalid checks stay 400.
    let (status, _) = put(&c, s.url("/v1/agent/check/register"), json!({"TTL": "5s"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn agent_self_reports_consul_stats_and_member() {
    let s = Server::dev();
    let c = http();
    let (_, leader) = get(&c, s.url("/v1/status/leader")).await;
    let (status, me) = get(&c, s.url("/v1/agent/self")).await;
    assert_eq!(status, 200);
    let consul = &me["Stats"]["consul"];
    assert_eq!(consul["leader_addr"], leader);
    assert_eq!(consul["server"], "true");
    assert_eq!(consul["leader"], "true");
    assert_eq!(consul["bootstrap"], "true");
    assert_eq!(consul["known_datacenters"], "1");
    assert_eq!(consul["acl"], "disabled");
    assert!(me["Stats"]["build"]["version"].is_string());
    let member = &me["Member"];
    assert_eq!(member["Name"], me["Config"]["NodeName"]);
    assert!(member["Addr"].is_string());
    assert_eq!(member["Port"], 8301);
    assert_eq!(member["Status"], 1);
    assert_eq!(member["Tags"]["role"], "consul");
    for field in [
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ] {
        assert!(member[field].is_u64(), "{field}: {member}");
    }
}

#[tokio::test]
async fn empty_fields_are_left_out_where_consul_leaves_them_out() {
    let s = Server::dev();
    let c = http();
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "plain", "Check": {"TTL": "30s"}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "tagged", "Port": 80,
               "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // api.AgentService: TaggedAddresses omitempty; Port always there.
    let (_, agent) = get(&c, s.url("/v1/agent/services")).await;
    assert!(agent["plain"].get("TaggedAddresses").is_none(), "{agent}");
    assert_eq!(agent["plain"]["Port"], 0);
    assert_eq!(agent["tagged"]["TaggedAddresses"]["lan"]["Port"], 80);
    let (_, one) = get(&c, s.url("/v1/agent/service/plain")).await;
    assert!(one.get("TaggedAddresses").is_none(), "{one}");

    // structs.NodeService: TaggedAddresses and Port omitempty.
    let (_, health) = get(&c, s.url("/v1/health/service/plain")).await;
    let service = &health[0]["Service"];
    assert!(service.get("TaggedAddresses").is_none(), "{service}");
    assert!(service.get("Port").is_none(), "{service}");
    let (_, health) = get(&c, s.url("/v1/health/service/tagged")).await;
    assert_eq!(health[0]["Service"]["Port"], 80);

    // structs.ServiceNode: ServiceTaggedAddresses omitempty, ServicePort always there.
    let (_, catalog) = get(&c, s.url("/v1/catalog/service/plain")).await;
    assert!(catalog[0].get("ServiceTaggedAddresses").is_none());
    assert_eq!(catalog[0]["ServicePort"], 0);
    // ... and the fields Consul always prints for a service that is no proxy.
    let no_proxy = json!({"Mode": "", "MeshGateway": {}, "Expose": {}});
    assert_eq!(catalog[0]["ServiceProxy"], no_proxy);
    assert_eq!(catalog[0]["ServiceConnect"], json!({}));
    assert_eq!(catalog[0]["ServiceSocketPath"], "");
    assert!(catalog[0]["ServiceLocality"].is_null());
    let (_, health) = get(&c, s.url("/v1/health/service/plain")).await;
    assert_eq!(health[0]["Service"]["Proxy"], no_proxy);
    assert_eq!(health[0]["Service"]["Connect"], json!({}));
    assert!(health[0]["Service"].get("SocketPath").is_none());

    // structs.HealthCheck: ExposedPort and Definition always there; a TTL check's definition
    // is empty.
    let (_, checks) = get(&c, s.url("/v1/agent/checks")).await;
    let check = &checks["service:plain"];
    assert_eq!(check["ExposedPort"], 0, "{check}");
    assert_eq!(check["Definition"], json!({}), "{check}");
    let (_, checks) = get(&c, s.url("/v1/health/checks/plain")).await;
    assert_eq!(checks[0]["Definition"], json!({}));
    // An agent's probed check prints its interval at the top level, and `{}` as its
    // definition too (Consul fills it only for catalog-registered definitions).
    let (status, text) = put(
        &c,
        s.url("/v1/agent/check/register"),
        json!({"Name": "tcp", "TCP": "127.0.0.1:1", "Interval": "10s", "ServiceID": "plain"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, checks) = get(&c, s.url("/v1/agent/checks")).await;
    assert_eq!(checks["tcp"]["Interval"], "10s");
    assert_eq!(checks["tcp"]["Definition"], json!({}));
}

#[tokio::test]
async fn the_server_lists_itself_as_the_consul_service() {
    let s = Server::dev();
    let c = http();
    let (_, services) = get(&c, s.url("/v1/catalog/services")).await;
    assert_eq!(services["consul"], json!([]), "{services}");

    let (status, catalog) = get(&c, s.url("/v1/catalog/service/consul")).await;
    assert_eq!(status, 200);
    assert_eq!(catalog.as_array().unwrap().len(), 1, "{catalog}");
    assert_eq!(catalog[0]["ServiceID"], "consul");
    assert_eq!(catalog[0]["ServicePort"], 8300);
    assert_eq!(catalog[0]["ServiceTags"], json!([]));
    assert_eq!(catalog[0]["ServiceMeta"]["raft_version"], "3");
    assert!(catalog[0]["ServiceMeta"]["version"].is_string());

    let (_, health) = get(&c, s.url("/v1/health/service/consul?passing")).await;
    assert_eq!(health.as_array().unwrap().len(), 1, "{health}");
    assert_eq!(health[0]["Service"]["Port"], 8300);
    let checks = health[0]["Checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["CheckID"], "serfHealth");

    // Filters see it too; it is no agent-local service.
    let (_, filtered) = get(
        &c,
        s.url("/v1/catalog/services?filter=ServiceName%20%3D%3D%20%22consul%22"),
    )
    .await;
    assert_eq!(filtered, json!({"consul": []}));
    let (_, agent) = get(&c, s.url("/v1/agent/services")).await;
    assert!(agent.get("consul").is_none(), "{agent}");

    // The node listings name it, port 8300, and their filters see it.
    let (_, me) = get(&c, s.url("/v1/agent/self")).await;
    let node = me["Config"]["NodeName"].as_str().unwrap().to_owned();
    let (_, by_id) = get(&c, s.url(&format!("/v1/catalog/node/{node}"))).await;
    assert_eq!(by_id["Services"]["consul"]["Port"], 8300, "{by_id}");
    assert_eq!(by_id["Services"]["consul"]["Service"], "consul");
    let (_, list) = get(&c, s.url(&format!("/v1/catalog/node-services/{node}"))).await;
    assert_eq!(list["Services"][0]["ID"], "consul", "{list}");
    assert_eq!(list["Services"][0]["Port"], 8300);
    let (_, none) = get(
        &c,
        s.url(&format!(
            "/v1/catalog/node-services/{node}?filter=Port%20%21%3D%208300"
        )),
    )
    .await;
    assert_eq!(none["Services"], json!([]), "{none}");

    // A registered instance with the ID `consul` takes its place.
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "consul", "ID": "consul", "Port": 9999}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, list) = get(&c, s.url(&format!("/v1/catalog/node-services/{node}"))).await;
    let list = list["Services"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["Port"], 9999);
    let (status, _) = put(&c, s.url("/v1/agent/service/deregister/consul"), json!({})).await;
    assert_eq!(status, 200);

    // Every read follows the same rule, also when the instance with the ID `consul` belongs
    // to another service: the server's own instance is then shown nowhere.
    let (health_before, _) = get(&c, s.url("/v1/health/service/consul")).await;
    assert_eq!(health_before, 200);
    let (status, text) = put(
        &c,
        s.url("/v1/agent/service/register"),
        json!({"Name": "web", "ID": "consul", "Port": 7777}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, services) = get(&c, s.url("/v1/catalog/services")).await;
    assert!(services.get("consul").is_none(), "{services}");
    let (_, filtered) = get(
        &c,
        s.url("/v1/catalog/services?filter=ServicePort%20%3D%3D%208300"),
    )
    .await;
    assert_eq!(filtered, json!({}), "{filtered}");
    let (_, health) = get(&c, s.url("/v1/health/service/consul")).await;
    assert_eq!(health, json!([]), "the watched consul view is republished");
    let (_, list) = get(&c, s.url(&format!("/v1/catalog/node-services/{node}"))).await;
    let list = list["Services"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (&list[0]["Service"], &list[0]["Port"]),
        (&json!("web"), &json!(7777))
    );
}

#[tokio::test]
async fn other_datacenters_and_enterprise_scopes_are_refused_as_consul_ce_does() {
    let s = Server::dev();
    let c = http();
    for path in [
        "/v1/catalog/nodes?dc=dc2",
        "/v1/catalog/services?dc=dc2",
        "/v1/health/service/consul?dc=dc2",
        "/v1/kv/x?dc=dc2",
        "/v1/status/leader?dc=dc2",
        "/v1/status/peers?dc=dc2",
    ] {
        let (status, body) = get(&c, s.url(path)).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert!(
            body.as_str().unwrap().contains("No path to datacenter"),
            "{path}: {body}"
        );
    }
    let (status, _) = get(&c, s.url("/v1/catalog/nodes?dc=dc1")).await;
    assert_eq!(status, 200);

    for (param, feature) in [("ns", "Namespaces"), ("partition", "Partitions")] {
        for path in [
            "/v1/catalog/nodes",
            "/v1/catalog/services",
            "/v1/health/service/consul",
            "/v1/kv/x",
        ] {
            let url = s.url(&format!("{path}?{param}=default"));
            let (status, body) = get(&c, url).await;
            assert_eq!(status, 400, "{path}?{param}: {body}");
            let text = body.as_str().unwrap();
            assert!(
                text.contains(&format!("Invalid query parameter: \"{param}\""))
                    && text.contains(&format!("{feature} are a Consul Enterprise feature")),
                "{text}"
            );
        }
    }

    // This server has no cluster peers: what a peer imported is nothing.
    let (status, body) = get(&c, s.url("/v1/health/service/consul?peer=other")).await;
    assert_eq!((status, body), (200, json!([])));
    let (_, body) = get(&c, s.url("/v1/catalog/service/consul?peer=other")).await;
    assert_eq!(body, json!([]));
    let (_, body) = get(&c, s.url("/v1/catalog/services?peer=other")).await;
    assert_eq!(body, json!({}));
    let (_, body) = get(&c, s.url("/v1/catalog/nodes?peer=other")).await;
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn enterprise_scope_headers_are_refused_on_every_endpoint_as_consul_ce_does() {
    let s = Server::dev();
    let c = http();
    for (header, feature) in [
        ("X-Consul-Namespace", "Namespaces"),
        ("X-Consul-Partition", "Partitions"),
    ] {
        for (method, path) in [
            ("GET", "/v1/catalog/nodes"),
            ("GET", "/v1/catalog/services"),
            ("GET", "/v1/health/service/consul"),
            ("GET", "/v1/catalog/node-services/x"),
            ("GET", "/v1/agent/services"),
            ("GET", "/v1/agent/self"),
            ("GET", "/v1/status/leader"),
            ("GET", "/v1/kv/x"),
            ("PUT", "/v1/kv/x"),
            ("PUT", "/v1/agent/service/register"),
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = c
                .request(method.clone(), s.url(path))
                .header(header, "default")
                .body(r#"{"Name": "web"}"#)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 400, "{method} {path} with {header}: {text}");
            assert_eq!(
                text.trim(),
                format!("Invalid header: \"{header}\" - {feature} are a Consul Enterprise feature"),
                "{method} {path}"
            );
        }
        // An empty header is no scope, as in Consul.
        let r = c
            .get(s.url("/v1/catalog/services"))
            .header(header, "")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // Nothing was written through a refused request.
    let (status, _) = get(&c, s.url("/v1/kv/x")).await;
    assert_eq!(status, 404);
    let (_, agent) = get(&c, s.url("/v1/agent/services")).await;
    assert_eq!(agent, json!({}));
    // The header is checked before the query parameter, as in Consul.
    let r = c
        .get(s.url("/v1/catalog/services?ns=a"))
        .header("X-Consul-Namespace", "b")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().starts_with("Invalid header"));
}

#[tokio::test]
async fn node_reads_print_services_as_a_health_entry_does() {
    let s = Server::dev();
    let c = http();
    for body in [
        json!({"Name": "plain"}),
        json!({"Name": "tagged", "Port": 80,
               "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}}}),
    ] {
        let (status, text) = put(&c, s.url("/v1/agent/service/register"), body).await;
        assert_eq!(status, 200, "{text}");
    }
    let (_, me) = get(&c, s.url("/v1/agent/self")).await;
    let node = me["Config"]["NodeName"].as_str().unwrap().to_owned();
    let no_proxy = json!({"Mode": "", "MeshGateway": {}, "Expose": {}});

    let (status, by_id) = get(&c, s.url(&format!("/v1/catalog/node/{node}"))).await;
    assert_eq!(status, 200, "{by_id}");
    let services = &by_id["Services"];
    let (_, list) = get(&c, s.url(&format!("/v1/catalog/node-services/{node}"))).await;
    let list = list["Services"].as_array().unwrap().clone();
    let ids: Vec<&str> = list.iter().map(|s| s["ID"].as_str().unwrap()).collect();
    // The server's own `consul` service is listed too, in ID order, as Consul lists it.
    assert_eq!(ids, ["consul", "plain", "tagged"]);
    assert_eq!(services["consul"]["Port"], 8300);
    assert_eq!(list[0]["Port"], 8300);
    assert_eq!(list[0]["Service"], "consul");

    // The same shape as a health entry's `Service` (structs.NodeService).
    for (listed, id) in list.iter().map(|s| (s, s["ID"].as_str().unwrap())) {
        assert_eq!(&services[id], listed, "{id}");
        let (_, health) = get(&c, s.url(&format!("/v1/health/service/{id}"))).await;
        assert_eq!(&health[0]["Service"], listed, "{id}");
        assert_eq!(listed["Proxy"], no_proxy);
        assert_eq!(listed["Connect"], json!({}));
    }
    assert!(services["plain"].get("TaggedAddresses").is_none());
    assert!(services["plain"].get("Port").is_none());
    assert_eq!(services["tagged"]["Port"], 80);
    assert_eq!(services["tagged"]["TaggedAddresses"]["lan"]["Port"], 80);
}
