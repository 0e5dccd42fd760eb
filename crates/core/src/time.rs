//! Instants and day arithmetic without panics on extreme inputs.

use chrono::{DateTime, TimeDelta, Utc};

/// A UTC instant; every time in the model is one.
pub type Timestamp = DateTime<Utc>;

/// Parses an RFC 3339 / ISO 8601 instant such as `2026-01-31T12:00:00.000Z`.
pub fn parse_instant(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses the end of an exception (`ami-sweeper:keep-until`, an `exceptions` entry's
/// `until`): an ISO date `2027-03-31`, kept through the end of that UTC day (the answer is
/// the next midnight, UTC), or an RFC 3339 instant. `None` when it is neither.
pub fn parse_until(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Some(t) = parse_instant(s) {
        return Some(t);
    }
    // Only the strict ten-character form: `2027-3-31` or `+2027-03-31` is not a date here.
    if s.len() != 10 {
        return None;
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    day.succ_opt()?.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
}

/// The instant `days` whole days before `now`, or `None` when that lies before
/// the representable range (so nothing can be that old).
pub fn days_before(now: Timestamp, days: u64) -> Option<Timestamp> {
    let days = i64::try_from(days).ok()?;
    now.checked_sub_signed(TimeDelta::try_days(days)?)
}

/// The instant `days` whole days after `now`, saturating at the representable end (a
/// retention that long never ends within the model's time).
pub fn days_after(now: Timestamp, days: u64) -> Timestamp {
    i64::try_from(days)
        .ok()
        .and_then(TimeDelta::try_days)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Serializes an instant as [`format_instant`] prints it.
pub fn ser_instant<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_instant(*t))
}

/// Formats an instant the way the reports print it: `2026-11-26T00:00:00Z`.
pub fn format_instant(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Serializes an optional instant as RFC 3339 (or null).
pub fn ser_opt_instant<S: serde::Serializer>(
    t: &Option<Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_instant(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_aws_cli_creation_dates() {
        let t = parse_instant("2026-01-31T12:00:00.000Z").unwrap();
        assert_eq!(format_instant(t), "2026-01-31T12:00:00Z");
        assert!(parse_instant("2026-01-31").is_none());
        assert!(parse_instant("yesterday").is_none());
    }

    #[test]
    fn an_until_date_keeps_through_the_end_of_its_utc_day() {
        let end = parse_instant("2027-04-01T00:00:00Z");
        assert_eq!(parse_until("2027-03-31"), end);
        assert_eq!(parse_until(" 2027-03-31 "), end);
        assert_eq!(
            parse_until("2028-02-29"),
            parse_instant("2028-03-01T00:00:00Z")
        );
        assert_eq!(
            parse_until("2027-03-31T12:00:00+02:00"),
            parse_instant("2027-03-31T10:00:00Z")
        );
        for bad in [
            "",
            "2027-02-29",
            "2027-3-31",
            "31/03/2027",
            "soon",
            "2027-03-31T25:00:00Z",
        ] {
            assert_eq!(parse_until(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_before_saturates_instead_of_panicking() {
        let now = parse_instant("2026-11-26T00:00:00Z").unwrap();
        assert_eq!(days_before(now, 1), parse_instant("2026-11-25T00:00:00Z"));
        assert_eq!(days_before(now, 0), Some(now));
        assert_eq!(days_before(now, u64::MAX), None);
        assert_eq!(days_before(now, 1 << 40), None);
    }
}
