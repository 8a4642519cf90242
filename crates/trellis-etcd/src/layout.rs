//! Where each record lives in etcd (the key layout under the prefix, readable with `etcdctl`),
//! and a batch of mutations turned into one final put or delete per key, because etcd refuses a
//! transaction that names a key twice.

use std::collections::BTreeMap;
use trellis_store::Mutation;

/// The key layout under a prefix such as `/trellis/`:
///
/// | key | value |
/// |---|---|
/// | `<prefix>index` | written with the last transaction of every commit: the index the leader numbered it with, 20 decimal digits (0: no commit yet) |
/// | `<prefix>lock` | the name of the server that holds the store, bound to its lease |
/// | `<prefix>instances/<id>` | an instance (registration, create and modify index), JSON |
/// | `<prefix>checks/<instance id>/<check id>` | a check; a node check has an empty instance id (`checks//<id>`) |
/// | `<prefix>kv/<key>` | a KV entry (flags, session, indexes, the value), JSON |
/// | `<prefix>sessions/<id>` | a session, JSON; one with a TTL is bound to its own lease ([`session_lease`]) |
/// | `<prefix>config/<kind>/<lower-cased name>` | a config entry, JSON |
/// | `<prefix>members/<id>` | a live server (node and HTTP address), bound to its lease |
/// | `<prefix>secret` | what servers of the prefix show each other |
///
/// IDs and names are written as they are except `%` and `/`, written `%25` and `%2F`, so each
/// is one path segment; KV keys are written as they are, being paths already.
///
/// **Indexes are etcd's revisions.** A record's `CreateIndex` and `ModifyIndex` are its key's
/// create and mod revisions (`etcdctl get -w json` shows them), and the catalog's index is the
/// mod revision of `<prefix>index`, that is the revision of the last commit: every server reads
/// the same numbers off the keys. The indexes inside a record's JSON are the leader's tentative
/// numbers, replaced by the revisions when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// What a key under the prefix is (see [`Layout::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Index,
    Lock,
    Instance(String),
    Check {
        owner: Option<String>,
        id: String,
    },
    Kv(String),
    Session(String),
    Config {
        kind: String,
        name: String,
    },
    /// A live server: `<prefix>members/<id>`, bound to its lease.
    Member(String),
    /// The index of a record table (`<prefix><table>/index`: `acl`, `transactions`, `ca`).
    TableIndex(String),
    /// Anything else: a table's records, or a key Trellis does not write.
    Other,
}

/// The parts of the layout that hold records, each read back with one prefix range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Instances,
    Checks,
    Kv,
    Sessions,
    Config,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Instances,
        Section::Checks,
        Section::Kv,
        Section::Sessions,
        Section::Config,
    ];

    fn segment(self) -> &'static str {
        match self {
            Section::Instances => "instances/",
            Section::Checks => "checks/",
            Section::Kv => "kv/",
            Section::Sessions => "sessions/",
            Section::Config => "config/",
        }
    }
}

impl Layout {
    /// The layout under `prefix`, which must be non-empty and printable; a `/` is added at its
    /// end if missing, so `/trellis` and `/trellis/` are one prefix.
    pub fn new(prefix: &str) -> Result<Self, String> {
        if prefix.is_empty() {
            return Err("the etcd prefix is empty: give one such as /trellis/".into());
        }
        if prefix.chars().any(char::is_control) {
            return Err(format!("the etcd prefix {prefix:?} has control characters"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self { prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn index_key(&self) -> String {
        format!("{}index", self.prefix)
    }

    /// The key whose holder owns the store: it carries the holder's name and lives as long as
    /// the holder's lease.
    pub fn lock_key(&self) -> String {
        format!("{}lock", self.prefix)
    }

    /// Where a live server announces itself (its node and HTTP address), bound to its lease:
    /// the members among which the active health probes are shared out.
    pub fn member_key(&self, id: &str) -> String {
        format!("{}members/{}", self.prefix, segment(id))
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    /// A secret every server of the prefix reads (as able to read etcd as to write it): what
    /// a follower shows the leader when it hands a probe's result over.
    pub fn secret_key(&self) -> String {
        format!("{}secret", self.prefix)
    }

    pub fn section(&self, section: Section) -> String {
        format!("{}{}", self.prefix, section.segment())
    }

    pub fn instance_key(&self, id: &str) -> String {
        format!("{}{}", self.section(Section::Instances), segment(id))
    }

    pub fn check_key(&self, owner: Option<&str>, id: &str) -> String {
        format!(
            "{}{}/{}",
            self.section(Section::Checks),
            segment(owner.unwrap_or_default()),
            segment(id)
        )
    }

    pub fn kv_key(&self, key: &str) -> String {
        format!("{}{key}", self.section(Section::Kv))
    }

    pub fn session_key(&self, id: &str) -> String {
        format!("{}{}", self.section(Section::Sessions), segment(id))
    }

    pub fn config_key(&self, kind: &str, name: &str) -> String {
        format!(
            "{}{}/{}",
            self.section(Section::Config),
            segment(kind),
            segment(&trellis_types::config_entry::name_key(name))
        )
    }

    /// What `key` is in this layout; the inverse of the `*_key` methods.
    pub fn parse(&self, key: &[u8]) -> Key {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
        else {
            return Key::Other;
        };
        let section = |section: Section| rest.strip_prefix(section.segment());
        let two = |path: &str| {
            path.split_once('/')
                .filter(|(_, second)| !second.contains('/'))
                .map(|(first, second)| (unsegment(first), unsegment(second)))
        };
        if rest == "index" {
            Key::Index
        } else if rest == "lock" {
            Key::Lock
        } else if let Some(id) = section(Section::Instances) {
            Key::Instance(unsegment(id))
        } else if let Some(path) = section(Section::Checks) {
            match two(path) {
                Some((owner, id)) => Key::Check {
                    owner: (!owner.is_empty()).then_some(owner),
                    id,
                },
                None => Key::Other,
            }
        } else if let Some(key) = section(Section::Kv) {
            Key::Kv(key.to_owned())
        } else if let Some(id) = section(Section::Sessions) {
            Key::Session(unsegment(id))
        } else if let Some(path) = section(Section::Config) {
            match two(path) {
                Some((kind, name)) => Key::Config { kind, name },
                None => Key::Other,
            }
        } else if let Some(id) = rest.strip_prefix("members/").filter(|id| !id.contains('/')) {
            Key::Member(unsegment(id))
        } else if let Some(table) = rest.strip_suffix("/index").filter(|t| !t.contains('/')) {
            Key::TableIndex(table.to_owned())
        } else {
            Key::Other
        }
    }

    /// The key a mutation puts or deletes.
    pub fn key(&self, mutation: &Mutation) -> String {
        match mutation {
            Mutation::PutInstance(r) => self.instance_key(&r.registration.id),
            Mutation::DeleteInstance(id) => self.instance_key(id),
            Mutation::PutCheck(r) => self.check_key(
                r.definition.service_id.as_deref(),
                r.definition.id.as_deref().unwrap_or_default(),
            ),
            Mutation::DeleteCheck { id, owner } => self.check_key(owner.as_deref(), id),
            Mutation::PutKv(e) => self.kv_key(&e.key),
            Mutation::DeleteKv(key) => self.kv_key(key),
            Mutation::PutSession(s) => self.session_key(&s.id),
            Mutation::DeleteSession(id) => self.session_key(id),
            Mutation::PutConfigEntry(e) => self.config_key(&e.kind, &e.name),
            Mutation::DeleteConfigEntry { kind, name } => self.config_key(kind, name),
        }
    }

    /// `mutations`, in order, as the final state of each key they touch: `Some(value)` to
    /// put, `None` to delete. A record's value carries the indexes the leader numbered it
    /// with; the indexes every server shows are the key's revisions (see [`Layout`]).
    pub fn final_writes(
        &self,
        mutations: &[Mutation],
    ) -> Result<BTreeMap<String, Option<Vec<u8>>>, serde_json::Error> {
        let mut writes = BTreeMap::new();
        for mutation in mutations {
            let value = match mutation {
                Mutation::PutInstance(r) => Some(serde_json::to_vec(r)?),
                Mutation::PutCheck(r) => Some(serde_json::to_vec(r)?),
                Mutation::PutKv(e) => Some(serde_json::to_vec(e)?),
                Mutation::PutSession(s) => Some(serde_json::to_vec(s)?),
                Mutation::PutConfigEntry(e) => Some(serde_json::to_vec(e)?),
                Mutation::DeleteInstance(_)
                | Mutation::DeleteCheck { .. }
                | Mutation::DeleteKv(_)
                | Mutation::DeleteSession(_)
                | Mutation::DeleteConfigEntry { .. } => None,
            };
            writes.insert(self.key(mutation), value);
        }
        Ok(writes)
    }
}

/// The etcd lease a session with a TTL is bound to: derived from its ID, so that any server
/// can renew the session (keep the lease alive) knowing only the ID. Positive, never 0 (etcd's
/// "no lease"); FNV-1a, 63 bits.
pub fn session_lease(session_id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"trellis-session:".iter().chain(session_id.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ((hash >> 1) as i64).max(1)
}

/// The index as stored: 20 digits, so that etcd's byte-wise comparison orders indexes.
pub fn encode_index(index: u64) -> String {
    format!("{index:020}")
}

pub fn decode_index(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// `s` as one path segment: `%` and `/` percent-encoded, everything else as it is.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`segment`].
fn unsegment(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// Splits `writes` into transactions of at most `max_ops` operations each, keeping one free
/// in the last for the index. Never returns no transaction: an empty batch still raises the
/// index.
pub fn transactions<T>(writes: &[T], max_ops: usize) -> Vec<&[T]> {
    let room = max_ops.max(2) - 1;
    if writes.is_empty() {
        return vec![writes];
    }
    writes.chunks(room).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_catalog::KvEntry;

    fn layout() -> Layout {
        Layout::new("/trellis").unwrap()
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let l = layout();
        assert_eq!(l.prefix(), "/trellis/");
        assert_eq!(l.index_key(), "/trellis/index");
        assert_eq!(l.instance_key("web-1"), "/trellis/instances/web-1");
        assert_eq!(l.instance_key("a/b%c"), "/trellis/instances/a%2Fb%25c");
        assert_eq!(
            l.check_key(Some("web-1"), "service:web-1"),
            "/trellis/checks/web-1/service:web-1"
        );
        assert_eq!(l.check_key(None, "disk"), "/trellis/checks//disk");
        assert_eq!(l.kv_key("app/db/host"), "/trellis/kv/app/db/host");
        assert_eq!(l.session_key("abc"), "/trellis/sessions/abc");
        assert_eq!(
            l.config_key("service-defaults", "Web"),
            "/trellis/config/service-defaults/web"
        );
        assert!(Layout::new("").is_err());
        assert!(Layout::new("/a\nb").is_err());
    }

    #[test]
    fn every_key_parses_back_to_what_it_names() {
        let l = layout();
        let parse = |key: String| l.parse(key.as_bytes());
        assert_eq!(parse(l.index_key()), Key::Index);
        assert_eq!(parse(l.lock_key()), Key::Lock);
        assert_eq!(
            parse(l.instance_key("a/b%c")),
            Key::Instance("a/b%c".into())
        );
        assert_eq!(
            parse(l.check_key(Some("a/b"), "c%2F")),
            Key::Check {
                owner: Some("a/b".into()),
                id: "c%2F".into()
            }
        );
        assert_eq!(
            parse(l.check_key(None, "disk")),
            Key::Check {
                owner: None,
                id: "disk".into()
            }
        );
        assert_eq!(
            parse(l.kv_key("app/db/host")),
            Key::Kv("app/db/host".into())
        );
        assert_eq!(parse(l.session_key("s/1")), Key::Session("s/1".into()));
        assert_eq!(
            parse(l.config_key("service-defaults", "Web")),
            Key::Config {
                kind: "service-defaults".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            parse("/trellis/acl/index".into()),
            Key::TableIndex("acl".into())
        );
        assert_eq!(parse("/trellis/acl/records/token/x".into()), Key::Other);
        assert_eq!(parse(l.member_key("a/1")), Key::Member("a/1".into()));
        assert_eq!(parse("/other/index".into()), Key::Other);
        assert_eq!(parse("/trellis/checks/no-id".into()), Key::Other);
    }

    #[test]
    fn an_id_with_a_slash_cannot_collide_with_a_check_of_another_instance() {
        let l = layout();
        // Instance "a/b"'s check "c" vs instance "a"'s check "b/c".
        assert_ne!(l.check_key(Some("a/b"), "c"), l.check_key(Some("a"), "b/c"));
    }

    #[test]
    fn the_index_orders_as_bytes_as_it_does_as_a_number() {
        assert!(encode_index(9) < encode_index(10));
        assert!(encode_index(99_999) < encode_index(100_000));
        assert_eq!(
            decode_index(encode_index(u64::MAX).as_bytes()),
            Some(u64::MAX)
        );
        assert_eq!(decode_index(b"x"), None);
    }

    #[test]
    fn the_last_mutation_of_a_key_wins() {
        let entry = |value: &[u8]| KvEntry {
            key: "k".into(),
            value: value.to_vec(),
            flags: 0,
            lock_index: 0,
            session: None,
            create_index: 1,
            modify_index: 1,
        };
        let writes = layout()
            .final_writes(&[
                Mutation::PutKv(entry(b"1")),
                Mutation::DeleteKv("k".into()),
                Mutation::PutKv(entry(b"2")),
                Mutation::DeleteKv("gone".into()),
            ])
            .unwrap();
        assert_eq!(writes.len(), 2);
        let put: KvEntry =
            serde_json::from_slice(writes["/trellis/kv/k"].as_ref().unwrap()).unwrap();
        assert_eq!(put.value, b"2");
        assert_eq!(writes["/trellis/kv/gone"], None);
    }

    #[test]
    fn large_batches_split_leaving_room_for_the_index() {
        let writes: Vec<u32> = (0..300).collect();
        let txns = transactions(&writes, 128);
        assert_eq!(
            txns.iter().map(|t| t.len()).collect::<Vec<_>>(),
            [127, 127, 46]
        );
        assert_eq!(transactions::<u32>(&[], 128).len(), 1);
        assert_eq!(transactions(&writes[..127], 128).len(), 1);
    }
}
