//! The parser: every operator and value form, precedence, quoting and escapes, the canonical
//! form, and errors with their positions.

use trellis_filter::{ErrorKind, Expr, MAX_DEPTH, MAX_LENGTH, Match, Op, parse};

fn canonical(text: &str) -> String {
    match parse(text) {
        Ok(e) => e.to_string(),
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

fn only_match(text: &str) -> Match {
    match parse(text) {
        Ok(Expr::Match(m)) => m,
        other => panic!("{text:?}: expected one match, got {other:?}"),
    }
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(e) => panic!("{text:?} should not parse, got {e}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_operator() {
    let cases = [
        ("Name == \"x\"", &["Name"][..], Op::Equal, Some("x")),
        ("Name != \"x\"", &["Name"], Op::NotEqual, Some("x")),
        ("\"x\" in Tags", &["Tags"], Op::In, Some("x")),
        ("\"x\" not in Tags", &["Tags"], Op::NotIn, Some("x")),
        ("Tags contains \"x\"", &["Tags"], Op::In, Some("x")),
        ("Tags not contains \"x\"", &["Tags"], Op::NotIn, Some("x")),
        ("Tags is empty", &["Tags"], Op::IsEmpty, None),
        ("Tags is not empty", &["Tags"], Op::IsNotEmpty, None),
        ("Name matches \"^a\"", &["Name"], Op::Matches, Some("^a")),
        (
            "Name not matches \"^a\"",
            &["Name"],
            Op::NotMatches,
            Some("^a"),
        ),
    ];
    for (text, path, op, value) in cases {
        let m = only_match(text);
        assert_eq!(m.selector.path, path, "{text}");
        assert_eq!(m.op, op, "{text}");
        assert_eq!(m.value.as_ref().map(|v| v.raw.as_str()), value, "{text}");
    }
}

#[test]
fn selectors() {
    let m = only_match(r#"Service.Meta["my-key"] == x"#);
    assert_eq!(m.selector.path, ["Service", "Meta", "my-key"]);
    assert_eq!(m.selector.offset, 0);
    assert_eq!(
        only_match("Service.Meta.env == x").selector.path,
        ["Service", "Meta", "env"]
    );
    assert_eq!(
        only_match("Meta[ `a b` ] == x").selector.path,
        ["Meta", "a b"]
    );
    assert_eq!(
        only_match(r#"Meta["a\"b"] == x"#).selector.path,
        ["Meta", "a\"b"]
    );
    assert_eq!(
        only_match("List.0.Name == x").selector.path,
        ["List", "0", "Name"]
    );
    assert_eq!(only_match("a_1.B2 == x").selector.path, ["a_1", "B2"]);
    let m = only_match("  \"v\" in  Node.Meta");
    assert_eq!(
        (m.selector.offset, m.value.map(|v| v.offset)),
        (10, Some(2))
    );
}

#[test]
fn values() {
    let raw = |text: &str| only_match(text).value.map(|v| v.raw).unwrap_or_default();
    assert_eq!(raw("Port == 8080"), "8080");
    assert_eq!(raw("Port == -1"), "-1");
    assert_eq!(raw("Port == 0"), "0");
    assert_eq!(raw("W == 1.5"), "1.5");
    assert_eq!(raw("Status == passing"), "passing");
    assert_eq!(raw("B == true"), "true");
    assert_eq!(raw("X == a.b"), "a.b", "a bare dotted word keeps its dots");
    assert_eq!(
        raw(r#"X == a["b c"]"#),
        "a.b c",
        "as go-bexpr joins a selector value"
    );
    assert_eq!(
        raw("X == and"),
        "and",
        "a keyword where a value is expected is a word"
    );
}

#[test]
fn bare_value_first() {
    let m = only_match("web in Service.Tags");
    assert_eq!((m.op, m.value.unwrap().raw), (Op::In, "web".to_string()));
    let m = only_match("v1.2 not in Tags");
    assert_eq!(
        (m.op, m.value.unwrap().raw),
        (Op::NotIn, "v1.2".to_string())
    );
    let m = only_match("-3 in Ports");
    assert_eq!(m.value.unwrap().raw, "-3");
    let m = only_match("`x` in Tags");
    assert_eq!(m.value.unwrap().raw, "x");
}

#[test]
fn strings_and_escapes() {
    let raw = |text: &str| only_match(text).value.map(|v| v.raw).unwrap_or_default();
    assert_eq!(raw(r#"N == "a b""#), "a b");
    assert_eq!(raw(r#"N == """#), "");
    assert_eq!(
        raw(r#"N == "\a\b\f\n\r\t\v\\\"""#),
        "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\""
    );
    assert_eq!(raw(r#"N == "\x41\101\u00e9\U0001F600""#), "AAé😀");
    assert_eq!(raw(r#"N == "\xc3\xa9""#), "é", "byte escapes forming UTF-8");
    assert_eq!(raw("N == \"é ünïcode\""), "é ünïcode");
    assert_eq!(
        raw(r"N == `raw \n \x`"),
        r"raw \n \x",
        "no escapes in raw strings"
    );
    assert_eq!(
        raw("N == `two\r\nlines`"),
        "two\nlines",
        "CR dropped as Go does"
    );
    assert_eq!(raw("N == `say \"hi\"`"), "say \"hi\"");
}

#[test]
fn whitespace_is_free_around_symbols() {
    let want = r#"Name == "x" and Port != "1""#;
    assert_eq!(canonical(r#"Name=="x" and Port!=1"#), want);
    assert_eq!(canonical("\n\tName ==\r\n\"x\"\tand\nPort   !=  1  "), want);
    assert_eq!(canonical(r#"(Name=="x")and(Port!=1)"#), want);
}

#[test]
fn precedence_not_and_or() {
    let a = || Box::new(only_match("a == 1"));
    let e = parse("a == 1 or b == 2 and not c == 3").unwrap();
    match &e {
        Expr::Or(items) => {
            assert_eq!(items.len(), 2);
            assert_eq!(items[0], Expr::Match(*a()));
            match &items[1] {
                Expr::And(inner) => assert!(matches!(inner[1], Expr::Not(_))),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    // `not` binds tighter than `and`, which binds tighter than `or`
    assert_eq!(
        canonical("not a == 1 and b == 2"),
        r#"not a == "1" and b == "2""#
    );
    assert!(matches!(
        parse("not a == 1 and b == 2").unwrap(),
        Expr::And(_)
    ));
    assert!(matches!(
        parse("not (a == 1 and b == 2)").unwrap(),
        Expr::Not(_)
    ));
    assert_eq!(
        canonical("(a == 1 or b == 2) and c == 3"),
        r#"(a == "1" or b == "2") and c == "3""#
    );
    // the documented example: <1> and not <2> or <3> == (<1> and (not <2>)) or <3>
    assert_eq!(
        strip_offsets(parse("a == 1 and not b == 2 or c == 3").unwrap()),
        strip_offsets(parse("( a == 1 and (not b == 2 )) or c == 3").unwrap())
    );
    // chains flatten; redundant parentheses and double negation go
    assert_eq!(
        canonical("a == 1 or (b == 2 or (c == 3))"),
        r#"a == "1" or b == "2" or c == "3""#
    );
    assert_eq!(canonical("((a == 1))"), r#"a == "1""#);
    assert_eq!(canonical("not not a == 1"), r#"a == "1""#);
    assert_eq!(canonical("not not not a == 1"), r#"not a == "1""#);
}

#[test]
fn canonical_form_round_trips() {
    let texts = [
        r#"Service.Meta["env"] == prod and not "web" in Service.Tags"#,
        "Checks.Status != passing or (Node.Node matches `^n[0-9]+$` and Port == \"0x1F\")",
        r#"Meta["we ird\n"] contains "\u0001" and Tags is not empty"#,
        "not (a == 1 or b == 2) and not c is empty",
        "x == `back\\slash` or y not matches \"\\\\d\"",
    ];
    for text in texts {
        let once = canonical(text);
        assert_eq!(canonical(&once), once, "{text}");
        assert_eq!(
            strip_offsets(parse(&once).unwrap()),
            strip_offsets(parse(text).unwrap()),
            "{text}"
        );
    }
    assert_eq!(
        canonical(r#"Tags contains x"#),
        canonical(r#""x" in Tags"#),
        "contains is in"
    );
    assert_eq!(
        canonical(r#"Meta.env == x"#),
        canonical(r#"Meta["env"] == "x""#)
    );
}

fn strip_offsets(e: Expr) -> Expr {
    match e {
        Expr::Or(v) => Expr::Or(v.into_iter().map(strip_offsets).collect()),
        Expr::And(v) => Expr::And(v.into_iter().map(strip_offsets).collect()),
        Expr::Not(e) => Expr::Not(Box::new(strip_offsets(*e))),
        Expr::Match(mut m) => {
            m.selector.offset = 0;
            if let Some(v) = m.value.as_mut() {
                v.offset = 0;
            }
            Expr::Match(m)
        }
    }
}

#[test]
fn errors_have_positions_and_reasons() {
    let cases = [
        ("", "1:1: the expression is empty"),
        ("   ", "1:4: the expression is empty"),
        (
            "Name ==",
            r#"1:8: expected a value after "==", found the end of the expression"#,
        ),
        (
            "Name == )",
            r#"1:9: expected a value after "==", found ")""#,
        ),
        (
            r#"Name == "x" and"#,
            r#"1:16: expected an expression after "and", found the end of the expression"#,
        ),
        (
            r#"Name == "x" or )"#,
            r#"1:16: expected an expression after "or", found ")""#,
        ),
        (
            "not",
            r#"1:4: expected an expression after "not", found the end of the expression"#,
        ),
        ("()", r#"1:2: expected an expression after "(", found ")""#),
        (
            r#"(Name == "x""#,
            r#"1:13: expected "and", "or" or ")" to close the "(" at 1:1, found the end of the expression"#,
        ),
        (
            r#"Name == "x")"#,
            r#"1:12: unexpected ")" without a matching "(""#,
        ),
        (
            r#"Name == "x" Port == 1"#,
            r#"1:13: expected "and", "or" or the end of the expression, found "Port""#,
        ),
        (r#"Name = "x""#, r#"1:6: "=" is not an operator; use "==""#),
        (
            r#"Name "x""#,
            r#"1:6: expected an operator (==, !=, contains, matches, is empty, ...) after "Name", found a string"#,
        ),
        (
            r#""x" == Name"#,
            r#"1:5: expected "in" or "not in" after the value "x", found "=""#,
        ),
        (
            r#""x" in"#,
            r#"1:7: expected a selector after "in", found the end of the expression"#,
        ),
        (
            r#""x" in "Tags""#,
            r#"1:8: expected a selector after "in", found a string"#,
        ),
        (
            "Name is full",
            r#"1:9: expected "empty" or "not empty" after "is", found "full""#,
        ),
        (
            r#"Name not foo "x""#,
            r#"1:10: expected "in", "contains" or "matches" after "not", found "foo""#,
        ),
        (
            r#"Name == "abc"#,
            r#"1:9: unterminated string: no closing '"'"#,
        ),
        ("Name == `abc", "1:9: unterminated string: no closing \"`\""),
        (
            "Name == \"a\nb\"",
            "1:11: newline in a string; write it as \\n or use a `raw string`",
        ),
        (
            r#"Name == "a\qb""#,
            r"1:11: invalid escape sequence \q in a string; write \\ for a backslash, or use a `raw string`",
        ),
        (
            r#"Name == "\x4""#,
            r"1:10: invalid escape sequence \x4 in a string: needs 2 hex digits",
        ),
        (
            r#"Name == "\uD800""#,
            r"1:10: invalid escape sequence \uD800 in a string: not a Unicode code point",
        ),
        (
            r#"Name == "\400""#,
            r"1:10: invalid escape sequence \400 in a string: above \377",
        ),
        (
            r#"Name == "\xff""#,
            r"1:9: the string's escapes do not form valid UTF-8",
        ),
        (
            "Port == 08",
            r#"1:9: invalid number "08"; quote values that are not numbers"#,
        ),
        (
            "Timeout == 10s",
            r#"1:12: invalid number "10s"; quote values that are not numbers"#,
        ),
        (
            "Service == web-1",
            r#"1:15: unexpected "-" in a bare value; quote it: "web-1""#,
        ),
        (
            "Meta[env] == x",
            r#"1:6: expected a quoted map key after "[", found "env""#,
        ),
        (
            r#"Meta["env" == x"#,
            r#"1:12: expected "]" after the map key, found "=""#,
        ),
        ("Meta. == x", r#"1:7: expected a name after ".", found "=""#),
        (
            "@",
            r#"1:1: unexpected "@"; an expression starts with a selector, a value or "(""#,
        ),
        (
            "Name == \"x\"\nand Port ==",
            r#"2:12: expected a value after "==", found the end of the expression"#,
        ),
        (
            "Name == \"é\" é",
            r#"1:13: expected "and", "or" or the end of the expression, found "é""#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text:?}");
    }
}

#[test]
fn every_error_is_one_line() {
    for text in [
        "Name == \"a\\\n\"",
        "Meta[\"\n",
        "\n\n)",
        "Name == \"\\\u{0}\"",
    ] {
        let message = error(text);
        assert!(!message.contains('\n'), "{text:?}: {message}");
    }
}

#[test]
fn limits() {
    let long = format!("Name == \"{}\"", "x".repeat(MAX_LENGTH));
    let e = parse(&long).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert!(e.to_string().contains("at most 4096"), "{e}");

    let fits = format!("Name == \"{}\"", "x".repeat(MAX_LENGTH - 10));
    assert_eq!(fits.len(), MAX_LENGTH);
    assert!(parse(&fits).is_ok());

    let nested = |n: usize| format!("{}a == 1{}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&nested(MAX_DEPTH)).is_ok());
    let e = parse(&nested(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit);
    assert_eq!(
        e.to_string(),
        "1:33: the expression nests deeper than 32 levels"
    );

    let nots = |n: usize| format!("{}a == 1", "not ".repeat(n));
    assert!(parse(&nots(MAX_DEPTH)).is_ok());
    assert_eq!(
        parse(&nots(MAX_DEPTH + 1)).unwrap_err().kind(),
        ErrorKind::Limit
    );

    // thousands of operands in a flat chain are fine (no recursion per operand)
    let chain = vec!["a == 1"; 400].join(" or ");
    assert!(chain.len() < MAX_LENGTH);
    match parse(&chain).unwrap() {
        Expr::Or(items) => assert_eq!(items.len(), 400),
        other => panic!("{other:?}"),
    }

    let parts = |n: usize| format!("{} == 1", vec!["a"; n].join("."));
    assert!(parse(&parts(16)).is_ok());
    let e = parse(&parts(17)).unwrap_err();
    assert_eq!(e.to_string(), "1:1: a selector has at most 16 parts");
}
