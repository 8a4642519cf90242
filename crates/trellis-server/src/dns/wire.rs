//! DNS wire format (RFC 1035, RFC 6891): reading a query — header, one question, the EDNS
//! payload size — and writing a response record by record within a size limit.

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// The smallest limit every resolver accepts over UDP (RFC 1035), and the largest payload sent
/// however much EDNS allows (Consul's limit: 64 KiB less IP and UDP headers).
pub const UDP_MIN: usize = 512;
pub const UDP_MAX: usize = 65_535 - 68;
/// A DNS message over TCP carries a 16-bit length.
pub const TCP_MAX: usize = 65_535;

/// Length of the OPT record a response to an EDNS query ends with.
const OPT_LEN: usize = 11;
/// The header is 12 bytes; the question starts right after it, which is what a name pointer to
/// the question name points at.
const HEADER_LEN: usize = 12;
const QUESTION_NAME: u16 = 0xC000 | HEADER_LEN as u16;

/// A query this server can answer.
#[derive(Debug)]
pub struct Query<'a> {
    pub id: u16,
    flags: u16,
    /// The question as received (name, type, class), echoed in the response.
    question: &'a [u8],
    /// The name in lower case, labels joined by '.', without the root's trailing dot. A byte
    /// that no name can hold (not printable ASCII, or a '.' inside a label) becomes NUL, so such
    /// a name matches nothing.
    pub name: String,
    pub qtype: u16,
    /// The requester's UDP payload size, if it sent an EDNS OPT record.
    pub edns: Option<u16>,
}

/// What a packet asks for.
#[derive(Debug)]
pub enum Request<'a> {
    Query(Query<'a>),
    /// A request answered with a bare header carrying this response code.
    Reject {
        id: u16,
        flags: u16,
        rcode: u8,
    },
    /// Not a query (too short, or a response): no answer at all, so that a spoofed source
    /// cannot bounce packets between servers.
    Ignore,
}

fn u16_at(packet: &[u8], at: usize) -> Option<u16> {
    let bytes = packet.get(at..at + 2)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Skips a possibly compressed name; returns the offset after it.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => return Some(at + 2),
            _ => return None,
        }
    }
}

/// Reads an uncompressed question name; returns the lower-case text and the offset after it.
fn read_question_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            return Some((name, at + 1));
        }
        // A compressed question (never sent by real clients) or a reserved label type.
        if len > 63 || at - HEADER_LEN + len + 2 > 255 {
            return None;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &byte in label {
            if byte.is_ascii_graphic() && byte != b'.' {
                name.push(char::from(byte.to_ascii_lowercase()));
            } else {
                name.push('\0');
            }
        }
        at += 1 + len;
    }
}

/// Parses a request packet.
pub fn parse(packet: &[u8]) -> Request<'_> {
    let (Some(id), Some(flags)) = (u16_at(packet, 0), u16_at(packet, 2)) else {
        return Request::Ignore;
    };
    if packet.len() < HEADER_LEN || flags & 0x8000 != 0 {
        return Request::Ignore;
    }
    let reject = |rcode| Request::Reject { id, flags, rcode };
    let opcode = (flags >> 11) & 0xF;
    if opcode != 0 {
        return reject(RCODE_NOTIMP);
    }
    let counts: Vec<u16> = (0..4)
        .map(|i| u16_at(packet, 4 + 2 * i).unwrap_or(0))
        .collect();
    if counts[0] != 1 {
        return reject(RCODE_FORMERR);
    }
    let Some((name, after_name)) = read_question_name(packet, HEADER_LEN) else {
        return reject(RCODE_FORMERR);
    };
    let (Some(qtype), Some(_class)) = (u16_at(packet, after_name), u16_at(packet, after_name + 2))
    else {
        return reject(RCODE_FORMERR);
    };
    let question_end = after_name + 4;
    // The OPT record is in the additional section; skip whatever precedes it.
    let mut at = question_end;
    let mut edns = None;
    let records = usize::from(counts[1]) + usize::from(counts[2]) + usize::from(counts[3]);
    for i in 0..records {
        let Some(after_owner) = skip_name(packet, at) else {
            return reject(RCODE_FORMERR);
        };
        let (Some(rtype), Some(class), Some(rdlen)) = (
            u16_at(packet, after_owner),
            u16_at(packet, after_owner + 2),
            u16_at(packet, after_owner + 8),
        ) else {
            return reject(RCODE_FORMERR);
        };
        let additional = i >= usize::from(counts[1]) + usize::from(counts[2]);
        if additional && rtype == TYPE_OPT {
            edns = Some(class);
        }
        at = after_owner + 10 + usize::from(rdlen);
        if at > packet.len() {
            return reject(RCODE_FORMERR);
        }
    }
    Request::Query(Query {
        id,
        flags,
        question: &packet[HEADER_LEN..question_end],
        name,
        qtype,
        edns,
    })
}

impl Query<'_> {
    /// The largest response this query may get over UDP (RFC 6891: the EDNS size, at least
    /// 512 bytes).
    pub fn udp_limit(&self) -> usize {
        self.edns
            .map_or(UDP_MIN, |size| usize::from(size).clamp(UDP_MIN, UDP_MAX))
    }
}

/// Writes a bare-header answer to a rejected request.
pub fn reject(id: u16, request_flags: u16, rcode: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    let flags = 0x8000 | (request_flags & 0x7900) | u16::from(rcode);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// The section a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// The owner name of a record.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The question's name, as asked (a pointer to it).
    Question,
    /// A name in wire format.
    Name(&'a [u8]),
    /// A name already written at this offset of the message.
    At(u16),
}

/// Record data.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    A([u8; 4]),
    Aaaa([u8; 16]),
    /// A name in wire format (CNAME, NS).
    Name(&'a [u8]),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: &'a [u8],
    },
    Soa {
        mname: &'a [u8],
        rname: &'a [u8],
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
    /// One character-string (at most 255 bytes).
    Txt(&'a [u8]),
}

impl Data<'_> {
    fn rtype(&self, name_type: u16) -> u16 {
        match self {
            Self::A(_) => TYPE_A,
            Self::Aaaa(_) => TYPE_AAAA,
            Self::Name(_) => name_type,
            Self::Srv { .. } => TYPE_SRV,
            Self::Soa { .. } => TYPE_SOA,
            Self::Txt(_) => TYPE_TXT,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::A(_) => 4,
            Self::Aaaa(_) => 16,
            Self::Name(name) => name.len(),
            Self::Srv { target, .. } => 6 + target.len(),
            Self::Soa { mname, rname, .. } => mname.len() + rname.len() + 20,
            Self::Txt(text) => 1 + text.len().min(255),
        }
    }
}

/// A response being written: header and question first, then answer and authority records in
/// the message itself and additional records aside (so that an SRV answer and the address
/// record of its target can be added together), joined by `finish`.
pub struct Response<'b> {
    out: &'b mut Vec<u8>,
    additional: Vec<u8>,
    counts: [u16; 4],
    limit: usize,
    edns: Option<u16>,
    truncated: bool,
    rcode: u8,
    flags: u16,
}

impl<'b> Response<'b> {
    /// Starts the response to `query` in `out`, at most `limit` bytes long.
    pub fn new(query: &Query<'_>, limit: usize, out: &'b mut Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(&query.id.to_be_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(query.question);
        Self {
            out,
            additional: Vec::new(),
            counts: [1, 0, 0, 0],
            limit,
            edns: query.edns,
            truncated: false,
            rcode: 0,
            // Opcode and RD are copied (RFC 1035 4.1.1); every answer is authoritative.
            flags: 0x8000 | (query.flags & 0x7900) | 0x0400,
        }
    }

    pub fn set_rcode(&mut self, rcode: u8) {
        self.rcode = rcode;
    }

    pub fn answers(&self) -> u16 {
        self.counts[1]
    }

    /// The offset the next answer or authority record would start at.
    pub fn next_offset(&self) -> usize {
        self.out.len()
    }

    /// Marks the response truncated (TC): records were left out for lack of room.
    pub fn truncate(&mut self) {
        self.truncated = true;
    }

    /// Bytes the message would have with `more` bytes of records added.
    fn size_with(&self, more: usize) -> usize {
        let opt = if self.edns.is_some() { OPT_LEN } else { 0 };
        self.out.len() + self.additional.len() + more + opt
    }

    fn record_len(owner: Owner<'_>, data: &Data<'_>) -> usize {
        let owner = match owner {
            Owner::Question | Owner::At(_) => 2,
            Owner::Name(name) => name.len(),
        };
        owner + 10 + data.len()
    }

    /// Whether records of these sizes fit together; the first answer always does (a message
    /// must carry something, as Consul does).
    pub fn fits(&self, records: &[(Owner<'_>, &Data<'_>)]) -> bool {
        let more: usize = records.iter().map(|(o, d)| Self::record_len(*o, d)).sum();
        self.counts[1] == 0 || self.size_with(more) <= self.limit
    }

    /// Adds a record of `name_type` (for `Data::Name`) or the data's own type; returns the
    /// offset its data starts at (within the message for answer and authority records).
    pub fn add(
        &mut self,
        section: Section,
        owner: Owner<'_>,
        name_type: u16,
        ttl: u32,
        data: &Data<'_>,
    ) -> usize {
        let buf: &mut Vec<u8> = match section {
            Section::Answer | Section::Authority => self.out,
            Section::Additional => &mut self.additional,
        };
        match owner {
            Owner::Question => buf.extend_from_slice(&QUESTION_NAME.to_be_bytes()),
            Owner::At(offset) => buf.extend_from_slice(&(0xC000 | offset).to_be_bytes()),
            Owner::Name(name) => buf.extend_from_slice(name),
        }
        buf.extend_from_slice(&data.rtype(name_type).to_be_bytes());
        buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        buf.extend_from_slice(&ttl.to_be_bytes());
        let rdlen = u16::try_from(data.len()).unwrap_or(u16::MAX);
        buf.extend_from_slice(&rdlen.to_be_bytes());
        let start = buf.len();
        match data {
            Data::A(ip) => buf.extend_from_slice(ip),
            Data::Aaaa(ip) => buf.extend_from_slice(ip),
            Data::Name(name) => buf.extend_from_slice(name),
            Data::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for value in [priority, weight, port] {
                    buf.extend_from_slice(&value.to_be_bytes());
                }
                // RFC 2782: the target is never compressed.
                buf.extend_from_slice(target);
            }
            Data::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                buf.extend_from_slice(mname);
                buf.extend_from_slice(rname);
                for value in [serial, refresh, retry, expire, minimum] {
                    buf.extend_from_slice(&value.to_be_bytes());
                }
            }
            Data::Txt(text) => {
                let text = &text[..text.len().min(255)];
                buf.push(text.len() as u8);
                buf.extend_from_slice(text);
            }
        }
        let slot = match section {
            Section::Answer => 1,
            Section::Authority => 2,
            Section::Additional => 3,
        };
        self.counts[slot] = self.counts[slot].saturating_add(1);
        start
    }

    /// Writes the header counts and flags, the additional records and the OPT record.
    pub fn finish(self) {
        let Self {
            out,
            additional,
            mut counts,
            edns,
            truncated,
            rcode,
            mut flags,
            ..
        } = self;
        out.extend_from_slice(&additional);
        if let Some(size) = edns {
            // Root owner, OPT, the requester's payload size as Consul echoes it, no extended
            // rcode, version 0, no flags, no options.
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&size.max(UDP_MIN as u16).to_be_bytes());
            out.extend_from_slice(&[0; 6]);
            counts[3] = counts[3].saturating_add(1);
        }
        if truncated {
            flags |= 0x0200;
        }
        flags |= u16::from(rcode);
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        for (i, count) in counts.iter().enumerate() {
            out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
        }
    }
}

/// A dotted name in wire format (labels, then the root); `None` if a label is empty, longer
/// than 63 bytes, or the name longer than 255.
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
    }
    wire.push(0);
    (wire.len() <= 255).then_some(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        packet.extend(encode_name(name).unwrap());
        packet.extend(qtype.to_be_bytes());
        packet.extend(CLASS_IN.to_be_bytes());
        if let Some(size) = edns {
            packet[11] = 1;
            packet.extend([0, 0, 41]);
            packet.extend(size.to_be_bytes());
            packet.extend([0, 0, 0, 0, 0, 0]);
        }
        packet
    }

    #[test]
    fn parses_a_question_in_lower_case_with_its_edns_size() {
        let packet = query("Web.Service.CONSUL", TYPE_SRV, Some(1232));
        let Request::Query(q) = parse(&packet) else {
            panic!("not a query");
        };
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name, "web.service.consul");
        assert_eq!(q.qtype, TYPE_SRV);
        assert_eq!(q.edns, Some(1232));
        assert_eq!(q.udp_limit(), 1232);
        let plain = query("consul", TYPE_A, None);
        let Request::Query(q) = parse(&plain) else {
            panic!("not a query");
        };
        assert_eq!(q.udp_limit(), 512);
    }

    #[test]
    fn odd_packets_are_rejected_or_ignored_without_panicking() {
        assert!(matches!(parse(&[1, 2, 3]), Request::Ignore));
        let mut response = query("a.consul", TYPE_A, None);
        response[2] |= 0x80;
        assert!(matches!(parse(&response), Request::Ignore));
        let mut two = query("a.consul", TYPE_A, None);
        two[5] = 2;
        assert!(matches!(
            parse(&two),
            Request::Reject {
                rcode: RCODE_FORMERR,
                ..
            }
        ));
        let mut update = query("a.consul", TYPE_A, None);
        update[2] = 5 << 3;
        assert!(matches!(
            parse(&update),
            Request::Reject {
                rcode: RCODE_NOTIMP,
                ..
            }
        ));
        let full = query("a.b.consul", TYPE_A, Some(4096));
        for end in 0..full.len() {
            let _ = parse(&full[..end]);
        }
        // Every single-byte corruption parses or is refused, never panics.
        for at in 0..full.len() {
            for value in [0u8, 1, 63, 64, 0xC0, 0xFF] {
                let mut bad = full.clone();
                bad[at] = value;
                let _ = parse(&bad);
            }
        }
    }

    #[test]
    fn a_label_that_is_not_a_name_matches_nothing() {
        let mut packet = query("ab.consul", TYPE_A, None);
        packet[13] = b'.';
        let Request::Query(q) = parse(&packet) else {
            panic!("not a query");
        };
        assert_eq!(q.name, "\0b.consul");
    }

    #[test]
    fn names_encode_to_wire_format() {
        assert_eq!(encode_name("a.bc.").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(encode_name("").unwrap(), b"\x00");
        assert!(encode_name("a..b").is_none());
        assert!(encode_name(&"x".repeat(64)).is_none());
    }
}
