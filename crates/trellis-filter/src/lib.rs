//! Consul's `?filter=` expression language (the one [go-bexpr] implements), as a pure library:
//! a parser, per-endpoint selector schemas, and an evaluator over the server's own structs.
//!
//! # Using it for an endpoint
//!
//! ```
//! use trellis_filter::{Field, Filter, Selectable, schema};
//!
//! struct Entry { name: String, tags: Vec<String> }
//!
//! impl Selectable for Entry {
//!     fn select(&self, path: &[&str]) -> Field<'_> {
//!         match path {
//!             ["ServiceName"] => Field::from(&self.name),
//!             ["ServiceTags"] => Field::list(&self.tags),
//!             _ => Field::Missing, // reads as the field's zero value
//!         }
//!     }
//! }
//!
//! // Once per request (or per distinct filter): a syntax or schema error is a 400.
//! let filter = Filter::parse(r#"ServiceName matches "^web" and "v2" in ServiceTags"#,
//!                            &schema::CATALOG_SERVICE)?;
//! // Then per entry:
//! let entry = Entry { name: "web-eu".into(), tags: vec!["v2".into()] };
//! assert!(filter.matches(&entry));
//!
//! let err = Filter::parse("Foo == bar", &schema::CATALOG_SERVICE).unwrap_err();
//! assert_eq!(err.to_string(), r#"1:1: Selector "Foo" is not valid"#);
//! # Ok::<(), trellis_filter::Error>(())
//! ```
//!
//! An absent or empty `filter` parameter means "no filter"; [`Filter::parse`] rejects empty
//! text, so the server checks for it first. `filter.to_string()` is a canonical form, the same
//! for expressions that differ only in spelling, to key cached renderings.
//!
//! # Grammar
//!
//! ```text
//! expression  = or
//! or          = and { "or" and }
//! and         = not { "and" not }
//! not         = "not" not | primary
//! primary     = "(" or ")" | match
//! match       = selector ( "==" | "!=" ) value
//!             | selector [ "not" ] ( "contains" | "matches" ) value
//!             | selector "is" [ "not" ] "empty"
//!             | value [ "not" ] "in" selector
//! selector    = name { "." ( name | digits ) | "[" string "]" }
//! value       = string | number | bare-word
//! bare-word   = selector                       (its parts joined with ".")
//! name        = letter { letter | digit | "_" }    (ASCII)
//! number      = [ "-" ] ( "0" | nonzero { digit } ) [ "." digit { digit } ]
//! string      = '"' { char | escape } '"'      (Go escapes: \a \b \f \n \r \t \v \\ \"
//!                                                \xHH \ooo \uHHHH \UHHHHHHHH; no raw newline)
//!             | "`" { any char but "`" } "`"   (raw: no escapes, carriage returns dropped)
//! ```
//!
//! Keywords are lowercase and case-sensitive; whitespace (space, tab, CR, LF) separates
//! tokens. Precedence, loosest first: `or`, `and`, `not`. `contains` is `in` with the operands
//! swapped. A number must be followed by whitespace, `)` or the end.
//!
//! # Semantics (go-bexpr's)
//!
//! | selected field | `==` / `!=` | `in` / `contains` | `matches` | `is empty` |
//! |---|---|---|---|---|
//! | string | exact, case-sensitive | substring | regular expression, unanchored | `""` |
//! | integer | after Go `ParseInt(v, 0, 64)` | — | — | — |
//! | boolean | after Go `ParseBool(v)` | — | — | — |
//! | list of strings | — | an element | — | no elements |
//! | map | — | a key | — | no keys |
//! | list of objects | — | — | — | no elements |
//!
//! A selector through a list of objects (`Checks.Status`) holds when the comparison (negated
//! operators included) holds for *any* element. A missing map key (`Meta.nope`) makes `==`,
//! `in`, `matches` and `is not empty` false, and their negations true; any other field the
//! entry does not have reads as its zero value. Unknown selectors, operators a field does not
//! support and values that do not convert are errors when the filter is parsed, never while
//! evaluating it; evaluation cannot fail.
//!
//! # Limits
//!
//! At most [`MAX_LENGTH`] bytes, [`MAX_DEPTH`] nested parentheses / `not`,
//! [`MAX_SELECTOR_PARTS`] parts per selector, [`MAX_REGEXES`] regular expressions, each
//! compiled within [`REGEX_SIZE_LIMIT`] bytes.
//!
//! [go-bexpr]: https://github.com/hashicorp/go-bexpr

mod ast;
mod coerce;
mod error;
mod filter;
mod parse;
pub mod schema;
mod value;

pub use ast::{Expr, Match, Op, Selector, Value};
pub use error::{Error, ErrorKind};
pub use filter::{Filter, MAX_REGEXES, REGEX_SIZE_LIMIT};
pub use parse::{MAX_DEPTH, MAX_LENGTH, MAX_SELECTOR_PARTS, parse};
pub use schema::{FieldDef, FieldType, Schema};
pub use value::{Field, Selectable};
