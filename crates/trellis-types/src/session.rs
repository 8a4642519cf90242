//! Consul sessions on the wire: the session as `/v1/session/*` answers it (also its durable
//! form), and the lenient parsing of a `PUT /v1/session/create` body with Consul's defaults and
//! quirks (keys in any case, `LockDelay` as a duration string or a number, the `Checks` /
//! `NodeChecks` fix-up).

use crate::InvalidInput;
use crate::duration::parse_go_duration;
use crate::fields::{Fields, string_list};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The check every session is bound to unless told otherwise: the node's own health.
pub const SERF_CHECK_ID: &str = "serfHealth";

/// Lock-delay used when a create body does not set one, as in Consul.
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

/// A numeric lock-delay below this many nanoseconds is taken as seconds (`"LockDelay": 15`
/// means 15 s, as in Consul, whose users kept sending seconds).
const LOCK_DELAY_SECONDS_BELOW: u64 = 1000;

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBehavior {
    /// The locks are released: `Session` cleared, the value kept.
    #[default]
    Release,
    /// The keys are deleted.
    Delete,
}

impl SessionBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Delete => "delete",
        }
    }
}

/// A service check a session is bound to (`ServiceChecks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheck {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub namespace: String,
}

/// A session, as Consul answers it. Also the durable record: a restart restores sessions as
/// they are here (their TTL timers start again).
///
/// `NodeChecks` and `ServiceChecks` are `null` when unset and `Checks` (the pre-1.7 field) is
/// left out when empty, as Consul's JSON does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Session {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub node: String,
    /// Nanoseconds, as Consul answers it; enforced up to 60 s when the session is invalidated.
    pub lock_delay: u64,
    pub behavior: SessionBehavior,
    /// The TTL as the client sent it (`""` for none); the session expires at twice it after its
    /// last create or renew.
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    #[serde(default)]
    pub node_checks: Option<Vec<String>>,
    #[serde(default)]
    pub service_checks: Option<Vec<ServiceCheck>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Session {
    /// Every check the session is bound to: `Checks`, then `NodeChecks`, then `ServiceChecks`.
    pub fn check_ids(&self) -> impl Iterator<Item = &str> {
        self.checks
            .iter()
            .map(String::as_str)
            .chain(self.node_checks.iter().flatten().map(String::as_str))
            .chain(self.service_checks.iter().flatten().map(|c| c.id.as_str()))
    }

    /// The lock-delay as a duration.
    pub fn lock_delay(&self) -> Duration {
        Duration::from_nanos(self.lock_delay)
    }
}

/// Why a create body was refused, and how Consul answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionInputError {
    /// The body does not decode (Consul: 400 `Request decode failed: ...`).
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// It decodes, but the server refuses it (Consul: 500 with this text).
    #[error("{0}")]
    Refused(String),
}

/// Builds the session a `PUT /v1/session/create` body asks for, with Consul's defaults: node
/// `node`, lock-delay 15 s, behavior `release`, and the node's `serfHealth` check. `id` is the
/// new session's ID; indexes are left 0 for the catalog to set. `body` is `None` for an empty
/// body. The TTL is kept as sent and validated by the catalog.
pub fn session_from_create(
    body: Option<Value>,
    id: String,
    node: &str,
) -> Result<Session, SessionInputError> {
    let decode = |e: InvalidInput| SessionInputError::Decode(e.to_string());
    let mut session = Session {
        id,
        name: String::new(),
        node: node.to_owned(),
        lock_delay: DEFAULT_LOCK_DELAY.as_nanos() as u64,
        behavior: SessionBehavior::Release,
        ttl: String::new(),
        node_checks: Some(vec![SERF_CHECK_ID.to_owned()]),
        service_checks: None,
        checks: vec![SERF_CHECK_ID.to_owned()],
        create_index: 0,
        modify_index: 0,
    };
    let Some(body) = body else {
        fix_up_checks(&mut session);
        return Ok(session);
    };
    let mut f = Fields::from_value(body, "session").map_err(decode)?;
    if let Some(name) = f.string(&["Name"]).map_err(decode)? {
        session.name = name;
    }
    if let Some(node) = f.string(&["Node"]).map_err(decode)?
        && !node.is_empty()
    {
        session.node = node;
    }
    if let Some(delay) = f.take(&["LockDelay"]) {
        session.lock_delay = lock_delay(delay)?;
    }
    if let Some(behavior) = f.string(&["Behavior"]).map_err(decode)? {
        session.behavior = match behavior.as_str() {
            "" | "release" => SessionBehavior::Release,
            "delete" => SessionBehavior::Delete,
            other => {
                return Err(SessionInputError::Refused(format!(
                    "Invalid Behavior setting '{other}'"
                )));
            }
        };
    }
    if let Some(ttl) = f.string(&["TTL"]).map_err(decode)? {
        session.ttl = ttl;
    }
    // A key that is present replaces the default, even with an empty list or `null` (Go decodes
    // `null` into a nil slice).
    if let Some(checks) = f.take_present(&["Checks"]) {
        session.checks = string_list(checks, "Checks").map_err(decode)?;
    }
    if let Some(checks) = f.take_present(&["NodeChecks"]) {
        session.node_checks = match checks {
            Value::Null => None,
            checks => Some(string_list(checks, "NodeChecks").map_err(decode)?),
        };
    }
    if let Some(checks) = f.take_present(&["ServiceChecks"]) {
        session.service_checks = service_checks(checks)?;
    }
    fix_up_checks(&mut session);
    Ok(session)
}

/// Consul's `fixupEmptySessionChecks`: both `Checks` and `NodeChecks` start as `[serfHealth]`.
/// An empty `Checks` empties `NodeChecks` too (the pre-1.7 way to bind no check); a `Checks`
/// that is just the default is dropped in favour of `NodeChecks`; an empty `NodeChecks` drops
/// `Checks`. Otherwise both stay, and the session is bound to every check in either.
fn fix_up_checks(session: &mut Session) {
    if session.checks.is_empty() {
        session.node_checks = Some(Vec::new());
    } else if session.checks == [SERF_CHECK_ID]
        || session.node_checks.as_ref().is_none_or(Vec::is_empty)
    {
        session.checks = Vec::new();
    }
}

/// `LockDelay` as Consul reads it: a Go duration string or a number of nanoseconds, either one
/// below 1000 ns taken as seconds.
fn lock_delay(value: Value) -> Result<u64, SessionInputError> {
    let nanos = match value {
        Value::String(text) => {
            let parsed = parse_go_duration(&text)
                .map_err(|e| SessionInputError::Decode(format!("LockDelay: {e}")))?;
            u64::try_from(parsed.as_nanos()).unwrap_or(u64::MAX)
        }
        Value::Number(n) => match n.as_f64() {
            Some(v) if v >= 0.0 && v.is_finite() => v as u64,
            _ => {
                return Err(SessionInputError::Decode(format!(
                    "LockDelay must be a non-negative duration, not {n}"
                )));
            }
        },
        Value::Null => return Ok(DEFAULT_LOCK_DELAY.as_nanos() as u64),
        other => {
            return Err(SessionInputError::Decode(format!(
                "LockDelay must be a duration like \"15s\", not {other}"
            )));
        }
    };
    Ok(if nanos < LOCK_DELAY_SECONDS_BELOW {
        nanos * 1_000_000_000
    } else {
        nanos
    })
}

fn service_checks(value: Value) -> Result<Option<Vec<ServiceCheck>>, SessionInputError> {
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => {
            return Err(SessionInputError::Decode(format!(
                "ServiceChecks must be a list of {{\"ID\": ...}} objects, not {other}"
            )));
        }
    };
    items
        .into_iter()
        .map(|item| {
            let decode = |e: InvalidInput| SessionInputError::Decode(e.to_string());
            let mut f = Fields::from_value(item, "ServiceChecks entry").map_err(decode)?;
            Ok(ServiceCheck {
                id: f.string(&["ID"]).map_err(decode)?.unwrap_or_default(),
                namespace: f
                    .string(&["Namespace"])
                    .map_err(decode)?
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> Session {
        session_from_create(Some(body), "id".into(), "node-1").expect("valid body")
    }

    #[test]
    fn defaults_as_consul() {
        let s = session_from_create(None, "id".into(), "node-1").unwrap();
        assert_eq!(s.node, "node-1");
        assert_eq!(s.lock_delay, 15_000_000_000);
        assert_eq!(s.behavior, SessionBehavior::Release);
        assert_eq!(s.node_checks, Some(vec!["serfHealth".to_owned()]));
        assert!(s.checks.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["NodeChecks"], json!(["serfHealth"]));
        assert_eq!(json["ServiceChecks"], Value::Null);
        assert!(json.get("Checks").is_none(), "Checks is omitted when empty");
        assert_eq!(json["LockDelay"], 15_000_000_000u64);
        assert_eq!(json["Behavior"], "release");
        assert_eq!(json["TTL"], "");
    }

    #[test]
    fn keys_in_any_case() {
        let s = create(json!({"name": "n", "ttl": "15s", "lockdelay": "1s", "behavior": "delete"}));
        assert_eq!(s.name, "n");
        assert_eq!(s.ttl, "15s");
        assert_eq!(s.lock_delay, 1_000_000_000);
        assert_eq!(s.behavior, SessionBehavior::Delete);
    }

    #[test]
    fn lock_delay_numbers_below_1000_are_seconds() {
        assert_eq!(create(json!({"LockDelay": 5})).lock_delay, 5_000_000_000);
        assert_eq!(create(json!({"LockDelay": 0})).lock_delay, 0);
        assert_eq!(
            create(json!({"LockDelay": 2_000_000_000u64})).lock_delay,
            2_000_000_000
        );
        assert_eq!(create(json!({"LockDelay": "0s"})).lock_delay, 0);
        // Consul's quirk applies to strings too.
        assert_eq!(
            create(json!({"LockDelay": "500ns"})).lock_delay,
            500_000_000_000
        );
        for bad in [json!({"LockDelay": "soon"}), json!({"LockDelay": -1})] {
            assert!(matches!(
                session_from_create(Some(bad), "id".into(), "n"),
                Err(SessionInputError::Decode(_))
            ));
        }
    }

    #[test]
    fn checks_fix_up_as_consul() {
        // An empty Checks binds nothing.
        let s = create(json!({"Checks": []}));
        assert_eq!(s.node_checks, Some(vec![]));
        assert!(s.checks.is_empty());
        assert_eq!(s.check_ids().count(), 0);
        // Checks without NodeChecks: the given checks and the default serfHealth.
        let s = create(json!({"checks": ["service:web"]}));
        assert_eq!(s.checks, ["service:web"]);
        assert_eq!(
            s.check_ids().collect::<Vec<_>>(),
            ["service:web", "serfHealth"]
        );
        // Checks that is just the default moves to NodeChecks.
        let s = create(json!({"Checks": ["serfHealth"]}));
        assert!(s.checks.is_empty());
        assert_eq!(s.check_ids().collect::<Vec<_>>(), ["serfHealth"]);
        // An empty NodeChecks drops the default Checks.
        let s = create(json!({"NodeChecks": []}));
        assert_eq!(s.check_ids().count(), 0);
        let s = create(json!({"NodeChecks": ["a"], "ServiceChecks": [{"id": "b"}]}));
        assert_eq!(s.check_ids().collect::<Vec<_>>(), ["a", "b"]);
        assert!(matches!(
            session_from_create(Some(json!({"Checks": "a"})), "id".into(), "n"),
            Err(SessionInputError::Decode(_))
        ));
    }

    #[test]
    fn invalid_behavior_is_refused_like_consul() {
        let err = session_from_create(Some(json!({"Behavior": "keep"})), "id".into(), "n");
        assert_eq!(
            err,
            Err(SessionInputError::Refused(
                "Invalid Behavior setting 'keep'".into()
            ))
        );
    }

    #[test]
    fn durable_form_round_trips() {
        let s = create(json!({"Name": "x", "TTL": "10s", "Checks": ["a"]}));
        let back: Session = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
