//! Why the catalog refused a command.

/// Why a command was refused. Messages are short and safe to show to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}
