//! Standard cron expressions on top of the `cron` crate.
//!
//! Operators write crontab syntax: five fields (minute hour day-of-month month
//! day-of-week), optionally preceded by a seconds field, or a macro such as
//! `@hourly`. The `cron` crate numbers weekdays from Sunday = 1 and ANDs the two
//! day fields, whereas crontab numbers Sunday = 0 (or 7) and fires when *either*
//! day field matches if both are restricted. This module parses the weekday
//! field itself and keeps crontab's meaning.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, TimeZone};

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A parsed crontab expression.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    text: String,
    /// One schedule, or two whose union is the crontab meaning (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronSchedule {
    /// Parses a crontab expression, explaining what was expected on error.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The shape is explained when the shape is wrong; a bad value is named alone.
        let fail_shape = |why: String| {
            format!(
                "invalid cron expression `{text}`: {why}; expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds field, or @hourly/@daily/@weekly/@monthly/@yearly"
            )
        };
        let fail = |why: String| format!("invalid cron expression `{text}`: {why}");
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(fail_shape(format!("unknown macro `{other}`")));
            }
            other => other,
        };
        let mut fields: Vec<&str> = expanded.split_whitespace().collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            n => return Err(fail_shape(format!("found {n} fields"))),
        }
        let (dom, dow) = (fields[3], fields[5]);
        let dow_names = weekday_field(dow).map_err(|e| fail(format!("day-of-week: {e}")))?;
        let dom = if dom == "?" { "*" } else { dom };
        let base = |dom: &str, dow: &str| {
            format!(
                "{} {} {} {} {} {}",
                fields[0], fields[1], fields[2], dom, fields[4], dow
            )
        };
        let dom_star = dom.starts_with('*');
        let dow_star = dow.starts_with('*') || dow == "?";
        let sources = if dom_star || dow_star {
            vec![base(dom, &dow_names)]
        } else {
            vec![base(dom, "*"), base("*", &dow_names)]
        };
        let parts = sources
            .iter()
            .map(|s| {
                // The crate's message quotes our translated expression with a caret
                // under it; only its last line (the reason) helps the operator.
                cron::Schedule::from_str(s).map_err(|e| {
                    let text = e.to_string();
                    let reason = text.lines().last().unwrap_or_default().trim();
                    // The crate's bound is inclusive although it says "less than".
                    let reason = reason
                        .replace(" must be less than ", " must be at most ")
                        .replace(". ('", " ('")
                        .replace("' specified.)", "' given)");
                    fail(reason)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CronSchedule {
            text: text.to_string(),
            parts,
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first firing time strictly after `after`, if any.
    pub fn next_after<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.parts
            .iter()
            .filter_map(|s| s.after(after).next())
            .min()
    }

    /// Whether the schedule never fires after `after`: a day that no month
    /// has (`0 0 31 2 *`) parses but would leave the trigger silent forever.
    pub fn never_fires_after<Z: TimeZone>(&self, after: &DateTime<Z>) -> bool {
        self.next_after(after).is_none()
    }
}

/// Translates a crontab weekday field (0-7, names, ranges, steps, lists) into
/// the `cron` crate's syntax as a list of day names, or `*`.
fn weekday_field(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".to_string());
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("invalid step `{s}` in `{item}`"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (weekday(a)?, weekday(b)?)
        } else {
            let d = weekday(range)?;
            // `5/2` means from 5 to the end of the week in steps of 2.
            (d, if item.contains('/') { 7 } else { d })
        };
        if lo > hi {
            return Err(format!("range `{range}` runs backwards"));
        }
        for d in (lo..=hi).step_by(step as usize) {
            days.insert(d % 7);
        }
    }
    Ok(days
        .iter()
        .map(|d| DAY_NAMES[*d as usize])
        .collect::<Vec<_>>()
        .join(","))
}

fn weekday(text: &str) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("`{n}` is not a weekday (0-7, Sunday is 0 or 7)"))
        };
    }
    let upper = text.to_ascii_uppercase();
    DAY_NAMES
        .iter()
        .position(|d| upper == *d)
        .map(|p| p as u32)
        .ok_or_else(|| format!("`{text}` is not a weekday (0-7 or SUN..SAT)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc, Weekday};

    fn next(expr: &str, after: &str) -> DateTime<Utc> {
        let after = DateTime::parse_from_rfc3339(after)
            .unwrap()
            .with_timezone(&Utc);
        CronSchedule::parse(expr)
            .unwrap()
            .next_after(&after)
            .unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let t = next("*/15 * * * *", "2026-11-22T10:07:30Z");
        assert_eq!((t.hour(), t.minute(), t.second()), (10, 15, 0));
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let t = next("*/10 * * * * *", "2026-11-22T10:07:31Z");
        assert_eq!((t.minute(), t.second()), (7, 40));
    }

    #[test]
    fn weekday_numbers_follow_crontab() {
        // 2026-11-22 is a Sunday.
        assert_eq!(
            next("0 9 * * 1", "2026-11-22T00:00:00Z").weekday(),
            Weekday::Mon
        );
        assert_eq!(
            next("0 9 * * 0", "2026-11-23T00:00:00Z").weekday(),
            Weekday::Sun
        );
        assert_eq!(
            next("0 9 * * 7", "2026-11-23T00:00:00Z").weekday(),
            Weekday::Sun
        );
        assert_eq!(
            next("0 9 * * 5-7", "2026-11-23T00:00:00Z").weekday(),
            Weekday::Fri
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2026-11-21T00:00:00Z").weekday(),
            Weekday::Mon
        );
    }

    #[test]
    fn restricted_day_fields_are_ored_like_crontab() {
        // Either the 1st of the month or any Monday: after Sunday Nov 22 comes Monday Nov 23.
        let t = next("0 0 1 * 1", "2026-11-22T12:00:00Z");
        assert_eq!((t.month(), t.day()), (11, 23));
        // After Monday Nov 30 comes Tuesday Dec 1 (the 1st), not the next Monday.
        let t = next("0 0 1 * 1", "2026-11-30T12:00:00Z");
        assert_eq!((t.month(), t.day()), (12, 1));
    }

    #[test]
    fn a_day_no_month_has_never_fires() {
        let now = Utc::now();
        assert!(
            CronSchedule::parse("0 0 31 2 *")
                .unwrap()
                .never_fires_after(&now)
        );
        assert!(
            !CronSchedule::parse("0 0 29 2 *")
                .unwrap()
                .never_fires_after(&now)
        );
        assert!(
            !CronSchedule::parse("0 0 31 * *")
                .unwrap()
                .never_fires_after(&now)
        );
    }

    #[test]
    fn macros_expand() {
        let t = next("@hourly", "2026-11-22T10:07:00Z");
        assert_eq!((t.hour(), t.minute()), (11, 0));
    }

    #[test]
    fn errors_say_what_was_expected() {
        let e = CronSchedule::parse("* * *").unwrap_err();
        assert!(
            e.contains("found 3 fields") && e.contains("expected 5 fields"),
            "{e}"
        );
        let e = CronSchedule::parse("0 9 * * 8").unwrap_err();
        assert!(e.contains("day-of-week") && e.contains("`8`"), "{e}");
        // A bad value is named with its bound, without the field-shape lecture.
        let e = CronSchedule::parse("60 * * * *").unwrap_err();
        assert!(e.contains("at most 59 ('60' given)"), "{e}");
        assert!(!e.contains("expected 5 fields"), "{e}");
        assert!(!e.contains("less than"), "{e}");
        assert!(
            CronSchedule::parse("@sometimes")
                .unwrap_err()
                .contains("unknown macro")
        );
    }
}
