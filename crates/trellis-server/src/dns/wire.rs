//! The DNS message layer, over hickory-proto's message model: reading a query (one question and
//! the EDNS payload size) and writing the response within a size limit, leaving out whole
//! answers (each with the additional record that goes with it) when it does not fit.

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query as Question};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

pub use hickory_proto::op::ResponseCode;

/// The smallest limit every resolver accepts over UDP (RFC 1035), and the largest payload sent
/// however much EDNS allows (Consul's limit: 64 KiB less IP and UDP headers).
pub const UDP_MIN: usize = 512;
pub const UDP_MAX: usize = 65_535 - 68;
/// A DNS message over TCP carries a 16-bit length.
pub const TCP_MAX: usize = 65_535;

/// Length of the header, and of the OPT record a response to an EDNS query ends with.
const HEADER_LEN: usize = 12;
const OPT_LEN: usize = 11;

/// A query this server can answer.
#[derive(Debug)]
pub struct Query {
    header: Header,
    /// The question as received, echoed in the response (its name as spelled).
    question: Question,
    /// The name in lower case, labels joined by '.', without the root's trailing dot. A byte
    /// that no name can hold (not printable ASCII, or a '.' inside a label) becomes NUL, so such
    /// a name matches nothing.
    pub name: String,
    /// The requester's UDP payload size (at least 512), if it sent an EDNS OPT record.
    pub edns: Option<u16>,
}

/// What a packet asks for.
#[derive(Debug)]
pub enum Request {
    Query(Query),
    /// A request answered with a bare header carrying this response code.
    Reject {
        header: Header,
        rcode: ResponseCode,
    },
    /// Not a query (too short, or a response): no answer at all, so that a spoofed source
    /// cannot bounce packets between servers.
    Ignore,
}

/// Parses a request packet.
pub fn parse(packet: &[u8]) -> Request {
    let mut decoder = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut decoder) else {
        return Request::Ignore;
    };
    if header.message_type() == MessageType::Response {
        return Request::Ignore;
    }
    let reject = |rcode| Request::Reject { header, rcode };
    if header.op_code() != OpCode::Query {
        return reject(ResponseCode::NotImp);
    }
    if header.query_count() != 1 {
        return reject(ResponseCode::FormErr);
    }
    let Ok(question) = Question::read(&mut decoder) else {
        return reject(ResponseCode::FormErr);
    };
    // The OPT record is in the additional section: read past whatever precedes it.
    let mut edns = None;
    let sections = [
        (header.answer_count(), false),
        (header.name_server_count(), false),
        (header.additional_count(), true),
    ];
    for (count, additional) in sections.into_iter().filter(|(count, _)| *count > 0) {
        match Message::read_records(&mut decoder, usize::from(count), additional) {
            Ok((_, opt, _)) => edns = opt.or(edns),
            Err(_) => return reject(ResponseCode::FormErr),
        }
    }
    Request::Query(Query {
        header,
        name: lower_case(question.name()),
        question,
        edns: edns.as_ref().map(Edns::max_payload),
    })
}

fn lower_case(name: &Name) -> String {
    let mut text = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.extend(label.iter().map(|&byte| {
            if byte.is_ascii_graphic() && byte != b'.' {
                char::from(byte.to_ascii_lowercase())
            } else {
                '\0'
            }
        }));
    }
    text
}

impl Query {
    pub fn qtype(&self) -> RecordType {
        self.question.query_type()
    }

    /// The largest response this query may get over UDP (RFC 6891: the EDNS size, at least
    /// 512 bytes).
    pub fn udp_limit(&self) -> usize {
        self.edns
            .map_or(UDP_MIN, |size| usize::from(size).clamp(UDP_MIN, UDP_MAX))
    }
}

/// Writes a bare-header answer to a rejected request (its opcode and RD copied).
pub fn reject(request: &Header, rcode: ResponseCode, out: &mut Vec<u8>) {
    let mut header = Header::response_from_request(request);
    header.set_response_code(rcode);
    out.clear();
    // Twelve bytes cannot exceed the encoder's limit.
    let _ = header.emit(&mut BinEncoder::new(out));
}

/// A dotted name (a trailing dot optional); `None` if a label is empty or longer than 63
/// bytes, or the name longer than 255.
pub fn name(text: &str) -> Option<Name> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Some(Name::root());
    }
    Name::from_labels(text.split('.').map(str::as_bytes)).ok()
}

/// Bytes a name takes uncompressed.
fn encoded_len(name: &Name) -> usize {
    if name.is_root() { 1 } else { name.len() + 1 }
}

/// The section a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// A response being built: a hickory `Message` with the question echoed, written by `finish`
/// within the size limit.
pub struct Response {
    message: Message,
    /// For each additional record, the answer it goes with (the address of an SRV answer's
    /// target): it is left out with that answer.
    goes_with: Vec<Option<usize>>,
    limit: usize,
    /// Fewest bytes the message can take with the records added so far (every name that may
    /// be compressed counted as a pointer).
    least: usize,
}

impl Response {
    /// Starts the response to `query`, at most `limit` bytes long.
    pub fn new(query: &Query, limit: usize) -> Self {
        // Opcode and RD are copied (RFC 1035 4.1.1); every answer is authoritative.
        let mut header = Header::response_from_request(&query.header);
        header.set_authoritative(true);
        let mut message = Message::new();
        message.set_header(header).add_query(query.question.clone());
        let mut least = HEADER_LEN + encoded_len(query.question.name()) + 4;
        if let Some(size) = query.edns {
            // The requester's payload size echoed as Consul does; version 0, no flags, no
            // options.
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            message.set_edns(edns);
            least += OPT_LEN;
        }
        Self {
            message,
            goes_with: Vec::new(),
            limit,
            least,
        }
    }

    /// The question's name as asked: the owner of the records `add_asked` adds.
    fn question(&self) -> &Name {
        self.message.queries()[0].name()
    }

    pub fn set_rcode(&mut self, rcode: ResponseCode) {
        self.message.set_response_code(rcode);
    }

    pub fn answers(&self) -> usize {
        self.message.answers().len()
    }

    /// Marks the response truncated (TC): answers were left out for lack of room.
    pub fn truncate(&mut self) {
        self.message.set_truncated(true);
    }

    /// Whether the records added so far cannot all fit: an answer added now would be left out.
    pub fn full(&self) -> bool {
        self.least > self.limit
    }

    /// Adds a record.
    pub fn add(&mut self, section: Section, record: Record) {
        self.least += least_len(&record);
        match section {
            Section::Answer => self.message.add_answer(record),
            Section::Authority => self.message.add_name_server(record),
            Section::Additional => {
                self.goes_with.push(None);
                self.message.add_additional(record)
            }
        };
    }

    /// Adds a record named as the question.
    pub fn add_asked(&mut self, section: Section, ttl: u32, data: RData) {
        let record = Record::from_rdata(self.question().clone(), ttl, data);
        self.add(section, record);
    }

    /// Adds an answer named as the question and the additional record that goes with it: a
    /// truncated response keeps both or neither.
    pub fn add_asked_with(&mut self, ttl: u32, data: RData, additional: Record) {
        self.add_asked(Section::Answer, ttl, data);
        self.add(Section::Additional, additional);
        if let Some(last) = self.goes_with.last_mut() {
            *last = Some(self.message.answers().len() - 1);
        }
    }

    /// Writes the response into `out`: every record if they fit, else as many answers as fit
    /// (at least one: a message must carry something, as Consul's do) and the TC bit.
    pub fn finish(self, out: &mut Vec<u8>) {
        let all = self.answers();
        match self.write(all, out) {
            Ok(len) if len <= self.limit || all <= 1 => return,
            Err(error) if all <= 1 => return self.fail(&error, out),
            _ => {}
        }
        // Answers that fit, and a number that does not.
        let (mut fit, mut over) = (1, all);
        while over - fit > 1 {
            let middle = (fit + over) / 2;
            match self.write(middle, out) {
                Ok(len) if len <= self.limit => fit = middle,
                _ => over = middle,
            }
        }
        if let Err(error) = self.write(fit, out) {
            self.fail(&error, out);
        }
    }

    /// Answers SERVFAIL instead of a response that cannot be written (none should be).
    fn fail(&self, error: &ProtoError, out: &mut Vec<u8>) {
        tracing::debug!(%error, "cannot encode a DNS answer");
        reject(self.message.header(), ResponseCode::ServFail, out);
    }

    /// Writes the message with its first `answers` answers (and what goes with them); returns
    /// its length.
    fn write(&self, answers: usize, out: &mut Vec<u8>) -> Result<usize, ProtoError> {
        let message = &self.message;
        out.clear();
        let mut encoder = BinEncoder::new(out);
        let place = encoder.place::<Header>()?;
        for question in message.queries() {
            question.emit(&mut encoder)?;
        }
        for record in &message.answers()[..answers] {
            emit_record(record, &mut encoder)?;
        }
        for record in message.name_servers() {
            emit_record(record, &mut encoder)?;
        }
        let mut additional = 0;
        for (record, with) in message.additionals().iter().zip(&self.goes_with) {
            if with.is_none_or(|answer| answer < answers) {
                emit_record(record, &mut encoder)?;
                additional += 1;
            }
        }
        if let Some(edns) = message.extensions() {
            edns.emit(&mut encoder)?;
            additional += 1;
        }
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let mut header = *message.header();
        header
            .set_query_count(count(message.queries().len()))
            .set_answer_count(count(answers))
            .set_name_server_count(count(message.name_servers().len()))
            .set_additional_count(count(additional))
            .set_truncated(message.truncated() || answers < message.answers().len());
        place.replace(&mut encoder, header)?;
        Ok(encoder.len())
    }
}

/// Writes a record, names compressed by hickory, except an SRV target: RFC 2782 forbids
/// compressing it, and hickory's `SRV` compresses it outside canonical (DNSSEC) mode, which
/// would write it in lower case.
fn emit_record(record: &Record, encoder: &mut BinEncoder<'_>) -> Result<(), ProtoError> {
    let RData::SRV(srv) = record.data() else {
        return record.emit(encoder);
    };
    record.name().emit(encoder)?;
    RecordType::SRV.emit(encoder)?;
    record.dns_class().emit(encoder)?;
    encoder.emit_u32(record.ttl())?;
    let place = encoder.place::<u16>()?;
    for value in [srv.priority(), srv.weight(), srv.port()] {
        encoder.emit_u16(value)?;
    }
    // Written whole as spelled, and still offered to later names to point at, such as the
    // owner of the target's address record.
    srv.target().emit_as_canonical(encoder, true)?;
    let len = encoder.len_since_place(&place);
    place.replace(encoder, u16::try_from(len).unwrap_or(u16::MAX))
}

/// Fewest bytes a record can take: its owner as a pointer, names in its data as pointers too
/// (but an SRV target, never compressed).
fn least_len(record: &Record) -> usize {
    let data = match record.data() {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + encoded_len(srv.target()),
        RData::TXT(txt) => txt.iter().map(|text| 1 + text.len()).sum(),
        _ => 1,
    };
    encoded_len(record.name()).min(2) + 10 + data
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SRV};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::Ipv4Addr;

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Question::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut opt = Edns::new();
            opt.set_max_payload(size);
            message.set_edns(opt);
        }
        message.to_vec().unwrap()
    }

    fn parsed(packet: &[u8]) -> Query {
        match parse(packet) {
            Request::Query(query) => query,
            other => panic!("not a query: {other:?}"),
        }
    }

    fn rejected(packet: &[u8]) -> Option<ResponseCode> {
        match parse(packet) {
            Request::Reject { rcode, .. } => Some(rcode),
            _ => None,
        }
    }

    #[test]
    fn parses_a_question_in_lower_case_with_its_edns_size() {
        let q = parsed(&query("Web.Service.CONSUL.", RecordType::SRV, Some(1232)));
        assert_eq!(q.header.id(), 0x1234);
        assert_eq!(q.name, "web.service.consul");
        assert_eq!(q.qtype(), RecordType::SRV);
        assert_eq!(q.edns, Some(1232));
        assert_eq!(q.udp_limit(), 1232);
        let plain = parsed(&query("consul.", RecordType::A, None));
        assert_eq!(plain.udp_limit(), 512);
        // RFC 6891: a smaller EDNS size means 512.
        assert_eq!(
            parsed(&query("consul.", RecordType::A, Some(100))).udp_limit(),
            512
        );
    }

    #[test]
    fn odd_packets_are_rejected_or_ignored_without_panicking() {
        assert!(matches!(parse(&[1, 2, 3]), Request::Ignore));
        let mut response = query("a.consul.", RecordType::A, None);
        response[2] |= 0x80;
        assert!(matches!(parse(&response), Request::Ignore));
        let mut two = query("a.consul.", RecordType::A, None);
        two[5] = 2;
        assert_eq!(rejected(&two), Some(ResponseCode::FormErr));
        let mut update = query("a.consul.", RecordType::A, None);
        update[2] = 5 << 3;
        assert_eq!(rejected(&update), Some(ResponseCode::NotImp));
        let full = query("a.b.consul.", RecordType::A, Some(4096));
        for end in 0..full.len() {
            let _ = parse(&full[..end]);
        }
        let answer = |packet: &[u8]| {
            let mut out = Vec::new();
            match parse(packet) {
                Request::Query(q) => Response::new(&q, q.udp_limit()).finish(&mut out),
                Request::Reject { header, rcode } => reject(&header, rcode, &mut out),
                Request::Ignore => {}
            }
        };
        // Every single-byte corruption parses or is refused, never panics, nor does answering
        // what parses.
        for at in 0..full.len() {
            for value in [0u8, 1, 63, 64, 0xC0, 0xFF] {
                let mut bad = full.clone();
                bad[at] = value;
                answer(&bad);
            }
        }
        // Nor do random corruptions of a few bytes, or random packets.
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let mut bad = full.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bad.len());
                bad[at] = rng.random();
            }
            bad.truncate(rng.random_range(12..=bad.len()));
            answer(&bad);
            let noise: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            answer(&noise);
        }
    }

    #[test]
    fn a_label_that_is_not_a_name_matches_nothing() {
        let mut packet = query("ab.consul.", RecordType::A, None);
        packet[13] = b'.';
        assert_eq!(parsed(&packet).name, "\0b.consul");
    }

    #[test]
    fn names_are_made_of_labels() {
        let name = name("a.bc.").unwrap();
        assert_eq!(name.iter().collect::<Vec<_>>(), [&b"a"[..], b"bc"]);
        assert!(super::name("").unwrap().is_root());
        assert!(super::name("a..b").is_none());
        assert!(super::name(&"x".repeat(64)).is_none());
    }

    fn srv_response(q: &Query, limit: usize, n: u8) -> Message {
        let mut response = Response::new(q, limit);
        for i in 1..=n {
            let target = name(&format!("0a0000{i:02x}.addr.dc1.consul")).unwrap();
            let srv = RData::SRV(SRV::new(1, 1, 8000, target.clone()));
            let address = Record::from_rdata(target, 0, RData::A(A(Ipv4Addr::new(10, 0, 0, i))));
            if response.full() {
                response.truncate();
                break;
            }
            response.add_asked_with(0, srv, address);
        }
        let mut out = Vec::new();
        response.finish(&mut out);
        assert!(out.len() <= limit, "{} > {limit}", out.len());
        Message::from_vec(&out).unwrap()
    }

    #[test]
    fn a_truncated_answer_keeps_each_srv_record_with_its_address() {
        let q = parsed(&query("web.service.consul.", RecordType::SRV, None));
        let small = srv_response(&q, UDP_MIN, 40);
        assert!(small.truncated());
        assert!(small.answers().len() > 1 && small.answers().len() < 40);
        assert_eq!(small.answers().len(), small.additionals().len());
        for (srv, address) in small.answers().iter().zip(small.additionals()) {
            let RData::SRV(srv) = srv.data() else {
                panic!("not SRV: {srv:?}");
            };
            assert_eq!(srv.target(), address.name());
        }
        let whole = srv_response(&q, TCP_MAX, 40);
        assert!(!whole.truncated());
        assert_eq!(whole.answers().len(), 40);
        assert_eq!(whole.additionals().len(), 40);
    }

    #[test]
    fn srv_targets_are_written_whole_and_edns_is_echoed() {
        let q = parsed(&query("Web.service.consul.", RecordType::SRV, Some(1232)));
        let mut response = Response::new(&q, q.udp_limit());
        let target = name("0a000001.addr.dc1.consul").unwrap();
        let srv = RData::SRV(SRV::new(1, 1, 8080, target.clone()));
        let address = Record::from_rdata(target, 0, RData::A(A(Ipv4Addr::new(10, 0, 0, 1))));
        response.add_asked_with(0, srv, address);
        let mut out = Vec::new();
        response.finish(&mut out);
        let target = b"\x080a000001\x04addr\x03dc1\x06consul\x00";
        assert!(out.windows(target.len()).any(|w| w == target), "{out:?}");
        let message = Message::from_vec(&out).unwrap();
        assert_eq!(message.id(), 0x1234);
        assert!(message.authoritative() && message.recursion_desired());
        assert_eq!(
            message.queries()[0].name().to_ascii(),
            "Web.service.consul."
        );
        assert_eq!(
            message.answers()[0].name().to_ascii(),
            "Web.service.consul."
        );
        assert_eq!(message.max_payload(), 1232);
        assert_eq!(message.additionals().len(), 1);
    }
}
