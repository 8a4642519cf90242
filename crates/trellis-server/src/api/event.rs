//! User events, as Consul's agent keeps them: `PUT /v1/event/fire/{name}` and
//! `GET /v1/event/list[?name=]`. Memory-only, the last 256 kept (Consul's ring); the list blocks
//! on Consul's index for events: the last listed event's ID folded to 64 bits (1 when the list is
//! empty), which is not monotonic, so a waiter wakes on any index other than its own.

use super::authz::Authz;
use super::blocking::block_while;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::ids::random_uuid;
use crate::state::{AppState, UserEvent};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use trellis_acl::Resource;

/// Serf's default `UserEventSizeLimit` (Consul keeps it): the encoded event (name, ID, filters
/// and payload) has to fit in 512 bytes.
pub const MAX_EVENT_BYTES: usize = 512;

/// Consul's `userEventMaxVersion`.
const EVENT_VERSION: u32 = 1;

/// `PUT /v1/event/fire/{name}[?node=&service=&tag=]`: the body is the payload.
pub async fn fire(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing name"));
    }
    let text = |key| query.get(key).unwrap_or_default().to_owned();
    let (node_filter, service_filter, tag_filter) = (text("node"), text("service"), text("tag"));
    if !tag_filter.is_empty() && service_filter.is_empty() {
        return Err(ApiError::bad_request(
            "Cannot provide tag filter without service filter",
        ));
    }
    // Consul validates each filter as a regular expression when the event is fired.
    for (what, filter) in [
        ("NodeFilter", &node_filter),
        ("ServiceFilter", &service_filter),
        ("TagFilter", &tag_filter),
    ] {
        if let Err(e) = compile(filter) {
            return Err(ApiError::bad_request(format!("Invalid {what}: {e}")));
        }
    }
    let id = random_uuid();
    let size = name.len()
        + id.len()
        + node_filter.len()
        + service_filter.len()
        + tag_filter.len()
        + body.len();
    if size > MAX_EVENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "user event exceeds the limit of {MAX_EVENT_BYTES} bytes (name, filters and \
             payload: {size} bytes)"
        )));
    }
    let event = UserEvent {
        id,
        name,
        payload: (!body.is_empty()).then_some(body),
        node_filter,
        service_filter,
        tag_filter,
        version: EVENT_VERSION,
        ltime: 0,
    };
    // Consul gossips the event and each agent keeps it only if its filters match that agent.
    let services = state.catalog()?.service_names();
    if applies_here(&event, &state.node().name, &services) {
        tracing::debug!(name = %event.name, id = %event.id, "user event");
        state.ingest_event(event.clone());
    }
    // The answer is the event as fired: its Lamport time is not known yet (0, as in Consul).
    Ok(json_response(1, to_json_bytes(&render(&event))))
}

/// `PUT /v1/event/fire/` without a name.
pub async fn missing_name() -> ApiError {
    ApiError::bad_request("Missing name")
}

/// `GET /v1/event/list[?name=][&index=&wait=]`: the kept events, oldest first.
pub async fn list(
    State(state): State<AppState>,
    authz: Authz,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let name = query.get("name").unwrap_or_default();
    block_while(&state, state.events_changed(), query.blocking()?, || {
        Ok(listing(&state, name).0)
    })
    .await?;
    let (index, events) = listing(&state, name);
    let body: Vec<Value> = events
        .iter()
        .filter(|e| authz.can_read(Resource::Event, &e.name))
        .map(|e| render(e))
        .collect();
    Ok(json_response(index, to_json_bytes(&body)))
}

fn listing(state: &AppState, name: &str) -> (u64, Vec<std::sync::Arc<UserEvent>>) {
    let events: Vec<_> = state
        .events()
        .into_iter()
        .filter(|e| name.is_empty() || e.name == name)
        .collect();
    let index = events.last().map_or(1, |e| id_to_index(&e.id));
    (index, events)
}

/// Consul's index for events: the ID's 128 bits, high half XOR low half (never 0 in practice;
/// 1 if it were, since an index is never 0).
pub fn id_to_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let half = |s: Option<&str>| s.and_then(|s| u64::from_str_radix(s, 16).ok());
    match (half(hex.get(..16)), half(hex.get(16..32))) {
        (Some(high), Some(low)) => (high ^ low).max(1),
        _ => 1,
    }
}

fn render(event: &UserEvent) -> Value {
    json!({
        "ID": event.id,
        "Name": event.name,
        "Payload": event.payload.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": event.version,
        "LTime": event.ltime,
    })
}

/// Whether this agent keeps the event (Consul's `shouldProcessUserEvent`): each filter is a
/// regular expression matched unanchored, as Go's `regexp.MatchString`.
fn applies_here(
    event: &UserEvent,
    node_name: &str,
    services: &BTreeMap<String, BTreeSet<String>>,
) -> bool {
    if !matches(&event.node_filter, node_name) {
        return false;
    }
    if event.service_filter.is_empty() {
        return true;
    }
    services.iter().any(|(name, tags)| {
        matches(&event.service_filter, name)
            && (event.tag_filter.is_empty() || tags.iter().any(|t| matches(&event.tag_filter, t)))
    })
}

/// A filter as a regular expression; the size bound keeps a hostile pattern cheap.
fn compile(filter: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(filter)
        .size_limit(64 * 1024)
        .build()
}

/// An empty filter matches everything; filters were validated when the event was fired.
fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || compile(filter).is_ok_and(|re| re.is_match(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_folds_the_id_as_consul_does() {
        // high 0x0000000000000001, low 0x0000000000000003 → 2
        assert_eq!(id_to_index("00000000-0000-0001-0000-000000000003"), 2);
        assert_eq!(id_to_index("garbage"), 1);
        assert!(id_to_index(&random_uuid()) >= 1);
    }

    #[test]
    fn filters_are_unanchored_regular_expressions() {
        let event = |node: &str, service: &str, tag: &str| UserEvent {
            id: random_uuid(),
            name: "deploy".into(),
            payload: None,
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            version: 1,
            ltime: 0,
        };
        let services = BTreeMap::from([("web".to_owned(), BTreeSet::from(["blue".to_owned()]))]);
        assert!(applies_here(&event("", "", ""), "node-1", &services));
        assert!(applies_here(&event("node", "", ""), "node-1", &services));
        assert!(!applies_here(&event("other", "", ""), "node-1", &services));
        assert!(applies_here(&event("^n.*", "", ""), "node-1", &services));
        assert!(applies_here(&event("", "we", "bl"), "node-1", &services));
        assert!(!applies_here(
            &event("", "web", "green"),
            "node-1",
            &services
        ));
        assert!(!applies_here(&event("", "db", ""), "node-1", &services));
        // Real regular expressions, not substrings: these would be kept by a "has
        // metacharacters" shortcut.
        assert!(!applies_here(&event("^x.*", "", ""), "node-1", &services));
        assert!(!applies_here(
            &event("", "^w.b$", "^g"),
            "node-1",
            &services
        ));
        assert!(applies_here(&event("", "^w.b$", "^b"), "node-1", &services));
        assert!(compile("(").is_err());
    }
}
