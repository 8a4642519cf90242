//! Query parameters shared by the endpoints: flags with Go's boolean forms, numbers, the
//! blocking-query pair `?index=N&wait=D`, and the checks every read applies (`filter`, `dc`,
//! `node-meta`).

use super::error::ApiError;
use crate::node::Node;
use axum::http::StatusCode;
use rand::Rng;
use std::time::Duration;
use trellis_filter::{Filter, Schema};
use trellis_types::parse_go_duration;

/// Default and longest wait of a blocking query (index- or hash-based, as in Consul).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct QueryParams {
    pub pairs: Vec<(String, String)>,
}

impl QueryParams {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A flag like `?passing`, `?passing=true` or `?recurse=1` (present without a value is
    /// true).
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(value) => parse_bool(value)
                .ok_or_else(|| ApiError::bad_request(format!("invalid value {value:?} for {key}"))),
        }
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}")))
            })
            .transpose()
    }

    /// `?index=N&wait=D` if the request blocks.
    pub fn blocking(&self) -> Result<Option<Blocking>, ApiError> {
        let index = match self.get("index") {
            None => return Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid index {v:?}")))?,
        };
        let wait = self.wait()?;
        if index == 0 {
            return Ok(None);
        }
        Ok(Some(Blocking { index, wait }))
    }

    /// `?wait=D`, a Go duration: `DEFAULT_WAIT` if absent or empty, at most `MAX_WAIT`.
    pub fn wait(&self) -> Result<Duration, ApiError> {
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(v) => parse_go_duration(v)
                .map_err(|e| ApiError::bad_request(format!("invalid wait: {e}")))?,
        };
        Ok(wait.min(MAX_WAIT))
    }

    /// `?filter=EXPR` for an endpoint whose entries have `schema`: parsed and validated once
    /// per request; an absent or empty filter is no filter (as in Consul). A syntax or schema
    /// error is a 400 with its position and reason (`invalid filter: 1:9: ...`).
    pub fn filter(&self, schema: &Schema) -> Result<Option<Filter>, ApiError> {
        match self.get("filter") {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => Filter::parse(text, schema)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}"))),
        }
    }

    /// For endpoints that do not filter (Consul ignores `filter` there): refuses a filter
    /// instead of silently ignoring it, and checks `dc`.
    pub fn check_common(&self, node: &Node) -> Result<(), ApiError> {
        if let Some(filter) = self.get("filter")
            && !filter.trim().is_empty()
        {
            return Err(ApiError::bad_request(
                "this endpoint does not support filter expressions",
            ));
        }
        self.check_dc(node)
    }

    /// `?dc=`: this server's datacenter (or none); another one is Consul's 500. Also the
    /// Enterprise scopes a Consul CE server refuses (agent/http_ce.go): any non-empty `ns` or
    /// `partition`, `default` included, is a 400 naming the parameter.
    pub fn check_dc(&self, node: &Node) -> Result<(), ApiError> {
        for (key, feature) in [("ns", "Namespaces"), ("partition", "Partitions")] {
            if self.get(key).is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request(format!(
                    "Invalid query parameter: {key:?} - {feature} are a Consul Enterprise feature"
                )));
            }
        }
        if let Some(dc) = self.get("dc")
            && !dc.is_empty()
            && dc != node.datacenter
        {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("No path to datacenter {dc:?}"),
            ));
        }
        Ok(())
    }

    /// False for `?peer=NAME`: this server has no cluster peers, so a read of what a peer
    /// imported finds nothing, as Consul answers for a peer it does not know (an empty list).
    pub fn local_peer(&self) -> bool {
        self.get("peer").is_none_or(str::is_empty)
    }

    /// `node-meta=key:value` pairs; the synthesised node has to match all of them.
    pub fn node_meta_matches(&self, node: &Node) -> Result<bool, ApiError> {
        let wanted = self.all("node-meta");
        if wanted.is_empty() {
            return Ok(true);
        }
        let meta = &node.info().meta;
        for pair in wanted {
            let (key, value) = pair.split_once(':').ok_or_else(|| {
                ApiError::bad_request(format!("invalid node-meta {pair:?}: want key:value"))
            })?;
            if meta.get(key).map(String::as_str) != Some(value) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A value of Go's `strconv.ParseBool`, which Consul uses for its boolean parameters.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "t" | "T" | "True" | "TRUE" => Some(true),
        "false" | "0" | "f" | "F" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A blocking query's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

impl Blocking {
    /// The wait with random jitter of up to wait/16 added, so that many clients that started
    /// together do not all come back together.
    pub fn deadline(&self) -> tokio::time::Instant {
        deadline_after(self.wait)
    }
}

/// Now plus `wait` plus random jitter of up to wait/16, so that many clients that started
/// together do not all come back together.
pub fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let jitter_cap = wait / 16;
    let jitter = if jitter_cap.is_zero() {
        Duration::ZERO
    } else {
        rand::rng().random_range(Duration::ZERO..jitter_cap)
    };
    tokio::time::Instant::now() + wait + jitter
}
