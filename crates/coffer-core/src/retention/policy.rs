//! Which items of one kind a retention policy keeps: pure, so every rule is tested without a
//! repository.
//!
//! The rules are restic's (`forget --keep-*`): an item is kept when *any* rule keeps it.
//!
//! - `keep_within`: every item younger than a calendar span ("30d", "12 months", "10 years"),
//!   counted back from now in the configured zone, so "1 month" before 31 March is 28 February;
//! - `keep_last`: the newest N;
//! - `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`: the newest item of each of the
//!   newest N days (weeks, months, years) that have one, the periods read in the configured zone
//!   (weeks are ISO weeks, starting on Monday).
//!
//! A policy with no rule keeps everything: deleting a repository's history takes an explicit
//! rule, never an empty table. Restore chains (the binlogs a kept full backup needs) are the
//! planner's business, above this.

use std::collections::BTreeSet;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

/// The rules for one kind (`[retention.full]`, `[retention.binlog]`, …).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep everything younger than this calendar span.
    pub keep_within: Option<Span>,
    /// Keep the newest N.
    pub keep_last: Option<usize>,
    /// Keep the newest of each of the newest N days.
    pub keep_daily: Option<usize>,
    /// … weeks.
    pub keep_weekly: Option<usize>,
    /// … months.
    pub keep_monthly: Option<usize>,
    /// … years.
    pub keep_yearly: Option<usize>,
}

/// The calendar period a time falls in (year and day, ISO week, month; year alone).
type PeriodOf = fn(&jiff::Zoned) -> (i16, i16);

/// Why an item is kept: the rules that keep it, in the order above (`within 30d`, `last 2`,
/// `daily 7`). Empty: the item goes.
pub type Reasons = Vec<String>;

/// Parses a `keep_within` span as written in the configuration: jiff's friendly format
/// ("30d", "12 months", "10 years", "1y 6mo") or ISO 8601 ("P30D"). Only whole calendar units of
/// days and longer, and no negative span.
pub fn parse_span(text: &str) -> Result<Span, String> {
    let span: Span = text.parse().map_err(|e| {
        format!("{text:?} is not a span like \"30d\", \"12 months\" or \"10 years\": {e}")
    })?;
    if span.is_negative() || span.is_zero() {
        return Err(format!("{text:?} must be a positive span"));
    }
    if span.get_hours() != 0
        || span.get_minutes() != 0
        || span.get_seconds() != 0
        || span.get_milliseconds() != 0
        || span.get_microseconds() != 0
        || span.get_nanoseconds() != 0
    {
        return Err(format!(
            "{text:?}: use days, weeks, months or years (retention is counted in calendar days)"
        ));
    }
    Ok(span)
}

impl Policy {
    /// Whether no rule is set (the policy then keeps everything).
    pub fn is_empty(&self) -> bool {
        self.keep_within.is_none()
            && self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
    }

    /// For each of `times` (in any order), why it is kept: an empty list for an item the policy
    /// lets go. `now` and `tz` place `keep_within` and the calendar periods.
    pub fn decide(&self, times: &[Timestamp], now: Timestamp, tz: &TimeZone) -> Vec<Reasons> {
        let mut reasons = vec![Vec::new(); times.len()];
        if self.is_empty() {
            for r in &mut reasons {
                r.push("no retention rule".to_string());
            }
            return reasons;
        }
        // Newest first; equal times in input order, so the outcome does not depend on sorting.
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));

        if let Some(span) = self.keep_within {
            let zoned = now.to_zoned(tz.clone());
            // A span too large for the calendar keeps everything.
            let since = zoned.checked_sub(span).map(|z| z.timestamp()).ok();
            for &i in &order {
                if since.is_none_or(|since| times[i] >= since) {
                    reasons[i].push(format!("within {span:#}"));
                }
            }
        }
        if let Some(n) = self.keep_last {
            for &i in order.iter().take(n) {
                reasons[i].push(format!("last {n}"));
            }
        }
        let periods: [(&str, Option<usize>, PeriodOf); 4] = [
            ("daily", self.keep_daily, |z| (z.year(), z.day_of_year())),
            ("weekly", self.keep_weekly, |z| {
                let week = z.date().iso_week_date();
                (week.year(), i16::from(week.week()))
            }),
            ("monthly", self.keep_monthly, |z| {
                (z.year(), i16::from(z.month()))
            }),
            ("yearly", self.keep_yearly, |z| (z.year(), 0)),
        ];
        for (name, count, period_of) in periods {
            let Some(n) = count else { continue };
            let mut seen = BTreeSet::new();
            for &i in &order {
                if seen.len() == n {
                    break;
                }
                let period = period_of(&times[i].to_zoned(tz.clone()));
                // The newest item of a period is the first one met, newest first.
                if seen.insert(period) {
                    reasons[i].push(format!("{name} {n}"));
                }
            }
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    /// One item a day at 02:00 UTC for `days` days up to `last`.
    fn daily(last: &str, days: i64) -> Vec<Timestamp> {
        let last = at(last);
        (0..days)
            .map(|d| last - jiff::SignedDuration::from_hours(24 * d))
            .collect()
    }

    fn kept(policy: &Policy, times: &[Timestamp], now: &str) -> Vec<usize> {
        policy
            .decide(times, at(now), &berlin())
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn full_backups_are_kept_thirty_days_as_the_runbook_says() {
        let policy = Policy {
            keep_within: Some(parse_span("30d").unwrap()),
            ..Policy::default()
        };
        let times = daily("2026-12-01T02:00:00Z", 40);
        // Today's and the 29 before it; the one exactly 30 days old is at the edge, kept.
        assert_eq!(
            kept(&policy, &times, "2026-12-01T03:00:00Z"),
            (0..30).collect::<Vec<_>>()
        );
    }

    #[test]
    fn keep_last_two_alone_keeps_exactly_the_newest_two() {
        let policy = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let times = [
            at("2026-11-03T02:00:00Z"),
            at("2026-11-05T02:00:00Z"),
            at("2026-11-04T02:00:00Z"),
        ];
        assert_eq!(kept(&policy, &times, "2026-12-01T00:00:00Z"), [1, 2]);
        let reasons = policy.decide(&times, at("2026-12-01T00:00:00Z"), &berlin());
        assert_eq!(reasons[1], ["last 2"]);
    }

    #[test]
    fn a_month_back_from_the_end_of_march_is_the_end_of_february() {
        let policy = Policy {
            keep_within: Some(parse_span("1 month").unwrap()),
            ..Policy::default()
        };
        // Now is 14:00 CEST on 31 March; a month before is 14:00 CET (13:00 UTC) on 28 February.
        let times = [at("2027-02-28T12:59:00Z"), at("2027-02-28T13:00:00Z")];
        assert_eq!(kept(&policy, &times, "2027-03-31T12:00:00Z"), [1]);
    }

    #[test]
    fn periods_are_read_in_the_configured_zone() {
        // 23:30 UTC on 31 December is already the new year in Berlin.
        let times = [at("2026-12-31T23:30:00Z"), at("2026-12-31T12:00:00Z")];
        let policy = Policy {
            keep_yearly: Some(2),
            ..Policy::default()
        };
        assert_eq!(kept(&policy, &times, "2027-01-05T00:00:00Z"), [0, 1]);
        let utc = policy.decide(&times, at("2027-01-05T00:00:00Z"), &TimeZone::UTC);
        assert!(utc[1].is_empty(), "one year in UTC: only the newest");
    }

    #[test]
    fn any_rule_keeps_an_item_and_each_reason_is_named() {
        let policy = Policy {
            keep_last: Some(1),
            keep_weekly: Some(2),
            keep_monthly: Some(3),
            ..Policy::default()
        };
        let times = daily("2026-12-01T02:00:00Z", 90);
        let reasons = policy.decide(&times, at("2026-12-01T03:00:00Z"), &berlin());
        assert_eq!(reasons[0], ["last 1", "weekly 2", "monthly 3"]);
        let kept: Vec<usize> = (0..times.len())
            .filter(|&i| !reasons[i].is_empty())
            .collect();
        // Today (Tuesday); the newest of last week (Sunday 29 Nov); the newest of November
        // (Monday 30 Nov) and of October.
        assert_eq!(kept, [0, 1, 2, 31]);
    }

    #[test]
    fn no_rule_keeps_everything() {
        let times = daily("2026-12-01T02:00:00Z", 5);
        assert_eq!(
            kept(&Policy::default(), &times, "2030-01-01T00:00:00Z"),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn spans_are_calendar_days_or_longer() {
        assert!(parse_span("30d").is_ok());
        assert!(parse_span("12 months").is_ok());
        assert!(parse_span("10 years").is_ok());
        assert!(parse_span("P30D").is_ok());
        assert!(parse_span("6 hours").unwrap_err().contains("calendar days"));
        assert!(parse_span("soon").unwrap_err().contains("not a span"));
        assert!(parse_span("0d").unwrap_err().contains("positive"));
    }

    proptest! {
        #[test]
        fn keep_last_keeps_the_newest_n_and_nothing_else(
            seconds in prop::collection::vec(1_700_000_000i64..1_800_000_000, 0..40),
            n in 0usize..10,
        ) {
            let times: Vec<Timestamp> =
                seconds.iter().map(|s| Timestamp::from_second(*s).unwrap()).collect();
            let policy = Policy { keep_last: Some(n), ..Policy::default() };
            let reasons = policy.decide(&times, Timestamp::from_second(1_800_000_000).unwrap(), &TimeZone::UTC);
            let kept: Vec<Timestamp> =
                (0..times.len()).filter(|&i| !reasons[i].is_empty()).map(|i| times[i]).collect();
            prop_assert_eq!(kept.len(), n.min(times.len()));
            let oldest_kept = kept.iter().min();
            for (i, t) in times.iter().enumerate() {
                if reasons[i].is_empty() {
                    prop_assert!(oldest_kept.is_none_or(|o| t <= o));
                }
            }
        }

        #[test]
        fn a_daily_rule_keeps_one_item_per_day_for_n_days(
            seconds in prop::collection::vec(1_700_000_000i64..1_700_900_000, 1..60),
            n in 1usize..8,
        ) {
            let times: Vec<Timestamp> =
                seconds.iter().map(|s| Timestamp::from_second(*s).unwrap()).collect();
            let policy = Policy { keep_daily: Some(n), ..Policy::default() };
            let reasons = policy.decide(&times, Timestamp::from_second(1_800_000_000).unwrap(), &TimeZone::UTC);
            let days: BTreeSet<jiff::civil::Date> =
                times.iter().map(|t| t.to_zoned(TimeZone::UTC).date()).collect();
            let kept = reasons.iter().filter(|r| !r.is_empty()).count();
            prop_assert_eq!(kept, n.min(days.len()));
        }
    }
}
