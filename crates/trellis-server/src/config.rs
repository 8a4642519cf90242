//! Server configuration: a TOML-loadable struct with documented defaults, validated before any
//! port is bound.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP API address. Default `127.0.0.1:8500`.
    pub http: SocketAddr,
    /// Where the durable store lives. Default `./trellis-data`.
    pub data_dir: PathBuf,
    /// Keep everything in memory; nothing is written to disk. Default false.
    pub dev: bool,
    /// Name of the synthesised node. Default: the machine's host name.
    pub node_name: String,
    /// Datacenter name. Default `dc1`.
    pub datacenter: String,
    /// Most blocking queries and watch streams held open at once; more get 429. Default 100000.
    pub max_waiters: usize,
    /// Most HTTP/TCP check probes in flight at once. Default 64.
    pub check_concurrency: usize,
    /// Most commands queued for the writer; more get 503. Default 65536.
    pub max_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8500)),
            data_dir: PathBuf::from("./trellis-data"),
            dev: false,
            node_name: default_node_name(),
            datacenter: "dc1".into(),
            max_waiters: 100_000,
            check_concurrency: 64,
            max_queue: 65_536,
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "trellis".into())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot parse configuration: {0}")]
    Parse(#[from] toml::de::Error),
}

impl ServerConfig {
    /// Parses TOML text (file IO stays with the caller).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !label_ok(&self.datacenter) {
            return Err(ConfigError::Invalid(format!(
                "datacenter {:?} must be 1-63 letters, digits, '-' or '_'",
                self.datacenter
            )));
        }
        if self.node_name.is_empty() || self.node_name.len() > 128 || self.node_name.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "invalid node name {:?}",
                self.node_name
            )));
        }
        if self.max_waiters == 0 || self.check_concurrency == 0 || self.max_queue == 0 {
            return Err(ConfigError::Invalid(
                "max_waiters, check_concurrency and max_queue must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults() {
        let c =
            ServerConfig::from_toml("http = \"0.0.0.0:9500\"\ndatacenter = \"east\"\n").unwrap();
        assert_eq!(c.http.port(), 9500);
        assert_eq!(c.datacenter, "east");
        assert_eq!(c.max_waiters, 100_000);
        c.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(ServerConfig::from_toml("htp = \"x\"").is_err());
        let c = ServerConfig {
            datacenter: "a b".into(),
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
