//! A filter validated against one endpoint's schema — values converted to the fields' types,
//! regular expressions compiled once — and its evaluation against entries.

use crate::ast::{Expr, Match, Op};
use crate::coerce::{IntError, parse_bool, parse_int};
use crate::error::{Error, ErrorKind, quote};
use crate::parse::{MAX_SELECTOR_PARTS, parse};
use crate::schema::{FieldType, Schema};
use crate::value::{Field, Selectable};
use regex::{Regex, RegexBuilder};
use std::fmt;

/// Most `matches` / `not matches` in one expression.
pub const MAX_REGEXES: usize = 32;
/// Size limit of one compiled regular expression (and of its lazy DFA cache), in bytes.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// A filter expression checked against an endpoint's [`Schema`] and ready to evaluate.
///
/// ```
/// use trellis_filter::{Field, Filter, schema};
///
/// let filter = Filter::parse(r#"Service.Meta.env == "prod" and "web" in Service.Tags"#, &schema::HEALTH_SERVICE)?;
/// let matched = filter.matches_with(|path| match path {
///     ["Service", "Meta", "env"] => Field::Str("prod"),
///     ["Service", "Tags"] => Field::List(vec!["web", "v2"]),
///     _ => Field::Missing,
/// });
/// assert!(matched);
/// # Ok::<(), trellis_filter::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Filter {
    text: String,
    expr: Expr,
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Test(Test),
}

/// One compiled comparison.
#[derive(Debug, Clone)]
struct Test {
    path: Box<[String]>,
    /// The operator without its negation (`!=` is `==` negated).
    op: Op,
    negate: bool,
    ty: FieldType,
    fan_out: usize,
    via_map_key: bool,
    value: Literal,
}

/// A value converted for its field.
#[derive(Debug, Clone)]
enum Literal {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
    Regex(Regex),
}

impl Filter {
    /// Parses `text` and validates it against `schema`: every selector must exist, support its
    /// operator and accept its value; `matches` patterns are compiled here.
    pub fn parse(text: &str, schema: &Schema) -> Result<Filter, Error> {
        let expr = parse(text)?;
        let mut regexes = 0;
        let root = compile(text, &expr, schema, &mut regexes)?;
        Ok(Filter {
            text: text.to_string(),
            expr,
            root,
        })
    }

    /// Whether `entry` passes the filter.
    pub fn matches<S: Selectable + ?Sized>(&self, entry: &S) -> bool {
        self.matches_with(|path| entry.select(path))
    }

    /// Whether the entry that `select` reads from passes the filter (see
    /// [`Selectable::select`] for what `select` answers).
    pub fn matches_with<'a, F>(&self, select: F) -> bool
    where
        F: Fn(&[&str]) -> Field<'a>,
    {
        eval(&self.root, &select)
    }

    /// The expression as it was given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

/// The canonical form (see [`Expr`]'s `Display`): equal for filters that select the same
/// entries however they were written, so it can key a cache of filtered renderings.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

fn compile(src: &str, expr: &Expr, schema: &Schema, regexes: &mut usize) -> Result<Node, Error> {
    let mut all = |items: &[Expr]| {
        items
            .iter()
            .map(|e| compile(src, e, schema, regexes))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match expr {
        Expr::Or(items) => Node::Or(all(items)?),
        Expr::And(items) => Node::And(all(items)?),
        Expr::Not(inner) => Node::Not(Box::new(compile(src, inner, schema, regexes)?)),
        Expr::Match(m) => Node::Test(compile_match(src, m, schema, regexes)?),
    })
}

fn compile_match(
    src: &str,
    m: &Match,
    schema: &Schema,
    regexes: &mut usize,
) -> Result<Test, Error> {
    let path = &m.selector.path;
    let at = m.selector.offset;
    let dotted = quote(&m.selector.dotted());
    let resolved = schema.resolve(path).map_err(|n| {
        Error::new(
            src,
            at,
            ErrorKind::UnknownSelector,
            format!(
                "Selector {} is not valid{}",
                quote(&path[..n.max(1)].join(".")),
                hint(schema, &path[..n.max(1)])
            ),
        )
    })?;
    let ty = resolved.ty;
    if !ty.operators().contains(&m.op) {
        let message = match ty {
            FieldType::Struct(fields) => format!(
                "selector {dotted} is an object; select one of its fields ({})",
                fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ),
            _ => format!(
                "operator {} is not valid for selector {dotted} ({}); it supports: {}",
                quote(m.op.as_str()),
                ty.describe(),
                ty.operators()
                    .iter()
                    .map(|op| op.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(Error::new(src, at, ErrorKind::Operator, message));
    }
    let (op, negate) = m.op.positive();
    let value = match (&m.value, op, ty) {
        (None, _, _) => Literal::None,
        (Some(v), Op::Matches, _) => {
            *regexes += 1;
            if *regexes > MAX_REGEXES {
                return Err(Error::new(
                    src,
                    v.offset,
                    ErrorKind::Limit,
                    format!("an expression may hold at most {MAX_REGEXES} regular expressions"),
                ));
            }
            let re = RegexBuilder::new(&v.raw)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    Error::new(
                        src,
                        v.offset,
                        ErrorKind::Regex,
                        format!(
                            "invalid regular expression {}: {}",
                            quote(&v.raw),
                            regex_reason(&e)
                        ),
                    )
                })?;
            Literal::Regex(re)
        }
        (Some(v), _, FieldType::Int) => match parse_int(&v.raw) {
            Ok(n) => Literal::Int(n),
            Err(e) => {
                let why = match e {
                    IntError::Syntax => "is not an integer",
                    IntError::Range => "is out of range for an integer",
                };
                return Err(Error::new(
                    src,
                    v.offset,
                    ErrorKind::Value,
                    format!("value {} for selector {dotted} {why}", quote(&v.raw)),
                ));
            }
        },
        (Some(v), _, FieldType::Bool) => match parse_bool(&v.raw) {
            Some(b) => Literal::Bool(b),
            None => {
                return Err(Error::new(
                    src,
                    v.offset,
                    ErrorKind::Value,
                    format!(
                        "value {} for selector {dotted} is not a boolean (true or false)",
                        quote(&v.raw)
                    ),
                ));
            }
        },
        (Some(v), _, _) => Literal::Str(v.raw.clone()),
    };
    if path.len() > MAX_SELECTOR_PARTS {
        // The parser already refuses these; evaluation relies on it.
        return Err(Error::new(src, at, ErrorKind::Limit, "selector too long"));
    }
    Ok(Test {
        path: path.clone().into_boxed_slice(),
        op,
        negate,
        ty,
        fan_out: resolved.fan_out,
        via_map_key: resolved.via_map_key,
        value,
    })
}

/// "; selectors are case-sensitive: did you mean ...?" when the last part differs only in case.
fn hint(schema: &Schema, bad: &[String]) -> String {
    let Some((last, parent)) = bad.split_last() else {
        return String::new();
    };
    let fields = if parent.is_empty() {
        schema.fields
    } else {
        match schema.resolve(parent).map(|r| r.ty) {
            Ok(FieldType::Struct(fields) | FieldType::StructList(fields)) => fields,
            _ => return String::new(),
        }
    };
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(last))
        .map(|f| {
            let mut fixed = parent.to_vec();
            fixed.push(f.name.to_string());
            format!(
                "; selectors are case-sensitive: did you mean {}?",
                quote(&fixed.join("."))
            )
        })
        .unwrap_or_default()
}

/// The one-line reason from the regex crate's (multi-line) error text.
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than {limit} bytes")
        }
        other => {
            let text = other.to_string();
            text.lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .or_else(|| text.lines().next())
                .unwrap_or("invalid")
                .to_string()
        }
    }
}

fn eval<'a, F>(node: &Node, select: &F) -> bool
where
    F: Fn(&[&str]) -> Field<'a>,
{
    match node {
        Node::Or(items) => items.iter().any(|n| eval(n, select)),
        Node::And(items) => items.iter().all(|n| eval(n, select)),
        Node::Not(inner) => !eval(inner, select),
        Node::Test(test) => {
            let mut parts = [""; MAX_SELECTOR_PARTS];
            for (slot, part) in parts.iter_mut().zip(test.path.iter()) {
                *slot = part;
            }
            let field = select(&parts[..test.path.len()]);
            test.eval(&field, test.fan_out)
        }
    }
}

impl Test {
    /// The result for `field`, `levels` lists of objects above the selected field.
    fn eval(&self, field: &Field<'_>, levels: usize) -> bool {
        if levels > 0 {
            return match field {
                // go-bexpr's implicit "any" over a list of objects; none when empty.
                Field::Each(items) => items.iter().any(|item| self.eval(item, levels - 1)),
                Field::Missing => false,
                single => self.eval(single, levels - 1),
            };
        }
        if let Field::Each(items) = field
            && !matches!(self.ty, FieldType::StructList(_))
        {
            return items.iter().any(|item| self.eval(item, 0));
        }
        self.holds(field) != self.negate
    }

    /// The result of the operator without its negation.
    fn holds(&self, field: &Field<'_>) -> bool {
        match field {
            // A map key that is not there: only "is empty" holds (go-bexpr's
            // NotPresentDisposition); any other absent field reads as its zero value.
            Field::Missing if self.via_map_key => self.op == Op::IsEmpty,
            Field::Missing => self.holds(&zero(self.ty)),
            Field::Str(s) => self.on_str(s),
            Field::String(s) => self.on_str(s),
            Field::Int(n) => {
                self.op == Op::Equal
                    && match &self.value {
                        Literal::Int(v) => n == v,
                        Literal::Str(raw) => parse_int(raw) == Ok(*n),
                        _ => false,
                    }
            }
            Field::Bool(b) => {
                self.op == Op::Equal
                    && match &self.value {
                        Literal::Bool(v) => b == v,
                        Literal::Str(raw) => parse_bool(raw) == Some(*b),
                        _ => false,
                    }
            }
            Field::List(items) | Field::Map(items) => match (self.op, &self.value) {
                (Op::In, Literal::Str(v)) => items.iter().any(|item| item == v),
                (Op::IsEmpty, _) => items.is_empty(),
                _ => false,
            },
            Field::Each(items) => self.op == Op::IsEmpty && items.is_empty(),
        }
    }

    fn on_str(&self, s: &str) -> bool {
        match (self.op, &self.value) {
            (Op::Equal, Literal::Str(v)) => s == v,
            (Op::Equal, Literal::Int(v)) => parse_int(s) == Ok(*v),
            (Op::Equal, Literal::Bool(v)) => parse_bool(s) == Some(*v),
            (Op::In, Literal::Str(v)) => s.contains(v.as_str()),
            (Op::Matches, Literal::Regex(re)) => re.is_match(s),
            (Op::IsEmpty, _) => s.is_empty(),
            _ => false,
        }
    }
}

/// What an absent field of type `ty` reads as: Go's zero value.
fn zero(ty: FieldType) -> Field<'static> {
    match ty {
        FieldType::String => Field::Str(""),
        FieldType::Int => Field::Int(0),
        FieldType::Bool => Field::Bool(false),
        FieldType::StringList => Field::List(Vec::new()),
        FieldType::StringMap | FieldType::StructMap(_) => Field::Map(Vec::new()),
        FieldType::StructList(_) => Field::Each(Vec::new()),
        // No operator applies to an object itself; validation rejects such tests.
        FieldType::Struct(_) => Field::Each(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{AGENT_SERVICES, HEALTH_SERVICE};

    #[test]
    fn regex_errors_are_one_line() {
        let e = Filter::parse(r#"Service matches "(""#, &AGENT_SERVICES).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Regex);
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(
            e.to_string()
                .starts_with("1:17: invalid regular expression \"(\": "),
            "{e}"
        );
        let e = Filter::parse(r#"Service matches `\w{1000}{1000}`"#, &AGENT_SERVICES).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Regex, "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn case_hint() {
        let e = Filter::parse("service == x", &AGENT_SERVICES).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"1:1: Selector "service" is not valid; selectors are case-sensitive: did you mean "Service"?"#
        );
        let e = Filter::parse("Checks.status == x", &HEALTH_SERVICE).unwrap_err();
        assert!(
            e.to_string().ends_with(r#"did you mean "Checks.Status"?"#),
            "{e}"
        );
        let e = Filter::parse("Nope == x", &AGENT_SERVICES).unwrap_err();
        assert_eq!(e.to_string(), r#"1:1: Selector "Nope" is not valid"#);
    }
}
