//! Go-syntax durations ("10s", "1m30s", "500ms") as Consul accepts them, or integer nanoseconds.

use std::time::Duration;

/// Parses a Go duration string: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
/// A bare "0" is allowed, as in Go. Negative durations are rejected.
///
/// The arithmetic is exact, in integer nanoseconds: each number's integer part times its unit,
/// plus its fractional digits scaled by the unit, truncated to whole nanoseconds as Go does
/// ("1.5ns" is 1ns). A total above `i64::MAX` nanoseconds (Go's limit, about 292 years) is out
/// of range.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {text:?}"));
    }
    let out_of_range = || format!("duration {text:?} out of range");
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        let (whole, fraction) = match rest[..number_len].split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (&rest[..number_len], ""),
        };
        // At least one digit, and at most one '.': "1.5", "1." and ".5" are numbers, "." and
        // "1.2.3" are not.
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(format!("invalid duration {text:?}"));
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        let whole = decimal(whole).ok_or_else(out_of_range)?;
        total += whole * unit + fraction_of(fraction, unit);
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
    }
    let nanos = u64::try_from(total).map_err(|_| out_of_range())?;
    Ok(Duration::from_nanos(nanos))
}

/// Go's limit: `time.Duration` is an `i64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// The value of a string of ASCII digits, or `None` above [`MAX_NANOS`] (any such integer part
/// is out of range whatever its unit, and the bound keeps `value * unit` well inside `u128`).
fn decimal(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        let value = value * 10 + u128::from(digit - b'0');
        (value <= MAX_NANOS).then_some(value)
    })
}

/// Every unit is below 10^13 ns, so 13 fractional digits at a time keep `unit * chunk` exact
/// in a `u128`.
const CHUNK_DIGITS: usize = 13;

/// `floor(unit * 0.<digits>)` exactly, for any number of digits. With `t` the value of the
/// digits after a chunk `c` (scaled by the unit), the value from `c` on is `(unit * c + t) /
/// 10^13`, and its floor only needs `floor(t)`: so the chunks are folded from the last one.
fn fraction_of(digits: &str, unit: u128) -> u128 {
    digits
        .as_bytes()
        .chunks(CHUNK_DIGITS)
        .rev()
        .fold(0, |carry, chunk| {
            let mut value = chunk
                .iter()
                .fold(0u128, |v, digit| v * 10 + u128::from(digit - b'0'));
            // A short last chunk stands for its digits followed by zeros.
            for _ in chunk.len()..CHUNK_DIGITS {
                value *= 10;
            }
            (unit * value + carry) / 10u128.pow(CHUNK_DIGITS as u32)
        })
}

/// Formats a duration the way Go's `time.Duration.String()` does for whole units ("10s", "1m30s").
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return trim_float(nanos as f64 / 1e3, "µs");
    }
    if nanos < 1_000_000_000 {
        return trim_float(nanos as f64 / 1e6, "ms");
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = (nanos % 60_000_000_000) as f64 / 1e9;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&trim_float(seconds, "s"));
    out
}

fn trim_float(value: f64, unit: &str) -> String {
    let text = format!("{value:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("120000ms"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "10", "abc", "10x", "-5s", "s", "1..2s", "ms10", ".s", "1.2.3s", "1s.", "5s10",
            "+0",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }

    fn nanos(text: &str) -> Result<u128, String> {
        parse_go_duration(text).map(|d| d.as_nanos())
    }

    #[test]
    fn numbers_with_dots() {
        assert_eq!(nanos(".5s"), Ok(500_000_000));
        assert_eq!(nanos("1.s"), Ok(1_000_000_000));
        assert_eq!(nanos("+1.5m"), Ok(90_000_000_000));
        assert_eq!(nanos(" 10s "), Ok(10_000_000_000));
    }

    #[test]
    fn fractions_are_exact_in_nanoseconds() {
        assert_eq!(nanos("1.000000001s"), Ok(1_000_000_001));
        assert_eq!(nanos("0.3s"), Ok(300_000_000));
        assert_eq!(nanos("0.1h"), Ok(360_000_000_000));
        assert_eq!(nanos("1.0000000000001h"), Ok(3_600_000_000_000));
        assert_eq!(nanos("0.000000001s"), Ok(1));
        assert_eq!(nanos("1.1µs1.1ms"), Ok(1_100 + 1_100_000));
        // Integers beyond f64's 2^53 keep every nanosecond.
        assert_eq!(nanos("9007199254740993ns"), Ok(9_007_199_254_740_993));
        assert_eq!(
            nanos("1000000000000000001ns"),
            Ok(1_000_000_000_000_000_001)
        );
        assert_eq!(nanos("00000000000000000000000000001s"), Ok(1_000_000_000));
    }

    #[test]
    fn sub_nanosecond_parts_are_truncated_as_go_does() {
        assert_eq!(nanos("1.5ns"), Ok(1));
        assert_eq!(nanos("0.9999999999ns"), Ok(0));
        assert_eq!(nanos("1.0000000005s"), Ok(1_000_000_000));
        // However many digits: f64 would round this up to 2s.
        assert_eq!(
            nanos("1.999999999999999999999999999999999s"),
            Ok(1_999_999_999)
        );
        // A carry out of the fraction's far digits (0.99...9 of an hour, 40 nines) still
        // stays below the next nanosecond.
        let hour = format!("0.{}h", "9".repeat(40));
        assert_eq!(nanos(&hour), Ok(3_599_999_999_999));
        assert_eq!(nanos("0.000000000001h"), Ok(3), "3.6ns");
        assert_eq!(nanos("0.0000000000025000000000000h"), Ok(9), "exactly 9ns");
        // 12.96ns from the first 13 digits; the 14th carries it past 13ns.
        assert_eq!(nanos("0.00000000000362h"), Ok(13), "13.032ns");
    }

    #[test]
    fn range_ends_at_i64_max_nanoseconds() {
        assert_eq!(
            nanos("2562047h47m16.854775807s"),
            Ok(i64::MAX as u128),
            "Go's largest duration"
        );
        assert_eq!(nanos("9223372036854775807ns"), Ok(i64::MAX as u128));
        for over in [
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999999999999999999999999h",
            "9223372036854775807ns1ns",
        ] {
            let error = parse_go_duration(over).expect_err(over);
            assert!(error.contains("out of range"), "{over}: {error}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}
