//! Logging for every command, set up once in `main`: `tracing` to stderr, level from
//! `TRELLIS_LOG` (default `info`), text or JSON (`TRELLIS_LOG_FORMAT=json`) for log shippers;
//! and the lines `/v1/agent/monitor` streams, at the level each monitor asks for.

use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber, with `spans` (an example service's span exporter) when
/// given. Colour codes only when stderr is a terminal, so log files and pipes stay plain text.
/// A bad `TRELLIS_LOG` or `TRELLIS_LOG_FORMAT` is reported once and the default is used:
/// logging must never stop a command from running.
pub fn init(spans: Option<trellis_example::OtelLayer>) {
    let filter = match std::env::var("TRELLIS_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(spec.trim()) {
                Ok(filter) => filter,
                Err(e) => {
                    eprintln!(
                        "warning: TRELLIS_LOG={spec:?} is not a log filter ({e}); using info"
                    );
                    tracing_subscriber::EnvFilter::new("info")
                }
            }
        }
        _ => tracing_subscriber::EnvFilter::new("info"),
    };
    let format = std::env::var("TRELLIS_LOG_FORMAT").unwrap_or_default();
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = match format.trim().to_ascii_lowercase().as_str() {
        "json" => stderr.json().flatten_event(true).boxed(),
        "" | "text" => stderr.with_ansi(std::io::stderr().is_terminal()).boxed(),
        other => {
            eprintln!("warning: TRELLIS_LOG_FORMAT={other:?} is not text or json; using text");
            stderr.with_ansi(std::io::stderr().is_terminal()).boxed()
        }
    };
    // TRELLIS_LOG filters stderr only: `/v1/agent/monitor` may ask for more detail.
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(stderr.with_filter(filter))
        // Asked per event (not cached per call site): monitors come and go. Dependencies'
        // debug and trace call sites stay off, so their hot paths pay nothing for this.
        .with(
            Monitor.with_filter(
                dynamic_filter_fn(|meta, _| trellis_server::log_feed().wants(meta.level()))
                    .with_callsite_filter(|meta| {
                        if meta.target().starts_with("trellis")
                            || *meta.level() <= tracing::Level::INFO
                        {
                            Interest::sometimes()
                        } else {
                            Interest::never()
                        }
                    }),
            ),
        )
        .try_init();
}

/// Feeds `/v1/agent/monitor`: each event some monitor wants, with its time, level, target,
/// message and fields; each monitor formats it in hclog's text or JSON shape.
struct Monitor;

impl<S: tracing::Subscriber> Layer<S> for Monitor {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut timestamp = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let mut fields = Fields {
            message: String::new(),
            rest: Vec::new(),
        };
        event.record(&mut fields);
        trellis_server::log_feed().send(trellis_server::LogLine {
            level: *meta.level(),
            timestamp,
            target: meta.target().to_owned(),
            message: fields.message,
            fields: fields.rest,
        });
    }
}

struct Fields {
    message: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn record(&mut self, field: &Field, value: serde_json::Value) {
        self.rest.push((field.name().to_owned(), value));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.record(field, format!("{value:?}").into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record(field, value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, value.into());
    }
}
