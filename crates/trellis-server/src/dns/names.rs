//! What a name under the DNS domain asks for, read as Consul reads it: `[TAG.]NAME.service`,
//! RFC 2782 `_NAME._TAG[.service]`, `NODE.node`, `HEX.addr`, each optionally followed by a
//! datacenter (`.dc1` or `.dc1.dc`) or a peer (`.p.peer`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A lookup, once the domain is taken off the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Instances of a service, optionally only those with a tag.
    Service { name: String, tag: Option<String> },
    /// A node by name.
    Node { name: String },
    /// An address spelled in hex, the form SRV targets take.
    Addr { ip: IpAddr },
    /// Nothing here: an unknown form, or another datacenter or a peer (Consul answers those
    /// NXDOMAIN when it cannot reach them, and this server knows no other).
    Nothing,
}

/// Reads `labels` (lower case, the domain taken off); `srv` says the question is of type SRV,
/// where the `service` label may be left out of the RFC 2782 form.
pub fn lookup(labels: &[&str], srv: bool, datacenter: &str) -> Lookup {
    let mut found = None;
    for (i, label) in labels.iter().enumerate().rev() {
        if matches!(
            *label,
            "service" | "connect" | "virtual" | "ingress" | "node" | "query" | "addr"
        ) {
            found = Some((*label, &labels[..i], &labels[i + 1..]));
            break;
        }
        if srv && label.starts_with('_') {
            found = Some(("service", &labels[..=i], &labels[i + 1..]));
            break;
        }
    }
    let Some((kind, parts, suffixes)) = found else {
        return Lookup::Nothing;
    };
    if parts.is_empty() || !here(suffixes, datacenter) {
        return Lookup::Nothing;
    }
    match kind {
        "service" => {
            let n = parts.len();
            if n == 2 && parts[0].starts_with('_') && parts[1].starts_with('_') {
                // _name._tag; `_tcp` names the protocol, not a tag (as in Consul).
                let tag = &parts[1][1..];
                let tag = (tag != "tcp").then(|| tag.to_owned());
                return Lookup::Service {
                    name: parts[0][1..].to_owned(),
                    tag,
                };
            }
            Lookup::Service {
                name: parts[n - 1].to_owned(),
                tag: (n >= 2).then(|| parts[..n - 1].join(".")),
            }
        }
        "node" => Lookup::Node {
            name: parts.join("."),
        },
        "addr" => match (parts, hex_ip(parts[0])) {
            ([_], Some(ip)) => Lookup::Addr { ip },
            _ => Lookup::Nothing,
        },
        // Connect, virtual IPs, ingress gateways and prepared queries: none exist here.
        _ => Lookup::Nothing,
    }
}

/// Whether the labels after the kind name this datacenter: none, `DC`, or `DC.dc`.
fn here(suffixes: &[&str], datacenter: &str) -> bool {
    match suffixes {
        [] => true,
        [dc] | [dc, "dc"] => dc.eq_ignore_ascii_case(datacenter),
        _ => false,
    }
}

/// `7f000001` → 127.0.0.1; 32 hex digits → an IPv6 address.
fn hex_ip(text: &str) -> Option<IpAddr> {
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok();
    match text.len() {
        8 => {
            let b = [byte(0)?, byte(1)?, byte(2)?, byte(3)?];
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        32 => {
            let mut b = [0u8; 16];
            for (i, slot) in b.iter_mut().enumerate() {
                *slot = byte(i)?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The `HEX.addr` label of an address, as SRV targets name it.
pub fn ip_hex(ip: IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(name: &str, srv: bool) -> Lookup {
        let labels: Vec<&str> = name.split('.').filter(|l| !l.is_empty()).collect();
        lookup(&labels, srv, "dc1")
    }

    fn service(name: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service {
            name: name.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn service_forms() {
        assert_eq!(look("web.service", false), service("web", None));
        assert_eq!(look("v1.web.service", false), service("web", Some("v1")));
        assert_eq!(look("a.b.web.service", false), service("web", Some("a.b")));
        assert_eq!(look("web.service.dc1", false), service("web", None));
        assert_eq!(look("web.service.dc1.dc", false), service("web", None));
        assert_eq!(look("web.service.dc2", false), Lookup::Nothing);
        assert_eq!(look("web.service.p.peer", false), Lookup::Nothing);
        assert_eq!(look("service", false), Lookup::Nothing);
    }

    #[test]
    fn rfc_2782_forms() {
        assert_eq!(look("_web._tcp.service", true), service("web", None));
        assert_eq!(look("_web._v1.service", true), service("web", Some("v1")));
        assert_eq!(look("_web._tcp", true), service("web", None));
        assert_eq!(look("_web._tcp.service.dc1", true), service("web", None));
        // Without SRV, the bare form is no lookup.
        assert_eq!(look("_web._tcp", false), Lookup::Nothing);
    }

    #[test]
    fn node_and_addr_forms() {
        assert_eq!(look("box.node", false), Lookup::Node { name: "box".into() });
        assert_eq!(
            look("my.box.node.dc1", false),
            Lookup::Node {
                name: "my.box".into()
            }
        );
        assert_eq!(
            look("7f000001.addr.dc1", false),
            Lookup::Addr {
                ip: "127.0.0.1".parse().unwrap()
            }
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            look(&format!("{}.addr", ip_hex(v6)), false),
            Lookup::Addr { ip: v6 }
        );
        assert_eq!(look("7f0000.addr", false), Lookup::Nothing);
        assert_eq!(look("zz000001.addr", false), Lookup::Nothing);
        assert_eq!(look("x.web.query", false), Lookup::Nothing);
        assert_eq!(ip_hex("10.0.0.255".parse().unwrap()), "0a0000ff");
    }
}
