//! The parser: expression text to an [`Expr`], by recursive descent over the grammar in the
//! crate documentation. Input length, nesting depth and selector length are bounded, so no
//! input can exhaust the stack; every rejection is an [`Error`] with the position.

use crate::ast::{Expr, Match, Op, Selector, Value};
use crate::error::{Error, ErrorKind, quote};

/// Longest accepted expression, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest accepted nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Most parts in one selector (`a.b["c"]` has three).
pub const MAX_SELECTOR_PARTS: usize = 16;

/// Parses a filter expression. The result is not checked against any endpoint: see
/// [`Filter::parse`](crate::Filter::parse) for that.
pub fn parse(text: &str) -> Result<Expr, Error> {
    if text.len() > MAX_LENGTH {
        return Err(Error::new(
            text,
            0,
            ErrorKind::Limit,
            format!(
                "the expression is {} bytes long; at most {MAX_LENGTH} are allowed",
                text.len()
            ),
        ));
    }
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.peek().is_none() {
        return Err(p.error(ErrorKind::Syntax, "the expression is empty"));
    }
    let expr = p.or()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(expr),
        Some(b')') => Err(p.error(
            ErrorKind::Syntax,
            "unexpected \")\" without a matching \"(\"",
        )),
        Some(_) => Err(p.expected("expected \"and\", \"or\" or the end of the expression")),
    }
}

struct Parser<'s> {
    src: &'s str,
    pos: usize,
    depth: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// go-bexpr's number literal: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`.
fn is_number(tok: &str) -> bool {
    let digits = tok.strip_prefix('-').unwrap_or(tok);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let int_ok = int == "0"
        || (!int.is_empty() && !int.starts_with('0') && int.bytes().all(|b| b.is_ascii_digit()));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    int_ok && frac_ok
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn ws_end(&self, mut at: usize) -> usize {
        while self.peek_at(at).is_some_and(is_ws) {
            at += 1;
        }
        at
    }

    /// The word (letters, digits, `_`) starting at `at`, possibly empty.
    fn word_at(&self, at: usize) -> &'s str {
        let bytes = self.src.as_bytes();
        let mut end = at;
        while end < bytes.len() && is_word_byte(bytes[end]) {
            end += 1;
        }
        &self.src[at..end]
    }

    /// The next word after any whitespace, and where it starts; the position does not move.
    fn peek_word(&self) -> (usize, &'s str) {
        let at = self.ws_end(self.pos);
        (at, self.word_at(at))
    }

    /// Consumes the keyword `w` if it is the next word.
    fn eat_word(&mut self, w: &str) -> bool {
        let (at, word) = self.peek_word();
        if word == w {
            self.pos = at + w.len();
            true
        } else {
            false
        }
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(self.src, self.pos, kind, message)
    }

    fn error_at(&self, at: usize, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(self.src, at, kind, message)
    }

    /// What comes next, for "found ..." in messages.
    fn found(&self, at: usize) -> String {
        match self.peek_at(at) {
            None => "the end of the expression".to_string(),
            Some(b) if is_word_byte(b) => quote(self.word_at(at)),
            Some(b'"' | b'`') => "a string".to_string(),
            Some(_) => {
                let c = self.src[at..].chars().next().unwrap_or(' ');
                quote(c.encode_utf8(&mut [0; 4]))
            }
        }
    }

    /// A syntax error at the next token: `what, found X`.
    fn expected(&self, what: &str) -> Error {
        let at = self.ws_end(self.pos);
        self.error_at(
            at,
            ErrorKind::Syntax,
            format!("{what}, found {}", self.found(at)),
        )
    }

    /// Fails unless an operand follows the keyword or parenthesis just read.
    fn need_operand(&self, after: &str) -> Result<(), Error> {
        let at = self.ws_end(self.pos);
        match self.peek_at(at) {
            None | Some(b')') => {
                Err(self.expected(&format!("expected an expression after {}", quote(after))))
            }
            Some(_) => Ok(()),
        }
    }

    fn enter(&mut self, at: usize) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                at,
                ErrorKind::Limit,
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, Error> {
        self.chain("or", Self::and)
    }

    fn and(&mut self) -> Result<Expr, Error> {
        self.chain("and", Self::unary)
    }

    /// `operand { word operand }` for `word` `or` or `and`, as one flat list: an operand that is
    /// itself a (parenthesised) list of the same operator joins it.
    fn chain(
        &mut self,
        word: &str,
        operand: fn(&mut Self) -> Result<Expr, Error>,
    ) -> Result<Expr, Error> {
        let or = word == "or";
        let mut items = Vec::new();
        loop {
            match operand(self)? {
                Expr::Or(inner) if or => items.extend(inner),
                Expr::And(inner) if !or => items.extend(inner),
                e => items.push(e),
            }
            if !self.eat_word(word) {
                break;
            }
            self.need_operand(word)?;
        }
        Ok(match items.len() {
            1 => items.swap_remove(0),
            _ if or => Expr::Or(items),
            _ => Expr::And(items),
        })
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        let (at, word) = self.peek_word();
        if word != "not" {
            return self.primary();
        }
        self.pos = at + word.len();
        self.enter(at)?;
        self.need_operand("not")?;
        let inner = self.unary()?;
        self.depth -= 1;
        Ok(match inner {
            Expr::Not(e) => *e,
            e => Expr::Not(Box::new(e)),
        })
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        self.skip_ws();
        if self.peek() != Some(b'(') {
            return self.matcher().map(Expr::Match);
        }
        let open = self.pos;
        self.pos += 1;
        self.enter(open)?;
        self.need_operand("(")?;
        let expr = self.or()?;
        self.skip_ws();
        if self.peek() != Some(b')') {
            let at = Error::new(self.src, open, ErrorKind::Syntax, "");
            return Err(self.expected(&format!(
                "expected \"and\", \"or\" or \")\" to close the \"(\" at {}:{}",
                at.line(),
                at.column()
            )));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(expr)
    }

    /// One matching expression, in any of its three forms.
    fn matcher(&mut self) -> Result<Match, Error> {
        self.skip_ws();
        match self.peek() {
            Some(b'"' | b'`') => {
                let value = self.quoted_value()?;
                self.value_first(value)
            }
            Some(b'-' | b'0'..=b'9') => {
                let value = self.number()?;
                self.value_first(value)
            }
            Some(b) if b.is_ascii_alphabetic() => {
                let offset = self.pos;
                let path = self.path()?;
                self.after_path(path, offset)
            }
            None | Some(b')') => Err(self.expected("expected an expression")),
            Some(_) => Err(self.error(
                ErrorKind::Syntax,
                format!(
                    "unexpected {}; an expression starts with a selector, a value or \"(\"",
                    self.found(self.pos)
                ),
            )),
        }
    }

    /// After a path: an operator that makes it the selector, or `in` / `not in` that make it a
    /// bare-word value.
    fn after_path(&mut self, path: Vec<String>, offset: usize) -> Result<Match, Error> {
        let at = self.ws_end(self.pos);
        let rest = &self.src[at..];
        let selector = |path| Selector { path, offset };
        let symbol = if rest.starts_with("==") {
            Some(Op::Equal)
        } else if rest.starts_with("!=") {
            Some(Op::NotEqual)
        } else {
            None
        };
        if let Some(op) = symbol {
            self.pos = at + 2;
            let value = self.value(op.as_str())?;
            return Ok(Match {
                selector: selector(path),
                op,
                value: Some(value),
            });
        }
        let word = self.word_at(at);
        let (op, after) = match word {
            "contains" => {
                self.pos = at + word.len();
                (Op::In, "contains")
            }
            "matches" => {
                self.pos = at + word.len();
                (Op::Matches, "matches")
            }
            "in" => {
                self.pos = at + word.len();
                let value = Value {
                    raw: path.join("."),
                    offset,
                };
                return self.selector_after(value, Op::In, "in");
            }
            "is" => {
                self.pos = at + word.len();
                let op = if self.eat_word("empty") {
                    Op::IsEmpty
                } else if self.eat_word("not") && self.eat_word("empty") {
                    Op::IsNotEmpty
                } else {
                    return Err(self.expected("expected \"empty\" or \"not empty\" after \"is\""));
                };
                return Ok(Match {
                    selector: selector(path),
                    op,
                    value: None,
                });
            }
            "not" => {
                self.pos = at + word.len();
                let (next_at, next) = self.peek_word();
                self.pos = next_at + next.len();
                match next {
                    "in" => {
                        let value = Value {
                            raw: path.join("."),
                            offset,
                        };
                        return self.selector_after(value, Op::NotIn, "not in");
                    }
                    "contains" => (Op::NotIn, "not contains"),
                    "matches" => (Op::NotMatches, "not matches"),
                    _ => {
                        self.pos = next_at;
                        return Err(self.expected(
                            "expected \"in\", \"contains\" or \"matches\" after \"not\"",
                        ));
                    }
                }
            }
            _ if rest.starts_with('=') => {
                return Err(self.error_at(
                    at,
                    ErrorKind::Syntax,
                    "\"=\" is not an operator; use \"==\"",
                ));
            }
            _ => {
                return Err(self.expected(&format!(
                    "expected an operator (==, !=, contains, matches, is empty, ...) after {}",
                    quote(&path.join("."))
                )));
            }
        };
        let value = self.value(after)?;
        Ok(Match {
            selector: selector(path),
            op,
            value: Some(value),
        })
    }

    /// `Value in Selector` / `Value not in Selector`, after the value.
    fn value_first(&mut self, value: Value) -> Result<Match, Error> {
        let (op, after) = if self.eat_word("in") {
            (Op::In, "in")
        } else if self.peek_word().1 == "not" {
            let save = self.pos;
            self.eat_word("not");
            if !self.eat_word("in") {
                self.pos = save;
                return Err(self.expected(&format!(
                    "expected \"in\" or \"not in\" after the value {}",
                    quote(&value.raw)
                )));
            }
            (Op::NotIn, "not in")
        } else {
            return Err(self.expected(&format!(
                "expected \"in\" or \"not in\" after the value {}",
                quote(&value.raw)
            )));
        };
        self.selector_after(value, op, after)
    }

    fn selector_after(&mut self, value: Value, op: Op, after: &str) -> Result<Match, Error> {
        self.skip_ws();
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(self.expected(&format!("expected a selector after {}", quote(after))));
        }
        let offset = self.pos;
        let path = self.path()?;
        Ok(Match {
            selector: Selector { path, offset },
            op,
            value: Some(value),
        })
    }

    /// A value after the operator `after`: a quoted string, a number or a bare word.
    fn value(&mut self, after: &str) -> Result<Value, Error> {
        self.skip_ws();
        match self.peek() {
            Some(b'"' | b'`') => self.quoted_value(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) if b.is_ascii_alphabetic() => {
                let offset = self.pos;
                let path = self.path()?;
                if let Some(b) = self.peek().filter(|&b| !is_ws(b) && b != b')') {
                    let end = self.src[offset..]
                        .find(|c: char| c.is_ascii_whitespace() || c == ')')
                        .map_or(self.src.len(), |n| offset + n);
                    let c = self.src[self.pos..].chars().next().unwrap_or(b as char);
                    return Err(self.error(
                        ErrorKind::Syntax,
                        format!(
                            "unexpected {} in a bare value; quote it: {}",
                            quote(c.encode_utf8(&mut [0; 4])),
                            quote(&self.src[offset..end])
                        ),
                    ));
                }
                Ok(Value {
                    raw: path.join("."),
                    offset,
                })
            }
            _ => Err(self.expected(&format!("expected a value after {}", quote(after)))),
        }
    }

    fn quoted_value(&mut self) -> Result<Value, Error> {
        let offset = self.pos;
        let raw = self.string()?;
        Ok(Value { raw, offset })
    }

    fn number(&mut self) -> Result<Value, Error> {
        let offset = self.pos;
        let end = self.src[offset..]
            .find(|c: char| c.is_ascii_whitespace() || c == ')')
            .map_or(self.src.len(), |n| offset + n);
        let token = &self.src[offset..end];
        if !is_number(token) {
            return Err(self.error(
                ErrorKind::Syntax,
                format!(
                    "invalid number {}; quote values that are not numbers",
                    quote(token)
                ),
            ));
        }
        self.pos = end;
        Ok(Value {
            raw: token.to_string(),
            offset,
        })
    }

    /// A selector-shaped path: a name, then `.name`, `.123` or `["key"]` parts.
    fn path(&mut self) -> Result<Vec<String>, Error> {
        let start = self.pos;
        let first = self.word_at(self.pos);
        self.pos += first.len();
        let mut parts = vec![first.to_string()];
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b.is_ascii_alphabetic() => {}
                        Some(b'0'..=b'9') => {
                            let digits = self.src[self.pos..]
                                .find(|c: char| !c.is_ascii_digit())
                                .map_or(&self.src[self.pos..], |n| {
                                    &self.src[self.pos..self.pos + n]
                                });
                            self.pos += digits.len();
                            parts.push(digits.to_string());
                            continue;
                        }
                        _ => return Err(self.expected("expected a name after \".\"")),
                    }
                    let name = self.word_at(self.pos);
                    self.pos += name.len();
                    parts.push(name.to_string());
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if !matches!(self.peek(), Some(b'"' | b'`')) {
                        return Err(self.expected("expected a quoted map key after \"[\""));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.peek() != Some(b']') {
                        return Err(self.expected("expected \"]\" after the map key"));
                    }
                    self.pos += 1;
                    parts.push(key);
                }
                _ => break,
            }
            if parts.len() > MAX_SELECTOR_PARTS {
                return Err(self.error_at(
                    start,
                    ErrorKind::Limit,
                    format!("a selector has at most {MAX_SELECTOR_PARTS} parts"),
                ));
            }
        }
        Ok(parts)
    }

    /// A double-quoted string (Go escapes) or a backtick raw string (no escapes; carriage
    /// returns dropped, as Go does), at the current position.
    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let quote_char = self.peek();
        self.pos += 1;
        if quote_char == Some(b'`') {
            let Some(len) = self.src[self.pos..].find('`') else {
                return Err(self.error_at(
                    start,
                    ErrorKind::Syntax,
                    "unterminated string: no closing \"`\"",
                ));
            };
            let text = self.src[self.pos..self.pos + len].replace('\r', "");
            self.pos += len + 1;
            return Ok(text);
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.error_at(
                        start,
                        ErrorKind::Syntax,
                        "unterminated string: no closing '\"'",
                    ));
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\n') => {
                    return Err(self.error(
                        ErrorKind::Syntax,
                        "newline in a string; write it as \\n or use a `raw string`",
                    ));
                }
                Some(b'\\') => self.escape(&mut out, start)?,
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| {
            self.error_at(
                start,
                ErrorKind::Syntax,
                "the string's escapes do not form valid UTF-8",
            )
        })
    }

    /// One escape sequence (the position is at its backslash), as Go's strconv.Unquote reads
    /// it inside double quotes.
    fn escape(&mut self, out: &mut Vec<u8>, string_start: usize) -> Result<(), Error> {
        let at = self.pos;
        self.pos += 1;
        let Some(c) = self.src[self.pos..].chars().next() else {
            return Err(self.error_at(
                string_start,
                ErrorKind::Syntax,
                "unterminated string: no closing '\"'",
            ));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let bad = |p: &Self, why: &str| {
            let mut end = p.pos.min(p.src.len());
            while !p.src.is_char_boundary(end) {
                end -= 1;
            }
            let seq: String = p.src[at + 1..end]
                .chars()
                .flat_map(char::escape_default)
                .collect();
            p.error_at(
                at,
                ErrorKind::Syntax,
                format!("invalid escape sequence \\{seq} in a string{why}"),
            )
        };
        match c {
            'x' | 'u' | 'U' => {
                let n = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let digits = self.src.get(self.pos..self.pos + n).unwrap_or("");
                if digits.len() != n || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let present = self.src[self.pos..]
                        .bytes()
                        .take(n)
                        .take_while(u8::is_ascii_hexdigit)
                        .count();
                    self.pos += present;
                    return Err(bad(self, &format!(": needs {n} hex digits")));
                }
                self.pos += n;
                let v = u32::from_str_radix(digits, 16).map_err(|_| bad(self, ""))?;
                if c == 'x' {
                    out.push(v as u8);
                } else {
                    let ch =
                        char::from_u32(v).ok_or_else(|| bad(self, ": not a Unicode code point"))?;
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            '0'..='7' => {
                let digits = self.src.get(at + 1..at + 4).unwrap_or("");
                let is_octal = |b: &u8| (b'0'..=b'7').contains(b);
                if digits.len() != 3 || !digits.bytes().all(|b| is_octal(&b)) {
                    self.pos = at
                        + 1
                        + self.src[at + 1..]
                            .bytes()
                            .take(3)
                            .take_while(is_octal)
                            .count();
                    return Err(bad(self, ": needs 3 octal digits"));
                }
                self.pos = at + 4;
                let v = u32::from_str_radix(digits, 8).map_err(|_| bad(self, ""))?;
                let byte = u8::try_from(v).map_err(|_| bad(self, ": above \\377"))?;
                out.push(byte);
            }
            _ => {
                return Err(bad(
                    self,
                    "; write \\\\ for a backslash, or use a `raw string`",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_literals() {
        for ok in ["0", "1", "-1", "10", "1.5", "-0.25", "0.0"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1.2.3", "1e5", "0x1F", "--1", "1_000",
        ] {
            assert!(!is_number(bad), "{bad}");
        }
    }
}
