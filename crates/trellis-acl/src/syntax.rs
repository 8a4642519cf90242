//! The syntax of policy rules: a hand-written reader for the HCL subset Consul policies use and
//! a positioned JSON reader, both producing one tree that `rules.rs` interprets.
//!
//! HCL subset: comments (`#`, `//`, `/* */`); items `key = "string"`, `key = { body }` and
//! blocks `key "label"... { body }`; keys are identifiers or quoted strings; items may be
//! separated by newlines, commas or nothing at all (`{ policy = "read" intentions = "deny" }`).
//! JSON is read by its own small parser (not `serde_json::Value`) so that semantic errors can
//! point at a line and column, and duplicate keys are seen rather than silently collapsed.

use std::fmt;

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A syntax or semantic error at a position; rendered `line:col: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub msg: String,
}

impl SyntaxError {
    pub fn new(pos: Pos, msg: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.msg)
    }
}

/// One `key [labels] value` entry of a body (HCL) or one member of an object (JSON).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    pub key: String,
    pub pos: Pos,
    pub labels: Vec<(String, Pos)>,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Str(String, Pos),
    Object(Vec<Item>, Pos),
    List(Vec<Value>, Pos),
    /// A number, boolean, null or bare word: never valid in rules, kept for the error message.
    Other(String, Pos),
}

impl Value {
    pub fn pos(&self) -> Pos {
        match self {
            Value::Str(_, p) | Value::Object(_, p) | Value::List(_, p) | Value::Other(_, p) => *p,
        }
    }

    /// How the value reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Value::Str(s, _) => format!("string {s:?}"),
            Value::Object(..) => "an object".to_owned(),
            Value::List(..) => "a list".to_owned(),
            Value::Other(w, _) => format!("`{w}`"),
        }
    }
}

/// A character cursor that tracks line and column.
struct Cursor<'a> {
    rest: &'a str,
    line: u32,
    col: u32,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            rest: text,
            line: 1,
            col: 1,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.rest.chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Reads a double-quoted string (the opening quote is next), JSON/HCL escapes included.
    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos();
        self.bump();
        let mut out = String::new();
        loop {
            let at = self.pos();
            match self.bump() {
                None | Some('\n') => return Err(SyntaxError::new(start, "unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('u') => out.push(self.unicode_escape(at)?),
                    Some(c) => {
                        return Err(SyntaxError::new(
                            at,
                            format!("invalid escape \\{c} in string"),
                        ));
                    }
                    None => return Err(SyntaxError::new(start, "unterminated string")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self, at: Pos) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| SyntaxError::new(at, "invalid \\u escape in string"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn unicode_escape(&mut self, at: Pos) -> Result<char, SyntaxError> {
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            // A UTF-16 surrogate pair, as JSON writes characters outside the BMP.
            if self.bump() != Some('\\') || self.bump() != Some('u') {
                return Err(SyntaxError::new(at, "invalid \\u escape in string"));
            }
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(SyntaxError::new(at, "invalid \\u escape in string"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| SyntaxError::new(at, "invalid \\u escape in string"))
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if is_word_char(c) {
                w.push(c);
                self.bump();
            } else {
                break;
            }
        }
        w
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn describe_char(c: Option<char>) -> String {
    match c {
        None => "end of input".to_owned(),
        Some('\n') => "end of line".to_owned(),
        Some(c) => format!("'{c}'"),
    }
}

// ---------------------------------------------------------------------------------------------
// HCL

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Eq,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Eq => "'='".to_owned(),
            Tok::LBrace => "'{'".to_owned(),
            Tok::RBrace => "'}'".to_owned(),
            Tok::LBracket => "'['".to_owned(),
            Tok::RBracket => "']'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Eof => "end of input".to_owned(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, Pos)>, SyntaxError> {
    let mut cur = Cursor::new(text);
    let mut toks = Vec::new();
    loop {
        let pos = cur.pos();
        let Some(c) = cur.peek() else {
            toks.push((Tok::Eof, pos));
            return Ok(toks);
        };
        match c {
            c if c.is_whitespace() => {
                cur.bump();
            }
            '#' => skip_line(&mut cur),
            '/' if cur.peek2() == Some('/') => skip_line(&mut cur),
            '/' if cur.peek2() == Some('*') => {
                cur.bump();
                cur.bump();
                loop {
                    match cur.bump() {
                        None => return Err(SyntaxError::new(pos, "unterminated /* comment")),
                        Some('*') if cur.peek() == Some('/') => {
                            cur.bump();
                            break;
                        }
                        Some(_) => {}
                    }
                }
            }
            '"' => toks.push((Tok::Str(cur.string()?), pos)),
            '=' | '{' | '}' | '[' | ']' | ',' => {
                cur.bump();
                let tok = match c {
                    '=' => Tok::Eq,
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    _ => Tok::Comma,
                };
                toks.push((tok, pos));
            }
            c if is_word_char(c) => toks.push((Tok::Word(cur.word()), pos)),
            c => return Err(SyntaxError::new(pos, format!("unexpected character '{c}'"))),
        }
    }
}

fn skip_line(cur: &mut Cursor<'_>) {
    while let Some(c) = cur.peek() {
        if c == '\n' {
            break;
        }
        cur.bump();
    }
}

/// How deep blocks may nest: rules need three levels; the limit keeps hostile input from
/// exhausting the stack.
const MAX_DEPTH: usize = 32;

struct HclParser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    depth: usize,
}

impl HclParser {
    fn peek(&self) -> &(Tok, Pos) {
        // The token list always ends with Eof and `next` never moves past it.
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.peek().clone();
        if t.0 != Tok::Eof {
            self.at += 1;
        }
        t
    }

    /// A body up to `}` (when `open` is the position of its `{`) or to the end of input.
    fn body(&mut self, open: Option<Pos>) -> Result<Vec<Item>, SyntaxError> {
        if let Some(o) = open {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(SyntaxError::new(o, "blocks nested too deeply"));
            }
        }
        let items = self.items(open)?;
        if open.is_some() {
            self.depth -= 1;
        }
        Ok(items)
    }

    fn items(&mut self, open: Option<Pos>) -> Result<Vec<Item>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            let (tok, pos) = self.next();
            let key = match tok {
                Tok::Comma => continue,
                Tok::RBrace if open.is_some() => return Ok(items),
                Tok::Eof => {
                    return match open {
                        Some(o) => Err(SyntaxError::new(
                            pos,
                            format!("missing '}}' to close the block opened at {o}"),
                        )),
                        None => Ok(items),
                    };
                }
                Tok::Word(w) if w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => w,
                Tok::Str(s) => s,
                other => {
                    return Err(SyntaxError::new(
                        pos,
                        format!(
                            "expected a rule or attribute name, found {}",
                            other.describe()
                        ),
                    ));
                }
            };
            let mut labels = Vec::new();
            let value = loop {
                let (tok, tpos) = self.next();
                match tok {
                    Tok::Eq if labels.is_empty() => break self.value()?,
                    Tok::Str(l) => labels.push((l, tpos)),
                    Tok::LBrace => break Value::Object(self.body(Some(tpos))?, tpos),
                    other => {
                        let want = if labels.is_empty() {
                            format!("'=' or a block after {key:?}")
                        } else {
                            "'{' to open the block".to_owned()
                        };
                        return Err(SyntaxError::new(
                            tpos,
                            format!("expected {want}, found {}", other.describe()),
                        ));
                    }
                }
            };
            items.push(Item {
                key,
                pos,
                labels,
                value,
            });
        }
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        let (tok, pos) = self.next();
        match tok {
            Tok::Str(s) => Ok(Value::Str(s, pos)),
            Tok::LBrace => Ok(Value::Object(self.body(Some(pos))?, pos)),
            Tok::Word(w) => Ok(Value::Other(w, pos)),
            Tok::LBracket => {
                let mut vals = Vec::new();
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(SyntaxError::new(pos, "values nested too deeply"));
                }
                loop {
                    match self.peek().0 {
                        Tok::RBracket => {
                            self.next();
                            self.depth -= 1;
                            return Ok(Value::List(vals, pos));
                        }
                        Tok::Comma => {
                            self.next();
                        }
                        _ => vals.push(self.value()?),
                    }
                }
            }
            other => Err(SyntaxError::new(
                pos,
                format!("expected a value after '=', found {}", other.describe()),
            )),
        }
    }
}

/// Parses HCL-subset text into its top-level items.
pub(crate) fn parse_hcl(text: &str) -> Result<Vec<Item>, SyntaxError> {
    let toks = lex(text)?;
    HclParser {
        toks,
        at: 0,
        depth: 0,
    }
    .body(None)
}

// ---------------------------------------------------------------------------------------------
// JSON

struct JsonParser<'a> {
    cur: Cursor<'a>,
    depth: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.cur.peek().is_some_and(char::is_whitespace) {
            self.cur.bump();
        }
    }

    fn expect(&mut self, want: char) -> Result<(), SyntaxError> {
        self.ws();
        let pos = self.cur.pos();
        match self.cur.peek() {
            Some(c) if c == want => {
                self.cur.bump();
                Ok(())
            }
            other => Err(SyntaxError::new(
                pos,
                format!("expected '{want}', found {}", describe_char(other)),
            )),
        }
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        self.ws();
        let pos = self.cur.pos();
        if matches!(self.cur.peek(), Some('{' | '[')) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(SyntaxError::new(pos, "values nested too deeply"));
            }
            let v = self.compound(pos);
            self.depth -= 1;
            return v;
        }
        match self.cur.peek() {
            Some('"') => Ok(Value::Str(self.cur.string()?, pos)),
            Some(c) if c == '-' || c.is_ascii_alphanumeric() => {
                let mut w = String::new();
                while let Some(c) = self.cur.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.') {
                        w.push(c);
                        self.cur.bump();
                    } else {
                        break;
                    }
                }
                Ok(Value::Other(w, pos))
            }
            other => Err(SyntaxError::new(
                pos,
                format!("expected a JSON value, found {}", describe_char(other)),
            )),
        }
    }

    /// An object or a list; the caller saw its opening bracket.
    fn compound(&mut self, pos: Pos) -> Result<Value, SyntaxError> {
        match self.cur.peek() {
            Some('{') => {
                self.cur.bump();
                let mut items = Vec::new();
                self.ws();
                if self.cur.peek() == Some('}') {
                    self.cur.bump();
                    return Ok(Value::Object(items, pos));
                }
                loop {
                    self.ws();
                    let kpos = self.cur.pos();
                    if self.cur.peek() != Some('"') {
                        return Err(SyntaxError::new(
                            kpos,
                            format!(
                                "expected a quoted key, found {}",
                                describe_char(self.cur.peek())
                            ),
                        ));
                    }
                    let key = self.cur.string()?;
                    self.expect(':')?;
                    let value = self.value()?;
                    items.push(Item {
                        key,
                        pos: kpos,
                        labels: Vec::new(),
                        value,
                    });
                    self.ws();
                    let spos = self.cur.pos();
                    match self.cur.bump() {
                        Some(',') => {}
                        Some('}') => return Ok(Value::Object(items, pos)),
                        other => {
                            return Err(SyntaxError::new(
                                spos,
                                format!("expected ',' or '}}', found {}", describe_char(other)),
                            ));
                        }
                    }
                }
            }
            Some('[') => {
                self.cur.bump();
                let mut vals = Vec::new();
                self.ws();
                if self.cur.peek() == Some(']') {
                    self.cur.bump();
                    return Ok(Value::List(vals, pos));
                }
                loop {
                    vals.push(self.value()?);
                    self.ws();
                    let spos = self.cur.pos();
                    match self.cur.bump() {
                        Some(',') => {}
                        Some(']') => return Ok(Value::List(vals, pos)),
                        other => {
                            return Err(SyntaxError::new(
                                spos,
                                format!("expected ',' or ']', found {}", describe_char(other)),
                            ));
                        }
                    }
                }
            }
            other => Err(SyntaxError::new(
                pos,
                format!("expected a JSON value, found {}", describe_char(other)),
            )),
        }
    }
}

/// Parses JSON text (already known to be a valid JSON object) into the object's members.
pub(crate) fn parse_json(text: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut p = JsonParser {
        cur: Cursor::new(text),
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.cur.peek().is_some() {
        return Err(SyntaxError::new(
            p.cur.pos(),
            "trailing characters after the JSON object",
        ));
    }
    match v {
        Value::Object(items, _) => Ok(items),
        other => Err(SyntaxError::new(other.pos(), "expected a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    fn err(r: Result<Vec<Item>, SyntaxError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn hcl_attributes_and_blocks() {
        let items =
            parse_hcl("acl = \"write\"\nservice \"web\" {\n  policy = \"read\"\n}\n").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, "acl");
        assert_eq!(items[0].pos, p(1, 1));
        assert_eq!(items[0].value, Value::Str("write".into(), p(1, 7)));
        assert_eq!(items[1].key, "service");
        assert_eq!(items[1].labels, vec![("web".to_owned(), p(2, 9))]);
        let Value::Object(body, open) = &items[1].value else {
            panic!("not an object")
        };
        assert_eq!(*open, p(2, 15));
        assert_eq!(body[0].key, "policy");
        assert_eq!(body[0].pos, p(3, 3));
        assert_eq!(body[0].value, Value::Str("read".into(), p(3, 12)));
    }

    #[test]
    fn hcl_separators_single_line_and_empty_label() {
        let items =
            parse_hcl("key_prefix \"\" { policy = \"read\" }, node \"a\" { policy = \"read\", }")
                .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].labels[0].0, "");
        let items = parse_hcl("service \"w\" { policy = \"read\" intentions = \"deny\" }").unwrap();
        let Value::Object(body, _) = &items[0].value else {
            panic!("not an object")
        };
        assert_eq!(body.len(), 2);
    }

    #[test]
    fn hcl_comments() {
        let text = "# hash\n// slashes\n/* block\n comment */ acl = \"read\" # trailing\n\
                    operator /* inline */ = \"deny\" // trailing\n";
        let items = parse_hcl(text).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].pos, p(4, 13));
        assert_eq!(items[1].value, Value::Str("deny".into(), p(5, 25)));
        assert!(parse_hcl("").unwrap().is_empty());
        assert!(parse_hcl("  # only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn hcl_strings_and_escapes() {
        let items = parse_hcl(r#"key "a\"b\\c\u00e9\ud83d\ude00" { policy = "read" }"#).unwrap();
        assert_eq!(items[0].labels[0].0, "a\"b\\cé😀");
        // Columns count characters, not bytes.
        let items = parse_hcl("key \"é\" { policy = \"read\" }").unwrap();
        let Value::Object(body, _) = &items[0].value else {
            panic!("not an object")
        };
        assert_eq!(body[0].pos, p(1, 11));
    }

    #[test]
    fn hcl_errors_have_positions() {
        assert_eq!(err(parse_hcl("acl = \"read")), "1:7: unterminated string");
        assert_eq!(
            err(parse_hcl("acl = \"re\nad\"")),
            "1:7: unterminated string"
        );
        assert_eq!(err(parse_hcl("\n  /* x")), "2:3: unterminated /* comment");
        assert_eq!(
            err(parse_hcl("service \"web\" {\n policy = \"read\"\n")),
            "3:1: missing '}' to close the block opened at 1:15"
        );
        assert_eq!(
            err(parse_hcl("}")),
            "1:1: expected a rule or attribute name, found '}'"
        );
        assert_eq!(
            err(parse_hcl("acl \"read\"")),
            "1:11: expected '{' to open the block, found end of input"
        );
        assert_eq!(
            err(parse_hcl("acl read")),
            "1:5: expected '=' or a block after \"acl\", found `read`"
        );
        assert_eq!(
            err(parse_hcl("acl =")),
            "1:6: expected a value after '=', found end of input"
        );
        assert_eq!(
            err(parse_hcl("acl = \"a\\q\"")),
            "1:9: invalid escape \\q in string"
        );
        assert_eq!(err(parse_hcl("acl = @")), "1:7: unexpected character '@'");
        assert_eq!(
            err(parse_hcl("42 = \"x\"")),
            "1:1: expected a rule or attribute name, found `42`"
        );
        assert_eq!(
            err(parse_hcl("{}")),
            "1:1: expected a rule or attribute name, found '{'"
        );
    }

    #[test]
    fn hcl_other_values_are_kept_for_messages() {
        let items = parse_hcl("acl = true\nops = [\"a\", \"b\"]\nx = { y = \"z\" }").unwrap();
        assert_eq!(items[0].value, Value::Other("true".into(), p(1, 7)));
        assert!(matches!(&items[1].value, Value::List(v, _) if v.len() == 2));
        assert!(matches!(&items[2].value, Value::Object(v, _) if v.len() == 1));
    }

    #[test]
    fn json_members_with_positions() {
        let items = parse_json(
            "{\n  \"key_prefix\": {\"app/\": {\"policy\": \"write\"}},\n  \"acl\": \"read\"\n}",
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, "key_prefix");
        assert_eq!(items[0].pos, p(2, 3));
        assert_eq!(items[1].value, Value::Str("read".into(), p(3, 10)));
        let items = parse_json("{\"a\": [1, -2.5e3, true, null, {}], \"b\": {}}").unwrap();
        let Value::List(v, _) = &items[0].value else {
            panic!("not a list")
        };
        assert_eq!(v[0], Value::Other("1".into(), p(1, 8)));
        assert_eq!(v[1], Value::Other("-2.5e3".into(), p(1, 11)));
        assert!(parse_json("{}").unwrap().is_empty());
        // Duplicate keys are kept, so the interpreter can see them.
        assert_eq!(
            parse_json("{\"acl\": \"read\", \"acl\": \"write\"}")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn json_errors() {
        assert_eq!(err(parse_json("[]")), "1:1: expected a JSON object");
        assert_eq!(
            err(parse_json("{} x")),
            "1:4: trailing characters after the JSON object"
        );
        assert_eq!(
            err(parse_json("{\"a\" \"b\"}")),
            "1:6: expected ':', found '\"'"
        );
        assert_eq!(
            err(parse_json("{a: 1}")),
            "1:2: expected a quoted key, found 'a'"
        );
        assert_eq!(
            err(parse_json("{\"a\": 1 2}")),
            "1:9: expected ',' or '}', found '2'"
        );
        assert_eq!(
            err(parse_json("{\"a\": [1 2]}")),
            "1:10: expected ',' or ']', found '2'"
        );
        assert_eq!(
            err(parse_json("{\"a\": }")),
            "1:7: expected a JSON value, found '}'"
        );
    }
}
