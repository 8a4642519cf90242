//! Logging for every command, set up once in `main`: `tracing` to stderr, level from
//! `TRELLIS_LOG` (default `info`), text or JSON (`TRELLIS_LOG_FORMAT=json`) for log shippers.

use std::io::IsTerminal;

/// Installs the global subscriber. Colour codes only when stderr is a terminal, so log files
/// and pipes stay plain text. A bad `TRELLIS_LOG` or `TRELLIS_LOG_FORMAT` is reported once and
/// the default is used: logging must never stop a command from running.
pub fn init() {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("TRELLIS_LOG_FORMAT").unwrap_or_default();
    let _ = match format.trim().to_ascii_lowercase().as_str() {
        "json" => builder.json().flatten_event(true).try_init(),
        "" | "text" => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        other => {
            eprintln!("warning: TRELLIS_LOG_FORMAT={other:?} is not text or json; using text");
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init()
        }
    };
}
