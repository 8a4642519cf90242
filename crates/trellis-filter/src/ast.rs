//! The syntax tree of a filter expression, and its canonical text form (`Display`).
//!
//! The canonical form quotes every value, spells `contains` as `in`, uses `.name` for
//! selector parts that are names and `["key"]` for the others, drops redundant parentheses and
//! double negations. Two expressions with the same canonical form select the same entries, so
//! it serves as a cache key for filtered renderings; parsing it gives the same tree back.

use std::fmt;

/// A parsed (not yet validated) filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// True when any operand is (two or more operands, none of them an `Or`).
    Or(Vec<Expr>),
    /// True when every operand is (two or more operands, none of them an `And`).
    And(Vec<Expr>),
    /// True when the operand is false (never directly another `Not`).
    Not(Box<Expr>),
    /// One comparison of a selected field.
    Match(Match),
}

/// One comparison: `Selector op Value`, `Value in Selector` or `Selector is [not] empty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub selector: Selector,
    pub op: Op,
    /// The value, for every operator except `is empty` / `is not empty`.
    pub value: Option<Value>,
}

/// A dotted path into the entry: `Service.Meta.env`, `Service.Meta["env"]` (the same path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The parts, map keys unquoted: `["Service", "Meta", "env"]`.
    pub path: Vec<String>,
    /// Byte offset of the selector in the expression.
    pub offset: usize,
}

/// A value as written, before it is converted to the selected field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The text: a quoted string without its quotes and escapes, a number as written, or a
    /// bare word (a selector-like path, joined with `.`, as go-bexpr does).
    pub raw: String,
    /// Byte offset of the value in the expression.
    pub offset: usize,
}

/// A matching operator. `contains` / `not contains` are `In` / `NotIn` with the operands
/// swapped, exactly as in go-bexpr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    /// The operator as written in the canonical form.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "==",
            Op::NotEqual => "!=",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::IsEmpty => "is empty",
            Op::IsNotEmpty => "is not empty",
            Op::Matches => "matches",
            Op::NotMatches => "not matches",
        }
    }

    /// Whether the operator compares against a value (all but the emptiness checks).
    pub fn takes_value(self) -> bool {
        !matches!(self, Op::IsEmpty | Op::IsNotEmpty)
    }

    /// The operator this one negates, if it is a negative one (`!=` → `==`).
    pub fn positive(self) -> (Op, bool) {
        match self {
            Op::NotEqual => (Op::Equal, true),
            Op::NotIn => (Op::In, true),
            Op::IsNotEmpty => (Op::IsEmpty, true),
            Op::NotMatches => (Op::Matches, true),
            op => (op, false),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `s` can be written as a bare selector part: an ASCII letter then letters, digits
/// and underscores, or only digits.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
        Some(c) if c.is_ascii_digit() => chars.all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

impl Selector {
    /// The path joined with `.`, as Consul names selectors in its messages (`Service.Meta.env`).
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.path.iter().enumerate() {
            if i == 0 && is_name(part) && !part.starts_with(|c: char| c.is_ascii_digit()) {
                f.write_str(part)?;
            } else if i > 0 && is_name(part) {
                write!(f, ".{part}")?;
            } else {
                f.write_str("[")?;
                write_string(f, part)?;
                f.write_str("]")?;
            }
        }
        Ok(())
    }
}

/// `s` as a double-quoted string literal the parser reads back as `s`.
pub(crate) fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.value, self.op) {
            (Some(value), Op::In | Op::NotIn) => {
                write_string(f, &value.raw)?;
                write!(f, " {} {}", self.op, self.selector)
            }
            (Some(value), op) => {
                write!(f, "{} {op} ", self.selector)?;
                write_string(f, &value.raw)
            }
            (None, op) => write!(f, "{} {op}", self.selector),
        }
    }
}

/// Binding strength, to know where the canonical form needs parentheses.
fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 0,
        Expr::And(_) => 1,
        Expr::Not(_) | Expr::Match(_) => 2,
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    if precedence(e) < min {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(items) | Expr::And(items) => {
                let (word, min) = match self {
                    Expr::Or(_) => (" or ", 1),
                    _ => (" and ", 2),
                };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    write_operand(f, item, min)?;
                }
                Ok(())
            }
            Expr::Not(inner) => {
                f.write_str("not ")?;
                write_operand(f, inner, 2)
            }
            Expr::Match(m) => write!(f, "{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &[&str], op: Op, value: Option<&str>) -> Expr {
        Expr::Match(Match {
            selector: Selector {
                path: path.iter().map(|s| s.to_string()).collect(),
                offset: 0,
            },
            op,
            value: value.map(|raw| Value {
                raw: raw.to_string(),
                offset: 0,
            }),
        })
    }

    #[test]
    fn canonical_text() {
        let e = Expr::Or(vec![
            Expr::And(vec![
                m(&["Service", "Meta", "env"], Op::Equal, Some("prod")),
                Expr::Not(Box::new(m(&["Tags"], Op::IsEmpty, None))),
            ]),
            Expr::Not(Box::new(Expr::Or(vec![
                m(&["Meta", "my-key"], Op::In, Some("a\"b")),
                m(&["Name"], Op::NotMatches, Some("^x\\d\n")),
            ]))),
        ]);
        assert_eq!(
            e.to_string(),
            r#"Service.Meta.env == "prod" and not Tags is empty or not ("a\"b" in Meta["my-key"] or Name not matches "^x\\d\n")"#
        );
        let e = Expr::And(vec![
            Expr::Or(vec![
                m(&["A"], Op::Equal, Some("1")),
                m(&["B"], Op::Equal, Some("\u{1}")),
            ]),
            m(&["C", "0"], Op::NotIn, Some("x")),
        ]);
        assert_eq!(
            e.to_string(),
            r#"(A == "1" or B == "\u0001") and "x" not in C.0"#
        );
    }

    #[test]
    fn op_negations() {
        assert_eq!(Op::NotMatches.positive(), (Op::Matches, true));
        assert_eq!(Op::In.positive(), (Op::In, false));
        assert!(!Op::IsNotEmpty.takes_value());
    }
}
