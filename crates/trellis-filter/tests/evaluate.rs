//! The evaluator: each operator on strings, numbers, booleans, lists, maps, lists of objects
//! and missing fields, with go-bexpr's results.

mod common;

use common::{Check, HealthEntry, Node, Service, map, strings};
use trellis_filter::{Field, Filter, schema};

fn entry() -> HealthEntry {
    HealthEntry {
        node: Node {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            node: "node-1".into(),
            address: "10.1.10.12".into(),
            datacenter: "dc1".into(),
            tagged_addresses: map(&[("lan", "10.1.10.12"), ("wan", "198.18.1.2")]),
            meta: map(&[("instance_type", "t2.medium"), ("empty", "")]),
        },
        service: Service {
            id: "redis-1".into(),
            service: "redis".into(),
            tags: strings(&["primary", "v1"]),
            address: "10.1.10.12".into(),
            port: 8000,
            meta: map(&[("redis_version", "4.0"), ("env", "Prod")]),
            tagged_addresses: [("lan".to_string(), ("10.1.10.12".to_string(), 8000))]
                .into_iter()
                .collect(),
            weights: (10, 1),
            ..Service::default()
        },
        checks: vec![
            Check {
                node: "node-1".into(),
                check_id: "service:redis-1".into(),
                name: "Service 'redis' check".into(),
                status: "passing".into(),
                service_id: "redis-1".into(),
                service_name: "redis".into(),
                service_tags: strings(&["primary", "v1"]),
                check_type: "ttl".into(),
                ..Check::default()
            },
            Check {
                node: "node-1".into(),
                check_id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status: "critical".into(),
                output: "Agent not live or unreachable".into(),
                ..Check::default()
            },
        ],
    }
}

/// Evaluates `text` against the test entry on `/v1/health/service/:service`.
fn eval(text: &str) -> bool {
    let filter = Filter::parse(text, &schema::HEALTH_SERVICE)
        .unwrap_or_else(|e| panic!("{text:?} should be valid: {e}"));
    filter.matches(&entry())
}

fn check(cases: &[(&str, bool)]) {
    for (text, want) in cases {
        assert_eq!(eval(text), *want, "{text}");
    }
}

#[test]
fn string_fields() {
    check(&[
        (r#"Service.Service == "redis""#, true),
        ("Service.Service == redis", true),
        (r#"Service.Service == "Redis""#, false), // case-sensitive
        (r#"Service.Service == "redi""#, false),
        (r#"Service.Service != "redis""#, false),
        (r#"Service.Service != "web""#, true),
        (r#""edi" in Service.Service"#, true), // substring
        (r#"Service.Service contains "edi""#, true),
        (r#"Service.Service contains "EDI""#, false),
        (r#""" in Service.Service"#, true),
        (r#""xyz" not in Service.Service"#, true),
        (r#"Service.Service not contains "red""#, false),
        (r#"Service.Service matches "^re""#, true),
        (r#"Service.Service matches "^e""#, false),
        (r#"Service.Service matches "d""#, true), // unanchored, like Go's MatchString
        (r#"Service.Service not matches "^re""#, false),
        ("Service.Service matches `^(?i)REDIS$`", true),
        ("Service.Service is empty", false),
        ("Service.Service is not empty", true),
        ("Service.Kind is empty", true),
        (r#"Service.Kind == """#, true),
    ]);
}

#[test]
fn numbers_and_booleans() {
    check(&[
        ("Service.Port == 8000", true),
        (r#"Service.Port == "8000""#, true),
        (r#"Service.Port == "0x1F40""#, true), // Go ParseInt base 0
        ("Service.Port == 8001", false),
        ("Service.Port != 8001", true),
        ("Service.Weights.Passing == 10", true),
        ("Service.Weights.Warning != 1", false),
        ("Service.EnableTagOverride == false", true),
        ("Service.EnableTagOverride == F", true), // Go ParseBool
        ("Service.EnableTagOverride != true", true),
        (r#"Service.EnableTagOverride == "1""#, false),
    ]);
}

#[test]
fn lists_of_strings() {
    check(&[
        (r#""primary" in Service.Tags"#, true),
        ("primary in Service.Tags", true),
        (r#""prim" in Service.Tags"#, false), // whole elements, not substrings
        (r#""Primary" in Service.Tags"#, false),
        (r#"Service.Tags contains "v1""#, true),
        (r#""v2" not in Service.Tags"#, true),
        (r#"Service.Tags not contains "v1""#, false),
        ("Service.Tags is empty", false),
        ("Service.Tags is not empty", true),
    ]);
}

#[test]
fn maps() {
    check(&[
        (r#""env" in Service.Meta"#, true),   // keys
        (r#""Prod" in Service.Meta"#, false), // not values
        (r#"Service.Meta contains "redis_version""#, true),
        (r#""nope" not in Service.Meta"#, true),
        ("Service.Meta is empty", false),
        ("Service.Meta is not empty", true),
        (r#"Service.Meta.env == "Prod""#, true),
        (r#"Service.Meta["env"] == "Prod""#, true),
        (r#"Service.Meta.env == "prod""#, false),
        (r#"Service.Meta.redis_version == "4.0""#, true),
        ("Service.Meta.redis_version == 4.0", true),
        (r#"Service.Meta.env contains "ro""#, true),
        (r#"Service.Meta.env matches "^P""#, true),
        ("Node.Meta.empty is empty", true), // present but ""
        (r#"Node.Meta.empty == """#, true),
        (r#"Node.TaggedAddresses.wan == "198.18.1.2""#, true),
        ("Node.TaggedAddresses.lan is not empty", true),
        (
            r#"Service.TaggedAddresses.lan.Address == "10.1.10.12""#,
            true,
        ),
        ("Service.TaggedAddresses.lan.Port == 8000", true),
        (r#""lan" in Service.TaggedAddresses"#, true),
        (r#""wan" in Service.TaggedAddresses"#, false),
    ]);
}

#[test]
fn missing_map_keys() {
    // go-bexpr's NotPresentDisposition: nothing equals, contains or matches a missing key
    check(&[
        (r#"Service.Meta.nope == """#, false),
        (r#"Service.Meta.nope != """#, true),
        (r#"Service.Meta.nope != "x""#, true),
        (r#""x" in Service.Meta.nope"#, false),
        (r#""x" not in Service.Meta.nope"#, true),
        ("Service.Meta.nope matches `.*`", false),
        ("Service.Meta.nope not matches `.*`", true),
        ("Service.Meta.nope is empty", true),
        ("Service.Meta.nope is not empty", false),
        (r#"Service.TaggedAddresses.wan.Address == """#, false),
        ("Service.TaggedAddresses.wan.Port != 0", true),
    ]);
}

#[test]
fn fields_the_entry_does_not_carry_read_as_zero_values() {
    // Trellis has no service mesh: its entries answer Missing for Proxy fields, which read as
    // Go's zero values, exactly what Consul answers for a service without a proxy.
    check(&[
        (r#"Service.Proxy.DestinationServiceName == """#, true),
        (r#"Service.Proxy.DestinationServiceName != """#, false),
        ("Service.Proxy.LocalServicePort == 0", true),
        (
            "Service.Proxy.TransparentProxy.DialedDirectly == false",
            true,
        ),
        ("Service.Proxy.Upstreams is empty", true),
        (r#"Service.Proxy.Upstreams.DestinationName == "db""#, false),
        (r#"Service.Proxy.Upstreams.DestinationName != "db""#, false), // no element
        ("Service.Connect.Native == false", true),
        ("Node.Partition is empty", true),
        ("Service.PeerName is empty", true),
    ]);
}

#[test]
fn lists_of_objects_match_any_element() {
    check(&[
        (r#"Checks.Status == "critical""#, true),
        (r#"Checks.Status == "passing""#, true),
        (r#"Checks.Status == "warning""#, false),
        // negated operators are per element too: some check is not passing
        (r#"Checks.Status != "passing""#, true),
        // every check passing, written as go-bexpr users do
        (r#"not Checks.Status != "passing""#, false),
        (r#"Checks.CheckID == "serfHealth""#, true),
        (r#"Checks.Name contains "Serf""#, true),
        (r#"Checks.Output matches "unreachable$""#, true),
        (r#""primary" in Checks.ServiceTags"#, true),
        // the serf check has no tags, so some check lacks "primary"
        (r#""primary" not in Checks.ServiceTags"#, true),
        ("Checks.ServiceTags is empty", true),
        ("Checks.ServiceTags is not empty", true),
        ("Checks is empty", false),
        ("Checks is not empty", true),
        (r#"Checks.Type == "ttl""#, true),
    ]);
}

#[test]
fn an_empty_list_of_objects_matches_nothing() {
    let mut e = entry();
    e.checks.clear();
    for (text, want) in [
        ("Checks is empty", true),
        ("Checks is not empty", false),
        (r#"Checks.Status == "passing""#, false),
        (r#"Checks.Status != "passing""#, false),
        ("Checks.Status is empty", false),
        ("not Checks.Status != passing", true),
    ] {
        let filter = Filter::parse(text, &schema::HEALTH_SERVICE).unwrap();
        assert_eq!(filter.matches(&e), want, "{text}");
    }
}

#[test]
fn logic() {
    check(&[
        ("Service.Port == 8000 and Node.Node == `node-1`", true),
        ("Service.Port == 8000 and Node.Node == `node-2`", false),
        ("Service.Port == 1 or Node.Node == `node-1`", true),
        ("Service.Port == 1 or Node.Node == `node-2`", false),
        ("not Service.Port == 1", true),
        (
            "not (Service.Port == 8000 and Node.Node == `node-1`)",
            false,
        ),
        // and binds tighter than or
        (
            "Service.Port == 1 and Node.Node == `node-2` or Service.Service == redis",
            true,
        ),
        (
            "Service.Port == 1 and (Node.Node == `node-2` or Service.Service == redis)",
            false,
        ),
        ("not Service.Port == 1 and not Service.Port == 2", true),
        (
            "Service.Port == 1 or Service.Port == 2 or Service.Port == 3 or Service.Port == 8000",
            true,
        ),
    ]);
}

#[test]
fn matches_with_a_closure() {
    let filter = Filter::parse(
        r#"Checks.Status == critical and "dc1" == Node.Datacenter"#,
        &schema::HEALTH_SERVICE,
    );
    assert!(
        filter.is_err(),
        "a value cannot be compared to a selector with =="
    );

    let filter = Filter::parse(
        r#"Checks.Status == critical and Node.Datacenter == "dc1""#,
        &schema::HEALTH_SERVICE,
    )
    .unwrap();
    let statuses = ["passing", "critical"];
    assert!(filter.matches_with(|path| match path {
        ["Checks", "Status"] => Field::each(statuses.iter().map(|s| Field::Str(s))),
        ["Node", "Datacenter"] => Field::String("dc1".to_string()),
        _ => Field::Missing,
    }));
    assert!(!filter.matches_with(|_| Field::Missing));
}

#[test]
fn lenient_about_field_shapes() {
    // A selector implementation that answers a different (but sensible) shape than the schema
    // says still gets sensible answers instead of a panic.
    let filter = Filter::parse("Service.Port == 8000", &schema::HEALTH_SERVICE).unwrap();
    assert!(filter.matches_with(|_| Field::Str("8000")));
    assert!(filter.matches_with(|_| Field::String("0x1f40".into())));
    assert!(!filter.matches_with(|_| Field::Bool(true)));
    let filter =
        Filter::parse("Service.EnableTagOverride == true", &schema::HEALTH_SERVICE).unwrap();
    assert!(filter.matches_with(|_| Field::Str("true")));
    let filter = Filter::parse(r#"Service.Service == "x""#, &schema::HEALTH_SERVICE).unwrap();
    assert!(filter.matches_with(|_| Field::Each(vec![Field::Str("y"), Field::Str("x")])));
    let filter = Filter::parse(r#"Checks.Status == "x""#, &schema::HEALTH_SERVICE).unwrap();
    assert!(
        filter.matches_with(|_| Field::Str("x")),
        "a single element for a list"
    );
}

#[test]
fn other_endpoints() {
    let e = entry();
    let svc = |text: &str| {
        Filter::parse(text, &schema::AGENT_SERVICES)
            .unwrap()
            .matches(&e.service)
    };
    assert!(svc(
        r#"Service == redis and "v1" in Tags and Meta.env == Prod"#
    ));
    assert!(svc(
        "Weights.Passing == 10 and TaggedAddresses.lan.Port == 8000"
    ));
    assert!(!svc("Port != 8000"));

    let check = |text: &str| -> Vec<&str> {
        let filter = Filter::parse(text, &schema::HEALTH_CHECKS).unwrap();
        e.checks
            .iter()
            .filter(|c| filter.matches(*c))
            .map(|c| c.check_id.as_str())
            .collect()
    };
    assert_eq!(check("ServiceName != \"\""), ["service:redis-1"]);
    assert_eq!(check("ServiceTags is empty"), ["serfHealth"]);
    assert_eq!(check("Status == critical or Type == ttl").len(), 2);

    let nodes = |text: &str| {
        Filter::parse(text, &schema::CATALOG_NODES)
            .unwrap()
            .matches(&e.node)
    };
    assert!(nodes(
        r#"Meta.instance_type == "t2.medium" and Datacenter == dc1"#
    ));
    assert!(nodes(r#"TaggedAddresses.wan matches `^198\.`"#));
    assert!(!nodes(r#""lan" not in TaggedAddresses"#));
}
