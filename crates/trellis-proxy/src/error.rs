//! The crate's error type: everything that stops a proxy from starting or running.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry: {0}")]
    Registry(#[from] trellis_client::Error),
}

impl Error {
    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config(reason.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
