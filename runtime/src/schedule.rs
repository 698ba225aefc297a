//! Schedule triggers: standard crontab (5 fields, POSIX meaning: day-of-week 0 or 7 = Sunday;
//! or 6 fields with seconds first) in an IANA timezone, and what to do with ticks missed while
//! nothing ran (`catch_up`).
//!
//! Parsing and matching are the `cron` crate's (0.17), which wants a seconds field and counts
//! day-of-week from 1 = Sunday, so a written expression is translated once. Ticks are computed
//! in local wall-clock time and then placed on the timeline, which is where daylight saving
//! time is decided:
//! - a wall-clock time that does not exist (spring forward: 02:30 in America/New_York on the
//!   second Sunday of March) fires once, at the moment the clocks jump (03:00 local);
//! - a wall-clock time that happens twice (fall back: 01:30 on the first Sunday of November)
//!   fires once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// What a schedule does with ticks it missed (the process was down, the workflow was just
/// re-enabled, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire the most recent missed tick once (default).
    #[default]
    Latest,
    /// Fire every missed tick (at most [`MAX_CATCH_UP`]).
    All,
    /// Fire none: wait for the next tick.
    None,
}

/// The most missed ticks `catch_up: all` fires at once.
pub const MAX_CATCH_UP: usize = 1_000;

/// A tick fired later than this after its time counts as missed (for `catch_up: none`); the
/// scheduler looks every quarter second, so only downtime or overload makes a tick this late.
pub const ON_TIME_MS: i64 = 10_000;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronSpec {
    expression: String,
    /// One schedule, or two whose ticks are merged (see [`CronSpec::parse`]).
    schedules: Vec<cron::Schedule>,
}

impl CronSpec {
    /// Parses a 5-field crontab (`0 9 * * 1-5`) or a 6-field one with seconds first.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => return Err(format!("'{expression}' has {n} fields; write 5 (minute hour day month weekday) or 6 (seconds first)")),
        };
        let weekday = posix_weekdays(rest[4]).map_err(|e| format!("'{expression}': day of week: {e}"))?;
        let parse = |dom: &str, dow: &str| {
            let translated = format!("{seconds} {} {} {dom} {} {dow}", rest[0], rest[1], rest[3]);
            cron::Schedule::from_str(&translated).map_err(|e| format!("'{expression}' is not a valid cron expression: {e}"))
        };
        // POSIX: when both day of month and day of week are restricted, a day matching either
        // one ticks. The `cron` crate wants both, so such an expression is two schedules.
        let restricted = |f: &str| f != "*" && f != "?";
        let schedules =
            if restricted(rest[2]) && restricted(rest[4]) { vec![parse(rest[2], "*")?, parse("*", &weekday)?] } else { vec![parse(rest[2], &weekday)?] };
        Ok(Self { expression: expression.trim().to_string(), schedules })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `after_ms` in `tz`, in epoch milliseconds.
    pub fn next_after(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?.with_timezone(&tz);
        // Wall-clock candidates from the local time an hour before `after` (so a tick moved
        // forward by a gap is not missed), each placed on the timeline; the first one after
        // `after_ms` wins.
        let start = Utc.from_utc_datetime(&(after.naive_local() - ChronoDuration::hours(2)));
        self.schedules.iter().filter_map(|s| s.after(&start).take(10_000).filter_map(|wall| place(wall.naive_utc(), tz)).find(|t| *t > after_ms)).min()
    }

    /// The ticks in `(from_ms, to_ms]`, oldest first, at most `limit`.
    pub fn ticks_between(&self, from_ms: i64, to_ms: i64, tz: Tz, limit: usize) -> Vec<i64> {
        let mut ticks = Vec::new();
        let mut at = from_ms;
        while ticks.len() < limit {
            match self.next_after(at, tz) {
                Some(t) if t <= to_ms => {
                    ticks.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        ticks
    }
}

/// Places a local wall-clock time on the timeline: a time in a gap at the end of the gap (the
/// first local minute that exists), an ambiguous time at its first occurrence.
pub(crate) fn place(wall: NaiveDateTime, tz: Tz) -> Option<i64> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis()),
        LocalResult::None => {
            let minute = wall.with_second(0)?;
            (1..=24 * 60).find_map(|m| tz.from_local_datetime(&(minute + ChronoDuration::minutes(m))).earliest()).map(|t| t.timestamp_millis())
        }
    }
}

/// Translates a POSIX day-of-week field (0 or 7 = Sunday, 1 = Monday) to the `cron` crate's
/// (1 = Sunday … 7 = Saturday). Names and `*` pass through.
fn posix_weekdays(field: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<u32, String> {
        let v: u32 = n.parse().map_err(|_| format!("'{n}' is not a day"))?;
        if v > 7 {
            return Err(format!("{v} is not a day (0-7, 0 and 7 are Sunday)"));
        }
        Ok(v % 7 + 1)
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let numeric = |s: &str| s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty();
        let translated = match range.split_once('-') {
            Some((a, b)) if numeric(a) && numeric(b) => {
                let (a, b) = (a.parse::<u32>().map_err(|e| e.to_string())?, b.parse::<u32>().map_err(|e| e.to_string())?);
                if a > b || b > 7 {
                    return Err(format!("'{range}' is not a range of days"));
                }
                if b == 7 && a > 0 && step.is_none() {
                    // …-7 ends on Sunday, which the crate numbers 1: split the range.
                    out.push("1".to_string());
                    if a <= 6 { format!("{}-7", a + 1) } else { continue }
                } else {
                    format!("{}-{}", shift(&a.to_string())?, shift(&b.min(6).to_string())?)
                }
            }
            _ if numeric(range) => shift(range)?.to_string(),
            _ => range.to_string(),
        };
        out.push(match step {
            Some(s) => format!("{translated}/{s}"),
            None => translated,
        });
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap().timestamp_millis()
    }

    fn local(ms: i64, tz: Tz) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap().with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
    }

    #[test]
    fn five_fields_have_posix_weekdays() {
        let ny = chrono_tz::America::New_York;
        let weekdays = CronSpec::parse("0 9 * * 1-5").unwrap();
        // Friday 2026-03-06 09:00 → next is Monday 03-09 (not Saturday or Sunday).
        let next = weekdays.next_after(at(ny, 2026, 3, 6, 9, 0), ny).unwrap();
        assert_eq!(local(next, ny), "2026-03-09 09:00 EDT");
        let sunday = CronSpec::parse("30 8 * * 0").unwrap();
        assert_eq!(local(sunday.next_after(at(ny, 2026, 3, 9, 0, 0), ny).unwrap(), ny), "2026-03-15 08:30 EDT");
        let sunday7 = CronSpec::parse("30 8 * * 7").unwrap();
        assert_eq!(sunday7.next_after(at(ny, 2026, 3, 9, 0, 0), ny), sunday.next_after(at(ny, 2026, 3, 9, 0, 0), ny));
        let weekend = CronSpec::parse("0 10 * * 6-7").unwrap();
        let ticks = weekend.ticks_between(at(ny, 2026, 3, 9, 0, 0), at(ny, 2026, 3, 16, 0, 0), ny, 10);
        assert_eq!(ticks.iter().map(|t| local(*t, ny)).collect::<Vec<_>>(), ["2026-03-14 10:00 EDT", "2026-03-15 10:00 EDT"]);
        let seconds = CronSpec::parse("*/15 * * * * *").unwrap();
        assert_eq!(seconds.next_after(1_000, chrono_tz::UTC), Some(15_000));
        assert!(CronSpec::parse("0 9 * *").is_err());
        assert!(CronSpec::parse("0 25 * * *").is_err());
        assert!(CronSpec::parse("0 9 * * 8").is_err());
    }

    #[test]
    fn day_of_month_or_weekday_ticks_as_in_posix_cron() {
        // Both restricted: the 1st of the month OR any Monday (2026-01-01 is a Thursday).
        let utc = chrono_tz::UTC;
        let spec = CronSpec::parse("0 9 1 * 1").unwrap();
        let ticks = spec.ticks_between(at(utc, 2026, 1, 1, 12, 0), at(utc, 2026, 2, 3, 0, 0), utc, 10);
        let shown: Vec<String> = ticks.iter().map(|t| local(*t, utc)).collect();
        assert_eq!(
            shown,
            ["2026-01-05 09:00 UTC", "2026-01-12 09:00 UTC", "2026-01-19 09:00 UTC", "2026-01-26 09:00 UTC", "2026-02-01 09:00 UTC", "2026-02-02 09:00 UTC"]
        );
        // One restricted: only that one counts.
        let firsts = CronSpec::parse("0 9 1 * *").unwrap();
        assert_eq!(local(firsts.next_after(at(utc, 2026, 1, 1, 12, 0), utc).unwrap(), utc), "2026-02-01 09:00 UTC");
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_once_when_the_clocks_jump() {
        let ny = chrono_tz::America::New_York;
        let daily = CronSpec::parse("30 2 * * *").unwrap();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let ticks = daily.ticks_between(at(ny, 2026, 3, 7, 0, 0), at(ny, 2026, 3, 10, 0, 0), ny, 10);
        let shown: Vec<String> = ticks.iter().map(|t| local(*t, ny)).collect();
        assert_eq!(shown, ["2026-03-07 02:30 EST", "2026-03-08 03:00 EDT", "2026-03-09 02:30 EDT"]);
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        let ny = chrono_tz::America::New_York;
        let daily = CronSpec::parse("30 1 * * *").unwrap();
        // 2026-11-01: 01:30 happens twice (EDT, then EST); it fires once, the first time.
        let ticks = daily.ticks_between(at(ny, 2026, 10, 31, 0, 0), at(ny, 2026, 11, 3, 0, 0), ny, 10);
        let shown: Vec<String> = ticks.iter().map(|t| local(*t, ny)).collect();
        assert_eq!(shown, ["2026-10-31 01:30 EDT", "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]);
    }
}
