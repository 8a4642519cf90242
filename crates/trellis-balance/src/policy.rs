//! Which load-balancing algorithm a service uses, and how flags and config files spell it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The header `ring_hash` reads when the configuration names no header of its own.
pub const DEFAULT_RING_HASH_HEADER: &str = "x-trellis-hash-key";

/// A load-balancing algorithm.
///
/// Written as a string everywhere (flags, TOML, JSON in KV): `random`, `round_robin`,
/// `weighted`, `least_request`, `peak_ewma`, `ring_hash` (header
/// [`DEFAULT_RING_HASH_HEADER`]) or `ring_hash:<header>`. Configs may also use the structured
/// form `{ ring_hash = { header = "x-user-id" } }`. Header names are stored lower-cased, the
/// form HTTP libraries index them by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Repr", into = "String")]
pub enum Policy {
    /// Uniformly random among eligible endpoints.
    Random,
    /// Eligible endpoints in turn, in the order given to the balancer.
    RoundRobin,
    /// Smooth weighted round robin over the registry weights.
    Weighted,
    /// Power of two choices on outstanding requests.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × (outstanding + 1). The default, as in
    /// Linkerd and Finagle: it reacts to slow endpoints, not only busy ones.
    #[default]
    PeakEwma,
    /// Consistent hashing of the value of a request header; requests without it go to a
    /// random endpoint.
    RingHash {
        /// Lower-cased name of the request header whose value is hashed.
        header: String,
    },
}

impl Policy {
    /// A `ring_hash` policy on `header`, validated and lower-cased.
    pub fn ring_hash(header: &str) -> Result<Self, Error> {
        let header = header.trim();
        let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if header.is_empty() || !header.bytes().all(is_token) {
            return Err(Error::InvalidHeader(header.to_owned()));
        }
        Ok(Self::RingHash {
            header: header.to_ascii_lowercase(),
        })
    }

    /// The header whose value the proxy must pass to `pick` as the hash key, if any.
    pub fn hash_header(&self) -> Option<&str> {
        match self {
            Self::RingHash { header } => Some(header),
            _ => None,
        }
    }
}

impl FromStr for Policy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "random" => Ok(Self::Random),
            "round_robin" => Ok(Self::RoundRobin),
            "weighted" => Ok(Self::Weighted),
            "least_request" => Ok(Self::LeastRequest),
            "peak_ewma" => Ok(Self::PeakEwma),
            "ring_hash" => Self::ring_hash(DEFAULT_RING_HASH_HEADER),
            other => match other.strip_prefix("ring_hash:") {
                Some(header) => Self::ring_hash(header),
                None => Err(Error::UnknownPolicy(other.to_owned())),
            },
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random => f.write_str("random"),
            Self::RoundRobin => f.write_str("round_robin"),
            Self::Weighted => f.write_str("weighted"),
            Self::LeastRequest => f.write_str("least_request"),
            Self::PeakEwma => f.write_str("peak_ewma"),
            Self::RingHash { header } => write!(f, "ring_hash:{header}"),
        }
    }
}

impl From<Policy> for String {
    fn from(policy: Policy) -> Self {
        policy.to_string()
    }
}

/// What a config may contain: the string grammar, or the structured enum form.
///
/// Strings come first so a bad name is reported by `FromStr`, whose message lists the choices.
#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Name(String),
    Tagged(Tagged),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Tagged {
    Random,
    RoundRobin,
    Weighted,
    LeastRequest,
    PeakEwma,
    RingHash {
        #[serde(default = "default_header")]
        header: String,
    },
}

fn default_header() -> String {
    DEFAULT_RING_HASH_HEADER.to_owned()
}

impl TryFrom<Repr> for Policy {
    type Error = Error;

    fn try_from(repr: Repr) -> Result<Self, Error> {
        match repr {
            Repr::Name(name) => name.parse(),
            Repr::Tagged(Tagged::Random) => Ok(Self::Random),
            Repr::Tagged(Tagged::RoundRobin) => Ok(Self::RoundRobin),
            Repr::Tagged(Tagged::Weighted) => Ok(Self::Weighted),
            Repr::Tagged(Tagged::LeastRequest) => Ok(Self::LeastRequest),
            Repr::Tagged(Tagged::PeakEwma) => Ok(Self::PeakEwma),
            Repr::Tagged(Tagged::RingHash { header }) => Self::ring_hash(&header),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_and_round_trips_through_display() {
        for name in [
            "random",
            "round_robin",
            "weighted",
            "least_request",
            "peak_ewma",
            "ring_hash:x-user-id",
        ] {
            let policy: Policy = name.parse().expect(name);
            assert_eq!(policy.to_string(), name);
        }
        assert_eq!(Policy::default(), Policy::PeakEwma);
    }

    #[test]
    fn ring_hash_header_defaults_and_is_lower_cased() {
        let bare: Policy = "ring_hash".parse().expect("bare ring_hash");
        assert_eq!(bare.hash_header(), Some(DEFAULT_RING_HASH_HEADER));
        let custom: Policy = " ring_hash:X-User-Id ".parse().expect("custom header");
        assert_eq!(custom.hash_header(), Some("x-user-id"));
        assert_eq!(Policy::Random.hash_header(), None);
    }

    #[test]
    fn bad_names_and_headers_are_clear_errors() {
        let err = "least_conn".parse::<Policy>().expect_err("unknown");
        assert_eq!(err, Error::UnknownPolicy("least_conn".into()));
        assert!(err.to_string().contains("peak_ewma"), "{err}");
        for bad in ["ring_hash:", "ring_hash:x user", "ring_hash:a:b"] {
            let err = bad.parse::<Policy>().expect_err(bad);
            assert!(matches!(err, Error::InvalidHeader(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn deserializes_from_strings_and_the_structured_form() {
        let from = |json: &str| serde_json::from_str::<Policy>(json);
        assert_eq!(from(r#""round_robin""#).expect("name"), Policy::RoundRobin);
        assert_eq!(
            from(r#""ring_hash:X-Tenant""#).expect("string form"),
            Policy::RingHash {
                header: "x-tenant".into()
            }
        );
        assert_eq!(
            from(r#"{"ring_hash":{"header":"x-tenant"}}"#).expect("structured form"),
            Policy::RingHash {
                header: "x-tenant".into()
            }
        );
        assert_eq!(
            from(r#"{"ring_hash":{}}"#)
                .expect("structured default")
                .hash_header(),
            Some(DEFAULT_RING_HASH_HEADER)
        );
        let err = from(r#""fastest""#).expect_err("unknown name");
        assert!(err.to_string().contains("least_request"), "{err}");
        assert!(from(r#"{"ring_hash":{"header":"x","extra":1}}"#).is_err());
    }

    #[test]
    fn serializes_as_the_string_grammar() {
        let json =
            serde_json::to_string(&Policy::ring_hash("x-a").expect("valid")).expect("serialize");
        assert_eq!(json, r#""ring_hash:x-a""#);
    }
}
