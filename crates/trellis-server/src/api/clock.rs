//! Wall-clock times as Consul prints them: Go's `time.Time.String()` of a UTC time, and
//! RFC 3339. The calendar is the `time` crate's.

use std::time::SystemTime;
use time::OffsetDateTime;

/// Now as Go prints a UTC `time.Time` (Consul's `Timestamp`): `2026-12-01 13:05:10 +0000 UTC`.
pub fn now_utc() -> String {
    go_utc(OffsetDateTime::now_utc())
}

fn go_utc(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `time` in RFC 3339 at second precision, UTC (`2026-12-01T13:05:10Z`), as Go's JSON prints a
/// UTC time rounded to the second.
pub fn rfc3339(time: SystemTime) -> String {
    let t = OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn format_utc(secs: i64) -> String {
        go_utc(OffsetDateTime::from_unix_timestamp(secs).unwrap())
    }

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
