//! Person-readable demo output: numbered steps with ✓/✗, colour on a terminal, plain when piped.

use std::io::IsTerminal;
use std::time::Duration;

pub struct Report {
    color: bool,
    step: usize,
    pub failures: usize,
}

impl Report {
    pub fn new() -> Self {
        Self {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            step: 0,
            failures: 0,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn title(&self, text: &str) {
        println!("{}", self.paint("1", text));
    }

    pub fn step(&mut self, title: &str) {
        self.step += 1;
        println!();
        println!(
            "{}",
            self.paint("1;36", &format!("[{}] {title}", self.step))
        );
    }

    /// The number of the current step (0 before the first).
    pub fn step_number(&self) -> usize {
        self.step
    }

    pub fn ok(&self, text: &str) {
        println!("  {} {text}", self.paint("32", "✓"));
    }

    pub fn fail(&mut self, text: &str) {
        self.failures += 1;
        println!("  {} {text}", self.paint("31", "✗"));
    }

    /// Records a check: ✓ when it held, ✗ (and a failure) when not.
    pub fn check(&mut self, held: bool, text: &str) -> bool {
        if held {
            self.ok(text);
        } else {
            self.fail(text);
        }
        held
    }

    pub fn info(&self, text: &str) {
        println!("    {}", self.paint("2", text));
    }

    /// Prints preformatted text (a waterfall) as it is, indented under the step.
    pub fn block(&self, text: &str) {
        for line in text.lines() {
            println!("    {line}");
        }
    }

    pub fn table(&self, rows: &[(&str, String)]) {
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in rows {
            println!("    {key:<width$}  {value}");
        }
    }
}

/// A latency percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
