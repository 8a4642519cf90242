//! Intentions in `service-intentions` config entries (one entry per destination, its `Sources`
//! the intentions to it, as Consul ≥ 1.9 keeps them): the intentions read out of an entry, the
//! match of Consul's `/v1/connect/intentions/match`, and each intention API write (by name or
//! legacy, by ID) turned into the entry to store.
//!
//! Pure: no IO, no clock (the times legacy intentions carry are passed in), no randomness (the
//! legacy IDs too).

use crate::config_entry::{
    ConfigEntry, ConfigEntryError, META_KEY_MAX, META_MAX_PAIRS, META_VALUE_MAX,
    SERVICE_INTENTIONS, decode_config_entry, decode_legacy_intentions, multierror, name_key,
};
use crate::intention::{
    Action, DEFAULT_NAMESPACE, Intention, SOURCE_TYPE_CONSUL, WILDCARD, check_name,
    sort_by_precedence,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Which end of an intention a match query names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchBy {
    Source,
    Destination,
}

impl MatchBy {
    /// `source` or `destination`, as Consul's `?by=` takes it.
    pub fn parse(text: &str) -> Option<MatchBy> {
        match text {
            "source" => Some(MatchBy::Source),
            "destination" => Some(MatchBy::Destination),
            _ => None,
        }
    }
}

/// Consul's `IntentionMatch` for one name: the intentions whose `by` end is `name` or `*`, in
/// precedence order (what a proxy evaluates, first match wins). Destinations compare without
/// regard to case, as config entries are keyed; sources exactly, as Consul's authorizer does.
pub fn matching(all: &[Intention], by: MatchBy, name: &str) -> Vec<Intention> {
    let mut found: Vec<Intention> = all
        .iter()
        .filter(|ixn| match by {
            MatchBy::Destination => {
                ixn.destination_name == WILDCARD
                    || name_key(&ixn.destination_name) == name_key(name)
            }
            MatchBy::Source => ixn.source_name == WILDCARD || ixn.source_name == name,
        })
        .cloned()
        .collect();
    sort_by_precedence(&mut found);
    found
}

/// The intentions a `service-intentions` entry holds (Consul's `ToIntentions`), in the
/// entry's order (highest precedence first).
pub fn intentions_of(entry: &ConfigEntry) -> Vec<Intention> {
    let entry_meta = string_map(entry.field("Meta"));
    sources(entry)
        .iter()
        .filter_map(Value::as_object)
        .map(|src| {
            let text = |key: &str| src.get(key).and_then(Value::as_str).unwrap_or_default();
            let legacy_id = text("LegacyID").to_owned();
            let meta = if legacy_id.is_empty() {
                entry_meta.clone()
            } else {
                string_map(src.get("LegacyMeta"))
            };
            let time = |key: &str| {
                src.get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            };
            Intention {
                created_at: time("LegacyCreateTime"),
                updated_at: time("LegacyUpdateTime"),
                id: legacy_id,
                description: text("Description").to_owned(),
                source_ns: DEFAULT_NAMESPACE.to_owned(),
                source_name: text("Name").to_owned(),
                destination_ns: DEFAULT_NAMESPACE.to_owned(),
                destination_name: entry.name.clone(),
                source_partition: String::new(),
                destination_partition: String::new(),
                source_type: text("Type").to_owned(),
                // What is stored was validated; anything else fails closed.
                action: Action::parse(text("Action")).unwrap_or(Action::Deny),
                permissions: src
                    .get("Permissions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                meta,
                precedence: src
                    .get("Precedence")
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
                create_index: entry.create_index,
                modify_index: entry.modify_index,
            }
        })
        .collect()
}

fn sources(entry: &ConfigEntry) -> &[Value] {
    entry
        .field("Sources")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn source_name(src: &Value) -> &str {
    src.get("Name").and_then(Value::as_str).unwrap_or_default()
}

fn legacy_id(src: &Value) -> &str {
    src.get("LegacyID")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The entry body to decode again, for the entry `name` (the spelling kept) with `sources`.
fn body(name: &str, sources: Vec<Value>, meta: Option<&Value>) -> Value {
    let mut map = Map::new();
    map.insert("Kind".into(), Value::from(SERVICE_INTENTIONS));
    map.insert("Name".into(), Value::from(name));
    map.insert("Sources".into(), Value::Array(sources));
    if let Some(meta) = meta.filter(|m| !m.is_null()) {
        map.insert("Meta".into(), meta.clone());
    }
    Value::Object(map)
}

/// What `PUT /v1/connect/intentions/exact` writes (the body's fields Consul keeps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExactWrite {
    pub source: String,
    pub destination: String,
    pub action: String,
    pub source_type: String,
    pub description: String,
    pub meta: BTreeMap<String, String>,
    pub permissions: Vec<Value>,
}

/// Consul's upsert by name (`computeApplyChangesUpsert` + the entry's `Normalize`/`Validate`):
/// the source `write.source` of `prev` (the destination's entry, if any) replaced or added.
/// `Meta` belongs to the entry: it may be sent only as the entry already has it.
pub fn upsert_exact(
    prev: Option<&ConfigEntry>,
    write: &ExactWrite,
) -> Result<ConfigEntry, ConfigEntryError> {
    let invalid = |m: &str| Err(ConfigEntryError::Invalid(m.to_owned()));
    if !write.meta.is_empty() {
        match prev {
            None => return invalid("Meta must not be specified"),
            Some(prev) if string_map(prev.field("Meta")) != write.meta => {
                return invalid(
                    "Meta must not be specified, or should be unchanged during an update.",
                );
            }
            Some(_) => {}
        }
    }
    let mut source = Map::new();
    source.insert("Name".into(), Value::from(write.source.as_str()));
    source.insert("Action".into(), Value::from(write.action.as_str()));
    if !write.permissions.is_empty() {
        source.insert("Permissions".into(), Value::from(write.permissions.clone()));
    }
    source.insert("Type".into(), Value::from(write.source_type.as_str()));
    source.insert(
        "Description".into(),
        Value::from(write.description.as_str()),
    );
    let source = Value::Object(source);
    let (name, mut list, meta) = match prev {
        Some(prev) => (
            prev.name.as_str(),
            sources(prev).to_vec(),
            prev.field("Meta"),
        ),
        None => (write.destination.as_str(), Vec::new(), None),
    };
    match list.iter().position(|s| source_name(s) == write.source) {
        Some(i) => list[i] = source,
        None => list.push(source),
    }
    decode_config_entry(body(name, list, meta))
}

/// Consul's delete by name: the entry without that source (`Ok(None)`: it had no other, the
/// entry goes), or `None` if it has no such source (deleting by name is idempotent).
pub fn delete_exact(
    entry: &ConfigEntry,
    source: &str,
) -> Option<Result<Option<ConfigEntry>, ConfigEntryError>> {
    let mut list = sources(entry).to_vec();
    let i = list.iter().position(|s| source_name(s) == source)?;
    list.remove(i);
    if list.is_empty() {
        return Some(Ok(None));
    }
    Some(decode_config_entry(body(&entry.name, list, entry.field("Meta"))).map(Some))
}

/// What the legacy ID endpoints (`POST /v1/connect/intentions`, `PUT .../:id`) write: Consul's
/// `structs.Intention` body, namespaces already checked to be the default one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyWrite {
    pub source: String,
    pub destination: String,
    pub action: String,
    pub source_type: String,
    pub description: String,
    pub meta: BTreeMap<String, String>,
}

impl LegacyWrite {
    /// Consul's `Intention.Validate` (after the source type defaults to `consul`): every error,
    /// as go-multierror lists them.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors: Vec<String> = Vec::new();
        if self.source.is_empty() {
            errors.push("SourceName must be set".into());
        }
        if self.destination.is_empty() {
            errors.push("DestinationName must be set".into());
        }
        for (field, name) in [
            ("SourceName", &self.source),
            ("DestinationName", &self.destination),
        ] {
            if let Err(e) = check_name(name) {
                errors.push(format!("{field}: {e}"));
            }
        }
        if self.description.len() > META_VALUE_MAX {
            errors.push(format!(
                "Description exceeds maximum length {META_VALUE_MAX}"
            ));
        }
        if self.meta.len() > META_MAX_PAIRS {
            errors.push(format!(
                "Meta exceeds maximum element count {META_MAX_PAIRS}"
            ));
        }
        for (key, value) in &self.meta {
            if key.len() > META_KEY_MAX {
                errors.push(format!(
                    "Meta key {key:?} exceeds maximum length {META_KEY_MAX}"
                ));
            }
            if value.len() > META_VALUE_MAX {
                errors.push(format!(
                    "Meta value for key {key:?} exceeds maximum length {META_VALUE_MAX}"
                ));
            }
        }
        if Action::parse(&self.action).is_none() {
            errors.push("Action must be set to 'allow' or 'deny'".into());
        }
        if self.source_type != SOURCE_TYPE_CONSUL {
            errors.push("SourceType must be set to 'consul'".into());
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(multierror(&errors).trim_end().to_owned())
    }

    fn source(&self, id: &str, created: &str, updated: &str) -> Value {
        json!({
            "Name": self.source,
            "Action": self.action,
            "LegacyID": id,
            "Type": self.source_type,
            "Description": self.description,
            "LegacyMeta": self.meta,
            "LegacyCreateTime": created,
            "LegacyUpdateTime": updated,
        })
    }
}

/// Consul's `checkLegacyIntentionApplyAllowed`: the ID endpoints edit only entries whose every
/// source has an ID (an entry written by name or as a config entry has none).
fn legacy_allowed(entry: &ConfigEntry) -> Result<(), ConfigEntryError> {
    if sources(entry).iter().all(|s| !legacy_id(s).is_empty()) {
        return Ok(());
    }
    Err(ConfigEntryError::Invalid(format!(
        "cannot use legacy intention API to edit intentions with a destination of {:?} after \
         editing them via a service-intentions config entry",
        entry.name
    )))
}

/// A legacy create: the intention `id` (a fresh UUID) added to `prev`, the destination's
/// entry, created and updated `now` (RFC 3339). A second intention for the same pair is
/// refused by the entry's validation, as in Consul.
pub fn create_legacy(
    prev: Option<&ConfigEntry>,
    write: &LegacyWrite,
    id: &str,
    now: &str,
) -> Result<ConfigEntry, ConfigEntryError> {
    let (name, mut list) = match prev {
        Some(prev) => {
            legacy_allowed(prev)?;
            (prev.name.as_str(), sources(prev).to_vec())
        }
        None => (write.destination.as_str(), Vec::new()),
    };
    list.push(write.source(id, now, now));
    decode_legacy_intentions(body(name, list, None))
}

/// A legacy update of intention `id` in `entry` (its destination's entry): its source
/// replaced, its creation time kept, updated `now`. The destination cannot change.
pub fn update_legacy(
    entry: &ConfigEntry,
    id: &str,
    write: &LegacyWrite,
    now: &str,
) -> Result<ConfigEntry, ConfigEntryError> {
    if name_key(&write.destination) != name_key(&entry.name) {
        return Err(ConfigEntryError::Invalid(
            "Cannot modify Destination partition/namespace/name for an intention once it exists."
                .into(),
        ));
    }
    legacy_allowed(entry)?;
    let mut list = sources(entry).to_vec();
    let Some(i) = list.iter().position(|s| legacy_id(s) == id) else {
        return Err(ConfigEntryError::Invalid(format!(
            "Cannot modify non-existent intention: '{id}'"
        )));
    };
    let created = list[i]
        .get("LegacyCreateTime")
        .and_then(Value::as_str)
        .unwrap_or(now)
        .to_owned();
    list[i] = write.source(id, &created, now);
    decode_legacy_intentions(body(&entry.name, list, None))
}

/// A legacy delete of intention `id` from `entry`: the entry without it (`None`: it was the
/// last, the entry goes).
pub fn delete_legacy(
    entry: &ConfigEntry,
    id: &str,
) -> Result<Option<ConfigEntry>, ConfigEntryError> {
    legacy_allowed(entry)?;
    let mut list = sources(entry).to_vec();
    let Some(i) = list.iter().position(|s| legacy_id(s) == id) else {
        return Err(ConfigEntryError::Invalid(format!(
            "Cannot delete non-existent intention: '{id}'"
        )));
    };
    list.remove(i);
    if list.is_empty() {
        return Ok(None);
    }
    decode_legacy_intentions(body(&entry.name, list, None)).map(Some)
}

/// Whether `entry` holds the legacy intention `id`.
pub fn holds_legacy_id(entry: &ConfigEntry, id: &str) -> bool {
    !id.is_empty() && sources(entry).iter().any(|s| legacy_id(s) == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intention::tests::ixn;

    #[test]
    fn matching_by_either_end() {
        let all = [
            ixn("web", "db", Action::Allow),
            ixn("*", "db", Action::Deny),
            ixn("web", "*", Action::Allow),
            ixn("api", "cache", Action::Allow),
        ];
        let names = |v: Vec<Intention>| -> Vec<String> {
            v.iter()
                .map(|i| format!("{}>{}", i.source_name, i.destination_name))
                .collect()
        };
        assert_eq!(
            names(matching(&all, MatchBy::Destination, "db")),
            ["web>db", "*>db", "web>*"]
        );
        assert_eq!(
            names(matching(&all, MatchBy::Source, "web")),
            ["web>db", "*>db", "web>*"],
            "a wildcard source matches every source"
        );
        assert_eq!(
            names(matching(&all, MatchBy::Destination, "DB")),
            ["web>db", "*>db", "web>*"],
            "destinations are entry names, compared without case"
        );
        assert!(matching(&all[..1], MatchBy::Destination, "nope").is_empty());
    }

    fn write(source: &str, destination: &str, action: &str) -> ExactWrite {
        ExactWrite {
            source: source.into(),
            destination: destination.into(),
            action: action.into(),
            source_type: String::new(),
            ..ExactWrite::default()
        }
    }

    #[test]
    fn exact_writes_build_one_entry_per_destination() {
        let e = upsert_exact(None, &write("web", "db", "allow")).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.name.as_str()),
            ("service-intentions", "db")
        );
        let e = upsert_exact(Some(&e), &write("*", "db", "deny")).unwrap();
        let e = upsert_exact(Some(&e), &write("web", "db", "deny")).unwrap();
        let list = intentions_of(&e);
        assert_eq!(list.len(), 2, "web replaced, * added: {list:?}");
        assert_eq!(
            (
                list[0].source_name.as_str(),
                list[0].action,
                list[0].precedence
            ),
            ("web", Action::Deny, 9)
        );
        assert_eq!((list[1].source_name.as_str(), list[1].precedence), ("*", 8));
        assert_eq!(list[0].source_type, "consul", "the type defaults to consul");
        // Deleting: idempotent for a missing source; the last one takes the entry with it.
        assert!(delete_exact(&e, "nope").is_none());
        let e = delete_exact(&e, "web").unwrap().unwrap().unwrap();
        assert_eq!(intentions_of(&e).len(), 1);
        assert_eq!(delete_exact(&e, "*").unwrap().unwrap(), None);
    }

    #[test]
    fn exact_writes_are_validated_as_consul_validates_entries() {
        let e = upsert_exact(None, &write("web", "db", "permit")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Sources[0].Action must be set to 'allow' or 'deny'"
        );
        let e = upsert_exact(None, &write("we*", "db", "allow")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Sources[0].Name: wildcard character '*' cannot be used with partial values"
        );
        let mut w = write("web", "db", "allow");
        w.meta.insert("a".into(), "b".into());
        assert_eq!(
            upsert_exact(None, &w).unwrap_err().to_string(),
            "Meta must not be specified"
        );
        let mut l7 = write("web", "db", "");
        l7.permissions = vec![json!({"Action": "allow", "HTTP": {"PathPrefix": "/"}})];
        assert!(matches!(
            upsert_exact(None, &l7).unwrap_err(),
            ConfigEntryError::NotBuilt(_)
        ));
    }

    fn legacy(source: &str, destination: &str) -> LegacyWrite {
        LegacyWrite {
            source: source.into(),
            destination: destination.into(),
            action: "allow".into(),
            source_type: "consul".into(),
            description: "d".into(),
            meta: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        }
    }

    #[test]
    fn legacy_intentions_keep_their_ids_times_and_meta() {
        let t0 = "2024-01-01T00:00:00Z";
        let t1 = "2024-01-01T00:01:00Z";
        let e = create_legacy(None, &legacy("web", "db"), "id-1", t0).unwrap();
        let e = create_legacy(Some(&e), &legacy("api", "db"), "id-2", t0).unwrap();
        let dup = create_legacy(Some(&e), &legacy("web", "db"), "id-3", t0).unwrap_err();
        assert_eq!(
            dup.to_string(),
            r#"Sources[2] defines "web" more than once"#
        );
        assert!(holds_legacy_id(&e, "id-2") && !holds_legacy_id(&e, "id-9"));
        let mut change = legacy("web2", "db");
        change.action = "deny".into();
        let e = update_legacy(&e, "id-1", &change, t1).unwrap();
        let one = intentions_of(&e)
            .into_iter()
            .find(|i| i.id == "id-1")
            .unwrap();
        assert_eq!(one.source_name, "web2");
        assert_eq!(one.action, Action::Deny);
        assert_eq!(one.created_at.as_deref(), Some(t0));
        assert_eq!(one.updated_at.as_deref(), Some(t1));
        assert_eq!(one.meta.get("k").map(String::as_str), Some("v"));
        assert_eq!(one.description, "d");
        let moved = update_legacy(&e, "id-1", &legacy("web", "cache"), t1).unwrap_err();
        assert!(moved.to_string().starts_with("Cannot modify Destination"));
        let e = delete_legacy(&e, "id-1").unwrap().unwrap();
        assert_eq!(delete_legacy(&e, "id-2").unwrap(), None);
    }

    #[test]
    fn legacy_edits_refuse_entries_written_by_name() {
        let e = upsert_exact(None, &write("web", "db", "allow")).unwrap();
        let err = create_legacy(Some(&e), &legacy("api", "db"), "id-1", "t").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot use legacy intention API"),
            "{err}"
        );
        // And a write by name turns legacy intentions into named ones (Consul drops the IDs).
        let e = create_legacy(None, &legacy("api", "db"), "id-1", "t").unwrap();
        let e = upsert_exact(Some(&e), &write("web", "db", "allow"));
        // The legacy source has LegacyMeta, which a write by name must not drop silently.
        assert_eq!(
            e.unwrap_err().to_string(),
            "Sources[0].LegacyMeta must be omitted"
        );
    }

    #[test]
    fn legacy_validation_lists_every_error() {
        let w = LegacyWrite {
            source: "we*b".into(),
            action: "maybe".into(),
            source_type: "k8s".into(),
            ..LegacyWrite::default()
        };
        assert_eq!(
            w.validate().unwrap_err(),
            "4 errors occurred:\n\
             \t* DestinationName must be set\n\
             \t* SourceName: wildcard character '*' cannot be used with partial values\n\
             \t* Action must be set to 'allow' or 'deny'\n\
             \t* SourceType must be set to 'consul'"
        );
    }
}
