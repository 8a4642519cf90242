//! Consul's ACL model as a pure library (no IO, clock or randomness): the policy rules
//! language, authorizers, and the token/policy state the server keeps.
//!
//! ```
//! use trellis_acl::{AclState, DefaultPolicy, Need, PolicyRef, PolicyWrite, Resource, TokenWrite};
//!
//! let mut acl = AclState::new();
//! acl.bootstrap("root-accessor", "root-secret", 0)?;
//! acl.upsert_policy(PolicyWrite {
//!     id: "p1".into(),
//!     name: "web".into(),
//!     description: String::new(),
//!     rules: r#"service "web" { policy = "write" }  key_prefix "web/" { policy = "read" }"#.into(),
//!     datacenters: vec![],
//! })?;
//! acl.upsert_token(TokenWrite {
//!     accessor_id: "a1".into(),
//!     secret: Some("s1".into()),
//!     description: "web agent".into(),
//!     policies: vec![PolicyRef::Name("web".into())],
//!     local: false,
//! }, 0)?;
//!
//! // Per request: the X-Consul-Token (None = anonymous), then one check per operation.
//! let authz = acl.authorize(Some("s1"), DefaultPolicy::Deny)?;
//! assert!(authz.allows(Resource::Service, "web", Need::Write));
//! assert!(authz.allows(Resource::Intention, "web", Need::Read)); // service write implies it
//! assert!(!authz.allows(Resource::Key, "web/config", Need::Write));
//! assert!(!authz.key_write_prefix("web/"));
//! assert!(acl.authorize(Some("root-secret"), DefaultPolicy::Deny)?.is_management());
//! assert!(acl.authorize(Some("wrong"), DefaultPolicy::Allow).is_err()); // "ACL not found"
//!
//! let err = trellis_acl::parse_rules("servce \"web\" { policy = \"read\" }").unwrap_err();
//! assert_eq!(err.to_string(), r#"failed to parse ACL rules: 1:1: unknown rule kind "servce""#);
//! # Ok::<(), trellis_acl::AclError>(())
//! ```

mod access;
mod authorizer;
mod error;
mod rules;
mod state;
mod syntax;

pub use access::{Access, DefaultPolicy, Need, Resource};
pub use authorizer::Authorizer;
pub use error::AclError;
pub use rules::{Rules, parse_rules};
pub use state::{
    ANONYMOUS_ACCESSOR_ID, ANONYMOUS_SECRET, AclState, MANAGEMENT_POLICY_ID,
    MANAGEMENT_POLICY_NAME, MANAGEMENT_RULES, Policy, PolicyLink, PolicyRef, PolicyWrite, Token,
    TokenWrite, constant_time_eq, hash_secret,
};
