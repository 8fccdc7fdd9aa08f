//! Cron expressions of the `cronRestart` group option: parsed once by [`parse`] (in
//! [`crate::options::validate_group`], so a bad one is refused at start), then asked for
//! their next fire time with the time passed in ([`Schedule::next_after`]).
//!
//! The parser is the `croner` crate: 5 fields (minute hour day-of-month month day-of-week)
//! or 6 with a leading seconds field, the usual `* , - /` syntax, names (`MON`, `JAN`),
//! `L`, `W`, `#` and the `@daily`-style nicknames. A year field is refused. Times are
//! whatever time zone the caller's `DateTime` carries: the event loop passes
//! `chrono::Local`, which honours `TZ`.

use std::fmt;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expression).finish()
    }
}

/// Parse `expression`: 5 fields, or 6 with a leading seconds field. The error says why it
/// is not a cron expression (including one that never fires, like `0 0 30 2 *`).
pub fn parse(expression: &str) -> Result<Schedule, String> {
    let fields = expression.split_whitespace().count();
    if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, got {fields}"
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())?;
    let schedule = Schedule {
        expression: expression.to_string(),
        cron,
    };
    // A pattern that parses but never matches (February 30th) is refused too. Checked from
    // a fixed time, so that validation does not depend on the clock.
    let reference = chrono::Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .ok_or("no reference time")?;
    schedule
        .cron
        .find_next_occurrence(&reference, false)
        .map_err(|_| "it never fires (no date matches it)".to_string())?;
    Ok(schedule)
}

impl Schedule {
    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`, in `after`'s time zone; `None` when
    /// there is none within croner's search range.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>>
    where
        DateTime<Tz>: croner::time::CronDateTime,
    {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = parse("*/15 * * * *").unwrap();
        let next = s.next_after(&utc("2026-12-07T07:14:59Z")).unwrap();
        assert_eq!(next, utc("2026-12-07T07:15:00Z"));
        // Strictly after: a fire time is not returned again.
        assert_eq!(s.next_after(&next).unwrap(), utc("2026-12-07T07:30:00Z"));
    }

    #[test]
    fn a_sixth_leading_field_is_seconds() {
        let s = parse("*/4 * * * * *").unwrap();
        assert_eq!(
            s.next_after(&utc("2026-12-07T07:00:01Z")).unwrap(),
            utc("2026-12-07T07:00:04Z")
        );
        let s = parse("30 0 3 * * *").unwrap();
        assert_eq!(
            s.next_after(&utc("2026-12-07T03:00:30Z")).unwrap(),
            utc("2026-12-08T03:00:30Z")
        );
    }

    #[test]
    fn fire_times_are_in_the_given_time_zone() {
        // 03:00 every day, local time: in UTC+02:00 that is 01:00 UTC.
        let s = parse("0 3 * * *").unwrap();
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let now = utc("2026-12-07T00:00:00Z").with_timezone(&plus2);
        let next = s.next_after(&now).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-07T03:00:00+02:00");
        assert_eq!(next.with_timezone(&Utc), utc("2026-12-07T01:00:00Z"));
        // The same instant in UTC fires two hours later.
        assert_eq!(
            s.next_after(&utc("2026-12-07T00:00:00Z")).unwrap(),
            utc("2026-12-07T03:00:00Z")
        );
    }

    #[test]
    fn nicknames_and_names_parse() {
        let s = parse("@daily").unwrap();
        assert_eq!(
            s.next_after(&utc("2026-12-07T07:00:00Z")).unwrap(),
            utc("2026-12-08T00:00:00Z")
        );
        // 2026-12-07 is a Monday.
        let s = parse("0 9 * * MON").unwrap();
        assert_eq!(
            s.next_after(&utc("2026-12-07T10:00:00Z")).unwrap(),
            utc("2026-12-14T09:00:00Z")
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(parse("* * * *")
            .unwrap_err()
            .starts_with("expected 5 fields"));
        assert!(parse("0 0 0 1 1 * 2030").unwrap_err().contains("got 7"));
        assert!(parse("61 * * * *").is_err());
        assert!(parse("every day").is_err());
        assert!(parse("").is_err());
        assert_eq!(
            parse("0 0 30 2 *").unwrap_err(),
            "it never fires (no date matches it)"
        );
    }
}
