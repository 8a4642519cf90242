//! Wall-clock times as Consul prints them, without a date library: Go's `time.Time.String()` of
//! a UTC time, and RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now as Go prints a UTC `time.Time` (Consul's `Timestamp`): `2026-12-01 13:05:10 +0000 UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `time` in RFC 3339 at second precision, UTC (`2026-12-01T13:05:10Z`), as Go's JSON prints a
/// UTC time rounded to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let go = format_utc(secs);
    // "YYYY-MM-DD hh:mm:ss +0000 UTC" -> "YYYY-MM-DDThh:mm:ssZ"
    format!("{}T{}Z", &go[..10], &go[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_go_prints_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_utc(1_502_160_910), "2017-08-08 02:55:10 +0000 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
    }

    #[test]
    fn rfc3339_is_go_json_utc() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_502_160_910)),
            "2017-08-08T02:55:10Z"
        );
    }
}
