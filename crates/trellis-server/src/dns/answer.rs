//! Answers DNS queries as Consul's DNS interface does, from the published per-service views
//! (no catalog lock once a service has a slot) and the server's own node. What a view needs
//! for DNS (addresses, SRV targets in wire format, tags) is prepared once per published view.

use super::names::{self, Lookup};
use super::wire::{self, Request, Response, ResponseCode, Section};
use crate::published::Published;
use crate::state::AppState;
use dashmap::DashMap;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_acl::{Need, Resource};
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
    domain_name: Name,
    datacenter: String,
    node: NodeRecords,
    soa_mname: Name,
    soa_rname: Name,
    prepared: DashMap<String, Arc<Prepared>>,
}

/// The server's node, as DNS shows it.
struct NodeRecords {
    /// The name in lower case, as queries spell it.
    name: String,
    ip: Option<IpAddr>,
    /// `NODE.node.DC.DOMAIN.`, if the node name makes a DNS name.
    fqdn: Option<Name>,
    /// Node metadata as RFC 1464 TXT records, one string each.
    txt: Vec<RData>,
}

/// A published view prepared for DNS: its routable instances, with their records.
struct Prepared {
    published: Arc<Published>,
    instances: Vec<Instance>,
}

struct Instance {
    /// Tags in lower case: tag lookups ignore case, as the HTTP API's do.
    tags: Vec<String>,
    address: Address,
    /// `HEX.addr.DC.DOMAIN.` for an IP address, the node's name for an instance without an
    /// address, else the host name itself.
    target: Name,
    /// The SRV data: priority 1, the weight, the port, the target.
    srv: RData,
    /// The target's address record, additional data of the SRV answer.
    target_address: Option<Record>,
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
fn address_data(ip: IpAddr, qtype: RecordType) -> Option<RData> {
    let any = matches!(qtype, RecordType::ANY | RecordType::TXT | RecordType::SRV);
    match ip {
        IpAddr::V4(v4) if any || qtype == RecordType::A => Some(RData::A(A(v4))),
        IpAddr::V6(v6) if any || qtype == RecordType::AAAA => Some(RData::AAAA(AAAA(v6))),
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

/// A TXT record of one string, cut at the 255 bytes a DNS string holds.
fn txt(text: &str) -> RData {
    let bytes = text.as_bytes();
    RData::TXT(TXT::from_bytes(vec![&bytes[..bytes.len().min(255)]]))
}

impl Resolver {
    pub fn new(state: AppState, settings: &Settings) -> Self {
        let domain = settings.domain.trim_end_matches('.').to_ascii_lowercase();
        let node = state.node();
        let datacenter = node.datacenter.to_ascii_lowercase();
        let fqdn = wire::name(&format!(
            "{}.node.{datacenter}.{domain}",
            node.name.to_ascii_lowercase()
        ));
        let txt = node
            .info()
            .meta
            .iter()
            .map(|(k, v)| txt(&rfc1464(k, v)))
            .collect();
        let node = NodeRecords {
            name: node.name.to_ascii_lowercase(),
            ip: node.address.parse().ok().map(plain_ip),
            fqdn,
            txt,
        };
        let name = |prefix: &str| wire::name(&format!("{prefix}.{domain}"));
        Self {
            ttl: settings.ttl,
            domain_name: wire::name(&domain).unwrap_or_else(Name::root),
            soa_mname: name("ns").unwrap_or_else(Name::root),
            soa_rname: name("hostmaster").unwrap_or_else(Name::root),
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
            Request::Reject { header, rcode } => {
                wire::reject(&header, rcode, out);
                return true;
            }
            Request::Query(query) => query,
        };
        let limit = match transport {
            Transport::Udp => query.udp_limit(),
            Transport::Tcp => wire::TCP_MAX,
        };
        let mut response = Response::new(&query, limit);
        self.respond(&query.name, query.qtype(), &mut response);
        response.finish(out);
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

    fn respond(&self, name: &str, qtype: RecordType, response: &mut Response) {
        let Some(labels) = self.below_domain(name) else {
            // Not ours, and no recursors to ask.
            response.set_rcode(ResponseCode::Refused);
            return;
        };
        match qtype {
            RecordType::SOA => {
                self.soa(response, Section::Answer);
                self.name_servers(response, Section::Authority);
            }
            RecordType::NS => self.name_servers(response, Section::Answer),
            RecordType::AXFR | RecordType::IXFR => response.set_rcode(ResponseCode::NotImp),
            _ => match names::lookup(&labels, qtype == RecordType::SRV, &self.datacenter) {
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
    fn not_found(&self, response: &mut Response) {
        response.set_rcode(ResponseCode::NXDomain);
        self.soa(response, Section::Authority);
    }

    fn soa(&self, response: &mut Response, section: Section) {
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        // Consul's defaults: refresh 1 h, retry 10 min, expire 1 day, minimum TTL 0 (which is
        // also the SOA's own TTL, so negative answers are not cached).
        let (mname, rname) = (self.soa_mname.clone(), self.soa_rname.clone());
        let soa = SOA::new(mname, rname, serial, 3600, 600, 86_400, 0);
        let record = Record::from_rdata(self.domain_name.clone(), 0, RData::SOA(soa));
        response.add(section, record);
    }

    /// This server as the domain's name server, with its address as glue.
    fn name_servers(&self, response: &mut Response, section: Section) {
        let Some(fqdn) = &self.node.fqdn else {
            return;
        };
        let ns = RData::NS(NS(fqdn.clone()));
        response.add(
            section,
            Record::from_rdata(self.domain_name.clone(), self.ttl, ns),
        );
        if let Some(glue) = self
            .node
            .ip
            .and_then(|ip| address_data(ip, RecordType::ANY))
        {
            let record = Record::from_rdata(fqdn.clone(), self.ttl, glue);
            response.add(Section::Additional, record);
        }
    }

    fn node(&self, name: &str, qtype: RecordType, response: &mut Response) {
        // Consul answers node names only for these types, and nothing (NOERROR) for others.
        if !matches!(
            qtype,
            RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::TXT
        ) {
            return;
        }
        if name != self.node.name || !self.anonymous_reads(Resource::Node, name) {
            return self.not_found(response);
        }
        if qtype != RecordType::TXT
            && let Some(data) = self.node.ip.and_then(|ip| address_data(ip, qtype))
        {
            response.add_asked(Section::Answer, self.ttl, data);
        }
        // The node's metadata as TXT: the answer to TXT and ANY, additional data otherwise (as
        // Consul's default `enable_additional_node_meta_txt`).
        let section = if matches!(qtype, RecordType::TXT | RecordType::ANY) {
            Section::Answer
        } else {
            Section::Additional
        };
        for txt in &self.node.txt {
            response.add_asked(section, self.ttl, txt.clone());
        }
    }

    /// `HEX.addr`: the address itself, in the answer if the question asks for its family.
    fn addr(&self, ip: IpAddr, qtype: RecordType, response: &mut Response) {
        let (data, family) = match ip {
            IpAddr::V4(v4) => (RData::A(A(v4)), RecordType::A),
            IpAddr::V6(v6) => (RData::AAAA(AAAA(v6)), RecordType::AAAA),
        };
        let section = if qtype == family || qtype == RecordType::ANY {
            Section::Answer
        } else {
            Section::Additional
        };
        response.add_asked(section, self.ttl, data);
    }

    /// Whether the anonymous token may read `name` of `resource`: DNS carries no token, so it
    /// answers what anonymous callers may see (Consul uses the agent's default token so);
    /// anything else is NXDOMAIN, as if it did not exist.
    fn anonymous_reads(&self, resource: Resource, name: &str) -> bool {
        self.state.acl().authorize(None).is_ok_and(|grant| {
            grant.unrestricted || grant.authorizer.allows(resource, name, Need::Read)
        })
    }

    fn service(&self, name: &str, tag: Option<&str>, qtype: RecordType, response: &mut Response) {
        if !self.anonymous_reads(Resource::Service, name) {
            return self.not_found(response);
        }
        let slot = match self.state.slot(name) {
            Ok(slot) => slot,
            Err(_) => return response.set_rcode(ResponseCode::ServFail),
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
        // Shuffled as Consul does, one pick at a time, until the response is full: a truncated
        // answer costs no more than what it carries.
        for i in 0..order.len() {
            if response.full() {
                response.truncate();
                break;
            }
            let pick = rng.random_range(i..order.len());
            order.swap(i, pick);
            let instance = &prepared.instances[order[i]];
            if qtype == RecordType::SRV {
                if answered[instance.srv_group] {
                    continue;
                }
                answered[instance.srv_group] = true;
                let srv = instance.srv.clone();
                match &instance.target_address {
                    Some(address) => response.add_asked_with(self.ttl, srv, address.clone()),
                    None => response.add_asked(Section::Answer, self.ttl, srv),
                }
                continue;
            }
            match instance.address {
                Address::Ip(ip) => {
                    if !answered[instance.address_group]
                        && let Some(data) = address_data(ip, qtype)
                    {
                        answered[instance.address_group] = true;
                        response.add_asked(Section::Answer, self.ttl, data);
                    }
                }
                Address::Host => {
                    cname.get_or_insert(order[i]);
                }
            }
        }
        if response.answers() == 0
            && let Some(i) = cname
        {
            let data = RData::CNAME(CNAME(prepared.instances[i].target.clone()));
            response.add_asked(Section::Answer, self.ttl, data);
        }
        if response.answers() == 0 {
            // NODATA: the name exists, not with this type (RFC 2308).
            self.soa(response, Section::Authority);
        }
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
        let mut by_address: HashMap<(Address, Option<Name>), usize> = HashMap::new();
        let mut by_target: HashMap<(Name, u16), usize> = HashMap::new();
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
                wire::name(&format!(
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
                (Address::Host, wire::name(&r.address))
            };
            // An address that makes no DNS name cannot be answered.
            let Some(target) = target else {
                continue;
            };
            let weight = match view.status {
                CheckStatus::Warning => r.weights.warning,
                _ => r.weights.passing,
            };
            let weight = u16::try_from(weight).unwrap_or(u16::MAX);
            let target_address = match address {
                Address::Ip(ip) => address_data(ip, RecordType::SRV)
                    .map(|data| Record::from_rdata(target.clone(), self.ttl, data)),
                Address::Host => None,
            };
            let n = instances.len();
            let host = (address == Address::Host).then(|| target.clone());
            instances.push(Instance {
                tags: r.tags.iter().map(|t| t.to_lowercase()).collect(),
                address,
                srv: RData::SRV(SRV::new(1, weight, r.port, target.clone())),
                target_address,
                address_group: *by_address.entry((address, host)).or_insert(n),
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
