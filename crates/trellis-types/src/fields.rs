//! Case-insensitive field access on JSON objects, so `Name`, `name` and `NAME` all match and
//! snake_case aliases (`deregister_critical_service_after`) match their PascalCase originals.

use crate::InvalidInput;
use crate::duration::parse_go_duration;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Normalises a field name: lowercase, underscores and dashes removed.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an already normalised key is `name` normalised, without allocating: this runs for
/// every field of every registration.
fn same_name(normalised_key: &str, name: &str) -> bool {
    let mut wanted = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase);
    let mut have = normalised_key.chars();
    loop {
        match (have.next(), wanted.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// A JSON object whose fields are looked up by normalised name. Objects have a dozen fields,
/// so a vector scanned linearly beats a map.
pub struct Fields {
    by_name: Vec<(String, Value)>,
}

impl Fields {
    pub fn from_value(value: Value, what: &str) -> Result<Self, InvalidInput> {
        match value {
            Value::Object(map) => Ok(Self::from_map(map)),
            _ => Err(InvalidInput::new(format!("{what} must be a JSON object"))),
        }
    }

    pub fn from_map(map: Map<String, Value>) -> Self {
        let by_name = map.into_iter().map(|(k, v)| (normalise(&k), v)).collect();
        Self { by_name }
    }

    /// Removes and returns the first present, non-null field among `names`.
    pub fn take(&mut self, names: &[&str]) -> Option<Value> {
        names
            .iter()
            .find_map(|name| self.take_present(&[name]).filter(|v| !v.is_null()))
    }

    /// Removes and returns the first present field among `names`, `null` included (for fields
    /// where a `null` means something, as an empty list does).
    pub fn take_present(&mut self, names: &[&str]) -> Option<Value> {
        names.iter().find_map(|name| {
            let pos = self.by_name.iter().position(|(k, _)| same_name(k, name))?;
            Some(self.by_name.swap_remove(pos).1)
        })
    }

    pub fn string(&mut self, names: &[&str]) -> Result<Option<String>, InvalidInput> {
        match self.take(names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(InvalidInput::new(format!("{} must be a string", names[0]))),
        }
    }

    pub fn bool(&mut self, names: &[&str]) -> Result<Option<bool>, InvalidInput> {
        match self.take(names) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(InvalidInput::new(format!("{} must be a boolean", names[0]))),
        }
    }

    pub fn u64(&mut self, names: &[&str]) -> Result<Option<u64>, InvalidInput> {
        match self.take(names) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                InvalidInput::new(format!("{} must be a non-negative integer", names[0]))
            }),
            Some(_) => Err(InvalidInput::new(format!(
                "{} must be an integer",
                names[0]
            ))),
        }
    }

    /// A Go duration string or integer nanoseconds; empty string and zero mean "not set".
    pub fn duration(&mut self, names: &[&str]) -> Result<Option<Duration>, InvalidInput> {
        let parsed = match self.take(names) {
            None => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => parse_go_duration(&s)
                .map_err(|e| InvalidInput::new(format!("{}: {e}", names[0])))?,
            Some(Value::Number(n)) => Duration::from_nanos(n.as_u64().ok_or_else(|| {
                InvalidInput::new(format!("{} must be a non-negative duration", names[0]))
            })?),
            Some(_) => {
                return Err(InvalidInput::new(format!(
                    "{} must be a duration like \"10s\"",
                    names[0]
                )));
            }
        };
        Ok((!parsed.is_zero()).then_some(parsed))
    }

    pub fn string_list(&mut self, names: &[&str]) -> Result<Vec<String>, InvalidInput> {
        self.take(names)
            .map_or(Ok(Vec::new()), |value| string_list(value, names[0]))
    }

    /// A map of string to string (`Meta`); keys keep their case.
    pub fn string_map(&mut self, names: &[&str]) -> Result<BTreeMap<String, String>, InvalidInput> {
        match self.take(names) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(InvalidInput::new(format!(
                        "{} values must be strings",
                        names[0]
                    ))),
                })
                .collect(),
            Some(_) => Err(InvalidInput::new(format!("{} must be an object", names[0]))),
        }
    }

    /// A map whose keys are data (tags, header names): keys are kept exactly as sent.
    pub fn raw_map(&mut self, names: &[&str]) -> Result<Option<Map<String, Value>>, InvalidInput> {
        match self.take(names) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(InvalidInput::new(format!("{} must be an object", names[0]))),
        }
    }

    pub fn object(&mut self, names: &[&str]) -> Result<Option<Fields>, InvalidInput> {
        match self.take(names) {
            None => Ok(None),
            Some(v) => Fields::from_value(v, names[0]).map(Some),
        }
    }
}

/// A JSON list of strings named `name` (for messages); `null` is an empty list.
pub fn string_list(value: Value, name: &str) -> Result<Vec<String>, InvalidInput> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(InvalidInput::new(format!("{name} must hold strings"))),
            })
            .collect(),
        _ => Err(InvalidInput::new(format!(
            "{name} must be a list of strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_case_insensitively_and_snake_case() {
        let mut f = Fields::from_value(
            json!({"name": "web", "deregister_critical_service_after": "1m", "TLSSkipVerify": true}),
            "body",
        )
        .unwrap();
        assert_eq!(f.string(&["Name"]).unwrap().as_deref(), Some("web"));
        assert_eq!(
            f.duration(&["DeregisterCriticalServiceAfter"]).unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(f.bool(&["tls_skip_verify"]).unwrap(), Some(true));
    }

    #[test]
    fn durations_accept_nanoseconds() {
        let mut f = Fields::from_value(json!({"Interval": 10_000_000_000u64}), "b").unwrap();
        assert_eq!(
            f.duration(&["interval"]).unwrap(),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let mut f = Fields::from_value(json!({"Port": "80"}), "b").unwrap();
        assert!(f.u64(&["Port"]).is_err());
    }
}
