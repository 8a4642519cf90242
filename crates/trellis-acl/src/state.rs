//! The ACL state the server keeps: tokens and policies with their indexes, bootstrap, secret
//! hashing and lookup, and building a token's authorizer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::DefaultPolicy;
use crate::authorizer::Authorizer;
use crate::error::AclError;
use crate::rules::{Rules, parse_rules};

/// The ID of the builtin `global-management` policy.
pub const MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The name of the builtin management policy.
pub const MANAGEMENT_POLICY_NAME: &str = "global-management";
/// The accessor ID of the anonymous token (used for requests without a token).
pub const ANONYMOUS_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";
/// The secret of the anonymous token.
pub const ANONYMOUS_SECRET: &str = "anonymous";

/// The rules text of the builtin management policy (as Consul shows it). Tokens linked to the
/// policy get `Authorizer::management()`, so this text is informative; it grants the same.
pub const MANAGEMENT_RULES: &str = r#"acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}"#;

/// A token's link to a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLink {
    pub id: String,
    pub name: String,
}

/// An ACL token. The secret itself is never kept, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub accessor_id: String,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_hash: String,
    pub description: String,
    pub policies: Vec<PolicyLink>,
    pub local: bool,
    pub create_time_ms: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// An ACL policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The rules text as given (validated by `parse_rules` on write).
    pub rules: String,
    /// Where the policy applies; empty = every datacenter.
    pub datacenters: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A token create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenWrite {
    pub accessor_id: String,
    /// Required for a new token; for an update, absent or the same secret.
    pub secret: Option<String>,
    pub description: String,
    pub policies: Vec<PolicyRef>,
    pub local: bool,
}

/// A policy named in a token write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyRef {
    Id(String),
    Name(String),
}

/// A policy create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWrite {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: String,
    pub datacenters: Vec<String>,
}

/// Lowercase hex SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[derive(Clone, Debug)]
struct StoredPolicy {
    policy: Policy,
    /// Parsed once on write; shared by every authorizer built from it.
    rules: Arc<Rules>,
}

/// Tokens (by accessor and by secret hash), policies (by ID and by name), whether and when
/// bootstrap happened, and the state's own change index.
#[derive(Clone, Debug)]
pub struct AclState {
    tokens: BTreeMap<String, Token>,
    /// secret hash → accessor ID.
    by_secret: HashMap<String, String>,
    policies: BTreeMap<String, StoredPolicy>,
    /// policy name → policy ID.
    by_name: HashMap<String, String>,
    bootstrap_index: Option<u64>,
    index: u64,
}

impl Default for AclState {
    fn default() -> Self {
        AclState::new()
    }
}

/// The index the builtin policy and the anonymous token are created at.
const BUILTIN_INDEX: u64 = 1;

fn builtin_management_policy() -> Policy {
    Policy {
        id: MANAGEMENT_POLICY_ID.to_owned(),
        name: MANAGEMENT_POLICY_NAME.to_owned(),
        description: "Builtin Policy that grants unlimited access".to_owned(),
        rules: MANAGEMENT_RULES.to_owned(),
        datacenters: Vec::new(),
        create_index: BUILTIN_INDEX,
        modify_index: BUILTIN_INDEX,
    }
}

fn anonymous_token() -> Token {
    Token {
        accessor_id: ANONYMOUS_ACCESSOR_ID.to_owned(),
        secret_hash: hash_secret(ANONYMOUS_SECRET),
        description: "Anonymous Token".to_owned(),
        policies: Vec::new(),
        local: false,
        create_time_ms: 0,
        create_index: BUILTIN_INDEX,
        modify_index: BUILTIN_INDEX,
    }
}

/// Consul's policy name rule: 1 to 128 of `[A-Za-z0-9-_]`.
fn valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AclState {
    /// A fresh state: the builtin management policy and the anonymous token (no policies),
    /// both at index 1; not bootstrapped.
    pub fn new() -> AclState {
        AclState::restore(Vec::new(), Vec::new(), None, BUILTIN_INDEX)
    }

    /// Rebuilds the state from persisted tokens and policies. The builtin policy and the
    /// anonymous token are added if missing. The index is at least every stored modify index.
    /// A stored policy whose rules no longer parse denies everything (fails closed).
    pub fn restore(
        tokens: Vec<Token>,
        policies: Vec<Policy>,
        bootstrap_index: Option<u64>,
        index: u64,
    ) -> AclState {
        let mut state = AclState {
            tokens: BTreeMap::new(),
            by_secret: HashMap::new(),
            policies: BTreeMap::new(),
            by_name: HashMap::new(),
            bootstrap_index,
            index,
        };
        for policy in policies {
            let rules = parse_rules(&policy.rules).unwrap_or_else(|_| Rules::deny_all());
            state.index = state.index.max(policy.modify_index);
            state.insert_policy(StoredPolicy {
                policy,
                rules: Arc::new(rules),
            });
        }
        if !state.policies.contains_key(MANAGEMENT_POLICY_ID) {
            let policy = builtin_management_policy();
            let rules = Arc::new(parse_rules(&policy.rules).unwrap_or_else(|_| Rules::deny_all()));
            state.insert_policy(StoredPolicy { policy, rules });
        }
        for token in tokens {
            state.index = state.index.max(token.modify_index);
            state.insert_token(token);
        }
        if !state.tokens.contains_key(ANONYMOUS_ACCESSOR_ID) {
            state.insert_token(anonymous_token());
        }
        state.index = state
            .index
            .max(BUILTIN_INDEX)
            .max(bootstrap_index.unwrap_or(0));
        state
    }

    fn insert_policy(&mut self, stored: StoredPolicy) {
        self.by_name
            .insert(stored.policy.name.clone(), stored.policy.id.clone());
        self.policies.insert(stored.policy.id.clone(), stored);
    }

    fn insert_token(&mut self, token: Token) {
        self.by_secret
            .insert(token.secret_hash.clone(), token.accessor_id.clone());
        self.tokens.insert(token.accessor_id.clone(), token);
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// The index of the last change.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The index bootstrap happened at, if it did.
    pub fn bootstrapped(&self) -> Option<u64> {
        self.bootstrap_index
    }

    /// Creates the initial management token (linked to global-management) once;
    /// `Err(AlreadyBootstrapped(index))` after.
    pub fn bootstrap(
        &mut self,
        accessor_id: &str,
        secret: &str,
        now_ms: u64,
    ) -> Result<Token, AclError> {
        if let Some(at) = self.bootstrap_index {
            return Err(AclError::AlreadyBootstrapped(at));
        }
        self.check_new_token(accessor_id, secret)?;
        let index = self.next_index();
        let token = Token {
            accessor_id: accessor_id.to_owned(),
            secret_hash: hash_secret(secret),
            description: "Bootstrap Token (Global Management)".to_owned(),
            policies: vec![PolicyLink {
                id: MANAGEMENT_POLICY_ID.to_owned(),
                name: self.management_name(),
            }],
            local: false,
            create_time_ms: now_ms,
            create_index: index,
            modify_index: index,
        };
        self.insert_token(token.clone());
        self.bootstrap_index = Some(index);
        Ok(token)
    }

    fn management_name(&self) -> String {
        self.policies.get(MANAGEMENT_POLICY_ID).map_or_else(
            || MANAGEMENT_POLICY_NAME.to_owned(),
            |p| p.policy.name.clone(),
        )
    }

    fn check_new_token(&self, accessor_id: &str, secret: &str) -> Result<(), AclError> {
        if accessor_id.is_empty() {
            return Err(AclError::Invalid("token accessor ID required".to_owned()));
        }
        if self.tokens.contains_key(accessor_id) {
            return Err(AclError::Invalid(format!(
                "a token with accessor ID {accessor_id:?} already exists"
            )));
        }
        if secret.is_empty() {
            return Err(AclError::Invalid("secret required".to_owned()));
        }
        if self.by_secret.contains_key(&hash_secret(secret)) {
            return Err(AclError::Invalid("secret ID already in use".to_owned()));
        }
        Ok(())
    }

    /// Resolves policy references to links (deduplicated by ID, in the order given).
    fn resolve_links(&self, refs: &[PolicyRef]) -> Result<Vec<PolicyLink>, AclError> {
        let mut links: Vec<PolicyLink> = Vec::with_capacity(refs.len());
        for r in refs {
            let stored = match r {
                PolicyRef::Id(id) => self.policies.get(id).ok_or_else(|| {
                    AclError::Invalid(format!("no such ACL policy with ID {id:?}"))
                })?,
                PolicyRef::Name(name) => self
                    .by_name
                    .get(name)
                    .and_then(|id| self.policies.get(id))
                    .ok_or_else(|| {
                        AclError::Invalid(format!("no such ACL policy with name {name:?}"))
                    })?,
            };
            if !links.iter().any(|l| l.id == stored.policy.id) {
                links.push(PolicyLink {
                    id: stored.policy.id.clone(),
                    name: stored.policy.name.clone(),
                });
            }
        }
        Ok(links)
    }

    /// Creates (unknown accessor) or updates a token. Policies are given by ID or by name and
    /// must exist. A new token needs an unused secret; an update cannot change the secret or
    /// the `local` flag (as in Consul). The anonymous token can be updated, never deleted.
    pub fn upsert_token(&mut self, t: TokenWrite, now_ms: u64) -> Result<Token, AclError> {
        let policies = self.resolve_links(&t.policies)?;
        if let Some(existing) = self.tokens.get(&t.accessor_id) {
            if let Some(secret) = &t.secret
                && !constant_time_eq(
                    hash_secret(secret).as_bytes(),
                    existing.secret_hash.as_bytes(),
                )
            {
                return Err(AclError::Invalid(
                    "changing a token's secret ID is not permitted".to_owned(),
                ));
            }
            if t.local != existing.local {
                return Err(AclError::Invalid(format!(
                    "cannot toggle local mode of token {:?}",
                    t.accessor_id
                )));
            }
            let index = self.next_index();
            let token = self.tokens.get_mut(&t.accessor_id).ok_or_else(|| {
                AclError::NotFound(format!("token {:?} not found", t.accessor_id))
            })?;
            token.description = t.description;
            token.policies = policies;
            token.modify_index = index;
            return Ok(token.clone());
        }
        let Some(secret) = t.secret else {
            return Err(AclError::Invalid("secret required".to_owned()));
        };
        self.check_new_token(&t.accessor_id, &secret)?;
        let index = self.next_index();
        let token = Token {
            accessor_id: t.accessor_id,
            secret_hash: hash_secret(&secret),
            description: t.description,
            policies,
            local: t.local,
            create_time_ms: now_ms,
            create_index: index,
            modify_index: index,
        };
        self.insert_token(token.clone());
        Ok(token)
    }

    /// Deletes a token; the anonymous token cannot be deleted.
    pub fn delete_token(&mut self, accessor_id: &str) -> Result<(), AclError> {
        if accessor_id == ANONYMOUS_ACCESSOR_ID {
            return Err(AclError::Invalid(
                "delete operation not permitted on the anonymous token".to_owned(),
            ));
        }
        let token = self
            .tokens
            .remove(accessor_id)
            .ok_or_else(|| AclError::NotFound(format!("token {accessor_id:?} not found")))?;
        self.by_secret.remove(&token.secret_hash);
        self.next_index();
        Ok(())
    }

    /// The token with this accessor ID.
    pub fn token(&self, accessor_id: &str) -> Option<&Token> {
        self.tokens.get(accessor_id)
    }

    /// All tokens, by accessor ID.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    /// Creates or updates a policy. The name must be unique (case-sensitive) and 1 to 128 of
    /// `[A-Za-z0-9-_]`, the rules must parse; the builtin management policy cannot be changed.
    /// A rename is reflected in the links of the tokens that use the policy.
    pub fn upsert_policy(&mut self, p: PolicyWrite) -> Result<Policy, AclError> {
        if p.id.is_empty() {
            return Err(AclError::Invalid("policy ID required".to_owned()));
        }
        if p.id == MANAGEMENT_POLICY_ID {
            return Err(AclError::Invalid(
                "the builtin global-management policy cannot be modified".to_owned(),
            ));
        }
        if !valid_policy_name(&p.name) {
            return Err(AclError::Invalid(format!(
                "invalid policy name {:?}: 1 to 128 letters, digits, '-' or '_'",
                p.name
            )));
        }
        if let Some(other) = self.by_name.get(&p.name)
            && *other != p.id
        {
            return Err(AclError::Invalid(format!(
                "a policy named {:?} already exists",
                p.name
            )));
        }
        let rules = Arc::new(parse_rules(&p.rules)?);
        let index = self.next_index();
        let old = self.policies.remove(&p.id);
        let create_index = old.as_ref().map_or(index, |o| o.policy.create_index);
        if let Some(old) = &old
            && old.policy.name != p.name
        {
            self.by_name.remove(&old.policy.name);
            for token in self.tokens.values_mut() {
                for link in token.policies.iter_mut().filter(|l| l.id == p.id) {
                    link.name.clone_from(&p.name);
                }
            }
        }
        let policy = Policy {
            id: p.id,
            name: p.name,
            description: p.description,
            rules: p.rules,
            datacenters: p.datacenters,
            create_index,
            modify_index: index,
        };
        self.insert_policy(StoredPolicy {
            policy: policy.clone(),
            rules,
        });
        Ok(policy)
    }

    /// Deletes a policy and drops the links to it from tokens (those tokens take the same
    /// index). The builtin management policy cannot be deleted.
    pub fn delete_policy(&mut self, id: &str) -> Result<(), AclError> {
        if id == MANAGEMENT_POLICY_ID {
            return Err(AclError::Invalid(
                "the builtin global-management policy cannot be deleted".to_owned(),
            ));
        }
        let stored = self
            .policies
            .remove(id)
            .ok_or_else(|| AclError::NotFound(format!("policy {id:?} not found")))?;
        self.by_name.remove(&stored.policy.name);
        let index = self.next_index();
        for token in self.tokens.values_mut() {
            let before = token.policies.len();
            token.policies.retain(|l| l.id != id);
            if token.policies.len() != before {
                token.modify_index = index;
            }
        }
        Ok(())
    }

    /// The policy with this ID.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.get(id).map(|s| &s.policy)
    }

    /// The policy with this name (case-sensitive).
    pub fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.by_name.get(name).and_then(|id| self.policy(id))
    }

    /// All policies, by ID.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().map(|s| &s.policy)
    }

    /// The token a secret names; `None` is Consul's "ACL not found".
    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        let hash = hash_secret(secret);
        let token = self
            .by_secret
            .get(&hash)
            .and_then(|accessor| self.tokens.get(accessor))?;
        constant_time_eq(hash.as_bytes(), token.secret_hash.as_bytes()).then_some(token)
    }

    /// The authorizer for a secret (absent or empty = the anonymous token);
    /// `Err(NotFound("ACL not found"))` for an unknown secret.
    pub fn authorize(
        &self,
        secret: Option<&str>,
        default: DefaultPolicy,
    ) -> Result<Authorizer, AclError> {
        Ok(self.token_authorizer(self.resolve(secret)?, default, None))
    }

    /// Like [`AclState::authorize`], leaving out policies that are limited to other
    /// datacenters than `datacenter`.
    pub fn authorize_in(
        &self,
        secret: Option<&str>,
        default: DefaultPolicy,
        datacenter: &str,
    ) -> Result<Authorizer, AclError> {
        Ok(self.token_authorizer(self.resolve(secret)?, default, Some(datacenter)))
    }

    fn resolve(&self, secret: Option<&str>) -> Result<&Token, AclError> {
        let token = match secret {
            None | Some("") => self.tokens.get(ANONYMOUS_ACCESSOR_ID),
            Some(s) => self.token_by_secret(s),
        };
        token.ok_or_else(|| AclError::NotFound("ACL not found".to_owned()))
    }

    /// The authorizer for a token: management if it links the builtin management policy,
    /// otherwise its linked policies merged, then `default`. Links to policies that no longer
    /// exist are skipped; with `datacenter`, so are policies limited to other datacenters.
    pub fn token_authorizer(
        &self,
        token: &Token,
        default: DefaultPolicy,
        datacenter: Option<&str>,
    ) -> Authorizer {
        if token.policies.iter().any(|l| l.id == MANAGEMENT_POLICY_ID) {
            return Authorizer::management();
        }
        let rules: Vec<&Rules> = token
            .policies
            .iter()
            .filter_map(|l| self.policies.get(&l.id))
            .filter(|s| match datacenter {
                Some(dc) => {
                    s.policy.datacenters.is_empty() || s.policy.datacenters.iter().any(|d| d == dc)
                }
                None => true,
            })
            .map(|s| s.rules.as_ref())
            .collect();
        Authorizer::new(&rules, default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Need, Resource};

    const ALLOW: DefaultPolicy = DefaultPolicy::Allow;
    const DENY: DefaultPolicy = DefaultPolicy::Deny;

    fn policy(id: &str, name: &str, rules: &str) -> PolicyWrite {
        PolicyWrite {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            rules: rules.into(),
            datacenters: Vec::new(),
        }
    }

    fn token(accessor: &str, secret: Option<&str>, policies: Vec<PolicyRef>) -> TokenWrite {
        TokenWrite {
            accessor_id: accessor.into(),
            secret: secret.map(Into::into),
            description: format!("token {accessor}"),
            policies,
            local: false,
        }
    }

    fn invalid(r: Result<impl std::fmt::Debug, AclError>) -> String {
        match r {
            Err(AclError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn hashing_and_constant_time_eq() {
        assert_eq!(
            hash_secret(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn new_state_has_builtins() {
        let s = AclState::new();
        assert_eq!(s.index(), 1);
        assert_eq!(s.bootstrapped(), None);
        let m = s.policy(MANAGEMENT_POLICY_ID).unwrap();
        assert_eq!(m.name, "global-management");
        assert_eq!(
            s.policy_by_name("global-management").unwrap().id,
            MANAGEMENT_POLICY_ID
        );
        let anon = s.token(ANONYMOUS_ACCESSOR_ID).unwrap();
        assert!(anon.policies.is_empty());
        assert_eq!(anon.secret_hash, hash_secret(ANONYMOUS_SECRET));
        assert_eq!(
            s.token_by_secret("anonymous").unwrap().accessor_id,
            ANONYMOUS_ACCESSOR_ID
        );
        assert_eq!(s.tokens().count(), 1);
        assert_eq!(s.policies().count(), 1);
    }

    #[test]
    fn bootstrap_once() {
        let mut s = AclState::new();
        let t = s.bootstrap("acc-1", "secret-1", 1234).unwrap();
        assert_eq!(t.accessor_id, "acc-1");
        assert_eq!(t.secret_hash, hash_secret("secret-1"));
        assert_eq!(t.create_time_ms, 1234);
        assert_eq!(t.create_index, 2);
        assert_eq!(
            t.policies,
            vec![PolicyLink {
                id: MANAGEMENT_POLICY_ID.into(),
                name: "global-management".into()
            }]
        );
        assert_eq!(s.bootstrapped(), Some(2));
        assert_eq!(s.index(), 2);
        assert_eq!(
            s.bootstrap("acc-2", "secret-2", 0),
            Err(AclError::AlreadyBootstrapped(2))
        );
        assert_eq!(s.index(), 2, "a refused bootstrap takes no index");
        assert_eq!(
            AclError::AlreadyBootstrapped(2).to_string(),
            "ACL bootstrap no longer allowed (reset index: 2)"
        );
        let a = s.authorize(Some("secret-1"), DENY).unwrap();
        assert!(a.is_management());
        assert!(a.allows(Resource::Acl, "", Need::Write));
    }

    #[test]
    fn bootstrap_rejects_used_secret_or_accessor() {
        let mut s = AclState::new();
        assert!(invalid(s.bootstrap("a", "anonymous", 0)).contains("in use"));
        assert!(invalid(s.bootstrap(ANONYMOUS_ACCESSOR_ID, "x", 0)).contains("already exists"));
        assert!(invalid(s.bootstrap("a", "", 0)).contains("secret required"));
        assert!(invalid(s.bootstrap("", "x", 0)).contains("accessor"));
        assert_eq!(s.bootstrapped(), None);
        assert_eq!(s.index(), 1);
        assert!(s.bootstrap("a", "x", 0).is_ok());
    }

    #[test]
    fn secret_lookup_and_authorize() {
        let mut s = AclState::new();
        s.upsert_policy(policy(
            "p1",
            "web-read",
            "service \"web\" { policy = \"read\" }",
        ))
        .unwrap();
        s.upsert_token(
            token("t1", Some("s1"), vec![PolicyRef::Name("web-read".into())]),
            5,
        )
        .unwrap();
        assert_eq!(s.token_by_secret("s1").unwrap().accessor_id, "t1");
        assert!(s.token_by_secret("s2").is_none());
        assert!(s.token_by_secret("").is_none());
        assert!(
            s.token_by_secret(&hash_secret("s1")).is_none(),
            "the hash is not the secret"
        );

        let a = s.authorize(Some("s1"), DENY).unwrap();
        assert!(a.allows(Resource::Service, "web", Need::Read));
        assert!(!a.allows(Resource::Service, "web", Need::Write));
        assert!(!a.allows(Resource::Service, "db", Need::Read));
        let a = s.authorize(Some("s1"), ALLOW).unwrap();
        assert!(a.allows(Resource::Service, "db", Need::Write));
        assert!(!a.allows(Resource::Acl, "", Need::Read));

        assert_eq!(
            s.authorize(Some("nope"), ALLOW).unwrap_err(),
            AclError::NotFound("ACL not found".into())
        );
        // No secret or an empty one is the anonymous token.
        for secret in [None, Some(""), Some("anonymous")] {
            let a = s.authorize(secret, DENY).unwrap();
            assert!(!a.is_management());
            assert!(!a.allows(Resource::Service, "web", Need::Read));
        }
    }

    #[test]
    fn anonymous_token_can_be_given_policies_but_not_deleted() {
        let mut s = AclState::new();
        s.upsert_policy(policy(
            "p1",
            "dns",
            "node_prefix \"\" { policy = \"read\" }",
        ))
        .unwrap();
        let t = s
            .upsert_token(
                token(
                    ANONYMOUS_ACCESSOR_ID,
                    None,
                    vec![PolicyRef::Id("p1".into())],
                ),
                9,
            )
            .unwrap();
        assert_eq!(t.policies[0].name, "dns");
        assert_eq!(t.create_time_ms, 0, "an update keeps the create time");
        assert!(
            s.authorize(None, DENY)
                .unwrap()
                .allows(Resource::Node, "n1", Need::Read)
        );
        // Its own secret may be restated.
        s.upsert_token(token(ANONYMOUS_ACCESSOR_ID, Some("anonymous"), vec![]), 9)
            .unwrap();
        assert!(invalid(s.delete_token(ANONYMOUS_ACCESSOR_ID)).contains("anonymous"));
        assert!(s.token(ANONYMOUS_ACCESSOR_ID).is_some());
    }

    #[test]
    fn token_crud() {
        let mut s = AclState::new();
        s.upsert_policy(policy("p1", "one", "")).unwrap(); // index 2
        s.upsert_policy(policy("p2", "two", "")).unwrap(); // index 3

        // Create: secret required, policies must exist, links deduplicated and named.
        assert_eq!(
            invalid(s.upsert_token(token("t1", None, vec![]), 0)),
            "secret required"
        );
        assert!(
            invalid(s.upsert_token(
                token("t1", Some("s"), vec![PolicyRef::Id("nope".into())]),
                0
            ))
            .contains("no such ACL policy with ID \"nope\"")
        );
        assert!(
            invalid(s.upsert_token(token("t1", Some("s"), vec![PolicyRef::Name("x".into())]), 0))
                .contains("no such ACL policy with name \"x\"")
        );
        assert!(
            invalid(s.upsert_token(token("t1", Some("anonymous"), vec![]), 0)).contains("in use")
        );
        assert!(invalid(s.upsert_token(token("", Some("s"), vec![]), 0)).contains("accessor"));
        assert_eq!(s.index(), 3, "refused writes take no index");
        let t = s
            .upsert_token(
                token(
                    "t1",
                    Some("s"),
                    vec![
                        PolicyRef::Id("p2".into()),
                        PolicyRef::Name("one".into()),
                        PolicyRef::Name("two".into()),
                    ],
                ),
                77,
            )
            .unwrap();
        assert_eq!(
            t.policies,
            vec![
                PolicyLink {
                    id: "p2".into(),
                    name: "two".into()
                },
                PolicyLink {
                    id: "p1".into(),
                    name: "one".into()
                },
            ]
        );
        assert_eq!(
            (t.create_index, t.modify_index, t.create_time_ms),
            (4, 4, 77)
        );
        assert!(invalid(s.upsert_token(token("t2", Some("s"), vec![]), 0)).contains("in use"));

        // Update: new description and links, same secret; cannot change secret or local.
        let mut w = token("t1", None, vec![PolicyRef::Id("p1".into())]);
        w.description = "changed".into();
        let t = s.upsert_token(w, 99).unwrap();
        assert_eq!(t.description, "changed");
        assert_eq!(t.policies.len(), 1);
        assert_eq!(
            (t.create_index, t.modify_index, t.create_time_ms),
            (4, 5, 77)
        );
        assert_eq!(t.secret_hash, hash_secret("s"));
        assert!(s.upsert_token(token("t1", Some("s"), vec![]), 0).is_ok());
        assert!(invalid(s.upsert_token(token("t1", Some("other"), vec![]), 0)).contains("secret"));
        let mut w = token("t1", None, vec![]);
        w.local = true;
        assert!(invalid(s.upsert_token(w, 0)).contains("local"));
        assert_eq!(s.token_by_secret("s").unwrap().accessor_id, "t1");

        // Listing is by accessor.
        s.upsert_token(token("a0", Some("s0"), vec![]), 0).unwrap();
        let ids: Vec<_> = s.tokens().map(|t| t.accessor_id.as_str()).collect();
        assert_eq!(ids, [ANONYMOUS_ACCESSOR_ID, "a0", "t1"]);

        // Delete.
        let before = s.index();
        s.delete_token("t1").unwrap();
        assert_eq!(s.index(), before + 1);
        assert!(s.token("t1").is_none());
        assert!(s.token_by_secret("s").is_none());
        assert_eq!(
            s.authorize(Some("s"), ALLOW).unwrap_err(),
            AclError::NotFound("ACL not found".into())
        );
        assert!(matches!(s.delete_token("t1"), Err(AclError::NotFound(_))));
        // The secret is free again.
        s.upsert_token(token("t3", Some("s"), vec![]), 0).unwrap();
    }

    #[test]
    fn policy_crud() {
        let mut s = AclState::new();
        let p = s
            .upsert_policy(policy("p1", "web_Read-1", "acl = \"read\""))
            .unwrap();
        assert_eq!((p.create_index, p.modify_index), (2, 2));
        assert_eq!(s.policy("p1").unwrap(), &p);
        assert_eq!(s.policy_by_name("web_Read-1").unwrap().id, "p1");
        assert!(
            s.policy_by_name("web_read-1").is_none(),
            "names are case-sensitive"
        );

        // Names: charset, length, uniqueness (case-sensitive).
        for bad in ["", "has space", "dot.ted", "ünï", &"x".repeat(129)] {
            assert!(
                invalid(s.upsert_policy(policy("p2", bad, ""))).contains("invalid policy name")
            );
        }
        assert!(s.upsert_policy(policy("p2", &"x".repeat(128), "")).is_ok());
        assert!(
            invalid(s.upsert_policy(policy("p3", "web_Read-1", ""))).contains("already exists")
        );
        assert!(
            invalid(s.upsert_policy(policy("p3", "global-management", "")))
                .contains("already exists")
        );
        assert!(s.upsert_policy(policy("p3", "WEB_READ-1", "")).is_ok());
        assert!(invalid(s.upsert_policy(policy("", "noid", ""))).contains("ID"));

        // Rules must parse; the error is a Parse error with a position.
        let before = s.index();
        assert_eq!(
            s.upsert_policy(policy("p4", "bad", "servce \"x\" {}"))
                .unwrap_err(),
            AclError::Parse("1:1: unknown rule kind \"servce\"".into())
        );
        assert_eq!(s.index(), before);
        assert!(s.policy("p4").is_none());

        // Update keeps create_index; rename frees the old name.
        let p = s
            .upsert_policy(policy("p1", "renamed", "operator = \"write\""))
            .unwrap();
        assert_eq!(p.create_index, 2);
        assert_eq!(p.modify_index, s.index());
        assert!(s.policy_by_name("web_Read-1").is_none());
        assert_eq!(
            s.policy_by_name("renamed").unwrap().rules,
            "operator = \"write\""
        );
        assert!(s.upsert_policy(policy("p9", "web_Read-1", "")).is_ok());
        // Same name on the same ID is not a conflict.
        assert!(s.upsert_policy(policy("p1", "renamed", "")).is_ok());

        // The builtin cannot be changed or deleted.
        let m = s.policy(MANAGEMENT_POLICY_ID).unwrap().clone();
        assert!(
            invalid(s.upsert_policy(policy(MANAGEMENT_POLICY_ID, "global-management", "")))
                .contains("builtin")
        );
        assert!(invalid(s.delete_policy(MANAGEMENT_POLICY_ID)).contains("builtin"));
        assert_eq!(s.policy(MANAGEMENT_POLICY_ID).unwrap(), &m);

        // Listing is by ID.
        let ids: Vec<_> = s.policies().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, [MANAGEMENT_POLICY_ID, "p1", "p2", "p3", "p9"]);

        // Delete.
        s.delete_policy("p9").unwrap();
        assert!(s.policy("p9").is_none());
        assert!(s.policy_by_name("web_Read-1").is_none());
        assert!(matches!(s.delete_policy("p9"), Err(AclError::NotFound(_))));
    }

    #[test]
    fn policy_update_changes_authorization_and_link_names() {
        let mut s = AclState::new();
        s.upsert_policy(policy("p1", "kv", "key_prefix \"\" { policy = \"read\" }"))
            .unwrap();
        s.upsert_token(token("t1", Some("s1"), vec![PolicyRef::Id("p1".into())]), 0)
            .unwrap();
        let token_index = s.token("t1").unwrap().modify_index;
        assert!(
            !s.authorize(Some("s1"), DENY)
                .unwrap()
                .allows(Resource::Key, "k", Need::Write)
        );
        s.upsert_policy(policy(
            "p1",
            "kv-rw",
            "key_prefix \"\" { policy = \"write\" }",
        ))
        .unwrap();
        assert!(
            s.authorize(Some("s1"), DENY)
                .unwrap()
                .allows(Resource::Key, "k", Need::Write)
        );
        let t = s.token("t1").unwrap();
        assert_eq!(t.policies[0].name, "kv-rw");
        assert_eq!(
            t.modify_index, token_index,
            "a rename does not count as a token change"
        );
    }

    #[test]
    fn deleting_a_policy_drops_links() {
        let mut s = AclState::new();
        s.upsert_policy(policy(
            "p1",
            "one",
            "service_prefix \"\" { policy = \"write\" }",
        ))
        .unwrap();
        s.upsert_policy(policy(
            "p2",
            "two",
            "node_prefix \"\" { policy = \"read\" }",
        ))
        .unwrap();
        s.upsert_token(
            token(
                "t1",
                Some("s1"),
                vec![PolicyRef::Id("p1".into()), PolicyRef::Id("p2".into())],
            ),
            0,
        )
        .unwrap();
        s.upsert_token(token("t2", Some("s2"), vec![PolicyRef::Id("p2".into())]), 0)
            .unwrap();
        let t2_index = s.token("t2").unwrap().modify_index;
        assert!(
            s.authorize(Some("s1"), DENY)
                .unwrap()
                .allows(Resource::Service, "x", Need::Write)
        );

        s.delete_policy("p1").unwrap();
        let t1 = s.token("t1").unwrap();
        assert_eq!(
            t1.policies,
            vec![PolicyLink {
                id: "p2".into(),
                name: "two".into()
            }]
        );
        assert_eq!(t1.modify_index, s.index());
        assert_eq!(
            s.token("t2").unwrap().modify_index,
            t2_index,
            "untouched tokens keep their index"
        );
        let a = s.authorize(Some("s1"), DENY).unwrap();
        assert!(!a.allows(Resource::Service, "x", Need::Read));
        assert!(a.allows(Resource::Node, "x", Need::Read));
        // A new policy reusing the ID does not resurrect the link.
        s.upsert_policy(policy(
            "p1",
            "one",
            "service_prefix \"\" { policy = \"write\" }",
        ))
        .unwrap();
        assert!(
            !s.authorize(Some("s1"), DENY)
                .unwrap()
                .allows(Resource::Service, "x", Need::Read)
        );
    }

    #[test]
    fn management_link_wins_over_other_policies() {
        let mut s = AclState::new();
        s.upsert_policy(policy(
            "deny",
            "deny-all",
            "key_prefix \"\" { policy = \"deny\" }\nacl = \"deny\"",
        ))
        .unwrap();
        s.upsert_token(
            token(
                "t1",
                Some("s1"),
                vec![
                    PolicyRef::Id("deny".into()),
                    PolicyRef::Name("global-management".into()),
                ],
            ),
            0,
        )
        .unwrap();
        let a = s.authorize(Some("s1"), DENY).unwrap();
        assert!(a.is_management());
        assert!(a.allows(Resource::Key, "k", Need::Write));
        assert!(a.allows(Resource::Acl, "", Need::Write));
    }

    #[test]
    fn datacenter_scoped_policies() {
        let mut s = AclState::new();
        let mut p = policy(
            "p1",
            "dc2-only",
            "service_prefix \"\" { policy = \"write\" }",
        );
        p.datacenters = vec!["dc2".into()];
        s.upsert_policy(p).unwrap();
        s.upsert_token(token("t1", Some("s1"), vec![PolicyRef::Id("p1".into())]), 0)
            .unwrap();
        let check = |a: Authorizer| a.allows(Resource::Service, "x", Need::Write);
        assert!(check(s.authorize(Some("s1"), DENY).unwrap()));
        assert!(check(s.authorize_in(Some("s1"), DENY, "dc2").unwrap()));
        assert!(!check(s.authorize_in(Some("s1"), DENY, "dc1").unwrap()));
        assert!(s.authorize_in(Some("bad"), DENY, "dc1").is_err());
    }

    #[test]
    fn restore_round_trip() {
        let mut s = AclState::new();
        s.upsert_policy(policy(
            "p1",
            "one",
            "key_prefix \"a/\" { policy = \"write\" }",
        ))
        .unwrap();
        s.bootstrap("root", "root-secret", 1).unwrap();
        s.upsert_token(token("t1", Some("s1"), vec![PolicyRef::Id("p1".into())]), 2)
            .unwrap();

        let tokens: Vec<Token> = s.tokens().cloned().collect();
        let policies: Vec<Policy> = s.policies().cloned().collect();
        // Through serde, as the server persists them.
        let tokens: Vec<Token> =
            serde_json::from_str(&serde_json::to_string(&tokens).unwrap()).unwrap();
        let policies: Vec<Policy> =
            serde_json::from_str(&serde_json::to_string(&policies).unwrap()).unwrap();
        let r = AclState::restore(tokens, policies, s.bootstrapped(), s.index());
        assert_eq!(r.index(), s.index());
        assert_eq!(r.bootstrapped(), Some(3));
        assert!(r.tokens().eq(s.tokens()));
        assert!(r.policies().eq(s.policies()));
        assert!(
            r.authorize(Some("root-secret"), DENY)
                .unwrap()
                .is_management()
        );
        assert!(
            r.authorize(Some("s1"), DENY)
                .unwrap()
                .allows(Resource::Key, "a/b", Need::Write)
        );
        assert_eq!(r.policy_by_name("one").unwrap().id, "p1");
        let mut r = r;
        assert_eq!(
            r.bootstrap("x", "y", 0),
            Err(AclError::AlreadyBootstrapped(3))
        );
        assert!(invalid(r.upsert_token(token("t9", Some("s1"), vec![]), 0)).contains("in use"));
    }

    #[test]
    fn restore_adds_builtins_and_raises_the_index() {
        let t = Token {
            accessor_id: "t1".into(),
            secret_hash: hash_secret("s1"),
            description: String::new(),
            policies: vec![PolicyLink {
                id: "gone".into(),
                name: "gone".into(),
            }],
            local: true,
            create_time_ms: 0,
            create_index: 40,
            modify_index: 42,
        };
        let r = AclState::restore(vec![t], Vec::new(), None, 7);
        assert_eq!(r.index(), 42);
        assert!(r.policy(MANAGEMENT_POLICY_ID).is_some());
        assert!(r.token(ANONYMOUS_ACCESSOR_ID).is_some());
        // A dangling link is skipped.
        let a = r.authorize(Some("s1"), ALLOW).unwrap();
        assert!(a.allows(Resource::Key, "k", Need::Write));
    }

    #[test]
    fn restore_fails_closed_on_unparsable_rules() {
        let p = Policy {
            id: "p1".into(),
            name: "broken".into(),
            description: String::new(),
            rules: "this is not rules".into(),
            datacenters: Vec::new(),
            create_index: 2,
            modify_index: 2,
        };
        let t = Token {
            accessor_id: "t1".into(),
            secret_hash: hash_secret("s1"),
            description: String::new(),
            policies: vec![PolicyLink {
                id: "p1".into(),
                name: "broken".into(),
            }],
            local: false,
            create_time_ms: 0,
            create_index: 3,
            modify_index: 3,
        };
        let r = AclState::restore(vec![t], vec![p], None, 3);
        let a = r.authorize(Some("s1"), ALLOW).unwrap();
        assert!(!a.allows(Resource::Key, "k", Need::Read));
        assert!(!a.allows(Resource::Operator, "", Need::Read));
    }

    #[test]
    fn every_change_takes_the_next_index() {
        let mut s = AclState::new();
        let mut last = s.index();
        let mut step = |s: &AclState| {
            assert_eq!(s.index(), last + 1);
            last = s.index();
        };
        s.upsert_policy(policy("p1", "one", "")).unwrap();
        step(&s);
        s.upsert_policy(policy("p1", "one", "acl = \"read\""))
            .unwrap();
        step(&s);
        s.upsert_token(token("t1", Some("s1"), vec![PolicyRef::Id("p1".into())]), 0)
            .unwrap();
        step(&s);
        s.upsert_token(token("t1", None, vec![]), 0).unwrap();
        step(&s);
        s.bootstrap("b", "bs", 0).unwrap();
        step(&s);
        s.delete_policy("p1").unwrap();
        step(&s);
        s.delete_token("t1").unwrap();
        step(&s);
    }

    #[test]
    fn serde_shapes() {
        let s = AclState::new();
        let v = serde_json::to_value(s.token(ANONYMOUS_ACCESSOR_ID).unwrap()).unwrap();
        for field in [
            "accessor_id",
            "secret_hash",
            "description",
            "policies",
            "local",
            "create_time_ms",
            "create_index",
            "modify_index",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        let v = serde_json::to_value(s.policy(MANAGEMENT_POLICY_ID).unwrap()).unwrap();
        assert_eq!(v["name"], "global-management");
        assert!(v.get("datacenters").unwrap().is_array());
    }
}
