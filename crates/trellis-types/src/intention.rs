//! Intentions: which service may call which, as Consul Connect has them. The intention as
//! Consul's API answers it, its precedence, the order Consul's match answers use, and the
//! allow/deny decision for a caller. How intentions live in `service-intentions` config entries
//! is [`crate::intention_entry`]'s; how such entries are normalised and validated,
//! [`crate::config_entry`]'s.
//!
//! Pure: no IO, no clock, no randomness. The namespace is always `default` and partitions are
//! empty, as in Consul CE. L7 intentions (`Permissions`) are refused where entries come in (they
//! are not enforced here); an intention that had them would decide `deny`, as Consul's L4 checks
//! treat them.

use serde::Serialize;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A name that stands for every service.
pub const WILDCARD: &str = "*";
/// The only namespace of Consul CE, which every intention is in.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The only source type Consul has: a service of its catalog.
pub const SOURCE_TYPE_CONSUL: &str = "consul";
/// Most sources one destination's entry may have (Trellis's bound: each write rewrites the
/// whole entry, so it must stay small enough to rewrite).
pub const MAX_SOURCES: usize = 4096;

/// What an intention does to the connections it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// `allow` or `deny` (exactly, as Consul compares them).
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }
}

/// An intention as Consul's `/v1/connect/intentions` answers it (`structs.Intention` through
/// its `MarshalJSON`: the times first and only when set, empty `omitempty` fields left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Intention {
    /// When a legacy (ID-based) intention was created; config-entry intentions have no times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The legacy ID (the source's `LegacyID`); empty for intentions written by name.
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "SourceNS")]
    pub source_ns: String,
    pub source_name: String,
    #[serde(rename = "DestinationNS")]
    pub destination_ns: String,
    pub destination_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_partition: String,
    pub source_type: String,
    pub action: Action,
    /// L7 permissions, kept as written; always empty in what Trellis stores.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Value>,
    /// The entry's `Meta`, or a legacy intention's own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub precedence: u32,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Intention {
    /// Consul's `Intention.String()`, which its authorize reasons quote:
    /// `default/web => default/db (Precedence: 9, Action: ALLOW)`.
    pub fn describe(&self) -> String {
        let id = if self.id.is_empty() {
            String::new()
        } else {
            format!("ID: {}, ", self.id)
        };
        let detail = if self.permissions.is_empty() {
            format!(
                "Action: {}",
                match self.action {
                    Action::Allow => "ALLOW",
                    Action::Deny => "DENY",
                }
            )
        } else {
            format!("Permissions: {}", self.permissions.len())
        };
        format!(
            "{}/{} => {}/{} ({id}Precedence: {}, {detail})",
            self.source_ns,
            self.source_name,
            self.destination_ns,
            self.destination_name,
            self.precedence
        )
    }
}

/// Consul's precedence (`UpdatePrecedence`) of an intention from `source` to `destination` in
/// the default namespace: the more exact the destination, then the source, the higher. Exact
/// to exact is 9, `*` to exact 8, exact to `*` 6, `*` to `*` 5 (3 and 4 need a wildcard
/// namespace, which Consul CE does not have).
pub fn precedence(source: &str, destination: &str) -> u32 {
    // Exact values in (namespace, name): the namespace is always the exact `default`.
    let exact = |name: &str| if name == WILDCARD { 1 } else { 2 };
    let max = match exact(destination) {
        2 => 9,
        _ => 6,
    };
    max - (2 - exact(source))
}

/// Consul's wildcard rule for a service name in an intention: `*` alone, or no `*` at all.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name != WILDCARD && name.contains('*') {
        return Err("wildcard character '*' cannot be used with partial values");
    }
    Ok(())
}

/// Consul's `IntentionPrecedenceSorter`: highest precedence first, ties by (source namespace,
/// source, destination namespace, destination) so the order is deterministic.
pub fn by_precedence(a: &Intention, b: &Intention) -> Ordering {
    b.precedence
        .cmp(&a.precedence)
        .then_with(|| a.source_ns.cmp(&b.source_ns))
        .then_with(|| a.source_name.cmp(&b.source_name))
        .then_with(|| a.destination_ns.cmp(&b.destination_ns))
        .then_with(|| a.destination_name.cmp(&b.destination_name))
}

/// Sorts as Consul's list and match answers are sorted (see [`by_precedence`]).
pub fn sort_by_precedence(intentions: &mut [Intention]) {
    intentions.sort_by(by_precedence);
}

/// Whether a connection is allowed, and the intention that decided it (`None`: no intention
/// matched, the default decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub matched: Option<Intention>,
}

impl Decision {
    /// Consul's reason texts of `/v1/agent/connect/authorize`.
    pub fn reason(&self) -> String {
        match &self.matched {
            Some(ixn) if ixn.permissions.is_empty() => {
                format!("Matched L4 intention: {}", ixn.describe())
            }
            Some(ixn) => format!("Matched L7 intention: {}", ixn.describe()),
            None => "Default behavior configured by ACLs".to_owned(),
        }
    }
}

/// Whether `source` may connect, given the intentions that match its destination (any order:
/// the highest precedence match wins, as in Consul); no match leaves it to `default_allow`.
/// An L7 intention (with permissions) decides deny, as Consul's L4 check treats it.
pub fn decide(
    intentions_for_destination: &[Intention],
    source: &str,
    default_allow: bool,
) -> Decision {
    let winner = intentions_for_destination
        .iter()
        .filter(|ixn| {
            ixn.source_ns == DEFAULT_NAMESPACE
                && (ixn.source_name == WILDCARD || ixn.source_name == source)
        })
        .min_by(|a, b| by_precedence(a, b));
    match winner {
        Some(ixn) => Decision {
            allowed: ixn.permissions.is_empty() && ixn.action == Action::Allow,
            matched: Some(ixn.clone()),
        },
        None => Decision {
            allowed: default_allow,
            matched: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// An intention as stored, for tests here and in `intention_entry`.
    pub(crate) fn ixn(source: &str, destination: &str, action: Action) -> Intention {
        Intention {
            created_at: None,
            updated_at: None,
            id: String::new(),
            description: String::new(),
            source_ns: DEFAULT_NAMESPACE.into(),
            source_name: source.into(),
            destination_ns: DEFAULT_NAMESPACE.into(),
            destination_name: destination.into(),
            source_partition: String::new(),
            destination_partition: String::new(),
            source_type: SOURCE_TYPE_CONSUL.into(),
            action,
            permissions: Vec::new(),
            meta: BTreeMap::new(),
            precedence: precedence(source, destination),
            create_index: 1,
            modify_index: 1,
        }
    }

    #[test]
    fn precedence_is_consuls() {
        assert_eq!(precedence("web", "db"), 9);
        assert_eq!(precedence("*", "db"), 8);
        assert_eq!(precedence("web", "*"), 6);
        assert_eq!(precedence("*", "*"), 5);
    }

    #[test]
    fn names_are_exact_or_the_whole_wildcard() {
        assert!(check_name("web").is_ok());
        assert!(check_name("*").is_ok());
        assert!(check_name("web*").is_err());
        assert!(check_name("*eb").is_err());
    }

    #[test]
    fn sorted_by_precedence_then_names() {
        let mut list = vec![
            ixn("*", "*", Action::Allow),
            ixn("web", "*", Action::Allow),
            ixn("b", "db", Action::Allow),
            ixn("*", "db", Action::Deny),
            ixn("a", "db", Action::Allow),
        ];
        sort_by_precedence(&mut list);
        let order: Vec<(&str, &str)> = list
            .iter()
            .map(|i| (i.source_name.as_str(), i.destination_name.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("a", "db"),
                ("b", "db"),
                ("*", "db"),
                ("web", "*"),
                ("*", "*")
            ]
        );
    }

    #[test]
    fn exact_deny_beats_wildcard_allow() {
        let list = [
            ixn("*", "db", Action::Allow),
            ixn("web", "db", Action::Deny),
        ];
        let d = decide(&list, "web", true);
        assert!(!d.allowed);
        assert_eq!(d.matched.as_ref().unwrap().source_name, "web");
        // Another caller falls to the wildcard allow, even under a default deny.
        let d = decide(&list, "api", false);
        assert!(d.allowed);
        assert_eq!(d.matched.unwrap().source_name, "*");
    }

    #[test]
    fn exact_allow_beats_wildcard_deny_and_destination_wildcards_rank_lower() {
        let list = [
            ixn("*", "*", Action::Deny),
            ixn("web", "*", Action::Deny),
            ixn("web", "db", Action::Allow),
        ];
        assert!(decide(&list, "web", false).allowed);
        // A source-exact, destination-wildcard deny (6) beats a full wildcard allow (5).
        let list = [ixn("*", "*", Action::Allow), ixn("web", "*", Action::Deny)];
        assert!(!decide(&list, "web", true).allowed);
        assert!(decide(&list, "api", false).allowed);
    }

    #[test]
    fn no_match_is_the_default() {
        let list = [ixn("web", "db", Action::Allow)];
        let d = decide(&list, "api", false);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                matched: None
            }
        );
        assert_eq!(d.reason(), "Default behavior configured by ACLs");
        assert!(decide(&[], "api", true).allowed);
    }

    #[test]
    fn l7_intentions_decide_deny() {
        let mut l7 = ixn("web", "db", Action::Allow);
        l7.permissions = vec![serde_json::json!({"Action": "allow"})];
        let d = decide(&[l7], "web", true);
        assert!(!d.allowed);
        assert!(
            d.reason().starts_with("Matched L7 intention: "),
            "{}",
            d.reason()
        );
    }

    #[test]
    fn reasons_quote_the_intention_as_consul_prints_it() {
        let d = decide(&[ixn("web", "db", Action::Deny)], "web", true);
        assert_eq!(
            d.reason(),
            "Matched L4 intention: default/web => default/db (Precedence: 9, Action: DENY)"
        );
        let mut with_id = ixn("*", "db", Action::Allow);
        with_id.id = "abc".into();
        assert_eq!(
            with_id.describe(),
            "default/* => default/db (ID: abc, Precedence: 8, Action: ALLOW)"
        );
    }

    #[test]
    fn the_api_shape_is_consuls() {
        let mut i = ixn("web", "db", Action::Allow);
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(
            v,
            json!({
                "SourceNS": "default", "SourceName": "web",
                "DestinationNS": "default", "DestinationName": "db",
                "SourceType": "consul", "Action": "allow", "Precedence": 9,
                "CreateIndex": 1, "ModifyIndex": 1
            })
        );
        i.id = "id-1".into();
        i.created_at = Some("2024-01-02T03:04:05Z".into());
        i.meta.insert("team".into(), "core".into());
        let text = serde_json::to_string(&i).unwrap();
        assert!(
            text.starts_with(r#"{"CreatedAt":"2024-01-02T03:04:05Z","ID":"id-1","#),
            "{text}"
        );
        assert!(text.contains(r#""Meta":{"team":"core"}"#));
    }
}
