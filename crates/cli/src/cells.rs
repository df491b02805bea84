//! Table cells of the account commands: times shortened to the second in UTC, "-" for nothing.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// An RFC 3339 time as `2025-01-02 03:04:05Z`; anything else as it is.
pub fn time(s: &str) -> String {
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => s.to_string(),
    }
}

/// An optional time, "-" when absent.
pub fn opt_time(s: Option<&str>) -> String {
    s.map(time).unwrap_or_else(|| "-".into())
}

/// An optional value, "-" when absent or empty.
pub fn opt(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shortened_to_utc_seconds() {
        assert_eq!(super::time("2025-01-02T03:04:05.123456Z"), "2025-01-02 03:04:05Z");
        assert_eq!(super::time("2025-01-02T05:04:05+02:00"), "2025-01-02 03:04:05Z");
        assert_eq!(super::time("later"), "later");
        assert_eq!(super::opt_time(None), "-");
    }
}
