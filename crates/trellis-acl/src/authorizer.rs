//! Authorizers: "may this token do X to Y", answered from a token's merged policy rules and,
//! where no rule decides, from the default policy (Consul's chained authorizer).

use crate::access::{Access, DefaultPolicy, Need, Resource};
use crate::rules::{Kind, Rules, Single, Table};

/// The answer of one link of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
    /// No rule applies: ask the next authorizer (the default policy).
    Default,
}

/// Consul's `enforce`.
fn enforce(rule: Access, need: Need) -> Decision {
    if rule.grants(need) {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

fn lookup(table: &Table, name: &str, need: Need) -> Decision {
    table
        .lookup(name)
        .map_or(Decision::Default, |a| enforce(a, need))
}

/// Every name that has an exact or a prefix rule, with both rules (Consul's radix leaves).
fn leaves(table: &Table) -> impl Iterator<Item = (Option<Access>, Option<Access>)> + '_ {
    let exact = table
        .exact
        .iter()
        .map(|(name, a)| (name, Some(*a), table.prefix.get(name).copied()));
    let prefix_only = table
        .prefix
        .iter()
        .filter(|(name, _)| !table.exact.contains_key(*name))
        .map(|(name, a)| (name, None, Some(*a)));
    exact
        .chain(prefix_only)
        .map(|(_, exact, prefix)| (exact, prefix))
}

/// Consul's `anyAllowed`: does any rule allow `need` (used for intention reads on `*`)?
fn any_allowed(table: &Table, need: Need) -> Decision {
    let mut decision = Decision::Default;
    if let Some(a) = table.prefix.get("") {
        decision = enforce(*a, need);
        if decision == Decision::Allow {
            return decision;
        }
    }
    for (exact, prefix) in leaves(table) {
        if prefix.is_some_and(|a| a.grants(need)) || exact.is_some_and(|a| a.grants(need)) {
            return Decision::Allow;
        }
    }
    decision
}

/// Consul's `allAllowed`: do all rules allow `need` (used for intention writes on `*`)?
fn all_allowed(table: &Table, need: Need) -> Decision {
    let mut decision = Decision::Default;
    if let Some(a) = table.prefix.get("") {
        decision = enforce(*a, need);
        if decision == Decision::Deny {
            return decision;
        }
    }
    for (exact, prefix) in leaves(table) {
        let prefix_decision = prefix.map_or(Decision::Default, |a| enforce(a, need));
        let leaf = match exact {
            Some(a) if prefix_decision != Decision::Deny => enforce(a, need),
            _ => prefix_decision,
        };
        if leaf == Decision::Deny {
            return Decision::Deny;
        }
    }
    decision
}

/// What one token may do. Cheap to clone; share it in an `Arc` per request.
#[derive(Clone, Debug)]
pub struct Authorizer {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    /// The builtin global-management policy: everything, ACL management included.
    Management,
    /// Merged rules (intentions resolved), then the default policy.
    Policy {
        rules: Box<Rules>,
        default: DefaultPolicy,
    },
}

impl Authorizer {
    /// The merged `policies`, then `default` for whatever no rule decides.
    /// `DefaultPolicy::Allow` allows everything except the `acl` resource.
    pub fn new(policies: &[&Rules], default: DefaultPolicy) -> Authorizer {
        let mut rules = Rules::default();
        for p in policies {
            rules.merge(p);
        }
        resolve_intentions(&mut rules);
        Authorizer {
            inner: Inner::Policy {
                rules: Box::new(rules),
                default,
            },
        }
    }

    /// Allows everything, including ACL management.
    pub fn management() -> Authorizer {
        Authorizer {
            inner: Inner::Management,
        }
    }

    /// Whether this is the management authorizer.
    pub fn is_management(&self) -> bool {
        matches!(self.inner, Inner::Management)
    }

    /// Whether `need` on `resource` `name` is allowed. For `Acl`, `Operator`, `Keyring`,
    /// `Mesh` and `Peering` the name is ignored. For `Intention` the name is the destination
    /// service; `*` means all of them (read: some rule allows, write: every rule allows).
    pub fn allows(&self, resource: Resource, name: &str, need: Need) -> bool {
        match &self.inner {
            Inner::Management => true,
            Inner::Policy { rules, default } => match decide(rules, resource, name, need) {
                Decision::Allow => true,
                Decision::Deny => false,
                Decision::Default => *default == DefaultPolicy::Allow && resource != Resource::Acl,
            },
        }
    }

    /// Consul's `KeyWritePrefix` (recursive deletes): write must be granted on `prefix` itself
    /// by a prefix rule (or the default policy when none applies), and no exact or prefix key
    /// rule for a name under `prefix` may grant less than write.
    pub fn key_write_prefix(&self, prefix: &str) -> bool {
        match &self.inner {
            Inner::Management => true,
            Inner::Policy { rules, default } => {
                match key_write_prefix(rules.table(Kind::Key), prefix) {
                    Decision::Allow => true,
                    Decision::Deny => false,
                    Decision::Default => *default == DefaultPolicy::Allow,
                }
            }
        }
    }
}

/// Consul derives a service rule's intentions level when none is written: `read` from a
/// service `read` or `write`, `deny` from a service `deny`. Done after merging, as Consul does.
fn resolve_intentions(rules: &mut Rules) {
    let service = rules.table(Kind::Service).clone();
    for (prefix, map) in [(false, &service.exact), (true, &service.prefix)] {
        for (name, policy) in map {
            let target = if prefix {
                &rules.intentions.prefix
            } else {
                &rules.intentions.exact
            };
            if target.contains_key(name) {
                continue;
            }
            let derived = match policy {
                Access::Read | Access::Write => Access::Read,
                Access::Deny | Access::List => Access::Deny,
            };
            rules.intentions.merge(prefix, name, derived);
        }
    }
}

fn kind_of(resource: Resource) -> Option<Kind> {
    Some(match resource {
        Resource::Service => Kind::Service,
        Resource::Node => Kind::Node,
        Resource::Key => Kind::Key,
        Resource::Session => Kind::Session,
        Resource::Agent => Kind::Agent,
        Resource::Event => Kind::Event,
        Resource::Query => Kind::Query,
        _ => return None,
    })
}

fn single(rules: &Rules, s: Single, need: Need) -> Decision {
    rules
        .single(s)
        .map_or(Decision::Default, |a| enforce(a, need))
}

fn decide(rules: &Rules, resource: Resource, name: &str, need: Need) -> Decision {
    if let Some(kind) = kind_of(resource) {
        return lookup(rules.table(kind), name, need);
    }
    match resource {
        Resource::Intention if name == "*" => match need {
            Need::Read | Need::List => any_allowed(&rules.intentions, need),
            Need::Write => all_allowed(&rules.intentions, need),
        },
        Resource::Intention => lookup(&rules.intentions, name, need),
        Resource::Acl => single(rules, Single::Acl, need),
        Resource::Operator => single(rules, Single::Operator, need),
        Resource::Keyring => single(rules, Single::Keyring, need),
        // Without their own rule, mesh and peering follow operator (Consul 1.12+).
        Resource::Mesh => match rules.single(Single::Mesh) {
            Some(a) => enforce(a, need),
            None => single(rules, Single::Operator, need),
        },
        Resource::Peering => match rules.single(Single::Peering) {
            Some(a) => enforce(a, need),
            None => single(rules, Single::Operator, need),
        },
        _ => Decision::Default,
    }
}

fn key_write_prefix(keys: &Table, prefix: &str) -> Decision {
    // The longest prefix rule covering `prefix` must grant write (exact rules do not count
    // here: they cover one key, not the tree).
    let base = match keys.longest_prefix(prefix) {
        Some(Access::Write) => Decision::Allow,
        Some(_) => return Decision::Deny,
        None => Decision::Default,
    };
    let under = |map: &std::collections::BTreeMap<String, Access>| {
        map.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(name, _)| name.starts_with(prefix))
        .any(|(_, a)| *a != Access::Write)
    };
    if under(&keys.exact) || under(&keys.prefix) {
        return Decision::Deny;
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_rules;
    use Need::*;
    use Resource::*;

    fn authz(texts: &[&str], default: DefaultPolicy) -> Authorizer {
        let rules: Vec<Rules> = texts.iter().map(|t| parse_rules(t).unwrap()).collect();
        let refs: Vec<&Rules> = rules.iter().collect();
        Authorizer::new(&refs, default)
    }

    fn deny(texts: &[&str]) -> Authorizer {
        authz(texts, DefaultPolicy::Deny)
    }

    #[test]
    fn enforcement_table_for_keys() {
        let a = deny(&[r#"
            key "w" { policy = "write" }
            key "l" { policy = "list" }
            key "r" { policy = "read" }
            key "d" { policy = "deny" }
        "#]);
        // (key, read, list, write)
        for (k, r, l, w) in [
            ("w", true, true, true),
            ("l", true, true, false),
            ("r", true, false, false),
            ("d", false, false, false),
            ("none", false, false, false),
        ] {
            assert_eq!(a.allows(Key, k, Read), r, "{k} read");
            assert_eq!(a.allows(Key, k, List), l, "{k} list");
            assert_eq!(a.allows(Key, k, Write), w, "{k} write");
        }
        // Under default allow, an explicit deny/read still decides; no rule falls through.
        let a = authz(
            &[r#"key "r" { policy = "read" } key "d" { policy = "deny" }"#],
            DefaultPolicy::Allow,
        );
        assert!(a.allows(Key, "r", Read));
        assert!(!a.allows(Key, "r", List));
        assert!(!a.allows(Key, "r", Write));
        assert!(!a.allows(Key, "d", Read));
        assert!(a.allows(Key, "other", Write));
    }

    #[test]
    fn every_named_kind_uses_its_own_rules() {
        let kinds = [
            (Service, "service"),
            (Node, "node"),
            (Key, "key"),
            (Session, "session"),
            (Agent, "agent"),
            (Event, "event"),
            (Query, "query"),
        ];
        for (resource, kw) in kinds {
            let a = deny(&[&format!(
                "{kw} \"x\" {{ policy = \"write\" }}\n{kw}_prefix \"r\" {{ policy = \"read\" }}"
            )]);
            assert!(a.allows(resource, "x", Write), "{kw}");
            assert!(!a.allows(resource, "xy", Read), "{kw}: exact only");
            assert!(a.allows(resource, "rabbit", Read), "{kw}");
            assert!(!a.allows(resource, "rabbit", Write), "{kw}");
            for (other, _) in kinds {
                if other != resource {
                    assert!(!a.allows(other, "x", Read), "{kw} rule leaks to {other}");
                }
            }
        }
    }

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let a = deny(&[r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/ok" { policy = "read" }
            key "app/ro" { policy = "read" }
        "#]);
        assert!(a.allows(Key, "other", Read));
        assert!(!a.allows(Key, "other", Write));
        assert!(a.allows(Key, "app/x", Write));
        assert!(a.allows(Key, "app/", Write));
        assert!(
            !a.allows(Key, "app", Write),
            "\"app\" does not start with \"app/\""
        );
        assert!(!a.allows(Key, "app/secret/x", Read));
        assert!(
            a.allows(Key, "app/secret/ok", Read),
            "exact beats a longer deny prefix"
        );
        assert!(!a.allows(Key, "app/secret/ok", Write));
        assert!(
            !a.allows(Key, "app/ro", Write),
            "exact read beats prefix write"
        );
        assert!(a.allows(Key, "app/rox", Write));
        // A deny exact beats an allowing prefix too.
        let a =
            deny(&[r#"service_prefix "" { policy = "write" } service "db" { policy = "deny" }"#]);
        assert!(!a.allows(Service, "db", Read));
        assert!(a.allows(Service, "db2", Write));
    }

    #[test]
    fn merge_across_policies() {
        let a = deny(&[
            r#"service "web" { policy = "write" } key_prefix "a/" { policy = "read" } acl = "read""#,
            r#"service "web" { policy = "read" } key_prefix "a/" { policy = "list" } operator = "write""#,
            r#"service "db" { policy = "write" } acl = "write""#,
        ]);
        assert!(a.allows(Service, "web", Write), "write over read");
        assert!(a.allows(Key, "a/x", List), "list over read");
        assert!(!a.allows(Key, "a/x", Write));
        assert!(a.allows(Acl, "", Write), "write over read");
        assert!(a.allows(Operator, "", Write));
        assert!(a.allows(Service, "db", Write));
        // Deny beats everything, in any order.
        for order in [[0, 1], [1, 0]] {
            let texts = [
                r#"service "web" { policy = "write" }"#,
                r#"service "web" { policy = "deny" }"#,
            ];
            let a = deny(&[texts[order[0]], texts[order[1]]]);
            assert!(!a.allows(Service, "web", Read));
        }
        // Exact and prefix rules merge separately: a deny prefix does not override an exact write.
        let a = deny(&[
            r#"node "n1" { policy = "write" }"#,
            r#"node_prefix "" { policy = "deny" }"#,
        ]);
        assert!(a.allows(Node, "n1", Write));
        assert!(!a.allows(Node, "n2", Read));
        // No policies at all: only the default speaks.
        assert!(!deny(&[]).allows(Service, "x", Read));
        assert!(authz(&[], DefaultPolicy::Allow).allows(Service, "x", Write));
    }

    #[test]
    fn intentions_levels_and_defaults() {
        let a = deny(&[r#"
            service "w" { policy = "write" }
            service "r" { policy = "read" }
            service "d" { policy = "deny" }
            service "wi" { policy = "write" intentions = "write" }
            service "rd" { policy = "read" intentions = "deny" }
            service "io" { intentions = "write" }
            service_prefix "p" { policy = "write" }
        "#]);
        // (service, intention read, intention write)
        for (s, r, w) in [
            ("w", true, false),
            ("r", true, false),
            ("d", false, false),
            ("wi", true, true),
            ("rd", false, false),
            ("io", true, true),
            ("px", true, false),
            ("none", false, false),
        ] {
            assert_eq!(a.allows(Intention, s, Read), r, "{s} intention read");
            assert_eq!(a.allows(Intention, s, Write), w, "{s} intention write");
        }
        // An intentions-only block makes no service decision.
        assert!(!a.allows(Service, "io", Read));
        let allow = authz(
            &[r#"service "io" { intentions = "deny" }"#],
            DefaultPolicy::Allow,
        );
        assert!(allow.allows(Service, "io", Write));
        assert!(!allow.allows(Intention, "io", Read));
    }

    #[test]
    fn intentions_default_is_applied_after_merge() {
        // One policy writes the service, another sets intentions explicitly: explicit wins.
        let a = deny(&[
            r#"service "web" { policy = "write" }"#,
            r#"service "web" { intentions = "write" }"#,
        ]);
        assert!(a.allows(Intention, "web", Write));
        // A service deny from another policy makes the derived intentions deny.
        let a = deny(&[
            r#"service "web" { policy = "write" }"#,
            r#"service "web" { policy = "deny" }"#,
        ]);
        assert!(!a.allows(Intention, "web", Read));
    }

    #[test]
    fn intentions_wildcard() {
        // Read on "*": any rule allows.
        let a = deny(&[r#"service "web" { policy = "read" }"#]);
        assert!(a.allows(Intention, "*", Read));
        assert!(!a.allows(Intention, "*", Write));
        assert!(!deny(&[]).allows(Intention, "*", Read));
        // Write on "*": needs a "" prefix write and nothing below it that denies write.
        let a = deny(&[r#"service_prefix "" { policy = "write" intentions = "write" }"#]);
        assert!(a.allows(Intention, "*", Write));
        let a = deny(&[
            r#"service_prefix "" { intentions = "write" } service "db" { policy = "read" }"#,
        ]);
        assert!(!a.allows(Intention, "*", Write));
        let a = deny(&[r#"service "web" { intentions = "write" }"#]);
        assert!(
            !a.allows(Intention, "*", Write),
            "no catch-all: default (deny)"
        );
        let allow = authz(
            &[r#"service "web" { intentions = "write" }"#],
            DefaultPolicy::Allow,
        );
        assert!(
            allow.allows(Intention, "*", Write),
            "no catch-all: default (allow)"
        );
        let a = deny(&[
            r#"service_prefix "" { policy = "deny" } service "web" { intentions = "read" }"#,
        ]);
        assert!(
            a.allows(Intention, "*", Read),
            "a more specific rule overrides the catch-all deny"
        );
    }

    #[test]
    fn key_write_prefix_rules() {
        let a = deny(&[r#"
            key_prefix "" { policy = "write" }
            key "app/locked" { policy = "read" }
            key_prefix "app/secret/" { policy = "deny" }
            key_prefix "data/" { policy = "list" }
            key "exact-only/" { policy = "write" }
        "#]);
        assert!(!a.key_write_prefix(""), "rules under the root deny");
        assert!(!a.key_write_prefix("app/"), "a read key under it");
        assert!(
            !a.key_write_prefix("app/secret/"),
            "the covering prefix denies"
        );
        assert!(!a.key_write_prefix("app/secret/x/"));
        assert!(!a.key_write_prefix("data/"), "list is below write");
        assert!(a.key_write_prefix("other/"));
        assert!(a.key_write_prefix("app/other/"));
        assert!(
            a.key_write_prefix("exact-only/"),
            "an exact write under it is fine"
        );
        // Plain key writes are unaffected by rules under the key.
        assert!(a.allows(Key, "app/", Write));

        // Without a covering prefix rule the default decides (unless something under it denies).
        let a = deny(&[r#"key "exact-only/" { policy = "write" }"#]);
        assert!(!a.key_write_prefix("exact-only/"));
        let a = authz(&[r#"key "x/y" { policy = "write" }"#], DefaultPolicy::Allow);
        assert!(a.key_write_prefix("x/"));
        let a = authz(&[r#"key "x/y" { policy = "deny" }"#], DefaultPolicy::Allow);
        assert!(!a.key_write_prefix("x/"));
        assert!(a.key_write_prefix("y/"));
        // The deny under it can come from another policy (merged first).
        let a = deny(&[
            r#"key_prefix "app/" { policy = "write" }"#,
            r#"key "app/k" { policy = "deny" }"#,
        ]);
        assert!(!a.key_write_prefix("app/"));
        assert!(a.allows(Key, "app/j", Write));
    }

    #[test]
    fn default_allow_vs_deny() {
        let allow = authz(&[], DefaultPolicy::Allow);
        let deny_ = authz(&[], DefaultPolicy::Deny);
        for r in Resource::ALL {
            for need in [Read, List, Write] {
                assert_eq!(allow.allows(r, "x", need), r != Acl, "allow {r} {need}");
                assert!(!deny_.allows(r, "x", need), "deny {r} {need}");
            }
        }
        assert!(allow.key_write_prefix("any/"));
        assert!(!deny_.key_write_prefix("any/"));
        assert!(!allow.is_management());
        // acl needs an explicit rule even under allow.
        let a = authz(&["acl = \"read\""], DefaultPolicy::Allow);
        assert!(a.allows(Acl, "", Read));
        assert!(!a.allows(Acl, "", Write));
        let a = authz(&["acl = \"write\""], DefaultPolicy::Deny);
        assert!(a.allows(Acl, "ignored", Write));
    }

    #[test]
    fn single_valued_resources() {
        let a = deny(&["operator = \"read\"\nkeyring = \"write\"\nacl = \"deny\""]);
        assert!(a.allows(Operator, "", Read));
        assert!(!a.allows(Operator, "", Write));
        assert!(a.allows(Keyring, "whatever", Write));
        assert!(!a.allows(Acl, "", Read));
        // mesh and peering follow operator without their own rule...
        assert!(a.allows(Mesh, "", Read));
        assert!(!a.allows(Mesh, "", Write));
        assert!(a.allows(Peering, "", Read));
        // ...and their own rule when there is one.
        let a = deny(&["operator = \"read\"\nmesh = \"write\"\npeering = \"deny\""]);
        assert!(a.allows(Mesh, "", Write));
        assert!(!a.allows(Peering, "", Read));
        // Explicit deny beats default allow.
        let a = authz(&["operator = \"deny\""], DefaultPolicy::Allow);
        assert!(!a.allows(Operator, "", Read));
        assert!(!a.allows(Mesh, "", Read));
        assert!(a.allows(Keyring, "", Write));
    }

    #[test]
    fn management_allows_everything() {
        let m = Authorizer::management();
        assert!(m.is_management());
        for r in Resource::ALL {
            for need in [Read, List, Write] {
                assert!(m.allows(r, "anything", need));
            }
        }
        assert!(m.key_write_prefix(""));
    }

    #[test]
    fn management_rules_text_grants_everything_too() {
        let a = deny(&[crate::state::MANAGEMENT_RULES]);
        for r in Resource::ALL {
            for need in [Read, List, Write] {
                assert!(a.allows(r, "x", need), "{r} {need}");
            }
        }
        assert!(a.allows(Intention, "*", Write));
        assert!(a.key_write_prefix(""));
        assert!(
            !a.is_management(),
            "only Authorizer::management() is management"
        );
    }

    #[test]
    fn authorizer_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<Authorizer>();
    }
}
