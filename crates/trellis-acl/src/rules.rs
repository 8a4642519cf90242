//! Policy rules: interpreting rules text (HCL or JSON) into per-kind rule tables, and merging
//! the rules of several policies with Consul's precedence (deny over write over list over read).

use std::collections::{BTreeMap, HashSet};

use crate::access::Access;
use crate::error::AclError;
use crate::syntax::{self, Item, Pos, SyntaxError, Value};

/// The rule kinds that are keyed by a name (each with an exact and a `_prefix` form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Service,
    Node,
    Key,
    Session,
    Agent,
    Event,
    Query,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::Node,
        Kind::Key,
        Kind::Session,
        Kind::Agent,
        Kind::Event,
        Kind::Query,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Node => "node",
            Kind::Key => "key",
            Kind::Session => "session",
            Kind::Agent => "agent",
            Kind::Event => "event",
            Kind::Query => "query",
        }
    }

    /// `service` → (Service, exact), `service_prefix` → (Service, prefix).
    fn from_rule_name(s: &str) -> Option<(Kind, bool)> {
        let (base, prefix) = match s.strip_suffix("_prefix") {
            Some(base) => (base, true),
            None => (s, false),
        };
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == base)
            .map(|k| (k, prefix))
    }
}

/// The single-valued rules (`acl = "write"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Single {
    Acl,
    Operator,
    Keyring,
    Mesh,
    Peering,
}

impl Single {
    pub(crate) const ALL: [Single; 5] = [
        Single::Acl,
        Single::Operator,
        Single::Keyring,
        Single::Mesh,
        Single::Peering,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Single::Acl => "acl",
            Single::Operator => "operator",
            Single::Keyring => "keyring",
            Single::Mesh => "mesh",
            Single::Peering => "peering",
        }
    }

    fn from_name(s: &str) -> Option<Single> {
        Single::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Merges `new` into a slot: it replaces what is there if it takes precedence.
fn merge_access(slot: &mut Option<Access>, new: Access) {
    match slot {
        Some(old) if !new.takes_precedence_over(*old) => {}
        _ => *slot = Some(new),
    }
}

/// The exact-name and prefix rules of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Table {
    pub exact: BTreeMap<String, Access>,
    pub prefix: BTreeMap<String, Access>,
}

/// Above this many prefix rules, lookups probe each prefix of the name instead of scanning the
/// rules.
const SCAN_LIMIT: usize = 16;

impl Table {
    fn map_mut(&mut self, prefix: bool) -> &mut BTreeMap<String, Access> {
        if prefix {
            &mut self.prefix
        } else {
            &mut self.exact
        }
    }

    pub(crate) fn merge(&mut self, prefix: bool, name: &str, access: Access) {
        let map = self.map_mut(prefix);
        match map.get_mut(name) {
            Some(old) => {
                if access.takes_precedence_over(*old) {
                    *old = access;
                }
            }
            None => {
                map.insert(name.to_owned(), access);
            }
        }
    }

    fn merge_table(&mut self, other: &Table) {
        for (name, access) in &other.exact {
            self.merge(false, name, *access);
        }
        for (name, access) in &other.prefix {
            self.merge(true, name, *access);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty()
    }

    /// Consul's `getPolicy`: the exact rule for `name`, else the longest prefix rule.
    pub(crate) fn lookup(&self, name: &str) -> Option<Access> {
        match self.exact.get(name) {
            Some(a) => Some(*a),
            None => self.longest_prefix(name),
        }
    }

    /// The longest prefix rule that `name` starts with ("" matches every name).
    pub(crate) fn longest_prefix(&self, name: &str) -> Option<Access> {
        if self.prefix.len() <= SCAN_LIMIT {
            self.prefix
                .iter()
                .filter(|(p, _)| name.starts_with(p.as_str()))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, a)| *a)
        } else {
            (0..=name.len())
                .rev()
                .filter(|&i| name.is_char_boundary(i))
                .find_map(|i| self.prefix.get(&name[..i]))
                .copied()
        }
    }
}

/// Parsed policy rules (one policy's, or several merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Indexed by `Kind as usize`.
    pub(crate) tables: [Table; 7],
    /// The `intentions` attribute of service rules as written (defaults are applied by the
    /// authorizer, after merging, as Consul does).
    pub(crate) intentions: Table,
    /// Indexed by `Single as usize`.
    pub(crate) singles: [Option<Access>; 5],
}

impl Rules {
    /// Whether the rules grant or deny nothing (empty text, `{}`, only comments).
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(Table::is_empty)
            && self.intentions.is_empty()
            && self.singles.iter().all(Option::is_none)
    }

    pub(crate) fn table(&self, kind: Kind) -> &Table {
        &self.tables[kind as usize]
    }

    pub(crate) fn single(&self, single: Single) -> Option<Access> {
        self.singles[single as usize]
    }

    /// Folds `other` in: per kind, per name (exact and prefix separately), per attribute, the
    /// access that takes precedence wins.
    pub(crate) fn merge(&mut self, other: &Rules) {
        for (mine, theirs) in self.tables.iter_mut().zip(&other.tables) {
            mine.merge_table(theirs);
        }
        self.intentions.merge_table(&other.intentions);
        for (mine, theirs) in self.singles.iter_mut().zip(&other.singles) {
            if let Some(a) = theirs {
                merge_access(mine, *a);
            }
        }
    }

    /// Rules that deny every resource: what a stored policy whose text no longer parses
    /// stands for, so that it fails closed.
    pub(crate) fn deny_all() -> Rules {
        let mut rules = Rules::default();
        for table in &mut rules.tables {
            table.merge(true, "", Access::Deny);
        }
        rules.intentions.merge(true, "", Access::Deny);
        rules.singles = [Some(Access::Deny); 5];
        rules
    }
}

/// Parses policy rules text: JSON if the trimmed text starts with `{` (it must then be a JSON
/// object), HCL otherwise; empty text is no rules. Errors read `line:column: reason`.
pub fn parse_rules(text: &str) -> Result<Rules, AclError> {
    let trimmed = text.trim_start();
    let items = if trimmed.is_empty() {
        return Ok(Rules::default());
    } else if trimmed.starts_with('{') {
        // serde_json decides what is JSON (the brief's "parses as a JSON object"); the
        // positioned reader then builds the tree. A body in HCL never starts with '{', so
        // reporting the JSON error loses nothing.
        if let Err(e) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
            return Err(AclError::Parse(json_error(&e)));
        }
        syntax::parse_json(text)
    } else {
        syntax::parse_hcl(text)
    };
    items
        .and_then(|items| interpret(&items))
        .map_err(|e| AclError::Parse(e.to_string()))
}

/// serde_json's message as `line:col: invalid JSON: reason` (its own suffix removed).
fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let reason = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full,
    };
    format!("{}:{}: invalid JSON: {reason}", e.line(), e.column())
}

fn interpret(items: &[Item]) -> Result<Rules, SyntaxError> {
    let mut rules = Rules::default();
    let mut seen_singles = HashSet::new();
    for item in items {
        if let Some(single) = Single::from_name(&item.key) {
            if let Some((_, pos)) = item.labels.first() {
                return Err(SyntaxError::new(
                    *pos,
                    format!("{0} takes no name: write {0} = \"read\"", item.key),
                ));
            }
            if !seen_singles.insert(single as usize) {
                return Err(SyntaxError::new(
                    item.pos,
                    format!("duplicate attribute {:?}", item.key),
                ));
            }
            let access = level(&item.key, &item.value, false)?;
            rules.singles[single as usize] = Some(access);
        } else if let Some((kind, prefix)) = Kind::from_rule_name(&item.key) {
            match (item.labels.as_slice(), &item.value) {
                ([(name, name_pos)], Value::Object(body, _)) => {
                    rule(&mut rules, &item.key, kind, prefix, name, *name_pos, body)?;
                }
                ([], Value::Object(entries, _)) => {
                    named_rules(&mut rules, item, kind, prefix, entries)?
                }
                ([], Value::List(values, _)) => {
                    // HCL's JSON form also allows a list of {"name": {...}} objects.
                    for v in values {
                        match v {
                            Value::Object(entries, _) => {
                                named_rules(&mut rules, item, kind, prefix, entries)?;
                            }
                            other => return Err(needs_name(item, other.pos())),
                        }
                    }
                }
                ([_, (_, pos), ..], _) => {
                    return Err(SyntaxError::new(
                        *pos,
                        format!("{} takes one name", item.key),
                    ));
                }
                (_, other) => return Err(needs_name(item, other.pos())),
            }
        } else {
            return Err(SyntaxError::new(
                item.pos,
                format!("unknown rule kind {:?}", item.key),
            ));
        }
    }
    Ok(rules)
}

fn needs_name(item: &Item, pos: Pos) -> SyntaxError {
    SyntaxError::new(
        pos,
        format!(
            "{0} rules need a name: {0} \"name\" {{ policy = \"read\" }}",
            item.key
        ),
    )
}

/// The JSON form `"service": {"web": {...}, "db": {...}}` (or HCL `service = { web = {...} }`).
fn named_rules(
    rules: &mut Rules,
    item: &Item,
    kind: Kind,
    prefix: bool,
    entries: &[Item],
) -> Result<(), SyntaxError> {
    for entry in entries {
        match (&entry.labels[..], &entry.value) {
            ([], Value::Object(body, _)) => {
                rule(rules, &item.key, kind, prefix, &entry.key, entry.pos, body)?;
            }
            _ => {
                return Err(SyntaxError::new(
                    entry.value.pos(),
                    format!(
                        "{} {:?} must be a block such as {{ policy = \"read\" }}, found {}",
                        item.key,
                        entry.key,
                        entry.value.describe()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn rule(
    rules: &mut Rules,
    rule_name: &str,
    kind: Kind,
    prefix: bool,
    name: &str,
    name_pos: Pos,
    body: &[Item],
) -> Result<(), SyntaxError> {
    let mut policy = None;
    let mut intentions = None;
    for attr in body {
        let slot = match attr.key.as_str() {
            "policy" => &mut policy,
            "intentions" if kind == Kind::Service => &mut intentions,
            _ => {
                return Err(SyntaxError::new(
                    attr.pos,
                    format!("unknown attribute {:?} in {rule_name} {name:?}", attr.key),
                ));
            }
        };
        if let Some((_, pos)) = attr.labels.first() {
            return Err(SyntaxError::new(
                *pos,
                format!("{0} takes no name: write {0} = \"read\"", attr.key),
            ));
        }
        if slot.is_some() {
            return Err(SyntaxError::new(
                attr.pos,
                format!("duplicate attribute {:?} in {rule_name} {name:?}", attr.key),
            ));
        }
        let allow_list = kind == Kind::Key && attr.key == "policy";
        *slot = Some(level(&attr.key, &attr.value, allow_list)?);
    }
    if policy.is_none() && intentions.is_none() {
        return Err(SyntaxError::new(
            name_pos,
            format!("missing policy in {rule_name} {name:?}"),
        ));
    }
    if let Some(a) = policy {
        rules.tables[kind as usize].merge(prefix, name, a);
    }
    if let Some(a) = intentions {
        rules.intentions.merge(prefix, name, a);
    }
    Ok(())
}

/// An access level value; `list` only where `allow_list`.
fn level(attr: &str, value: &Value, allow_list: bool) -> Result<Access, SyntaxError> {
    let want = if allow_list {
        "read, write, list or deny"
    } else {
        "read, write or deny"
    };
    let Value::Str(s, pos) = value else {
        return Err(SyntaxError::new(
            value.pos(),
            format!(
                "{attr} must be a string ({want}), found {}",
                value.describe()
            ),
        ));
    };
    match s.as_str() {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "deny" => Ok(Access::Deny),
        "list" if allow_list => Ok(Access::List),
        _ => Err(SyntaxError::new(
            *pos,
            format!("invalid {attr} {s:?}: want {want}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Rules {
        match parse_rules(text) {
            Ok(r) => r,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse_rules(text) {
            Err(AclError::Parse(msg)) => msg,
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }

    fn exact(r: &Rules, kind: Kind, name: &str) -> Option<Access> {
        r.table(kind).exact.get(name).copied()
    }

    fn prefix(r: &Rules, kind: Kind, name: &str) -> Option<Access> {
        r.table(kind).prefix.get(name).copied()
    }

    #[test]
    fn empty_text_is_no_rules() {
        for text in [
            "",
            "   \n\t",
            "# nothing\n// at all\n/* really */",
            "{}",
            "  { }  ",
        ] {
            assert!(parse(text).is_empty(), "{text:?}");
        }
        assert!(!parse("acl = \"read\"").is_empty());
        assert!(!parse("service \"a\" { intentions = \"read\" }").is_empty());
    }

    #[test]
    fn hcl_every_rule_kind() {
        let text = r#"
            service "web" { policy = "write" intentions = "read" }
            service_prefix "" { policy = "read" }
            node "n1" { policy = "write" }
            node_prefix "n" { policy = "deny" }
            key "app/config" { policy = "list" }
            key_prefix "app/" { policy = "write" }
            session "n1" { policy = "read" }
            session_prefix "" { policy = "deny" }
            agent "a1" { policy = "write" }
            agent_prefix "a" { policy = "read" }
            event "deploy" { policy = "write" }
            event_prefix "" { policy = "read" }
            query "q1" { policy = "deny" }
            query_prefix "q" { policy = "write" }
            acl = "read"
            operator = "write"
            keyring = "deny"
            mesh = "read"
            peering = "write"
        "#;
        let r = parse(text);
        use Access::*;
        assert_eq!(exact(&r, Kind::Service, "web"), Some(Write));
        assert_eq!(r.intentions.exact.get("web"), Some(&Read));
        assert_eq!(prefix(&r, Kind::Service, ""), Some(Read));
        assert!(r.intentions.prefix.is_empty());
        assert_eq!(exact(&r, Kind::Node, "n1"), Some(Write));
        assert_eq!(prefix(&r, Kind::Node, "n"), Some(Deny));
        assert_eq!(exact(&r, Kind::Key, "app/config"), Some(List));
        assert_eq!(prefix(&r, Kind::Key, "app/"), Some(Write));
        assert_eq!(exact(&r, Kind::Session, "n1"), Some(Read));
        assert_eq!(prefix(&r, Kind::Session, ""), Some(Deny));
        assert_eq!(exact(&r, Kind::Agent, "a1"), Some(Write));
        assert_eq!(prefix(&r, Kind::Agent, "a"), Some(Read));
        assert_eq!(exact(&r, Kind::Event, "deploy"), Some(Write));
        assert_eq!(prefix(&r, Kind::Event, ""), Some(Read));
        assert_eq!(exact(&r, Kind::Query, "q1"), Some(Deny));
        assert_eq!(prefix(&r, Kind::Query, "q"), Some(Write));
        assert_eq!(r.single(Single::Acl), Some(Read));
        assert_eq!(r.single(Single::Operator), Some(Write));
        assert_eq!(r.single(Single::Keyring), Some(Deny));
        assert_eq!(r.single(Single::Mesh), Some(Read));
        assert_eq!(r.single(Single::Peering), Some(Write));
    }

    #[test]
    fn json_every_rule_kind_equals_hcl() {
        let json = r#"{
            "service": {"web": {"policy": "write", "intentions": "read"}},
            "service_prefix": {"": {"policy": "read"}},
            "node": {"n1": {"policy": "write"}},
            "node_prefix": {"n": {"policy": "deny"}},
            "key": {"app/config": {"policy": "list"}},
            "key_prefix": {"app/": {"policy": "write"}},
            "session": {"n1": {"policy": "read"}},
            "session_prefix": {"": {"policy": "deny"}},
            "agent": {"a1": {"policy": "write"}},
            "agent_prefix": {"a": {"policy": "read"}},
            "event": {"deploy": {"policy": "write"}},
            "event_prefix": {"": {"policy": "read"}},
            "query": {"q1": {"policy": "deny"}},
            "query_prefix": {"q": {"policy": "write"}},
            "acl": "read", "operator": "write", "keyring": "deny", "mesh": "read",
            "peering": "write"
        }"#;
        let hcl = r#"
            service "web" { policy = "write", intentions = "read" }
            service_prefix "" { policy = "read" }
            node "n1" { policy = "write" }
            node_prefix "n" { policy = "deny" }
            key "app/config" { policy = "list" }
            key_prefix "app/" { policy = "write" }
            session "n1" { policy = "read" }
            session_prefix "" { policy = "deny" }
            agent "a1" { policy = "write" }
            agent_prefix "a" { policy = "read" }
            event "deploy" { policy = "write" }
            event_prefix "" { policy = "read" }
            query "q1" { policy = "deny" }
            query_prefix "q" { policy = "write" }
            acl = "read"
            operator = "write"
            keyring = "deny"
            mesh = "read"
            peering = "write"
        "#;
        assert_eq!(parse(json), parse(hcl));
    }

    #[test]
    fn brief_json_example() {
        let r = parse(
            r#"{"key_prefix": {"app/": {"policy": "write"}}, "operator": "read",
                "service": {"web": {"policy": "read", "intentions": "write"}}}"#,
        );
        assert_eq!(prefix(&r, Kind::Key, "app/"), Some(Access::Write));
        assert_eq!(r.single(Single::Operator), Some(Access::Read));
        assert_eq!(exact(&r, Kind::Service, "web"), Some(Access::Read));
        assert_eq!(r.intentions.exact.get("web"), Some(&Access::Write));
    }

    #[test]
    fn alternative_forms() {
        // HCL object-valued attribute, JSON list of objects, several names in one object.
        let a = parse("service = { web = { policy = \"read\" } db = { policy = \"write\" } }");
        let b = parse(r#"{"service": [{"web": {"policy": "read"}}, {"db": {"policy": "write"}}]}"#);
        let c = parse(r#"{"service": {"web": {"policy": "read"}, "db": {"policy": "write"}}}"#);
        let d =
            parse("service \"web\" { policy = \"read\" }\nservice \"db\" { policy = \"write\" }");
        assert_eq!(a, d);
        assert_eq!(b, d);
        assert_eq!(c, d);
        // Quoted attribute names and CRLF line ends are fine in HCL.
        assert_eq!(parse("\"acl\" = \"read\"\r\n"), parse("acl = \"read\""));
        // Leading whitespace before JSON.
        assert_eq!(parse("\n  {\"acl\": \"read\"}"), parse("acl = \"read\""));
    }

    #[test]
    fn intentions_only_block_is_valid() {
        let r = parse("service_prefix \"\" { intentions = \"write\" }");
        assert!(r.table(Kind::Service).is_empty());
        assert_eq!(r.intentions.prefix.get(""), Some(&Access::Write));
    }

    #[test]
    fn duplicate_rules_in_one_policy_merge_by_precedence() {
        let r = parse(
            "key \"a\" { policy = \"write\" }\nkey \"a\" { policy = \"read\" }\n\
             key \"a\" { policy = \"list\" }\nkey_prefix \"a\" { policy = \"read\" }",
        );
        assert_eq!(exact(&r, Kind::Key, "a"), Some(Access::Write));
        assert_eq!(prefix(&r, Kind::Key, "a"), Some(Access::Read));
    }

    #[test]
    fn errors_with_positions() {
        let cases: &[(&str, &str)] = &[
            (
                "servce \"web\" { policy = \"read\" }",
                "1:1: unknown rule kind \"servce\"",
            ),
            (
                "\n\n  key_prefix \"\" {\n    policy = \"rw\"\n  }",
                "4:14: invalid policy \"rw\": want read, write, list or deny",
            ),
            (
                "service \"x\" { policy = \"list\" }",
                "1:24: invalid policy \"list\": want read, write or deny",
            ),
            (
                "service \"x\" { policy = \"read\", intentions = \"list\" }",
                "1:45: invalid intentions \"list\": want read, write or deny",
            ),
            (
                "node \"x\" { intentions = \"read\" }",
                "1:12: unknown attribute \"intentions\" in node \"x\"",
            ),
            (
                "service \"x\" { polcy = \"read\" }",
                "1:15: unknown attribute \"polcy\" in service \"x\"",
            ),
            (
                "service \"x\" {\n policy = \"read\"\n policy = \"write\"\n}",
                "3:2: duplicate attribute \"policy\" in service \"x\"",
            ),
            (
                "acl = \"read\"\nacl = \"write\"",
                "2:1: duplicate attribute \"acl\"",
            ),
            (
                "acl = \"list\"",
                "1:7: invalid acl \"list\": want read, write or deny",
            ),
            (
                "operator = \"\"",
                "1:12: invalid operator \"\": want read, write or deny",
            ),
            (
                "keyring = true",
                "1:11: keyring must be a string (read, write or deny), found `true`",
            ),
            (
                "acl \"x\" { }",
                "1:5: acl takes no name: write acl = \"read\"",
            ),
            (
                "service = \"read\"",
                "1:11: service rules need a name: service \"name\" { policy = \"read\" }",
            ),
            (
                "node \"a\" \"b\" { policy = \"read\" }",
                "1:10: node takes one name",
            ),
            ("key \"a\" { }", "1:5: missing policy in key \"a\""),
            ("service \"a\" { }", "1:9: missing policy in service \"a\""),
            (
                "key \"a\" { policy = [\"read\"] }",
                "1:20: policy must be a string (read, write, list or deny), found a list",
            ),
            (
                "key \"a\" { policy \"x\" { } }",
                "1:18: policy takes no name: write policy = \"read\"",
            ),
            (
                "key \"a\" { policy = \"READ\" }",
                "1:20: invalid policy \"READ\": want read, write, list or deny",
            ),
            (
                "acl = \"read\" \"\"",
                "1:16: expected '=' or a block after \"\", found end of input",
            ),
            (
                r#"{"service": {"web": "read"}}"#,
                "1:21: service \"web\" must be a block such as { policy = \"read\" }, found string \"read\"",
            ),
            (
                r#"{"service": ["web"]}"#,
                "1:14: service rules need a name: service \"name\" { policy = \"read\" }",
            ),
            (
                "{\n  \"servce\": {}\n}",
                "2:3: unknown rule kind \"servce\"",
            ),
            (
                "{\"key\": {\"a\": {\"policy\": \"rw\"}}}",
                "1:26: invalid policy \"rw\": want read, write, list or deny",
            ),
            (
                "{\"acl\": \"read\", \"acl\": \"read\"}",
                "1:17: duplicate attribute \"acl\"",
            ),
            (
                "{\"key\": {\"a\": {\"policy\": \"read\", \"policy\": \"read\"}}}",
                "1:34: duplicate attribute \"policy\" in key \"a\"",
            ),
            (
                "{\"acl\": 1}",
                "1:9: acl must be a string (read, write or deny), found `1`",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&err(text), want, "{text:?}");
        }
    }

    #[test]
    fn json_syntax_errors_come_from_serde_json() {
        assert_eq!(
            err("{\"acl\": \"read\""),
            "1:14: invalid JSON: EOF while parsing an object"
        );
        assert_eq!(err("{\"acl\" \"read\"}"), "1:8: invalid JSON: expected `:`");
        // Starts with '{' but is not a JSON object: still a JSON error, with a position.
        assert!(err("{ acl = \"read\" }").starts_with("1:3: invalid JSON:"));
    }

    #[test]
    fn error_display() {
        let e = parse_rules("servce \"x\" {}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to parse ACL rules: 1:1: unknown rule kind \"servce\""
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}{}", "a { ".repeat(10_000), "}".repeat(10_000));
        assert!(err(&text).contains("nested too deeply"));
        let text = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(err(&text).contains("nested too deeply"));
    }

    #[test]
    fn merge_precedence() {
        let a = parse(
            "key \"k\" { policy = \"read\" }\nservice \"s\" { policy = \"write\" }\nacl = \"read\"\n\
             node_prefix \"\" { policy = \"write\" }\nservice_prefix \"p\" { intentions = \"read\" }",
        );
        let b = parse(
            "key \"k\" { policy = \"list\" }\nservice \"s\" { policy = \"deny\" }\nacl = \"write\"\n\
             node_prefix \"\" { policy = \"read\" }\nservice_prefix \"p\" { intentions = \"write\" }\n\
             operator = \"read\"",
        );
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(exact(&m, Kind::Key, "k"), Some(Access::List));
        assert_eq!(exact(&m, Kind::Service, "s"), Some(Access::Deny));
        assert_eq!(m.single(Single::Acl), Some(Access::Write));
        assert_eq!(m.single(Single::Operator), Some(Access::Read));
        assert_eq!(prefix(&m, Kind::Node, ""), Some(Access::Write));
        assert_eq!(m.intentions.prefix.get("p"), Some(&Access::Write));
        // Merging is order-independent.
        let mut n = b.clone();
        n.merge(&a);
        assert_eq!(m, n);
        // Exact and prefix rules of the same name are separate.
        let c = parse("key_prefix \"k\" { policy = \"deny\" }");
        m.merge(&c);
        assert_eq!(exact(&m, Kind::Key, "k"), Some(Access::List));
        assert_eq!(prefix(&m, Kind::Key, "k"), Some(Access::Deny));
    }

    #[test]
    fn longest_prefix_both_strategies() {
        for extra in [0, 40] {
            let mut t = Table::default();
            t.merge(true, "", Access::Read);
            t.merge(true, "a", Access::Write);
            t.merge(true, "ab", Access::Deny);
            t.merge(true, "é", Access::List);
            for i in 0..extra {
                t.merge(true, &format!("zz{i}"), Access::Write);
            }
            assert_eq!(t.longest_prefix("abc"), Some(Access::Deny), "{extra}");
            assert_eq!(t.longest_prefix("ab"), Some(Access::Deny), "{extra}");
            assert_eq!(t.longest_prefix("ax"), Some(Access::Write), "{extra}");
            assert_eq!(t.longest_prefix("b"), Some(Access::Read), "{extra}");
            assert_eq!(t.longest_prefix(""), Some(Access::Read), "{extra}");
            assert_eq!(t.longest_prefix("éa"), Some(Access::List), "{extra}");
            t.prefix.remove("");
            assert_eq!(t.longest_prefix("b"), None, "{extra}");
            assert_eq!(t.longest_prefix("e\u{301}"), None, "{extra}");
        }
    }

    #[test]
    fn deny_all_denies_everything() {
        let r = Rules::deny_all();
        for kind in Kind::ALL {
            assert_eq!(r.table(kind).lookup("anything"), Some(Access::Deny));
        }
        assert_eq!(r.intentions.lookup("x"), Some(Access::Deny));
        for s in Single::ALL {
            assert_eq!(r.single(s), Some(Access::Deny));
        }
    }
}
