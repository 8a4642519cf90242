//! Answers DNS queries as Consul's DNS interface does, from the published per-service views
//! (no catalog lock once a service has a slot) and the server's own node. What a view needs
//! for DNS (addresses, SRV targets in wire format, tags) is prepared once per published view.

use super::names::{self, Lookup};
use super::wire::{self, Data, Owner, Request, Response, Section};
use crate::published::Published;
use crate::state::AppState;
use dashmap::DashMap;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_types::CheckStatus;

/// Prepared views kept; past this the cache starts over (it holds only services being asked).
const MAX_PREPARED: usize = 4096;

/// How the DNS interface answers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The domain answered, e.g. `consul`.
    pub domain: String,
    /// TTL of service and node records, in seconds.
    pub ttl: u32,
}

/// How a query arrived: the size limit of the answer depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers queries; shared by every listener.
pub struct Resolver {
    state: AppState,
    ttl: u32,
    /// The domain in lower case, without a trailing dot.
    domain: String,
    domain_wire: Vec<u8>,
    datacenter: String,
    node: NodeRecords,
    soa_mname: Vec<u8>,
    soa_rname: Vec<u8>,
    prepared: DashMap<String, Arc<Prepared>>,
}

/// The server's node, as DNS shows it.
struct NodeRecords {
    /// The name in lower case, as queries spell it.
    name: String,
    ip: Option<IpAddr>,
    /// `NODE.node.DC.DOMAIN.` in wire format, if the node name makes a DNS name.
    fqdn: Option<Vec<u8>>,
    /// Node metadata as RFC 1464 TXT strings.
    txt: Vec<Vec<u8>>,
}

/// A published view prepared for DNS: its routable instances.
struct Prepared {
    published: Arc<Published>,
    instances: Vec<Instance>,
}

struct Instance {
    /// Tags in lower case: tag lookups ignore case, as the HTTP API's do.
    tags: Vec<String>,
    address: Address,
    port: u16,
    weight: u16,
    /// The SRV target in wire format: `HEX.addr.DC.DOMAIN.` for an IP address, the node's
    /// name for an instance without an address, else the host name itself.
    target: Vec<u8>,
    /// The first instance with the same address, and with the same target and port: duplicates
    /// are answered once, as Consul does.
    address_group: usize,
    srv_group: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Address {
    Ip(IpAddr),
    /// A host name (the target is the name): answered with a CNAME.
    Host,
}

/// The address record of `ip` if the question type asks for its family (Consul answers A
/// records to A, ANY, TXT and SRV questions).
fn address_data(ip: IpAddr, qtype: u16) -> Option<Data<'static>> {
    let any = matches!(qtype, wire::TYPE_ANY | wire::TYPE_TXT | wire::TYPE_SRV);
    match ip {
        IpAddr::V4(v4) if any || qtype == wire::TYPE_A => Some(Data::A(v4.octets())),
        IpAddr::V6(v6) if any || qtype == wire::TYPE_AAAA => Some(Data::Aaaa(v6.octets())),
        _ => None,
    }
}

/// An IPv4-mapped IPv6 address is an IPv4 address, as Consul treats it.
fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A key and value as one RFC 1464 string (`key=value`, with '`', '=' and the key's leading
/// and trailing spaces quoted by '`'); keys starting `rfc1035-` give the bare value.
fn rfc1464(key: &str, value: &str) -> String {
    if key.to_ascii_lowercase().starts_with("rfc1035-") {
        return value.to_owned();
    }
    let mut quoted = key.replace('`', "``").replace('=', "`=");
    let leading = quoted.len() - quoted.trim_start_matches(' ').len();
    let trailing = quoted.len() - quoted.trim_end_matches(' ').len();
    if leading == quoted.len() {
        quoted = "` ".repeat(leading);
    } else if leading > 0 || trailing > 0 {
        let middle = quoted.trim_matches(' ').to_owned();
        quoted = format!("{}{middle}{}", "` ".repeat(leading), "` ".repeat(trailing));
    }
    format!("{quoted}={}", value.replace('`', "``"))
}

impl Resolver {
    pub fn new(state: AppState, settings: &Settings) -> Self {
        let domain = settings.domain.trim_end_matches('.').to_ascii_lowercase();
        let node = state.node();
        let datacenter = node.datacenter.to_ascii_lowercase();
        let fqdn = wire::encode_name(&format!(
            "{}.node.{datacenter}.{domain}",
            node.name.to_ascii_lowercase()
        ));
        let txt = node
            .info()
            .meta
            .iter()
            .map(|(k, v)| rfc1464(k, v).into_bytes())
            .collect();
        let node = NodeRecords {
            name: node.name.to_ascii_lowercase(),
            ip: node.address.parse().ok().map(plain_ip),
            fqdn,
            txt,
        };
        let name = |prefix: &str| wire::encode_name(&format!("{prefix}.{domain}"));
        Self {
            ttl: settings.ttl,
            domain_wire: wire::encode_name(&domain).unwrap_or_else(|| vec![0]),
            soa_mname: name("ns").unwrap_or_else(|| vec![0]),
            soa_rname: name("hostmaster").unwrap_or_else(|| vec![0]),
            domain,
            datacenter,
            node,
            state,
            prepared: DashMap::new(),
        }
    }

    /// Writes the response to `packet` into `out`; false if it gets none.
    pub fn answer(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        let query = match wire::parse(packet) {
            Request::Ignore => return false,
            Request::Reject { id, flags, rcode } => {
                wire::reject(id, flags, rcode, out);
                return true;
            }
            Request::Query(query) => query,
        };
        let limit = match transport {
            Transport::Udp => query.udp_limit(),
            Transport::Tcp => wire::TCP_MAX,
        };
        let mut response = Response::new(&query, limit, out);
        self.respond(&query.name, query.qtype, &mut response);
        response.finish();
        true
    }

    /// The labels below the domain, or `None` for a name outside it.
    fn below_domain<'n>(&self, name: &'n str) -> Option<Vec<&'n str>> {
        if name == self.domain {
            return Some(Vec::new());
        }
        let rest = name.strip_suffix(self.domain.as_str())?.strip_suffix('.')?;
        Some(rest.split('.').collect())
    }

    fn respond(&self, name: &str, qtype: u16, response: &mut Response<'_>) {
        let Some(labels) = self.below_domain(name) else {
            // Not ours, and no recursors to ask.
            response.set_rcode(wire::RCODE_REFUSED);
            return;
        };
        match qtype {
            wire::TYPE_SOA => {
                self.soa(response, Section::Answer);
                self.name_servers(response, Section::Authority);
            }
            wire::TYPE_NS => self.name_servers(response, Section::Answer),
            wire::TYPE_AXFR | wire::TYPE_IXFR => response.set_rcode(wire::RCODE_NOTIMP),
            _ => match names::lookup(&labels, qtype == wire::TYPE_SRV, &self.datacenter) {
                Lookup::Service { name, tag } => {
                    self.service(&name, tag.as_deref(), qtype, response)
                }
                Lookup::Node { name } => self.node(&name, qtype, response),
                Lookup::Addr { ip } => self.addr(ip, qtype, response),
                Lookup::Nothing => self.not_found(response),
            },
        }
    }

    /// NXDOMAIN, with the SOA in the authority section (RFC 2308).
    fn not_found(&self, response: &mut Response<'_>) {
        response.set_rcode(wire::RCODE_NXDOMAIN);
        self.soa(response, Section::Authority);
    }

    fn soa(&self, response: &mut Response<'_>, section: Section) {
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        // Consul's defaults: refresh 1 h, retry 10 min, expire 1 day, minimum TTL 0 (which is
        // also the SOA's own TTL, so negative answers are not cached).
        let data = Data::Soa {
            mname: &self.soa_mname,
            rname: &self.soa_rname,
            serial,
            refresh: 3600,
            retry: 600,
            expire: 86_400,
            minimum: 0,
        };
        response.add(section, Owner::Name(&self.domain_wire), 0, 0, &data);
    }

    /// This server as the domain's name server, with its address as glue.
    fn name_servers(&self, response: &mut Response<'_>, section: Section) {
        let Some(fqdn) = &self.node.fqdn else {
            return;
        };
        let owner = Owner::Name(&self.domain_wire);
        response.add(section, owner, wire::TYPE_NS, self.ttl, &Data::Name(fqdn));
        if let Some(glue) = self.node.ip.and_then(|ip| address_data(ip, wire::TYPE_ANY)) {
            response.add(Section::Additional, Owner::Name(fqdn), 0, self.ttl, &glue);
        }
    }

    fn node(&self, name: &str, qtype: u16, response: &mut Response<'_>) {
        // Consul answers node names only for these types, and nothing (NOERROR) for others.
        if !matches!(
            qtype,
            wire::TYPE_A | wire::TYPE_AAAA | wire::TYPE_ANY | wire::TYPE_TXT
        ) {
            return;
        }
        if name != self.node.name {
            return self.not_found(response);
        }
        if qtype != wire::TYPE_TXT
            && let Some(data) = self.node.ip.and_then(|ip| address_data(ip, qtype))
        {
            response.add(Section::Answer, Owner::Question, 0, self.ttl, &data);
        }
        // The node's metadata as TXT: the answer to TXT and ANY, additional data otherwise (as
        // Consul's default `enable_additional_node_meta_txt`).
        let section = if matches!(qtype, wire::TYPE_TXT | wire::TYPE_ANY) {
            Section::Answer
        } else {
            Section::Additional
        };
        for txt in &self.node.txt {
            response.add(section, Owner::Question, 0, self.ttl, &Data::Txt(txt));
        }
    }

    /// `HEX.addr`: the address itself, in the answer if the question asks for its family.
    fn addr(&self, ip: IpAddr, qtype: u16, response: &mut Response<'_>) {
        let (data, family) = match ip {
            IpAddr::V4(v4) => (Data::A(v4.octets()), wire::TYPE_A),
            IpAddr::V6(v6) => (Data::Aaaa(v6.octets()), wire::TYPE_AAAA),
        };
        let section = if qtype == family || qtype == wire::TYPE_ANY {
            Section::Answer
        } else {
            Section::Additional
        };
        response.add(section, Owner::Question, 0, self.ttl, &data);
    }

    fn service(&self, name: &str, tag: Option<&str>, qtype: u16, response: &mut Response<'_>) {
        let slot = match self.state.slot(name) {
            Ok(slot) => slot,
            Err(_) => return response.set_rcode(wire::RCODE_SERVFAIL),
        };
        let published = slot.current();
        drop(slot);
        if published.view.instances.is_empty() {
            return self.not_found(response);
        }
        let prepared = self.prepared(name, published);
        let mut order: Vec<usize> = (0..prepared.instances.len())
            .filter(|&i| tag.is_none_or(|t| prepared.instances[i].tags.iter().any(|x| x == t)))
            .collect();
        if order.is_empty() {
            return self.not_found(response);
        }
        let mut answered = vec![false; prepared.instances.len()];
        let mut cname = None;
        let mut rng = rand::rng();
        // Shuffled as Consul does, one pick at a time: a truncated answer costs no more than
        // what it carries.
        for i in 0..order.len() {
            let pick = rng.random_range(i..order.len());
            order.swap(i, pick);
            let instance = &prepared.instances[order[i]];
            let added = if qtype == wire::TYPE_SRV {
                self.srv_record(instance, &mut answered, response)
            } else {
                match instance.address {
                    Address::Ip(ip) => match address_data(ip, qtype) {
                        Some(data) if !answered[instance.address_group] => {
                            answered[instance.address_group] = true;
                            add_answer(response, &data, self.ttl)
                        }
                        _ => true,
                    },
                    Address::Host => {
                        cname.get_or_insert(order[i]);
                        true
                    }
                }
            };
            if !added {
                response.truncate();
                break;
            }
        }
        if response.answers() == 0
            && let Some(i) = cname
        {
            let data = Data::Name(&prepared.instances[i].target);
            response.add(
                Section::Answer,
                Owner::Question,
                wire::TYPE_CNAME,
                self.ttl,
                &data,
            );
        }
        if response.answers() == 0 {
            // NODATA: the name exists, not with this type (RFC 2308).
            self.soa(response, Section::Authority);
        }
    }

    /// One SRV answer and the address of its target; false if they do not fit.
    fn srv_record(
        &self,
        instance: &Instance,
        answered: &mut [bool],
        response: &mut Response<'_>,
    ) -> bool {
        if answered[instance.srv_group] {
            return true;
        }
        let srv = Data::Srv {
            priority: 1,
            weight: instance.weight,
            port: instance.port,
            target: &instance.target,
        };
        // The address record's owner points at the target inside the SRV record: after the
        // owner pointer (2), type, class, TTL and length (10), priority, weight and port (6).
        let target_at = response.next_offset() + 18;
        let owner = match u16::try_from(target_at) {
            Ok(at) if at < 0x4000 => Owner::At(at),
            _ => Owner::Name(&instance.target),
        };
        let extra = match instance.address {
            Address::Ip(ip) => address_data(ip, wire::TYPE_SRV),
            Address::Host => None,
        };
        let fits = match &extra {
            Some(data) => response.fits(&[(Owner::Question, &srv), (owner, data)]),
            None => response.fits(&[(Owner::Question, &srv)]),
        };
        if !fits {
            return false;
        }
        answered[instance.srv_group] = true;
        response.add(Section::Answer, Owner::Question, 0, self.ttl, &srv);
        if let Some(data) = extra {
            response.add(Section::Additional, owner, 0, self.ttl, &data);
        }
        true
    }

    /// The view prepared for DNS, once per published view.
    fn prepared(&self, key: &str, published: Arc<Published>) -> Arc<Prepared> {
        if let Some(prepared) = self.prepared.get(key)
            && Arc::ptr_eq(&prepared.published, &published)
        {
            return prepared.clone();
        }
        let prepared = Arc::new(self.prepare(published));
        if self.prepared.len() >= MAX_PREPARED {
            self.prepared.clear();
        }
        self.prepared.insert(key.to_owned(), prepared.clone());
        prepared
    }

    fn prepare(&self, published: Arc<Published>) -> Prepared {
        let mut instances = Vec::new();
        let mut by_address: HashMap<(Address, Vec<u8>), usize> = HashMap::new();
        let mut by_target: HashMap<(Vec<u8>, u16), usize> = HashMap::new();
        // Consul's default (`only_passing = false`): passing and warning instances answer,
        // critical ones do not.
        for view in published
            .view
            .instances
            .iter()
            .filter(|i| i.status != CheckStatus::Critical)
        {
            let r = &view.instance.registration;
            let target = |ip: IpAddr| {
                wire::encode_name(&format!(
                    "{}.addr.{}.{}",
                    names::ip_hex(ip),
                    self.datacenter,
                    self.domain
                ))
            };
            let (address, target) = if r.address.is_empty() {
                match (self.node.ip, &self.node.fqdn) {
                    (Some(ip), Some(fqdn)) => (Address::Ip(ip), Some(fqdn.clone())),
                    (Some(ip), None) => (Address::Ip(ip), target(ip)),
                    _ => continue,
                }
            } else if let Ok(ip) = r.address.parse::<IpAddr>() {
                let ip = plain_ip(ip);
                (Address::Ip(ip), target(ip))
            } else {
                (Address::Host, wire::encode_name(&r.address))
            };
            // An address that makes no DNS name cannot be answered.
            let Some(target) = target else {
                continue;
            };
            let weight = match view.status {
                CheckStatus::Warning => r.weights.warning,
                _ => r.weights.passing,
            };
            let n = instances.len();
            let key = if address == Address::Host {
                target.clone()
            } else {
                Vec::new()
            };
            instances.push(Instance {
                tags: r.tags.iter().map(|t| t.to_lowercase()).collect(),
                address,
                port: r.port,
                weight: u16::try_from(weight).unwrap_or(u16::MAX),
                address_group: *by_address.entry((address, key)).or_insert(n),
                srv_group: *by_target.entry((target.clone(), r.port)).or_insert(n),
                target,
            });
        }
        Prepared {
            published,
            instances,
        }
    }
}

/// Adds an answer with the question's name if it fits; false if not.
fn add_answer(response: &mut Response<'_>, data: &Data<'_>, ttl: u32) -> bool {
    if !response.fits(&[(Owner::Question, data)]) {
        return false;
    }
    response.add(Section::Answer, Owner::Question, 0, ttl, data);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metadata_is_rfc_1464() {
        assert_eq!(
            rfc1464("consul-network-segment", ""),
            "consul-network-segment="
        );
        assert_eq!(rfc1464("a=b", "c`d"), "a`=b=c``d");
        assert_eq!(rfc1464(" k ", "v"), "` k` =v");
        assert_eq!(rfc1464("rfc1035-raw", "v=1"), "v=1");
    }
}
