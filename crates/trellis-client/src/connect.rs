//! The mesh's certificate authority as a client sees it: the trusted roots (a blocking query, so
//! a root rotation is learnt at once) and a leaf certificate for a service, in Consul Connect's
//! shapes (`/v1/agent/connect/ca/roots`, `/v1/agent/connect/ca/leaf/:service`).

use crate::{Blocking, Client, Error, Indexed, Result, encode};
use serde::Deserialize;
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The roots a mesh trusts; one of them signs new leaves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoots {
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    pub trust_domain: String,
    pub roots: Vec<CaRoot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    #[serde(rename = "ID")]
    pub id: String,
    /// PEM.
    pub root_cert: String,
    #[serde(default)]
    pub intermediate_certs: Vec<String>,
    #[serde(default)]
    pub active: bool,
}

/// A service's certificate and key, and when it is valid.
#[derive(Debug, Clone)]
pub struct LeafCert {
    pub serial_number: String,
    /// PEM.
    pub cert_pem: String,
    /// PEM.
    pub private_key_pem: String,
    pub service: String,
    /// The SPIFFE identity in the certificate's URI SAN.
    pub service_uri: String,
    pub valid_after: SystemTime,
    pub valid_before: SystemTime,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LeafWire {
    serial_number: String,
    #[serde(rename = "CertPEM")]
    cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    private_key_pem: String,
    service: String,
    #[serde(rename = "ServiceURI")]
    service_uri: String,
    valid_after: String,
    valid_before: String,
}

/// The intentions that name one destination, most precise first, as the registry orders them
/// (Consul's precedence), and what applies to callers none of them names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentionMatch {
    pub intentions: Vec<MatchedIntention>,
    /// For callers no intention names: Trellis answers it in `X-Trellis-Intention-Default`
    /// (deny under default-deny ACLs); allow when a registry does not say.
    pub default_allow: bool,
}

/// What a caller needs of an intention to decide: who it names and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MatchedIntention {
    pub source_name: String,
    pub action: String,
    #[serde(default)]
    pub precedence: i64,
}

impl IntentionMatch {
    /// Whether a caller that is `source` may call: the first intention naming it (or `*`)
    /// decides; the registry's order puts exact names before wildcards.
    pub fn allows(&self, source: &str) -> bool {
        self.intentions
            .iter()
            .find(|i| i.source_name == "*" || i.source_name == source)
            .map_or(self.default_allow, |i| i.action == "allow")
    }
}

/// The header in which Trellis answers the default for unmatched callers.
pub const INTENTION_DEFAULT_HEADER: &str = "x-trellis-intention-default";

fn instant(path: &str, text: &str) -> Result<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| Error::Decode {
            path: path.to_owned(),
            reason: format!("time {text:?}: {e}"),
        })
}

impl Client {
    /// The mesh's roots; with `blocking`, answers once they differ from that index (or the
    /// wait ends).
    pub async fn ca_roots(&self, blocking: Option<Blocking>) -> Result<Indexed<CaRoots>> {
        self.get_json("/v1/agent/connect/ca/roots", &[], blocking)
            .await
    }

    /// The intentions whose destination is `service` (`/v1/connect/intentions/match`); with
    /// `blocking`, answers once they differ from that index (or the wait ends).
    pub async fn intentions_for(
        &self,
        service: &str,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<IntentionMatch>> {
        let path = "/v1/connect/intentions/match";
        let query = [
            ("by", "destination".to_owned()),
            ("name", service.to_owned()),
        ];
        let response = self
            .send("GET", path, self.get_request(path, &query, blocking))
            .await?;
        let default_allow = response
            .headers()
            .get(INTENTION_DEFAULT_HEADER)
            .is_none_or(|v| v.as_bytes() != b"deny");
        let mut answer: Indexed<std::collections::BTreeMap<String, Vec<MatchedIntention>>> =
            Self::decode(path, response).await?;
        Ok(Indexed {
            index: answer.index,
            value: IntentionMatch {
                intentions: answer.value.remove(service).unwrap_or_default(),
                default_allow,
            },
        })
    }

    /// A new certificate and key for `service` (the token needs `service:write` on it).
    pub async fn leaf_cert(&self, service: &str) -> Result<LeafCert> {
        let path = format!("/v1/agent/connect/ca/leaf/{}", encode(service));
        let wire: Indexed<LeafWire> = self.get_json(&path, &[], None).await?;
        let wire = wire.value;
        Ok(LeafCert {
            valid_after: instant(&path, &wire.valid_after)?,
            valid_before: instant(&path, &wire.valid_before)?,
            serial_number: wire.serial_number,
            cert_pem: wire.cert_pem,
            private_key_pem: wire.private_key_pem,
            service: wire.service,
            service_uri: wire.service_uri,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn leaf_times_are_rfc3339() {
        assert_eq!(
            instant("/x", "2017-08-08T02:55:10Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_502_160_910)
        );
        assert!(instant("/x", "yesterday").is_err());
    }

    #[test]
    fn the_first_intention_naming_the_caller_decides() {
        let rule = |source: &str, action: &str| MatchedIntention {
            source_name: source.to_owned(),
            action: action.to_owned(),
            precedence: 0,
        };
        let matched = IntentionMatch {
            intentions: vec![rule("web", "deny"), rule("*", "allow")],
            default_allow: false,
        };
        assert!(!matched.allows("web"));
        assert!(matched.allows("api"));
        let empty = IntentionMatch {
            intentions: vec![],
            default_allow: false,
        };
        assert!(!empty.allows("api"));
    }

    #[test]
    fn roots_decode_from_consuls_shape() {
        let roots: CaRoots = serde_json::from_str(
            r#"{"ActiveRootID":"a","TrustDomain":"x.consul","Roots":[
                {"ID":"a","Name":"n","RootCert":"PEM","IntermediateCerts":[],"Active":true}]}"#,
        )
        .unwrap();
        assert_eq!(roots.roots[0].id, "a");
        assert!(roots.roots[0].active);
    }
}
