//! The DNS interface of the real `trellis server` binary, queried with `dig` (Debian's
//! `dnsutils`, installed by scripts/install-deps) while instances register over HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::Proc;

/// A server started with DNS on a free port.
struct Server {
    _proc: Proc,
    http: String,
    dns_port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut args = vec!["server", "--dev", "--http", "127.0.0.1:0"];
        args.extend(["--dns", "127.0.0.1:0", "--node-name", "dns-test"]);
        args.extend_from_slice(extra);
        // The HTTP API's line, then the DNS interface's.
        let proc = Proc::start(&args, 2, None);
        let http = format!("http://{}", proc.addr("API"));
        let dns = proc.addr("DNS");
        let dns_port = dns.rsplit(':').next().unwrap().parse().unwrap();
        Server {
            _proc: proc,
            http,
            dns_port,
        }
    }

    async fn put(&self, path: &str, body: Value) {
        let r = support::http()
            .put(format!("{}{path}", self.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "PUT {path}");
    }

    async fn register(&self, body: Value) {
        self.put("/v1/agent/service/register", body).await;
    }

    /// `dig @127.0.0.1 -p PORT NAME TYPE [options]`.
    fn dig(&self, name: &str, qtype: &str, options: &[&str]) -> Dig {
        let output = Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.dns_port.to_string()])
            .args([name, qtype, "+time=2", "+tries=1"])
            .args(options)
            .output()
            .expect("run dig");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "dig {name} {qtype}: {text}");
        Dig::parse(&text)
    }
}

/// What dig printed: status, header flags and the records of each section (whitespace-split).
#[derive(Debug, Default)]
struct Dig {
    text: String,
    status: String,
    flags: Vec<String>,
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
}

impl Dig {
    fn parse(text: &str) -> Dig {
        let mut dig = Dig {
            text: text.to_owned(),
            ..Dig::default()
        };
        let mut section = None;
        for line in text.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                dig.status = rest.split(',').next().unwrap().to_owned();
            }
            if let Some(rest) = line.strip_prefix(";; flags: ") {
                let flags = rest.split(';').next().unwrap();
                dig.flags = flags.split_whitespace().map(str::to_owned).collect();
            }
            match line {
                ";; ANSWER SECTION:" => section = Some(0),
                ";; AUTHORITY SECTION:" => section = Some(1),
                ";; ADDITIONAL SECTION:" => section = Some(2),
                "" => section = None,
                _ if line.starts_with(';') => {}
                _ => {
                    let fields = line.split_whitespace().map(str::to_owned).collect();
                    match section {
                        Some(0) => dig.answer.push(fields),
                        Some(1) => dig.authority.push(fields),
                        Some(2) => dig.additional.push(fields),
                        _ => {}
                    }
                }
            }
        }
        dig
    }

    /// The data of the answer records (what follows name, TTL, class and type), sorted.
    fn answers(&self) -> Vec<String> {
        let mut data: Vec<String> = self.answer.iter().map(|r| r[4..].join(" ")).collect();
        data.sort();
        data
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Fails (rather than skips) when dig is missing, so that a run without it cannot pass
/// unnoticed.
fn need_dig() {
    let found = Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "dig is missing: install dnsutils (scripts/install-deps does)"
    );
}

fn instance(id: &str, address: &str, port: u16, tags: &[&str], status: &str) -> Value {
    json!({"Name": "web", "ID": id, "Address": address, "Port": port, "Tags": tags,
           "Check": {"TTL": "30s", "Status": status}})
}

#[tokio::test]
async fn service_node_and_negative_answers_follow_consul() {
    need_dig();
    let s = Server::start(&[]);
    s.register(instance("web-1", "10.0.0.1", 8080, &["v1"], "passing"))
        .await;
    s.register(instance("web-2", "10.0.0.2", 8081, &["v2"], "warning"))
        .await;
    s.register(instance("web-3", "10.0.0.3", 8082, &["v1"], "critical"))
        .await;

    // A: passing and warning instances (Consul's default), never critical ones; TTL 0.
    let a = s.dig("web.service.consul", "A", &[]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert!(a.has_flag("aa"), "{}", a.text);
    assert_eq!(a.answers(), ["10.0.0.1", "10.0.0.2"], "{}", a.text);
    assert!(a.answer.iter().all(|r| r[1] == "0"), "{}", a.text);

    // SRV: the instance port, a target named by the address, its A record as additional data.
    let srv = s.dig("web.service.consul", "SRV", &[]);
    assert_eq!(
        srv.answers(),
        [
            "1 1 8080 0a000001.addr.dc1.consul.",
            "1 1 8081 0a000002.addr.dc1.consul."
        ],
        "{}",
        srv.text
    );
    let extra: Vec<String> = srv.additional.iter().map(|r| r.join(" ")).collect();
    assert!(
        extra.contains(&"0a000001.addr.dc1.consul. 0 IN A 10.0.0.1".to_owned()),
        "{}",
        srv.text
    );
    let target = s.dig("0a000002.addr.dc1.consul", "A", &[]);
    assert_eq!(target.answers(), ["10.0.0.2"], "{}", target.text);

    // Tags, RFC 2782 names (`_tcp` is no tag), datacenters, any case.
    assert_eq!(
        s.dig("v1.web.service.consul", "A", &[]).answers(),
        ["10.0.0.1"]
    );
    let rfc = s.dig("_web._v2.service.consul", "SRV", &[]);
    assert_eq!(
        rfc.answers(),
        ["1 1 8081 0a000002.addr.dc1.consul."],
        "{}",
        rfc.text
    );
    assert_eq!(
        s.dig("_web._tcp.service.consul", "SRV", &[]).answer.len(),
        2
    );
    assert_eq!(s.dig("_web._tcp.consul", "SRV", &[]).answer.len(), 2);
    assert_eq!(s.dig("web.service.dc1.consul", "A", &[]).answer.len(), 2);
    let mixed = s.dig("WeB.SeRvIcE.CoNsUl", "A", &[]);
    assert_eq!(mixed.answers(), ["10.0.0.1", "10.0.0.2"], "{}", mixed.text);

    // Unknown names, other datacenters, tags nobody has: NXDOMAIN with the SOA as authority.
    for name in [
        "nope.service.consul",
        "web.service.dc2.consul",
        "v9.web.service.consul",
        "web.nothing.consul",
    ] {
        let nx = s.dig(name, "A", &[]);
        assert_eq!(nx.status, "NXDOMAIN", "{name}: {}", nx.text);
        assert_eq!(nx.authority.len(), 1, "{name}: {}", nx.text);
        assert_eq!(nx.authority[0][0], "consul.", "{}", nx.text);
        assert_eq!(nx.authority[0][3], "SOA", "{}", nx.text);
        assert_eq!(nx.authority[0][4], "ns.consul.", "{}", nx.text);
        assert_eq!(nx.authority[0][5], "hostmaster.consul.", "{}", nx.text);
    }
    // The name exists without that type: NODATA, the SOA as authority.
    let nodata = s.dig("web.service.consul", "AAAA", &[]);
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.text);
    assert!(nodata.answer.is_empty(), "{}", nodata.text);
    assert_eq!(nodata.authority[0][3], "SOA", "{}", nodata.text);
    // Outside the domain: refused (no recursors).
    assert_eq!(s.dig("example.com", "A", &[]).status, "REFUSED");

    // The server's own node.
    let node = s.dig("dns-test.node.consul", "A", &[]);
    assert_eq!(node.answers(), ["127.0.0.1"], "{}", node.text);
    assert_eq!(
        s.dig("DNS-TEST.node.dc1.consul", "A", &[]).answers(),
        ["127.0.0.1"]
    );
    assert_eq!(
        s.dig("other.node.consul", "A", &[]).status,
        "NXDOMAIN",
        "unknown nodes"
    );

    // Changes are visible at once: a health change, a new service, a deregistration.
    s.put("/v1/agent/check/pass/service:web-3", json!({})).await;
    assert_eq!(
        s.dig("web.service.consul", "A", &[]).answers(),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
    s.register(json!({"Name": "db", "Address": "10.0.9.9", "Port": 5432}))
        .await;
    assert_eq!(s.dig("db.service.consul", "A", &[]).answers(), ["10.0.9.9"]);
    s.put("/v1/agent/service/deregister/db", json!({})).await;
    assert_eq!(s.dig("db.service.consul", "A", &[]).status, "NXDOMAIN");
}

#[tokio::test]
async fn a_large_answer_is_truncated_on_udp_and_whole_over_tcp() {
    need_dig();
    let s = Server::start(&[]);
    for n in 1..=40 {
        let address = format!("10.0.1.{n}");
        s.register(instance(
            &format!("web-{n}"),
            &address,
            8000,
            &[],
            "passing",
        ))
        .await;
    }
    // Plain DNS over UDP: 512 bytes, the TC bit, and dig told not to retry over TCP.
    let udp = s.dig("web.service.consul", "A", &["+noedns", "+ignore"]);
    assert!(udp.has_flag("tc"), "{}", udp.text);
    assert!(
        !udp.answer.is_empty() && udp.answer.len() < 40,
        "{}",
        udp.text
    );
    let srv = s.dig("web.service.consul", "SRV", &["+noedns", "+ignore"]);
    assert!(srv.has_flag("tc"), "{}", srv.text);
    assert_eq!(
        srv.answer.len(),
        srv.additional.len(),
        "each SRV answer keeps its address: {}",
        srv.text
    );
    // A large EDNS buffer takes them all.
    let edns = s.dig("web.service.consul", "A", &["+bufsize=4096", "+ignore"]);
    assert!(!edns.has_flag("tc"), "{}", edns.text);
    assert_eq!(edns.answer.len(), 40, "{}", edns.text);
    // TCP carries the whole answer.
    let tcp = s.dig("web.service.consul", "SRV", &["+tcp", "+noedns"]);
    assert!(!tcp.has_flag("tc"), "{}", tcp.text);
    assert_eq!(tcp.answer.len(), 40, "{}", tcp.text);
    assert_eq!(tcp.additional.len(), 40, "{}", tcp.text);
    // Without +ignore, dig retries a truncated answer over TCP and gets everything.
    let retried = s.dig("web.service.consul", "A", &["+noedns"]);
    assert_eq!(retried.answer.len(), 40, "{}", retried.text);
}

#[tokio::test]
async fn domain_and_ttl_are_configurable() {
    need_dig();
    let s = Server::start(&["--dns-domain", "trellis.test", "--dns-ttl", "30s"]);
    s.register(json!({"Name": "web", "Address": "10.0.0.1", "Port": 80}))
        .await;
    let a = s.dig("web.service.trellis.test", "A", &[]);
    assert_eq!(a.answers(), ["10.0.0.1"], "{}", a.text);
    assert_eq!(a.answer[0][1], "30", "{}", a.text);
    assert_eq!(s.dig("web.service.consul", "A", &[]).status, "REFUSED");
    let soa = s.dig("trellis.test", "SOA", &[]);
    assert_eq!(soa.answer[0][4], "ns.trellis.test.", "{}", soa.text);
}

#[test]
fn dns_can_be_turned_off() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["server", "--dev", "--http", "127.0.0.1:0", "--dns", "off"])
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("instances restored");
        printed.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(printed.iter().all(|l| !l.contains("DNS")), "{printed:?}");
}

#[tokio::test]
async fn dns_answers_what_the_anonymous_token_may_read() {
    let server = Server::start(&["--acl-default-policy", "deny"]);
    let client = support::http();
    let management = support::bootstrap_acl(&server.http).await;
    let put = |path: &str, body: Value| {
        client
            .put(format!("{}{path}", server.http))
            .header("X-Consul-Token", &management)
            .json(&body)
            .send()
    };
    let r = put(
        "/v1/agent/service/register",
        json!({"Name": "web", "ID": "web-1", "Address": "10.1.2.3", "Port": 80}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let hidden = server.dig("web.service.consul", "A", &[]);
    assert_eq!(hidden.status, "NXDOMAIN", "{}", hidden.text);
    // Let anonymous callers read services: DNS answers at once.
    let r = put(
        "/v1/acl/policy",
        json!({"Name": "dns", "Rules": "service_prefix \"\" { policy = \"read\" }"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = put(
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        json!({"Description": "Anonymous Token", "Policies": [{"Name": "dns"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let shown = server.dig("web.service.consul", "A", &[]);
    assert_eq!(shown.status, "NOERROR", "{}", shown.text);
    assert_eq!(shown.answer[0][4], "10.1.2.3", "{}", shown.text);
}
