//! Hostile input: random bytes (alone or spliced into valid filters) and random token
//! sequences never panic, accepted expressions survive a round trip through their canonical
//! form, and pathological inputs are refused quickly by the limits instead of exhausting the
//! stack or memory.

mod common;

use common::{Check, HealthEntry, Node, Service, map, strings};
use std::time::{Duration, Instant};
use trellis_filter::{ErrorKind, Filter, MAX_LENGTH, parse, schema};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn entries() -> Vec<HealthEntry> {
    let full = HealthEntry {
        node: Node {
            node: "n1".into(),
            datacenter: "dc1".into(),
            meta: map(&[("k", "v"), ("x", "")]),
            ..Node::default()
        },
        service: Service {
            service: "web".into(),
            tags: strings(&["x", "y"]),
            meta: map(&[("k", "x")]),
            port: 1,
            ..Service::default()
        },
        checks: vec![
            Check {
                status: "passing".into(),
                service_tags: strings(&["x"]),
                ..Check::default()
            },
            Check {
                status: "critical".into(),
                ..Check::default()
            },
        ],
    };
    vec![full, HealthEntry::default()]
}

/// Valid filters that random bytes are spliced into, so that some mutated texts still parse
/// and get evaluated (text made of random bytes alone never parses).
const SEEDS: &[&str] = &[
    "Service.Service == web",
    "\"x\" in Service.Tags",
    "Checks.Status == passing and Service.Port == 1",
    "Service.Meta.k matches \"^x\"",
    "not (Node.Node is empty) or Service.Meta[\"k\"] != ``",
];

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let specials = b"()[]\"`\\.=!-_ \t\n\r0123456789";
    let entries = entries();
    let mut accepted = 0;
    for round in 0..20_000 {
        let random_byte = |rng: &mut Rng| match rng.below(10) {
            0..=4 => b' ' + rng.below(95) as u8,
            5..=7 => *rng.pick(specials),
            _ => rng.next() as u8,
        };
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(80);
            (0..len).map(|_| random_byte(&mut rng)).collect()
        } else {
            // A valid filter with a few bytes overwritten.
            let mut bytes = rng.pick(SEEDS).as_bytes().to_vec();
            for _ in 0..rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] = random_byte(&mut rng);
            }
            bytes
        };
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse(&text);
        for schema in schema::ALL {
            if let Ok(filter) = Filter::parse(&text, schema) {
                accepted += 1;
                for e in &entries {
                    let _ = filter.matches(e);
                }
            }
        }
    }
    // the generator is not entirely useless: a few random strings are valid somewhere
    assert!(accepted < 20_000 * schema::ALL.len());
    assert!(
        accepted > 1_000,
        "only {accepted} accepted: evaluation was hardly reached"
    );
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "(",
    ")",
    "not",
    "and",
    "or",
    "==",
    "!=",
    "in",
    "not in",
    "contains",
    "not contains",
    "matches",
    "not matches",
    "is empty",
    "is not empty",
    "is",
    "empty",
    "Service.Service",
    "Service.Tags",
    "Service.Meta",
    "Service.Meta.k",
    "Service.Meta[\"k\"]",
    "Service.Port",
    "Service.EnableTagOverride",
    "Checks",
    "Checks.Status",
    "Checks.ServiceTags",
    "Node.Meta.x",
    "Node.Node",
    "Service.TaggedAddresses.lan.Port",
    "Service.Proxy.Upstreams.DestinationName",
    "Bogus",
    "\"x\"",
    "\"web\"",
    "`w.b`",
    "\"\"",
    "x",
    "web",
    "1",
    "-1",
    "0",
    "true",
    "passing",
    "\"^w\"",
    "`[`",
    "\"\\u00e9\"",
    "\"\\q\"",
    "[",
    "]",
    ".",
    "=",
    "\"unterminated",
    "`",
];

/// Checks what holds for any text: no panic; when it parses, its canonical form parses to the
/// same canonical form and validates and selects exactly like the original.
fn round_trip(text: &str, entries: &[HealthEntry]) -> (bool, bool) {
    let Ok(expr) = parse(text) else {
        return (false, false);
    };
    let canonical = expr.to_string();
    let again = parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?} → {canonical:?} does not parse: {e}"));
    assert_eq!(again.to_string(), canonical, "{text:?}");
    let filter = Filter::parse(text, &schema::HEALTH_SERVICE);
    let twin = Filter::parse(&canonical, &schema::HEALTH_SERVICE);
    match (filter, twin) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.to_string(), canonical);
            for e in entries {
                assert_eq!(a.matches(e), b.matches(e), "{text:?} vs {canonical:?}");
            }
            (true, true)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.kind(), b.kind(), "{text:?} vs {canonical:?}");
            (true, false)
        }
        (a, b) => panic!("{text:?}: {a:?} but its canonical form {canonical:?}: {b:?}"),
    }
}

#[test]
fn random_token_sequences_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let entries = entries();
    let (mut parsed, mut valid) = (0, 0);
    for _ in 0..30_000 {
        let n = 1 + rng.below(14);
        let mut text = String::new();
        for i in 0..n {
            if i > 0 && rng.below(8) != 0 {
                text.push(' ');
            }
            let token = TOKENS[rng.below(TOKENS.len())];
            text.push_str(token);
        }
        let (p, v) = round_trip(&text, &entries);
        parsed += usize::from(p);
        valid += usize::from(v);
    }
    // Few random sequences parse, but enough that the round trip is exercised.
    assert!(parsed > 100 && valid > 20, "parsed {parsed}, valid {valid}");
}

const SELECTORS: &[&str] = &[
    "Service.Service",
    "Service.Tags",
    "Service.Meta",
    "Service.Meta.k",
    "Service.Meta[\"k\"]",
    "Service.Meta[`a b`]",
    "Service.Port",
    "Service.EnableTagOverride",
    "Checks",
    "Checks.Status",
    "Checks.ServiceTags",
    "Node.Meta.x",
    "Node.Node",
    "Node.TaggedAddresses",
    "Service.TaggedAddresses.lan.Port",
    "Service.Proxy.Upstreams.DestinationName",
    "Service.Weights",
    "Bogus",
];
const VALUES: &[&str] = &[
    "\"x\"",
    "\"web\"",
    "`w.b`",
    "\"\"",
    "x",
    "web",
    "1",
    "-1",
    "0",
    "1.5",
    "true",
    "passing",
    "\"^w\"",
    "`[`",
    "\"\\u00e9\"",
    "\"a\\\"b\"",
    "v.x",
];
const BINARY: &[&str] = &[
    "==",
    "!=",
    "contains",
    "not contains",
    "matches",
    "not matches",
];

fn random_expr(rng: &mut Rng, depth: usize) -> String {
    let choice = if depth == 0 { 0 } else { rng.below(6) };
    match choice {
        0..=1 => {
            let selector = rng.pick(SELECTORS);
            let value = rng.pick(VALUES);
            match rng.below(4) {
                0 => format!("{value} {} {selector}", rng.pick(&["in", "not in"])),
                1 => format!("{selector} {}", rng.pick(&["is empty", "is not empty"])),
                _ => format!("{selector} {} {value}", rng.pick(BINARY)),
            }
        }
        2 => format!("not {}", random_expr(rng, depth - 1)),
        3 => format!("({})", random_expr(rng, depth - 1)),
        4 => format!(
            "{} and {}",
            random_expr(rng, depth - 1),
            random_expr(rng, depth - 1)
        ),
        _ => format!(
            "{} or {}",
            random_expr(rng, depth - 1),
            random_expr(rng, depth - 1)
        ),
    }
}

#[test]
fn random_expressions_round_trip_through_the_canonical_form() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let entries = entries();
    let (mut parsed, mut valid) = (0, 0);
    let total = 5_000;
    for _ in 0..total {
        let depth = rng.below(5);
        let text = random_expr(&mut rng, depth);
        let (p, v) = round_trip(&text, &entries);
        parsed += usize::from(p);
        valid += usize::from(v);
    }
    assert!(parsed > total * 9 / 10, "parsed {parsed} of {total}");
    assert!(valid > total / 10, "valid {valid} of {total}");
}

#[test]
fn pathological_inputs_are_refused_quickly() {
    let started = Instant::now();
    let limit = |text: &str| {
        let e = parse(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
        assert!(!e.to_string().contains('\n'));
    };
    limit(&"(".repeat(1_000_000));
    limit(&"(".repeat(MAX_LENGTH));
    limit(&format!("{}a == 1", "not ".repeat(1_000)));
    limit(&format!("{}a == 1", "(not ".repeat(600)));
    limit(&format!("{} == 1", "a.".repeat(1_000) + "a"));
    for text in [
        "\"".repeat(MAX_LENGTH),
        "\\".repeat(MAX_LENGTH),
        "a[".repeat(MAX_LENGTH / 2),
        format!("a == \"{}", "\\u".repeat(2_000)),
        format!("a == `{}", "x".repeat(4_000)),
        "a == 1 or ".repeat(409),
        "-".repeat(MAX_LENGTH),
        "é".repeat(MAX_LENGTH / 2),
    ] {
        assert!(parse(&text).is_err(), "{}", &text[..20]);
    }

    // regular expressions are linear-time (RE2 semantics) and size-bounded
    let filter = Filter::parse(
        "Service.Service matches `(a*)*b` or Service.Service matches `(x+x+)+y`",
        &schema::HEALTH_SERVICE,
    )
    .unwrap();
    let mut e = HealthEntry::default();
    e.service.service = "a".repeat(100_000);
    assert!(!filter.matches(&e));
    let too_big = Filter::parse(
        "Service.Service matches `((a{100}){100}){100}`",
        &schema::HEALTH_SERVICE,
    )
    .unwrap_err();
    assert_eq!(too_big.kind(), ErrorKind::Regex, "{too_big}");

    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_large_valid_filter_evaluates() {
    let text = (0..100)
        .map(|i| format!("Service.Meta.k{i} == v or"))
        .collect::<Vec<_>>()
        .join(" ")
        + " Checks.Status == critical";
    assert!(text.len() <= MAX_LENGTH);
    let filter = Filter::parse(&text, &schema::HEALTH_SERVICE).unwrap();
    let entries = entries();
    assert!(filter.matches(&entries[0]));
    assert!(!filter.matches(&entries[1]));
}
