//! Expressions from Consul's filtering documentation and of the kind its endpoint tests use,
//! run over the documentation's own example data, with the results Consul gives.

mod common;

use common::{CatalogEntry, Check, HealthEntry, Node, Service, map, strings};
use trellis_filter::{Filter, Schema, Selectable, schema};

fn matching<'a, T: Selectable>(
    text: &str,
    schema: &Schema,
    entries: &'a [(&'a str, T)],
) -> Vec<&'a str> {
    let filter =
        Filter::parse(text, schema).unwrap_or_else(|e| panic!("{text:?} should be valid: {e}"));
    entries
        .iter()
        .filter(|(_, e)| filter.matches(e))
        .map(|(id, _)| *id)
        .collect()
}

/// The three redis instances of the "Agent API" example in Consul's filtering docs.
fn agent_services() -> Vec<(&'static str, Service)> {
    let redis = |id: &str, tags: &[&str], meta: &[(&str, &str)], port| Service {
        id: id.into(),
        service: "redis".into(),
        tags: strings(tags),
        meta: map(meta),
        port,
        ..Service::default()
    };
    vec![
        (
            "redis1",
            redis(
                "redis1",
                &["primary", "production"],
                &[("env", "production"), ("foo", "bar")],
                1234,
            ),
        ),
        (
            "redis2",
            redis(
                "redis2",
                &["secondary", "production"],
                &[("env", "production"), ("foo", "bar")],
                1235,
            ),
        ),
        (
            "redis3",
            redis("redis3", &["primary", "qa"], &[("env", "qa")], 1234),
        ),
    ]
}

#[test]
fn agent_services_examples() {
    let entries = agent_services();
    let table: &[(&str, &[&str])] = &[
        // the documented example
        (r#"Meta.env == "qa""#, &["redis3"]),
        ("Meta.env == qa", &["redis3"]),
        (r#"Meta["env"] == `qa`"#, &["redis3"]),
        (r#""primary" in Tags"#, &["redis1", "redis3"]),
        (r#"Tags contains "production""#, &["redis1", "redis2"]),
        (r#""qa" not in Tags"#, &["redis1", "redis2"]),
        ("Port == 1234", &["redis1", "redis3"]),
        ("Port != 1234", &["redis2"]),
        (
            r#"Service == "redis" and not "qa" in Tags"#,
            &["redis1", "redis2"],
        ),
        ("foo in Meta", &["redis1", "redis2"]),
        ("Meta.foo == bar", &["redis1", "redis2"]),
        ("Meta.foo != bar", &["redis3"]),
        ("Meta.foo is empty", &["redis3"]),
        ("ID matches `^redis[12]$`", &["redis1", "redis2"]),
        (r#"ID not matches "3""#, &["redis1", "redis2"]),
        (
            "Weights.Passing == 1 and Weights.Warning == 1",
            &["redis1", "redis2", "redis3"],
        ),
        (
            "EnableTagOverride == false",
            &["redis1", "redis2", "redis3"],
        ),
        (r#"Kind == """#, &["redis1", "redis2", "redis3"]),
        ("Address is empty", &["redis1", "redis2", "redis3"]),
        ("Tags is empty", &[]),
        (
            r#"(Meta.env == qa or Port == 1235) and "primary" not in Tags"#,
            &["redis2"],
        ),
    ];
    for (text, want) in table {
        assert_eq!(
            matching(text, &schema::AGENT_SERVICES, &entries),
            *want,
            "{text}"
        );
    }
}

/// The three `api-internal` instances of the "Catalog API" example in Consul's filtering docs.
fn catalog_nodes() -> Vec<(Node, Service)> {
    let pair =
        |id: &str, node: &str, addr: &str, node_meta: &[(&str, &str)], tags: &[&str], env| {
            (
                Node {
                    id: id.into(),
                    node: node.into(),
                    address: addr.into(),
                    datacenter: "dc1".into(),
                    meta: map(node_meta),
                    ..Node::default()
                },
                Service {
                    id: "api-internal".into(),
                    service: "api-internal".into(),
                    tags: strings(tags),
                    meta: map(&[("environment", env)]),
                    port: 9090,
                    ..Service::default()
                },
            )
        };
    vec![
        pair(
            "b4f64e8c-5c7d-11e9-bf68-8c8590bd0966",
            "node-1",
            "198.18.0.1",
            &[("agent", "true"), ("arch", "i386"), ("os", "darwin")],
            &["tag"],
            "qa",
        ),
        pair(
            "b4faf93a-5c7d-11e9-840d-8c8590bd0966",
            "node-2",
            "198.18.0.2",
            &[("arch", "arm"), ("os", "linux")],
            &["test", "tag"],
            "production",
        ),
        pair(
            "b4fbe7f4-5c7d-11e9-ac82-8c8590bd0966",
            "node-4",
            "198.18.0.4",
            &[("arch", "i386"), ("os", "freebsd")],
            &[],
            "qa",
        ),
    ]
}

#[test]
fn catalog_service_examples() {
    let data = catalog_nodes();
    let entries: Vec<(&str, CatalogEntry<'_>)> = data
        .iter()
        .map(|(node, service)| (node.node.as_str(), CatalogEntry { node, service }))
        .collect();
    let table: &[(&str, &[&str])] = &[
        // the documented example
        (r#"NodeMeta.os == "linux""#, &["node-2"]),
        ("ServiceMeta.environment == qa", &["node-1", "node-4"]),
        ("ServiceTags is empty", &["node-4"]),
        ("tag in ServiceTags", &["node-1", "node-2"]),
        (r#"NodeMeta.agent == "true""#, &["node-1"]),
        ("agent in NodeMeta", &["node-1"]),
        (r#"NodeMeta.agent != "true""#, &["node-2", "node-4"]),
        (
            r"Address matches `^198\.18\.0\.[12]$`",
            &["node-1", "node-2"],
        ),
        ("TaggedAddresses is empty", &["node-1", "node-2", "node-4"]),
        (
            "ServicePort == 9090 and NodeMeta.arch != arm",
            &["node-1", "node-4"],
        ),
        (
            r#"ServiceName == "api-internal" and Datacenter == dc1"#,
            &["node-1", "node-2", "node-4"],
        ),
        (r#"ID contains "840d""#, &["node-2"]),
        (r#"ServiceAddress == """#, &["node-1", "node-2", "node-4"]),
        (
            "ServiceWeights.Passing == 1",
            &["node-1", "node-2", "node-4"],
        ),
        (
            "Node matches `-[14]$` and not test in ServiceTags",
            &["node-1", "node-4"],
        ),
    ];
    for (text, want) in table {
        assert_eq!(
            matching(text, &schema::CATALOG_SERVICE, &entries),
            *want,
            "{text}"
        );
    }
}

#[test]
fn health_node_examples() {
    // the "Health API" example: the checks of node-1
    let entries = vec![
        (
            "node-health",
            Check {
                node: "node-1".into(),
                check_id: "node-health".into(),
                name: "Node level check".into(),
                status: "critical".into(),
                ..Check::default()
            },
        ),
        (
            "svc-web-health",
            Check {
                node: "node-1".into(),
                check_id: "svc-web-health".into(),
                name: "Service level check - web".into(),
                status: "warning".into(),
                service_name: "web".into(),
                ..Check::default()
            },
        ),
    ];
    let table: &[(&str, &[&str])] = &[
        // the documented example
        (r#"ServiceName != """#, &["svc-web-health"]),
        ("Status == critical", &["node-health"]),
        (r#"Name contains "web""#, &["svc-web-health"]),
        ("CheckID matches `^svc-`", &["svc-web-health"]),
        ("ServiceTags is empty", &["node-health", "svc-web-health"]),
        (
            r#"Node == "node-1" and Status != passing"#,
            &["node-health", "svc-web-health"],
        ),
        (
            "ServiceID is empty and ServiceName is not empty",
            &["svc-web-health"],
        ),
    ];
    for (text, want) in table {
        assert_eq!(
            matching(text, &schema::HEALTH_CHECKS, &entries),
            *want,
            "{text}"
        );
    }
}

#[test]
fn health_service_examples() {
    // Instances as Consul's health endpoint tests set them up: two nodes, tagged services with
    // a version in their meta, one critical check.
    let instance = |node: &str, version: &str, tags: &[&str], status: &str| HealthEntry {
        node: Node {
            node: node.into(),
            address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            meta: map(&[("os", if node == "foo" { "linux" } else { "windows" })]),
            ..Node::default()
        },
        service: Service {
            id: format!("db-{node}"),
            service: "db".into(),
            tags: strings(tags),
            meta: map(&[("version", version)]),
            port: 5000,
            ..Service::default()
        },
        checks: vec![
            Check {
                node: node.into(),
                check_id: "serfHealth".into(),
                status: "passing".into(),
                ..Check::default()
            },
            Check {
                node: node.into(),
                check_id: format!("service:db-{node}"),
                status: status.into(),
                service_id: format!("db-{node}"),
                service_name: "db".into(),
                service_tags: strings(tags),
                ..Check::default()
            },
        ],
    };
    let entries = vec![
        ("foo", instance("foo", "1", &["primary", "v1"], "passing")),
        ("bar", instance("bar", "2", &["replica", "v2"], "critical")),
    ];
    let table: &[(&str, &[&str])] = &[
        (r#"Node.Node == "foo" and v1 in Service.Tags"#, &["foo"]),
        ("Service.Meta.version == 2", &["bar"]),
        (r#"Service.Meta.version == "1""#, &["foo"]),
        ("Checks.Status == critical", &["bar"]),
        ("Checks.Status == passing", &["foo", "bar"]),
        ("not Checks.Status != passing", &["foo"]),
        (r#"Node.Meta.os == "windows""#, &["bar"]),
        ("primary in Checks.ServiceTags", &["foo"]),
        (
            r#"Checks.ServiceName == db and Checks.Status == critical"#,
            &["bar"],
        ),
        (
            "Service.Port == 5000 and Node.Datacenter == dc1",
            &["foo", "bar"],
        ),
        ("Service.Meta.nope is empty", &["foo", "bar"]),
    ];
    for (text, want) in table {
        assert_eq!(
            matching(text, &schema::HEALTH_SERVICE, &entries),
            *want,
            "{text}"
        );
    }
}
