//! `GET /v1/agent/monitor[?loglevel=][&logjson]`: the server's log, streamed from the moment of
//! the request as Consul's agent streams its log: plain-text lines in hclog's shape, or with
//! `logjson` one JSON object per line in hclog's JSON shape (`@level`, `@message`, `@module`,
//! `@timestamp` and the event's fields).
//!
//! The process's logging (set up by the binary) feeds events into the `LogFeed`, a
//! bounded broadcast: sending never blocks, and a monitor that reads too slowly loses the lines
//! it fell behind on (it is told how many) instead of slowing down logging. Events are captured
//! only at the levels some monitor asks for, and formatted by each monitor in its shape, so without a monitor the feed costs a few atomic
//! loads per event that the log filter would otherwise drop.

use super::blocking::waiter_permit;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::add_index_headers;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;
use tracing::Level;

/// Lines a monitor may fall behind by before it loses some.
const FEED_CAPACITY: usize = 1024;

/// One log event, formatted by each monitor as text or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    /// When it was logged: RFC 3339 in UTC with microseconds (`2026-12-01T13:05:10.123456Z`).
    pub timestamp: String,
    /// The module that logged it (its `tracing` target).
    pub target: String,
    pub message: String,
    /// Its other fields in order, each as it was recorded (a string, number or boolean).
    pub fields: Vec<(String, serde_json::Value)>,
}

impl LogLine {
    /// hclog's text shape: `2026-12-01T13:05:10.123456Z [INFO]  target: message key=value`.
    pub fn text(&self) -> String {
        let level = self.level.as_str();
        let mut line = format!(
            "{} [{level}] {:pad$}{}: {}",
            self.timestamp,
            "",
            self.target,
            self.message,
            pad = 5 - level.len()
        );
        for (key, value) in &self.fields {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            match value {
                serde_json::Value::String(text) => line.push_str(text),
                other => line.push_str(&other.to_string()),
            }
        }
        line
    }

    /// hclog's JSON shape: one object, keys sorted as Go encodes a map.
    pub fn json(&self) -> String {
        let mut object: serde_json::Map<String, serde_json::Value> =
            self.fields.iter().cloned().collect();
        let level = match self.level {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        object.insert("@level".into(), level.into());
        object.insert("@message".into(), self.message.clone().into());
        object.insert("@module".into(), self.target.clone().into());
        object.insert("@timestamp".into(), self.timestamp.clone().into());
        serde_json::Value::Object(object).to_string()
    }
}

/// Where the process's log lines go for `/v1/agent/monitor`.
pub struct LogFeed {
    lines: broadcast::Sender<Arc<LogLine>>,
    /// Monitors open per level, error (0) to trace (4).
    monitors: [AtomicUsize; 5],
}

/// The process's log feed.
pub fn log_feed() -> &'static LogFeed {
    static FEED: OnceLock<LogFeed> = OnceLock::new();
    FEED.get_or_init(|| LogFeed {
        lines: broadcast::channel(FEED_CAPACITY).0,
        monitors: Default::default(),
    })
}

fn rank(level: &Level) -> usize {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

impl LogFeed {
    /// Whether some monitor wants lines at `level` (one at that level or a more verbose one).
    pub fn wants(&self, level: &Level) -> bool {
        self.monitors[rank(level)..]
            .iter()
            .any(|open| open.load(Ordering::Relaxed) > 0)
    }

    /// Hands an event to the open monitors; never blocks.
    pub fn send(&self, line: LogLine) {
        let _ = self.lines.send(Arc::new(line));
    }

    fn subscribe(&'static self, level: Level) -> Subscription {
        // Subscribe before counting, so no line wanted by this monitor is formatted unseen.
        let lines = self.lines.subscribe();
        self.monitors[rank(&level)].fetch_add(1, Ordering::Relaxed);
        Subscription {
            feed: self,
            level,
            lines,
        }
    }
}

/// An open monitor: its receiver and its place in the per-level count.
struct Subscription {
    feed: &'static LogFeed,
    level: Level,
    lines: broadcast::Receiver<Arc<LogLine>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.monitors[rank(&self.level)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Consul's log levels (hclog's names, any case); none is `info`.
fn parse_level(text: Option<&str>) -> Result<Level, ApiError> {
    match text.unwrap_or("").to_ascii_lowercase().as_str() {
        "" | "info" => Ok(Level::INFO),
        "trace" => Ok(Level::TRACE),
        "debug" => Ok(Level::DEBUG),
        "warn" | "warning" => Ok(Level::WARN),
        "err" | "error" => Ok(Level::ERROR),
        _ => Err(ApiError::bad_request(format!(
            "Unknown log level: {}",
            text.unwrap_or_default()
        ))),
    }
}

/// `GET /v1/agent/monitor[?loglevel=trace|debug|info|warn|err][&logjson]` (`logjson` counts by
/// its presence, as in Consul).
pub async fn monitor(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let level = parse_level(query.get("loglevel"))?;
    let json = query.get("logjson").is_some();
    let permit = waiter_permit(&state)?;
    let subscription = log_feed().subscribe(level);
    let closing = state.closing();
    let stream = futures_util::stream::unfold(
        (subscription, closing, permit),
        move |(mut sub, mut closing, permit)| async move {
            loop {
                if *closing.borrow_and_update() {
                    return None;
                }
                let received = tokio::select! {
                    _ = closing.changed() => return None,
                    received = sub.lines.recv() => received,
                };
                let chunk = match received {
                    Ok(line) if line.level <= sub.level => {
                        let mut text = if json { line.json() } else { line.text() };
                        text.push('\n');
                        Bytes::from(text)
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        let note = format!("{lost} log lines dropped: the client reads too slowly");
                        Bytes::from(if json {
                            format!(
                                "{}\n",
                                serde_json::json!({"@level": "warn", "@message": note, "@module": "monitor"})
                            )
                        } else {
                            format!("[monitor] {note}\n")
                        })
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(chunk), (sub, closing, permit)));
            }
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    add_index_headers(headers, 1);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_consuls() {
        assert_eq!(parse_level(None).unwrap(), Level::INFO);
        assert_eq!(parse_level(Some("TRACE")).unwrap(), Level::TRACE);
        assert_eq!(parse_level(Some("err")).unwrap(), Level::ERROR);
        assert!(parse_level(Some("loud")).is_err());
    }

    #[test]
    fn lines_in_hclogs_text_and_json_shapes() {
        let line = LogLine {
            level: Level::INFO,
            timestamp: "2026-12-01T13:05:10.123456Z".into(),
            target: "trellis_server::writer".into(),
            message: "catalog restored".into(),
            fields: vec![
                ("instances".into(), 3.into()),
                ("dir".into(), "/var/lib/trellis".into()),
            ],
        };
        assert_eq!(
            line.text(),
            "2026-12-01T13:05:10.123456Z [INFO]  trellis_server::writer: catalog restored \
             instances=3 dir=/var/lib/trellis"
        );
        assert_eq!(
            line.json(),
            r#"{"@level":"info","@message":"catalog restored","@module":"trellis_server::writer","@timestamp":"2026-12-01T13:05:10.123456Z","dir":"/var/lib/trellis","instances":3}"#
        );
    }

    #[test]
    fn the_feed_wants_only_what_a_monitor_asks_for() {
        let feed = log_feed();
        assert!(!feed.wants(&Level::TRACE));
        let sub = feed.subscribe(Level::DEBUG);
        assert!(feed.wants(&Level::ERROR));
        assert!(feed.wants(&Level::DEBUG));
        assert!(!feed.wants(&Level::TRACE));
        drop(sub);
        assert!(!feed.wants(&Level::DEBUG));
    }
}
