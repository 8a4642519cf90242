//! The crate's one error type: what is wrong with a filter expression, and where.

use std::fmt;

/// Why a filter expression was rejected. Every variant is the client's mistake (HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The text is not a well-formed expression.
    Syntax,
    /// The expression is longer, nests deeper or holds more regular expressions than allowed.
    Limit,
    /// A selector the endpoint does not have (`Selector "Foo" is not valid`).
    UnknownSelector,
    /// An operator the selected field does not support (`Port contains 1`, `Tags == "a"`).
    Operator,
    /// A value that cannot be converted to the field's type (`Port == "http"`).
    Value,
    /// A `matches` pattern that is not a valid (or is too large a) regular expression.
    Regex,
}

/// A rejected filter expression: the byte offset it went wrong at, that position as
/// `line:column` (both from 1, the column counted in characters), and a one-line reason.
///
/// `Display` gives `line:column: reason`, e.g. `1:9: expected a value after "=="`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct Error {
    kind: ErrorKind,
    offset: usize,
    line: usize,
    column: usize,
    message: String,
}

impl Error {
    /// An error at byte `offset` of `source` (clamped to the text and to a character boundary).
    pub(crate) fn new(
        source: &str,
        offset: usize,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            kind,
            offset,
            line,
            column,
            message: message.into(),
        }
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Byte offset into the expression where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Line of [`offset`](Self::offset), from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Column of [`offset`](Self::offset) in characters, from 1.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The reason alone, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Longest piece of user text quoted in an error message.
const QUOTE_MAX: usize = 40;

/// `text` in double quotes for an error message: escaped so the message stays on one line,
/// and shortened with `…` when long.
pub(crate) fn quote(text: &str) -> String {
    struct Quoted<'a>(&'a str);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"")?;
            for (i, c) in self.0.chars().enumerate() {
                if i == QUOTE_MAX {
                    f.write_str("…")?;
                    break;
                }
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "{}", c.escape_default())?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")
        }
    }
    Quoted(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let e = Error::new("ab\ncdé f", 8, ErrorKind::Syntax, "x");
        assert_eq!((e.line(), e.column(), e.offset()), (2, 5, 8));
        assert_eq!(e.to_string(), "2:5: x");
        // inside a multi-byte character: moved back to its start
        let e = Error::new("é", 1, ErrorKind::Syntax, "x");
        assert_eq!((e.offset(), e.column()), (0, 1));
        let e = Error::new("ab", 99, ErrorKind::Syntax, "x");
        assert_eq!((e.offset(), e.column()), (2, 3));
    }

    #[test]
    fn quotes_stay_on_one_line_and_short() {
        assert_eq!(quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("\"{}…\"", "x".repeat(QUOTE_MAX)));
    }
}
