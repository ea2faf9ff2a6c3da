//! When a job is due: a cron expression evaluated in the configuration's time zone, right across
//! daylight-saving changes.
//!
//! `croner` matches the expression; the loop around it is ours, because what a wall-clock time
//! means on the two days a year it does not exist or exists twice is the part schedulers get
//! wrong (tokio-cron-scheduler pins a zoned job to one fixed offset, its issues #105 and #107).
//! The expression is matched against *civil* time (the wall clock, no zone), and each matching
//! civil time is then placed on the time line in the zone:
//!
//! - a time in the spring-forward gap (02:30 on the night 02:00 jumps to 03:00) runs once, at the
//!   moment the gap ends (03:00), as Vixie cron does;
//! - a time in the fall-back overlap (01:30 on the night 01:00–02:00 happens twice) runs once, at
//!   its first occurrence; the second pass through the overlap runs nothing again.
//!
//! Five fields (minute, hour, day of month, month, day of week) as in crontab, or six with the
//! seconds first (`*/10 * * * * *`, for tests and short intervals), with croner's extensions: `L` (last day of the month, or `5L` the last Friday) and `#` (`SUN#1`, the first
//! Sunday). As in POSIX cron, a day of month *and* a day of week both restricted match when
//! *either* does: "the first Sunday" is `SUN#1`, never `1-7 * SUN` (every one of the first seven
//! days and every Sunday).

use chrono::TimeZone as _;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// The names of the fields, in order, for error messages (six fields start with the seconds).
const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];

/// A bad cron expression: which job, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[schedule] {job} = {expression:?}: {problem}")]
pub struct ScheduleError {
    /// The job the expression is for (`full`, `drill`).
    pub job: String,
    /// The expression as written.
    pub expression: String,
    /// What is wrong, naming the field when one field is.
    pub problem: String,
}

/// One job's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    job: String,
    expression: String,
    cron: Cron,
    tz: TimeZone,
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl Schedule {
    /// Parses `expression` for `job`, to be evaluated in `tz`.
    pub fn parse(job: &str, expression: &str, tz: TimeZone) -> Result<Self, ScheduleError> {
        let fail = |problem: String| ScheduleError {
            job: job.to_string(),
            expression: expression.to_string(),
            problem,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let names = match fields.len() {
            5 => &FIELDS[1..],
            6 => &FIELDS[..],
            n => {
                return Err(fail(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, found {n}"
                )));
            }
        };
        let cron = parser().parse(expression).map_err(|whole| {
            // Name the first field that fails on its own (the others made wildcards).
            let field = (0..fields.len()).find(|&i| {
                let alone: Vec<&str> = (0..fields.len())
                    .map(|j| if i == j { fields[i] } else { "*" })
                    .collect();
                parser().parse(&alone.join(" ")).is_err()
            });
            match field {
                Some(i) => fail(format!("{} field {:?}: {whole}", names[i], fields[i])),
                None => fail(whole.to_string()),
            }
        })?;
        Ok(Self {
            job: job.to_string(),
            expression: expression.to_string(),
            cron,
            tz,
        })
    }

    /// The job this schedule is for.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Whether both the day of month and the day of week are restricted, which cron ORs: worth
    /// a warning, since it is rarely what was meant.
    pub fn ors_days(&self) -> bool {
        let fields: Vec<&str> = self.expression.split_whitespace().collect();
        let days = fields.len() - 3;
        let restricted = |f: &str| f != "*" && f != "?";
        restricted(fields[days]) && restricted(fields[days + 2])
    }

    /// The first time the job is due strictly after `after`; `None` when the expression never
    /// matches again (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut civil = after.to_zoned(self.tz.clone()).datetime();
        // Each step moves to a later civil time; a few steps at most are skipped (the second
        // pass through an overlap), the bound only guards against a pathological zone.
        for _ in 0..10_000 {
            civil = self.next_civil(civil)?;
            let at = self.place(civil)?;
            if at > after {
                return Some(at);
            }
        }
        None
    }

    /// The first civil time strictly after `civil` that the expression matches.
    fn next_civil(&self, civil: DateTime) -> Option<DateTime> {
        // Civil time is matched as if it were UTC: a zone with no offset changes, so croner sees
        // every wall-clock minute exactly once.
        let naive = chrono::NaiveDate::from_ymd_opt(
            i32::from(civil.year()),
            civil.month() as u32,
            civil.day() as u32,
        )?
        .and_hms_opt(
            civil.hour() as u32,
            civil.minute() as u32,
            civil.second() as u32,
        )?;
        let next = self
            .cron
            .find_next_occurrence(&chrono::Utc.from_utc_datetime(&naive), false)
            .ok()?
            .naive_utc();
        use chrono::{Datelike, Timelike};
        DateTime::new(
            i16::try_from(next.year()).ok()?,
            next.month() as i8,
            next.day() as i8,
            next.hour() as i8,
            next.minute() as i8,
            next.second() as i8,
            0,
        )
        .ok()
    }

    /// Where a civil time falls on the time line in the zone: itself, the end of the gap it is
    /// in, or its first occurrence in an overlap.
    fn place(&self, civil: DateTime) -> Option<Timestamp> {
        let ambiguous = self.tz.to_ambiguous_timestamp(civil);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(civil).ok(),
            AmbiguousOffset::Gap { before, .. } => {
                // Read with the offset before the gap, the time lies at or past the transition
                // (exactly on it for the gap's first minute); the transition itself is the
                // moment the gap ends. `preceding` is strict, hence the second.
                let past = before.to_timestamp(civil).ok()?;
                self.tz
                    .preceding(past.checked_add(jiff::SignedDuration::from_secs(1)).ok()?)
                    .next()
                    .map(|transition| transition.timestamp())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// The next `n` runs after `from`, as local times with their offsets.
    fn runs(expression: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let schedule = Schedule::parse("test", expression, tz(zone)).unwrap();
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = schedule.next_after(t).unwrap();
                t.to_zoned(tz(zone))
                    .strftime("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_daily_job_in_the_spring_forward_gap_runs_once_right_after_it() {
        // 2026-03-08: New York jumps from 02:00 EST to 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08 03:00 EDT",
                "2026-03-09 02:30 EDT",
                "2026-03-10 02:30 EDT"
            ]
        );
        // The CLI's promise for `--at` in the gap is the same moment.
        assert_eq!(
            runs("30 2 10 3 *", "America/New_York", "2030-01-01T00:00:00Z", 1),
            ["2030-03-10 03:00 EDT"]
        );
    }

    #[test]
    fn every_time_inside_the_gap_runs_once_at_its_end_in_berlin() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST.
        assert_eq!(
            runs("*/20 2 * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 2),
            ["2026-03-29 03:00 CEST", "2026-03-30 02:00 CEST"]
        );
        assert_eq!(
            runs("0 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29 03:00 CEST", "2026-03-30 02:00 CEST"]
        );
    }

    #[test]
    fn a_daily_job_in_the_fall_back_overlap_runs_once() {
        // 2026-11-01: New York's 01:00–02:00 happens twice (EDT, then EST).
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 3),
            [
                "2026-11-01 01:30 EDT",
                "2026-11-02 01:30 EST",
                "2026-11-03 01:30 EST"
            ]
        );
        // 2026-10-25: Berlin's 02:00–03:00 happens twice (CEST, then CET).
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]
        );
    }

    #[test]
    fn an_hourly_job_across_fall_back_does_not_repeat_the_hour() {
        assert_eq!(
            runs("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01 01:00 EDT",
                "2026-11-01 02:00 EST",
                "2026-11-01 03:00 EST"
            ]
        );
    }

    #[test]
    fn the_runbook_schedule_runs_when_it_says() {
        // The drill: the first Sunday of the month at 02:00.
        assert_eq!(
            runs("0 2 * * SUN#1", "Europe/Berlin", "2026-11-02T00:00:00Z", 3),
            [
                "2026-12-06 02:00 CET",
                "2027-01-03 02:00 CET",
                "2027-02-07 02:00 CET"
            ]
        );
        // Incremental every 6 hours.
        assert_eq!(
            runs("0 */6 * * *", "UTC", "2026-12-01T05:00:00Z", 3),
            [
                "2026-12-01 06:00 UTC",
                "2026-12-01 12:00 UTC",
                "2026-12-01 18:00 UTC"
            ]
        );
        // The last day of the month.
        assert_eq!(
            runs("0 3 L * *", "UTC", "2027-01-31T04:00:00Z", 2),
            ["2027-02-28 03:00 UTC", "2027-03-31 03:00 UTC"]
        );
    }

    #[test]
    fn first_sunday_written_as_a_day_range_is_ored_as_posix_cron_does() {
        let ored = Schedule::parse("drill", "0 2 1-7 * SUN", tz("UTC")).unwrap();
        assert!(ored.ors_days());
        // 2026-12-01 is a Tuesday: the range alone matches it.
        assert_eq!(
            runs("0 2 1-7 * SUN", "UTC", "2026-11-30T12:00:00Z", 1),
            ["2026-12-01 02:00 UTC"]
        );
        assert!(
            !Schedule::parse("drill", "0 2 * * SUN#1", tz("UTC"))
                .unwrap()
                .ors_days()
        );
    }

    #[test]
    fn a_bad_expression_names_the_job_and_the_field() {
        let err = Schedule::parse("full", "0 25 * * *", tz("UTC")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("[schedule] full = \"0 25 * * *\": hour field \"25\""),
            "{text}"
        );
        let err = Schedule::parse("drill", "0 2 * * FUNDAY", tz("UTC")).unwrap_err();
        assert!(err.problem.starts_with("day of week field"), "{err}");
        let err = Schedule::parse("prune", "0 2 * *", tz("UTC")).unwrap_err();
        assert!(err.problem.contains("expected 5 fields"), "{err}");
        let err = Schedule::parse("verify", "0 0 2 * * * *", tz("UTC")).unwrap_err();
        assert!(err.problem.contains("found 7"), "{err}");
        let err = Schedule::parse("verify", "61 0 2 * * *", tz("UTC")).unwrap_err();
        assert!(err.problem.starts_with("second field \"61\""), "{err}");
    }

    #[test]
    fn six_fields_start_with_the_seconds() {
        let s = Schedule::parse("full", "*/20 * * * * *", tz("UTC")).unwrap();
        let t = s.next_after(at("2026-12-01T00:00:05Z")).unwrap();
        assert_eq!(t, at("2026-12-01T00:00:20Z"));
        assert_eq!(s.next_after(t).unwrap(), at("2026-12-01T00:00:40Z"));
        assert!(!s.ors_days());
    }

    #[test]
    fn an_expression_that_never_matches_has_no_next_run() {
        let never = Schedule::parse("full", "0 0 30 2 *", tz("UTC")).unwrap();
        assert_eq!(never.next_after(at("2026-01-01T00:00:00Z")), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Across any day of the year in either zone, runs strictly increase, and each run
            /// is at a civil time the expression names or at the end of a gap.
            #[test]
            fn runs_move_forward_and_never_repeat(
                start in 1_767_225_600i64..1_798_761_600i64,
                pick in 0usize..6,
                zone in prop::sample::select(vec!["America/New_York", "Europe/Berlin", "UTC"]),
            ) {
                let expressions = ["30 2 * * *", "0 * * * *", "*/15 1-3 * * *", "0 2 * * SUN#1", "0 3 L * *", "45 1 * * *"];
                let schedule = Schedule::parse("p", expressions[pick], tz(zone)).unwrap();
                let mut t = Timestamp::from_second(start).unwrap();
                for _ in 0..30 {
                    let next = schedule.next_after(t).unwrap();
                    prop_assert!(next > t);
                    t = next;
                }
            }
        }
    }
}
