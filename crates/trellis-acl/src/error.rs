//! The crate's one error type.

/// What can go wrong parsing rules or changing the ACL state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Policy rules text that does not parse; the message starts with `line:column: `.
    #[error("failed to parse ACL rules: {0}")]
    Parse(String),
    /// A write the ACL state refuses (bad name, unknown policy link, builtin object, ...).
    #[error("{0}")]
    Invalid(String),
    /// An unknown token secret ("ACL not found"), accessor or policy.
    #[error("{0}")]
    NotFound(String),
    /// Bootstrap was already done, at this index (Consul's "reset index").
    #[error("ACL bootstrap no longer allowed (reset index: {0})")]
    AlreadyBootstrapped(u64),
}
