//! The flags of a registry connection over HTTPS (`--ca-file`, `--client-cert`, `--client-key`,
//! `--tls-server-name`), shared by `trellis sidecar`, `trellis gateway` and the client commands,
//! each falling back to its environment variable as Consul's CLI does.

use crate::flags::push;
use std::path::PathBuf;
use trellis_client::TlsOptions;

/// How to reach a registry that serves HTTPS. The flags are global, so a command with
/// subcommands takes them before or after the subcommand.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct RegistryTlsArgs {
    /// CA certificate(s), PEM, the registry's certificate must be signed by, instead of the
    /// system's trust store [default: $TRELLIS_CACERT, else $CONSUL_CACERT]
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate, PEM, for a registry that requires one (--tls-client-ca); with
    /// --client-key [default: $TRELLIS_CLIENT_CERT, else $CONSUL_CLIENT_CERT]
    #[arg(long, value_name = "FILE", global = true)]
    pub client_cert: Option<PathBuf>,
    /// Private key of --client-cert, PEM [default: $TRELLIS_CLIENT_KEY, else
    /// $CONSUL_CLIENT_KEY]
    #[arg(long, value_name = "FILE", global = true)]
    pub client_key: Option<PathBuf>,
    /// Name the registry's certificate is verified against instead of the address's host
    /// [default: $TRELLIS_TLS_SERVER_NAME, else $CONSUL_TLS_SERVER_NAME]
    #[arg(long, value_name = "NAME", global = true)]
    pub tls_server_name: Option<String>,
}

impl RegistryTlsArgs {
    /// The TLS options to use: these flags, each one not given taken from the environment.
    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            server_name: self.tls_server_name.clone(),
        }
        .or(TlsOptions::from_env())
    }

    /// These flags as command-line arguments that parse back into an equal value.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.ca_file {
            push(&mut args, "--ca-file", path.display());
        }
        if let Some(path) = &self.client_cert {
            push(&mut args, "--client-cert", path.display());
        }
        if let Some(path) = &self.client_key {
            push(&mut args, "--client-key", path.display());
        }
        if let Some(name) = &self.tls_server_name {
            push(&mut args, "--tls-server-name", name);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{assert_round_trips, parse_command_line};

    #[test]
    fn every_flag_round_trips() {
        let none = RegistryTlsArgs::default();
        assert!(none.to_args().is_empty());
        assert_round_trips(&none, none.to_args());
        let all = RegistryTlsArgs {
            ca_file: Some("/etc/trellis/ca.pem".into()),
            client_cert: Some("client.pem".into()),
            client_key: Some("client.key".into()),
            tls_server_name: Some("registry.internal".into()),
        };
        assert_round_trips(&all, all.to_args());
    }

    #[test]
    fn flags_parse_into_options() {
        let args: RegistryTlsArgs =
            parse_command_line(&["t", "--ca-file", "ca.pem", "--tls-server-name", "r.test"])
                .unwrap();
        let options = args.options();
        assert_eq!(options.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(options.server_name.as_deref(), Some("r.test"));
    }
}
