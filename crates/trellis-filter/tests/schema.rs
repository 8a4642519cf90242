//! Validation against the endpoint schemas: unknown selectors, unsupported operators, values
//! that do not convert, and every selector Consul's API documentation lists per endpoint.

use trellis_filter::schema::{self, FieldType, Schema};
use trellis_filter::{ErrorKind, Filter, MAX_REGEXES, Op};

fn error(text: &str, schema: &Schema) -> (ErrorKind, String) {
    match Filter::parse(text, schema) {
        Ok(f) => panic!("{text:?} should be rejected, got {f}"),
        Err(e) => (e.kind(), e.to_string()),
    }
}

#[test]
fn unknown_selectors() {
    use ErrorKind::UnknownSelector as U;
    let cases: [(&str, &Schema, &str); 9] = [
        (
            "Foo == 1",
            &schema::AGENT_SERVICES,
            r#"1:1: Selector "Foo" is not valid"#,
        ),
        (
            "Foo is empty",
            &schema::HEALTH_SERVICE,
            r#"1:1: Selector "Foo" is not valid"#,
        ),
        (
            r#"Service.Foo.Bar == "x""#,
            &schema::HEALTH_SERVICE,
            r#"1:1: Selector "Service.Foo" is not valid"#,
        ),
        (
            r#"Meta.a.b == "x""#,
            &schema::CATALOG_NODES,
            r#"1:1: Selector "Meta.a.b" is not valid"#,
        ),
        (
            "Port.x == 1",
            &schema::AGENT_SERVICES,
            r#"1:1: Selector "Port.x" is not valid"#,
        ),
        (
            r#"Name == "x" and "a" in Bogus"#,
            &schema::AGENT_CHECKS,
            r#"1:24: Selector "Bogus" is not valid"#,
        ),
        // each endpoint has its own names: ServiceName is a check field, not a service one
        (
            "ServiceName == web",
            &schema::AGENT_SERVICES,
            r#"1:1: Selector "ServiceName" is not valid"#,
        ),
        (
            "Service == web",
            &schema::CATALOG_SERVICE,
            r#"1:1: Selector "Service" is not valid"#,
        ),
        // fields Consul tags bexpr:"-" are not selectable
        (
            "CreateIndex == 1",
            &schema::HEALTH_CHECKS,
            r#"1:1: Selector "CreateIndex" is not valid"#,
        ),
    ];
    for (text, schema, want) in cases {
        assert_eq!(error(text, schema), (U, want.to_string()), "{text}");
    }
    for hidden in [
        "ModifyIndex",
        "ContentHash",
        "Namespace",
        "Partition",
        "Datacenter",
        "Locality",
    ] {
        let text = format!("{hidden} is empty");
        assert_eq!(error(&text, &schema::AGENT_SERVICES).0, U, "{text}");
    }
    assert_eq!(error("Definition.HTTP == x", &schema::AGENT_CHECKS).0, U);
    assert_eq!(
        error("Service.Proxy.Config.x == y", &schema::HEALTH_SERVICE).0,
        U
    );
}

#[test]
fn unsupported_operators() {
    use ErrorKind::Operator as O;
    let cases: [(&str, &Schema, &str); 7] = [
        (
            r#"Tags == "a""#,
            &schema::AGENT_SERVICES,
            r#"1:1: operator "==" is not valid for selector "Tags" (list of strings); it supports: in, not in, is empty, is not empty"#,
        ),
        (
            "Port contains 1",
            &schema::AGENT_SERVICES,
            r#"1:1: operator "in" is not valid for selector "Port" (integer); it supports: ==, !="#,
        ),
        (
            "Weights == 1",
            &schema::AGENT_SERVICES,
            r#"1:1: selector "Weights" is an object; select one of its fields (Passing, Warning)"#,
        ),
        (
            r#"Checks == "x""#,
            &schema::HEALTH_SERVICE,
            r#"1:1: operator "==" is not valid for selector "Checks" (list of objects); it supports: is empty, is not empty"#,
        ),
        (
            r#"Meta matches "x""#,
            &schema::CATALOG_NODES,
            r#"1:1: operator "matches" is not valid for selector "Meta" (map of strings); it supports: in, not in, is empty, is not empty"#,
        ),
        (
            "Service.EnableTagOverride is empty",
            &schema::HEALTH_SERVICE,
            r#"1:1: operator "is empty" is not valid for selector "Service.EnableTagOverride" (boolean); it supports: ==, !="#,
        ),
        (
            "TaggedAddresses.lan is empty",
            &schema::AGENT_SERVICES,
            r#"1:1: selector "TaggedAddresses.lan" is an object; select one of its fields (Address, Port)"#,
        ),
    ];
    for (text, schema, want) in cases {
        assert_eq!(error(text, schema), (O, want.to_string()), "{text}");
    }
}

#[test]
fn values_must_convert() {
    use ErrorKind::Value as V;
    let cases = [
        (
            r#"Port == "http""#,
            r#"1:9: value "http" for selector "Port" is not an integer"#,
        ),
        (
            "Port == 1.5",
            r#"1:9: value "1.5" for selector "Port" is not an integer"#,
        ),
        (
            "Port != web",
            r#"1:9: value "web" for selector "Port" is not an integer"#,
        ),
        (
            "Port == 99999999999999999999",
            r#"1:9: value "99999999999999999999" for selector "Port" is out of range for an integer"#,
        ),
        (
            "EnableTagOverride == yes",
            r#"1:22: value "yes" for selector "EnableTagOverride" is not a boolean (true or false)"#,
        ),
        (
            "TaggedAddresses.lan.Port == x",
            r#"1:29: value "x" for selector "TaggedAddresses.lan.Port" is not an integer"#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            error(text, &schema::AGENT_SERVICES),
            (V, want.to_string()),
            "{text}"
        );
    }
    for ok in [
        "Port == 8080",
        "Port == -1",
        r#"Port == "0x1F90""#,
        r#"Port == "1_000""#,
        "EnableTagOverride == true",
        "EnableTagOverride == False",
        r#"EnableTagOverride == "t""#,
        "EnableTagOverride != 0",
    ] {
        assert!(Filter::parse(ok, &schema::AGENT_SERVICES).is_ok(), "{ok}");
    }
}

#[test]
fn regular_expressions_compile_at_parse_time() {
    let (kind, message) = error(r#"Service matches "[a-""#, &schema::AGENT_SERVICES);
    assert_eq!(kind, ErrorKind::Regex);
    assert!(
        message.starts_with(r#"1:17: invalid regular expression "[a-": "#),
        "{message}"
    );
    // Go's RE2 syntax; no backreferences or lookaround there either
    assert_eq!(
        error(r#"Service matches `(a)\1`"#, &schema::AGENT_SERVICES).0,
        ErrorKind::Regex
    );
    let many = vec![r#"Service matches "a""#; MAX_REGEXES + 1].join(" or ");
    let (kind, message) = error(&many, &schema::AGENT_SERVICES);
    assert_eq!(kind, ErrorKind::Limit);
    assert!(
        message.ends_with("at most 32 regular expressions"),
        "{message}"
    );
    let fits = vec![r#"Service matches "a""#; MAX_REGEXES].join(" or ");
    assert!(Filter::parse(&fits, &schema::AGENT_SERVICES).is_ok());
}

/// A sample expression using `op` on `selector` (`<any>` standing for a map key).
fn sample(selector: &str, op: Op, ty: Option<FieldType>) -> String {
    let selector = selector.replace("<any>", "x");
    let value = match ty {
        Some(FieldType::Int | FieldType::Bool) => "1",
        _ => "\"x\"",
    };
    match op {
        Op::In | Op::NotIn => format!("{value} {op} {selector}"),
        Op::IsEmpty | Op::IsNotEmpty => format!("{selector} {op}"),
        _ => format!("{selector} {op} {value}"),
    }
}

#[test]
fn every_selector_accepts_every_operator_of_its_type() {
    for schema in schema::ALL {
        let selectors = schema.selectors();
        assert!(!selectors.is_empty());
        for (selector, ty) in selectors {
            for &op in ty.operators() {
                let text = sample(&selector, op, Some(ty));
                if let Err(e) = Filter::parse(&text, schema) {
                    panic!("{}: {text:?}: {e}", schema.name);
                }
            }
        }
    }
}

// The "Filtering" tables of Consul's API documentation (Consul CE), as (selector, supported
// operations). S: Equal, Not Equal, In, Not In, Matches, Not Matches; E: Equal, Not Equal;
// M: Is Empty, Is Not Empty, In, Not In; L: In, Not In, Is Empty, Is Not Empty;
// Z: Is Empty, Is Not Empty.

const PROXY_ROWS: &[(&str, char)] = &[
    ("DestinationServiceID", 'S'),
    ("DestinationServiceName", 'S'),
    ("LocalServiceAddress", 'S'),
    ("LocalServicePort", 'E'),
    ("Mode", 'S'),
    ("TransparentProxy.OutboundListenerPort", 'E'),
    ("MeshGateway.Mode", 'S'),
    ("Upstreams", 'Z'),
    ("Upstreams.Datacenter", 'S'),
    ("Upstreams.DestinationName", 'S'),
    ("Upstreams.DestinationNamespace", 'S'),
    ("Upstreams.DestinationType", 'S'),
    ("Upstreams.LocalBindAddress", 'S'),
    ("Upstreams.LocalBindPort", 'E'),
    ("Upstreams.MeshGateway.Mode", 'S'),
];

const AGENT_SERVICE_ROWS: &[(&str, char)] = &[
    ("Address", 'S'),
    ("Connect.Native", 'E'),
    ("EnableTagOverride", 'E'),
    ("ID", 'S'),
    ("Kind", 'S'),
    ("Meta", 'M'),
    ("Meta.<any>", 'S'),
    ("Port", 'E'),
    ("Service", 'S'),
    ("TaggedAddresses", 'M'),
    ("TaggedAddresses.<any>.Address", 'S'),
    ("TaggedAddresses.<any>.Port", 'E'),
    ("Tags", 'L'),
    ("Weights.Passing", 'E'),
    ("Weights.Warning", 'E'),
];

const CHECK_ROWS: &[(&str, char)] = &[
    ("CheckID", 'S'),
    ("Name", 'S'),
    ("Node", 'S'),
    ("Notes", 'S'),
    ("Output", 'S'),
    ("ServiceID", 'S'),
    ("ServiceName", 'S'),
    ("ServiceTags", 'L'),
    ("Status", 'S'),
];

const NODE_ROWS: &[(&str, char)] = &[
    ("Address", 'S'),
    ("Datacenter", 'S'),
    ("ID", 'S'),
    ("Meta", 'M'),
    ("Meta.<any>", 'S'),
    ("Node", 'S'),
    ("TaggedAddresses", 'M'),
    ("TaggedAddresses.<any>", 'S'),
];

const SERVICE_NODE_ROWS: &[(&str, char)] = &[
    ("Address", 'S'),
    ("Datacenter", 'S'),
    ("ID", 'S'),
    ("Node", 'S'),
    ("NodeMeta.<any>", 'S'),
    ("NodeMeta", 'M'),
    ("ServiceAddress", 'S'),
    ("ServiceConnect.Native", 'E'),
    ("ServiceEnableTagOverride", 'E'),
    ("ServiceID", 'S'),
    ("ServiceKind", 'S'),
    ("ServiceMeta.<any>", 'S'),
    ("ServiceMeta", 'M'),
    ("ServiceName", 'S'),
    ("ServicePort", 'E'),
    ("ServiceTaggedAddresses.<any>.Address", 'S'),
    ("ServiceTaggedAddresses.<any>.Port", 'E'),
    ("ServiceTaggedAddresses", 'M'),
    ("ServiceTags", 'L'),
    ("ServiceWeights.Passing", 'E'),
    ("ServiceWeights.Warning", 'E'),
    ("TaggedAddresses.<any>", 'S'),
    ("TaggedAddresses", 'M'),
];

fn ops(code: char) -> &'static [Op] {
    use Op::*;
    match code {
        'S' => &[Equal, NotEqual, In, NotIn, Matches, NotMatches],
        'E' => &[Equal, NotEqual],
        'M' | 'L' => &[IsEmpty, IsNotEmpty, In, NotIn],
        'Z' => &[IsEmpty, IsNotEmpty],
        _ => unreachable!(),
    }
}

fn documented(schema: &Schema, rows: &[(String, char)]) {
    let listed: Vec<String> = schema.selectors().into_iter().map(|(s, _)| s).collect();
    for (selector, code) in rows {
        assert!(
            listed.contains(selector),
            "{}: {selector} missing from {listed:?}",
            schema.name
        );
        for &op in ops(*code) {
            let ty = schema
                .resolve(&selector.split('.').collect::<Vec<_>>())
                .ok()
                .map(|r| r.ty);
            let text = sample(selector, op, ty);
            if let Err(e) = Filter::parse(&text, schema) {
                panic!("{} ({:?}): {text:?}: {e}", schema.name, schema.endpoints);
            }
        }
    }
}

fn rows(base: &[(&str, char)], proxy_prefix: Option<&str>) -> Vec<(String, char)> {
    let mut out: Vec<(String, char)> = base.iter().map(|(s, c)| (s.to_string(), *c)).collect();
    if let Some(prefix) = proxy_prefix {
        out.extend(
            PROXY_ROWS
                .iter()
                .map(|(s, c)| (format!("{prefix}.{s}"), *c)),
        );
    }
    out
}

#[test]
fn documented_agent_selectors() {
    documented(
        &schema::AGENT_SERVICES,
        &rows(AGENT_SERVICE_ROWS, Some("Proxy")),
    );
    documented(&schema::AGENT_CHECKS, &rows(CHECK_ROWS, None));
}

#[test]
fn documented_catalog_selectors() {
    documented(&schema::CATALOG_NODES, &rows(NODE_ROWS, None));
    let service_node = rows(SERVICE_NODE_ROWS, Some("ServiceProxy"));
    documented(&schema::CATALOG_SERVICE, &service_node);
    documented(&schema::CATALOG_SERVICES, &service_node);
}

#[test]
fn documented_health_selectors() {
    documented(&schema::HEALTH_CHECKS, &rows(CHECK_ROWS, None));
    let mut entry: Vec<(String, char)> = vec![("Checks".into(), 'Z')];
    entry.extend(CHECK_ROWS.iter().map(|(s, c)| (format!("Checks.{s}"), *c)));
    entry.extend(NODE_ROWS.iter().map(|(s, c)| (format!("Node.{s}"), *c)));
    entry.extend(
        rows(AGENT_SERVICE_ROWS, Some("Proxy"))
            .into_iter()
            .map(|(s, c)| (format!("Service.{s}"), c)),
    );
    documented(&schema::HEALTH_SERVICE, &entry);
}

#[test]
fn fields_from_consul_structs_beyond_the_tables() {
    // structs.HealthCheck has gained Type, Interval, Timeout, ExposedPort and PeerName
    for text in [
        r#"Type == "http""#,
        r#"Interval == "10s""#,
        r#"Timeout != """#,
        "ExposedPort == 21500",
        "PeerName is empty",
    ] {
        assert!(
            Filter::parse(text, &schema::HEALTH_CHECKS).is_ok(),
            "{text}"
        );
    }
    for text in [
        "Service.SocketPath is empty",
        "Node.Partition is empty",
        "Service.Proxy.Expose.Checks == false",
        "Service.Proxy.Expose.Paths.ListenerPort == 21500",
        "Service.Proxy.EnvoyExtensions.Required == true",
        "Service.Proxy.AccessLogs.Enabled == false",
        "Checks.ExposedPort == 0",
    ] {
        assert!(
            Filter::parse(text, &schema::HEALTH_SERVICE).is_ok(),
            "{text}"
        );
    }
    assert!(Filter::parse("ServiceSocketPath is empty", &schema::CATALOG_SERVICE).is_ok());
}

#[test]
fn schema_listing() {
    let listed = schema::HEALTH_SERVICE.selectors();
    let get = |name: &str| listed.iter().find(|(s, _)| s == name).map(|(_, t)| *t);
    assert_eq!(get("Checks.Status"), Some(FieldType::String));
    assert_eq!(get("Service.Tags"), Some(FieldType::StringList));
    assert_eq!(
        get("Service.TaggedAddresses.<any>.Port"),
        Some(FieldType::Int)
    );
    assert_eq!(
        get("Service.Weights"),
        None,
        "objects have no operators of their own"
    );
    for s in schema::ALL {
        assert!(!s.endpoints.is_empty());
        for route in s.endpoints {
            assert!(route.starts_with("/v1/"), "{route}");
        }
    }
}
