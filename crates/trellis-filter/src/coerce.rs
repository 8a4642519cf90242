//! Conversion of a value's text to a field's type, by the rules of Go's `strconv` that go-bexpr
//! applies: `ParseInt(s, 0, 64)` (sign, `0x`/`0o`/`0b` prefixes, a leading `0` for octal, `_`
//! between digits) and `ParseBool` (`1 t T TRUE true True`, `0 f F FALSE false False`).

/// Why a text is not an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntError {
    Syntax,
    Range,
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
pub(crate) fn parse_int(s: &str) -> Result<i64, IntError> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits)?;
    let cutoff = 1u64 << 63;
    if negative {
        match magnitude {
            m if m < cutoff => Ok(-(m as i64)),
            m if m == cutoff => Ok(i64::MIN),
            _ => Err(IntError::Range),
        }
    } else {
        i64::try_from(magnitude).map_err(|_| IntError::Range)
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`.
fn parse_uint(s: &str) -> Result<u64, IntError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(IntError::Syntax);
    }
    let (base, body) = match bytes {
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &bytes[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &bytes[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &bytes[2..]),
        [b'0', rest @ ..] => (8, rest),
        _ => (10, bytes),
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &b in body {
        if b == b'_' {
            underscores = true;
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            b'a'..=b'z' => u64::from(b - b'a') + 10,
            b'A'..=b'Z' => u64::from(b - b'A') + 10,
            _ => return Err(IntError::Syntax),
        };
        if digit >= base {
            return Err(IntError::Syntax);
        }
        n = n
            .checked_mul(base)
            .and_then(|n| n.checked_add(digit))
            .ok_or(IntError::Range)?;
    }
    if underscores && !underscore_ok(s) {
        return Err(IntError::Syntax);
    }
    Ok(n)
}

/// Whether `_` only separates digits (or follows a base prefix), as Go requires.
fn underscore_ok(s: &str) -> bool {
    let mut bytes = s.as_bytes();
    if let [b'-' | b'+', rest @ ..] = bytes {
        bytes = rest;
    }
    // '^' start, '0' after a digit (or prefix), '_' after an underscore, '!' after anything else
    let mut saw = b'^';
    let mut hex = false;
    let mut i = 0;
    if let [b'0', p, ..] = bytes
        && matches!(p.to_ascii_lowercase(), b'b' | b'o' | b'x')
    {
        i = 2;
        saw = b'0';
        hex = p.eq_ignore_ascii_case(&b'x');
    }
    for &b in &bytes[i..] {
        if b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()) {
            saw = b'0';
        } else if b == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_go_reads_them() {
        let ok = [
            ("0", 0),
            ("8080", 8080),
            ("-1", -1),
            ("+7", 7),
            ("0x1F", 31),
            ("0X1f", 31),
            ("0o17", 15),
            ("017", 15),
            ("0b101", 5),
            ("1_000", 1000),
            ("0x_1F", 31),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (text, want) in ok {
            assert_eq!(parse_int(text), Ok(want), "{text}");
        }
        let syntax = [
            "", "-", "abc", "1.5", "08", "0x", "1__0", "_1", "1_", "0b2", "12a", " 1", "--1",
        ];
        for text in syntax {
            assert_eq!(parse_int(text), Err(IntError::Syntax), "{text}");
        }
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
        ] {
            assert_eq!(parse_int(text), Err(IntError::Range), "{text}");
        }
    }

    #[test]
    fn booleans_as_go_reads_them() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        for bad in ["yes", "tRUE", "", "2"] {
            assert_eq!(parse_bool(bad), None);
        }
    }
}
