//! The small vocabulary of the ACL model: access levels, default policies, resources and needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An access level a rule grants (Consul's `policy = "..."` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Denies everything, and stops the lookup (no fall-through to the default policy).
    Deny,
    /// Grants read.
    Read,
    /// Grants read and list (key rules only).
    List,
    /// Grants read, list and write.
    Write,
}

impl Access {
    /// The spelling in rules text.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
        }
    }

    /// Consul's `takesPrecedenceOver`, used when merging policies: deny over write over list
    /// over read.
    pub fn takes_precedence_over(self, other: Access) -> bool {
        self.precedence() > other.precedence()
    }

    fn precedence(self) -> u8 {
        match self {
            Access::Read => 0,
            Access::List => 1,
            Access::Write => 2,
            Access::Deny => 3,
        }
    }

    /// Consul's `enforce`: does a rule of this level grant `need`?
    pub fn grants(self, need: Need) -> bool {
        match self {
            Access::Write => true,
            Access::List => matches!(need, Need::Read | Need::List),
            Access::Read => need == Need::Read,
            Access::Deny => false,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Access::Deny),
            "read" => Ok(Access::Read),
            "list" => Ok(Access::List),
            "write" => Ok(Access::Write),
            _ => Err(format!(
                "invalid access level {s:?}: want read, write, list or deny"
            )),
        }
    }
}

/// What happens when no rule decides (Consul's `acl.default_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Everything is allowed except ACL management (the `acl` resource).
    #[default]
    Allow,
    /// Everything is denied.
    Deny,
}

impl DefaultPolicy {
    /// The spelling in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Allow => "allow",
            DefaultPolicy::Deny => "deny",
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(DefaultPolicy::Allow),
            "deny" => Ok(DefaultPolicy::Deny),
            _ => Err(format!("invalid default policy {s:?}: want allow or deny")),
        }
    }
}

/// A kind of thing an operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Services, by service name (`service` / `service_prefix` rules).
    Service,
    /// Nodes, by node name.
    Node,
    /// KV keys, by key.
    Key,
    /// Sessions, by the node they are tied to.
    Session,
    /// Agent endpoints, by the agent's node name.
    Agent,
    /// User events, by event name.
    Event,
    /// Prepared queries, by query name.
    Query,
    /// Intentions, by destination service name (the `intentions` level of service rules);
    /// the name `*` asks about all services (read: any rule allows; write: all rules allow).
    Intention,
    /// ACL management (tokens, policies). Never granted by `DefaultPolicy::Allow`.
    Acl,
    /// Operator endpoints (Raft, autopilot, ...).
    Operator,
    /// The gossip keyring.
    Keyring,
    /// Mesh-wide configuration; without a `mesh` rule the `operator` rule decides.
    Mesh,
    /// Cluster peering; without a `peering` rule the `operator` rule decides.
    Peering,
}

impl Resource {
    /// Every resource, in declaration order.
    pub const ALL: [Resource; 13] = [
        Resource::Service,
        Resource::Node,
        Resource::Key,
        Resource::Session,
        Resource::Agent,
        Resource::Event,
        Resource::Query,
        Resource::Intention,
        Resource::Acl,
        Resource::Operator,
        Resource::Keyring,
        Resource::Mesh,
        Resource::Peering,
    ];

    /// The lowercase name (as in Consul's "Permission denied: ... lacks permission 'service:read'").
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Service => "service",
            Resource::Node => "node",
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Query => "query",
            Resource::Intention => "intention",
            Resource::Acl => "acl",
            Resource::Operator => "operator",
            Resource::Keyring => "keyring",
            Resource::Mesh => "mesh",
            Resource::Peering => "peering",
        }
    }

    /// Whether the resource is single-valued (its rule has no name; the name asked is ignored).
    pub fn is_single(self) -> bool {
        matches!(
            self,
            Resource::Acl
                | Resource::Operator
                | Resource::Keyring
                | Resource::Mesh
                | Resource::Peering
        )
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation asks for on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// Read it.
    Read,
    /// List what is under it (KV keys; granted by `list` or `write`).
    List,
    /// Change it.
    Write,
}

impl Need {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::List => "list",
            Need::Write => "write",
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcement_table() {
        use Access::*;
        // (rule, read, list, write)
        let table = [
            (Write, true, true, true),
            (List, true, true, false),
            (Read, true, false, false),
            (Deny, false, false, false),
        ];
        for (rule, read, list, write) in table {
            assert_eq!(rule.grants(Need::Read), read, "{rule} read");
            assert_eq!(rule.grants(Need::List), list, "{rule} list");
            assert_eq!(rule.grants(Need::Write), write, "{rule} write");
        }
    }

    #[test]
    fn precedence_is_deny_write_list_read() {
        use Access::*;
        let order = [Deny, Write, List, Read];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(a.takes_precedence_over(*b), i < j, "{a} over {b}");
            }
        }
    }

    #[test]
    fn serde_and_display_are_lowercase() {
        assert_eq!(serde_json::to_string(&Access::List).unwrap(), "\"list\"");
        assert_eq!(
            serde_json::from_str::<Access>("\"deny\"").unwrap(),
            Access::Deny
        );
        assert_eq!(
            serde_json::to_string(&DefaultPolicy::Deny).unwrap(),
            "\"deny\""
        );
        assert_eq!(
            serde_json::from_str::<DefaultPolicy>("\"allow\"").unwrap(),
            DefaultPolicy::Allow
        );
        assert_eq!(DefaultPolicy::default(), DefaultPolicy::Allow);
        assert_eq!(Resource::Service.to_string(), "service");
        assert_eq!(Resource::Query.to_string(), "query");
        assert_eq!(
            serde_json::to_string(&Resource::Keyring).unwrap(),
            "\"keyring\""
        );
        assert_eq!(Need::List.to_string(), "list");
        assert_eq!("write".parse::<Access>(), Ok(Access::Write));
        assert!("rw".parse::<Access>().is_err());
        assert_eq!("deny".parse::<DefaultPolicy>(), Ok(DefaultPolicy::Deny));
        assert!("Deny".parse::<DefaultPolicy>().is_err());
        for r in Resource::ALL {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }

    #[test]
    fn single_resources() {
        let singles: Vec<_> = Resource::ALL
            .into_iter()
            .filter(|r| r.is_single())
            .collect();
        assert_eq!(
            singles,
            [
                Resource::Acl,
                Resource::Operator,
                Resource::Keyring,
                Resource::Mesh,
                Resource::Peering
            ]
        );
    }
}
