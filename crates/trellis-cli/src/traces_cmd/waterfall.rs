//! The terminal rendering of traces, pure (no IO): a trace read from Jaeger's JSON, the search
//! table (one row per trace) and the waterfall of one trace (spans indented by parent, bars
//! scaled to the trace's time span).

use crate::table::columns;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// One span, as much of it as the terminal shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    pub id: String,
    /// The parent's span id, if the span has one (it may be absent from the trace).
    pub parent: Option<String>,
    pub service: String,
    pub operation: String,
    /// Microseconds since the Unix epoch.
    pub start_us: u64,
    pub duration_us: u64,
    pub error: bool,
    /// Tags as text, in the order the server sent them.
    pub tags: Vec<(String, String)>,
}

impl SpanRow {
    fn end_us(&self) -> u64 {
        self.start_us.saturating_add(self.duration_us)
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first of `keys` the span has.
    fn first_tag(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.tag(k))
    }
}

/// A trace: its id and its spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub id: String,
    pub spans: Vec<SpanRow>,
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Trace {
    /// Reads one trace in Jaeger's JSON shape (`traceID`, `spans`, `processes`).
    pub fn from_jaeger(trace: &Value) -> Result<Trace, String> {
        let id = trace["traceID"]
            .as_str()
            .ok_or("a trace without traceID")?
            .to_owned();
        let spans = trace["spans"].as_array().ok_or("a trace without spans")?;
        let mut rows = Vec::with_capacity(spans.len());
        for span in spans {
            let process = span["processID"].as_str().unwrap_or_default();
            let service = trace["processes"][process]["serviceName"]
                .as_str()
                .unwrap_or("?")
                .to_owned();
            let parent = span["references"].as_array().and_then(|refs| {
                refs.iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .or_else(|| refs.first())
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_owned)
            });
            let tags: Vec<(String, String)> = span["tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .map(|t| (text_of(&t["key"]), text_of(&t["value"])))
                        .collect()
                })
                .unwrap_or_default();
            let error = tags.iter().any(|(k, v)| {
                (k == "error" && v == "true") || (k == "otel.status_code" && v == "ERROR")
            });
            rows.push(SpanRow {
                id: span["spanID"].as_str().unwrap_or_default().to_owned(),
                parent,
                service,
                operation: span["operationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                start_us: span["startTime"].as_u64().unwrap_or(0),
                duration_us: span["duration"].as_u64().unwrap_or(0),
                error,
                tags,
            });
        }
        Ok(Trace { id, spans: rows })
    }

    fn start_us(&self) -> u64 {
        self.spans.iter().map(|s| s.start_us).min().unwrap_or(0)
    }

    fn end_us(&self) -> u64 {
        self.spans.iter().map(SpanRow::end_us).max().unwrap_or(0)
    }

    /// From the first span's start to the last span's end.
    pub fn duration_us(&self) -> u64 {
        self.end_us().saturating_sub(self.start_us())
    }

    pub fn errors(&self) -> usize {
        self.spans.iter().filter(|s| s.error).count()
    }

    /// The services with a span in the trace, sorted.
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }

    /// The span that started the trace: the earliest of those whose parent is not in it.
    pub fn root(&self) -> Option<&SpanRow> {
        let ids: BTreeSet<&str> = self.spans.iter().map(|s| s.id.as_str()).collect();
        self.spans
            .iter()
            .filter(|s| s.parent.as_deref().is_none_or(|p| !ids.contains(p)))
            .min_by_key(|s| s.start_us)
    }

    /// The spans in waterfall order, each with its depth: depth first from each root (spans
    /// whose parent is not in the trace), children by start time.
    pub fn tree(&self) -> Vec<(usize, &SpanRow, Vec<bool>)> {
        let ids: BTreeSet<&str> = self.spans.iter().map(|s| s.id.as_str()).collect();
        let mut children: HashMap<&str, Vec<&SpanRow>> = HashMap::new();
        let mut roots = Vec::new();
        for span in &self.spans {
            match span
                .parent
                .as_deref()
                .filter(|p| ids.contains(p) && *p != span.id)
            {
                Some(parent) => children.entry(parent).or_default().push(span),
                None => roots.push(span),
            }
        }
        let by_start = |a: &&SpanRow, b: &&SpanRow| {
            (a.start_us, &a.operation, &a.id).cmp(&(b.start_us, &b.operation, &b.id))
        };
        roots.sort_by(by_start);
        for list in children.values_mut() {
            list.sort_by(by_start);
        }
        let mut out = Vec::with_capacity(self.spans.len());
        let mut seen = BTreeSet::new();
        // (span, depth, for each ancestor level: whether more siblings follow at that level)
        let mut stack: Vec<(&SpanRow, usize, Vec<bool>)> = roots
            .into_iter()
            .rev()
            .map(|r| (r, 0, Vec::new()))
            .collect();
        while let Some((span, depth, rails)) = stack.pop() {
            if !seen.insert(span.id.as_str()) {
                continue; // a cycle of parent ids: each span is shown once
            }
            if let Some(kids) = children.get(span.id.as_str()) {
                for (k, kid) in kids.iter().enumerate().rev() {
                    let mut rails = rails.clone();
                    rails.push(k + 1 < kids.len());
                    stack.push((kid, depth + 1, rails));
                }
            }
            out.push((depth, span, rails));
        }
        // Spans only reachable through a cycle: shown at the top level rather than lost.
        for span in &self.spans {
            if !seen.contains(span.id.as_str()) {
                out.push((0, span, Vec::new()));
            }
        }
        out
    }
}

/// `850µs`, `12.35ms`, `1.24s`.
pub fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// `2025-03-01 12:00:05.123` (UTC) from microseconds since the epoch.
pub fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let millis = (us % 1_000_000) / 1_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Pads or cuts `text` to exactly `width` characters (a cut ends in `…`).
fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text}{}", " ".repeat(width - count))
    } else if width == 0 {
        String::new()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

/// The search result: one row per trace, newest first.
pub fn search_table(traces: &[Trace]) -> String {
    if traces.is_empty() {
        return "no traces found\n".to_owned();
    }
    let mut sorted: Vec<&Trace> = traces.iter().collect();
    sorted.sort_by(|a, b| b.start_us().cmp(&a.start_us()).then(a.id.cmp(&b.id)));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|t| {
            let root = t
                .root()
                .map_or_else(String::new, |r| format!("{}: {}", r.service, r.operation));
            vec![
                t.id.clone(),
                timestamp(t.start_us()),
                root,
                duration(t.duration_us()),
                t.spans.len().to_string(),
                t.errors().to_string(),
            ]
        })
        .collect();
    columns(
        &[
            "TRACE ID",
            "START (UTC)",
            "ROOT",
            "DURATION",
            "SPANS",
            "ERRORS",
        ],
        &rows,
    )
}

/// The cells of a bar `width` wide for the span `[start, start + duration]` of a trace that
/// runs `[t0, t0 + total]`: its first and one-past-last cell. Every span gets at least one
/// cell, so even a 1 µs span shows where it happened.
pub fn bar_cells(t0: u64, total: u64, start: u64, duration: u64, width: usize) -> (usize, usize) {
    if width == 0 {
        return (0, 0);
    }
    let total = u128::from(total.max(1));
    let w = width as u128;
    let offset = u128::from(start.saturating_sub(t0)).min(total);
    let end = (offset + u128::from(duration)).min(total);
    let first = usize::try_from(offset * w / total).unwrap_or(width);
    let last = usize::try_from((end * w).div_ceil(total)).unwrap_or(width);
    let first = first.min(width - 1);
    (first, last.clamp(first + 1, width))
}

fn bar(t0: u64, total: u64, span: &SpanRow, width: usize) -> String {
    let (first, last) = bar_cells(t0, total, span.start_us, span.duration_us, width);
    let fill = if span.error { '▓' } else { '█' };
    let mut out = String::with_capacity(width * 3 + 2);
    out.push('|');
    for cell in 0..width {
        out.push(if (first..last).contains(&cell) {
            fill
        } else {
            ' '
        });
    }
    out.push('|');
    out
}

/// The attributes worth a glance: the HTTP request and answer, whom it called (peer,
/// endpoint), the query, the transaction, and why it failed.
pub fn key_attributes(span: &SpanRow) -> String {
    let mut parts: Vec<String> = Vec::new();
    let method = span.first_tag(&["http.request.method", "http.method"]);
    let target = span.first_tag(&[
        "http.route",
        "url.template",
        "url.path",
        "http.target",
        "url.full",
        "http.url",
    ]);
    let status = span.first_tag(&["http.response.status_code", "http.status_code"]);
    let http: Vec<&str> = [method, target, status].into_iter().flatten().collect();
    if !http.is_empty() {
        parts.push(http.join(" "));
    }
    let peer = span.first_tag(&[
        "peer.service",
        "server.address",
        "net.peer.name",
        "network.peer.address",
        "net.peer.ip",
    ]);
    if let Some(peer) = peer {
        let port = span.first_tag(&["server.port", "net.peer.port"]);
        match port {
            Some(port) if !peer.contains(':') => parts.push(format!("→ {peer}:{port}")),
            _ => parts.push(format!("→ {peer}")),
        }
    }
    for (key, value) in &span.tags {
        let key_l = key.to_ascii_lowercase();
        if key_l.ends_with("endpoint") || key_l.ends_with("upstream") {
            parts.push(format!("endpoint={value}"));
        } else if key_l.ends_with("retries") || key_l.ends_with("retry_count") {
            parts.push(format!("retries={value}"));
        }
    }
    if let Some(db) = span.first_tag(&["db.system.name", "db.system"]) {
        let what = span.first_tag(&["db.query.summary", "db.statement", "db.operation"]);
        parts.push(match what {
            Some(what) => format!("{db}: {what}"),
            None => db.to_owned(),
        });
    }
    if let Some(gid) = span.tag("trellis.txn.gid") {
        parts.push(format!("gid={gid}"));
    }
    if span.error
        && let Some(why) =
            span.first_tag(&["error.type", "exception.message", "otel.status_description"])
    {
        parts.push(format!("error={why}"));
    }
    parts.join("  ")
}

/// The waterfall of `trace`: a heading, then one line per span — the operation indented under
/// its parent, service, duration, status (`ERROR` marked), a bar `bar_width` cells wide on the
/// trace's time scale, and the key attributes.
pub fn waterfall(trace: &Trace, bar_width: usize) -> String {
    let mut out = String::new();
    let t0 = trace.start_us();
    let total = trace.duration_us();
    let services: Vec<&str> = trace.services().into_iter().collect();
    let _ = writeln!(
        out,
        "trace {}  {} UTC  {}  {} spans  {}  {} error{}",
        trace.id,
        timestamp(t0),
        duration(total),
        trace.spans.len(),
        services.join(", "),
        trace.errors(),
        if trace.errors() == 1 { "" } else { "s" }
    );
    let rows: Vec<Vec<String>> = trace
        .tree()
        .into_iter()
        .map(|(depth, span, rails)| {
            let mut name = String::new();
            if depth > 0 {
                for more in &rails[..rails.len() - 1] {
                    name.push_str(if *more { "│  " } else { "   " });
                }
                name.push_str(if rails.last() == Some(&true) {
                    "├─ "
                } else {
                    "└─ "
                });
            }
            name.push_str(&span.operation);
            vec![
                fit(&name, name.chars().count().min(64)),
                span.service.clone(),
                duration(span.duration_us),
                if span.error { "ERROR" } else { "ok" }.to_owned(),
                bar(t0, total, span, bar_width),
                key_attributes(span),
            ]
        })
        .collect();
    let scale = format!(
        "0{}{}",
        " ".repeat(bar_width.saturating_sub(duration(total).chars().count()) + 1),
        duration(total)
    );
    out.push_str(&columns(
        &[
            "SPAN",
            "SERVICE",
            "DURATION",
            "STATUS",
            &scale,
            "ATTRIBUTES",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_700_000_000_000_000;

    fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        op: &str,
        start: u64,
        dur: u64,
    ) -> Value {
        let refs = match parent {
            Some(p) => json!([{"refType": "CHILD_OF", "traceID": "t", "spanID": p}]),
            None => json!([]),
        };
        json!({
            "traceID": "t", "spanID": id, "operationName": op, "references": refs,
            "startTime": T0 + start, "duration": dur, "processID": service,
            "tags": [], "logs": [],
        })
    }

    fn with_tags(mut span: Value, tags: Value) -> Value {
        span["tags"] = tags;
        span
    }

    /// gateway → orders → (users, and a query); the users server span failed.
    fn sample() -> Trace {
        let spans = json!([
            span("d", Some("c"), "users", "GET /users/{id}", 40_000, 20_000),
            with_tags(
                span("a", None, "gateway", "POST /orders", 0, 100_000),
                json!([
                    {"key": "http.request.method", "type": "string", "value": "POST"},
                    {"key": "http.route", "type": "string", "value": "/orders"},
                    {"key": "http.response.status_code", "type": "int64", "value": 201},
                ]),
            ),
            span("b", Some("a"), "orders", "POST /orders", 10_000, 80_000),
            with_tags(
                span(
                    "c",
                    Some("b"),
                    "orders",
                    "GET users /users/{id}",
                    30_000,
                    40_000
                ),
                json!([
                    {"key": "peer.service", "type": "string", "value": "users"},
                    {"key": "error", "type": "bool", "value": true},
                    {"key": "error.type", "type": "string", "value": "503"},
                ]),
            ),
            with_tags(
                span("e", Some("b"), "orders", "SELECT orders", 75_000, 5_000),
                json!([
                    {"key": "db.system", "type": "string", "value": "sqlite"},
                    {"key": "db.query.summary", "type": "string", "value": "SELECT orders"},
                ]),
            ),
        ]);
        let processes = json!({
            "gateway": {"serviceName": "gateway", "tags": []},
            "orders": {"serviceName": "orders", "tags": []},
            "users": {"serviceName": "users", "tags": []},
        });
        Trace::from_jaeger(&json!({"traceID": "4bf9", "spans": spans, "processes": processes}))
            .unwrap()
    }

    #[test]
    fn spans_are_indented_under_their_parents_in_start_order() {
        let trace = sample();
        let order: Vec<(usize, &str)> = trace
            .tree()
            .iter()
            .map(|(depth, s, _)| (*depth, s.id.as_str()))
            .collect();
        assert_eq!(order, [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (2, "e")]);
        let text = waterfall(&trace, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace 4bf9  2023-11-14 22:13:20.000 UTC  100.00ms  5 spans  gateway, orders, users  1 error"), "{text}");
        assert!(lines[1].starts_with("SPAN"), "{text}");
        assert!(lines[2].starts_with("POST /orders "), "{text}");
        assert!(lines[3].starts_with("└─ POST /orders "), "{text}");
        assert!(
            lines[4].starts_with("   ├─ GET users /users/{id} "),
            "{text}"
        );
        assert!(lines[5].starts_with("   │  └─ GET /users/{id} "), "{text}");
        assert!(lines[6].starts_with("   └─ SELECT orders "), "{text}");
        assert_eq!(lines.len(), 7);
        assert!(lines[2].contains("POST /orders 201"), "{text}");
        assert!(
            lines[4].contains("→ users") && lines[4].contains("error=503"),
            "{text}"
        );
        assert!(lines[6].contains("sqlite: SELECT orders"), "{text}");
    }

    #[test]
    fn bars_are_scaled_to_the_trace() {
        assert_eq!(bar_cells(0, 100, 0, 100, 20), (0, 20));
        assert_eq!(bar_cells(0, 100, 50, 50, 20), (10, 20));
        assert_eq!(bar_cells(0, 100, 25, 25, 20), (5, 10));
        // Partial cells round outwards; a tiny span still gets a cell.
        assert_eq!(bar_cells(0, 100, 26, 1, 20), (5, 6));
        assert_eq!(bar_cells(0, 100, 100, 0, 20), (19, 20));
        // A span claiming to last beyond the trace is cut at its end.
        assert_eq!(bar_cells(0, 100, 90, 500, 20), (18, 20));
        assert_eq!(bar_cells(0, 0, 0, 0, 10), (0, 1));
        let text = waterfall(&sample(), 20);
        let bars: Vec<&str> = text
            .lines()
            .skip(2)
            .map(|l| &l[l.find('|').unwrap()..])
            .collect();
        assert!(bars[0].starts_with("|████████████████████|"), "{text}");
        // orders: 10..90 of 100 µs → cells 2..18.
        assert!(bars[1].starts_with("|  ████████████████  |"), "{text}");
        // users: 40..60 → cells 8..12.
        assert!(bars[3].starts_with("|        ████        |"), "{text}");
    }

    #[test]
    fn errors_are_marked() {
        let trace = sample();
        assert_eq!(trace.errors(), 1);
        let text = waterfall(&trace, 10);
        for line in text.lines().skip(2) {
            let failed = line.contains("GET users /users/{id}");
            assert_eq!(line.contains("ERROR"), failed, "{line}");
            assert_eq!(line.contains('▓'), failed, "{line}");
            assert_eq!(line.contains(" ok "), !failed, "{line}");
        }
    }

    #[test]
    fn search_rows_name_the_root_and_count_spans_and_errors() {
        let table = search_table(&[sample()]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TRACE ID"), "{table}");
        assert!(
            lines[0].contains("ROOT") && lines[0].ends_with("ERRORS"),
            "{table}"
        );
        assert!(lines[1].starts_with("4bf9"), "{table}");
        assert!(lines[1].contains("gateway: POST /orders"), "{table}");
        assert!(lines[1].contains("100.00ms"), "{table}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[cells.len() - 2..], ["5", "1"], "{table}");
        assert_eq!(search_table(&[]), "no traces found\n");
    }

    #[test]
    fn a_span_whose_parent_is_missing_is_a_root() {
        let spans = json!([span("x", Some("gone"), "orders", "POST /orders", 0, 10)]);
        let trace = Trace::from_jaeger(&json!({
            "traceID": "t", "spans": spans,
            "processes": {"orders": {"serviceName": "orders"}},
        }))
        .unwrap();
        assert_eq!(trace.root().map(|r| r.id.as_str()), Some("x"));
        assert_eq!(trace.tree().len(), 1);
    }

    #[test]
    fn formats() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(12_345), "12.35ms");
        assert_eq!(duration(1_240_000), "1.24s");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(951_782_400_123_000), "2000-02-29 00:00:00.123");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("ab", 4), "ab  ");
    }
}
