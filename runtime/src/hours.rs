//! Business hours: when an account is open, for IVR flows whose `hours` node asks "are we open?".
//!
//! A schedule is an IANA timezone, opening hours per weekday, holidays (closed all day) and
//! dated overrides (that day's hours instead of the weekday's), written as JSON:
//!
//! ```json
//! {"timezone": "America/New_York",
//!  "weekly": {"mon": ["09:00-12:00", "13:00-17:00"], "sat": ["10:00-14:00"]},
//!  "holidays": [{"date": "2026-12-25", "name": "Christmas"}],
//!  "overrides": [{"date": "2026-12-24", "hours": ["09:00-12:00"]}]}
//! ```
//!
//! A range is `HH:MM-HH:MM` in local time, start included and end excluded; `24:00` ends a
//! range at the next midnight (`00:00-24:00` is the whole day). A weekday left out is closed. A
//! holiday closes its whole date and wins over an override of the same date; an override
//! replaces that date's weekday hours (`[]` closes the day).
//!
//! Local times are placed on the timeline as the cron schedules place theirs
//! ([`crate::schedule`]), which is where daylight saving time is decided:
//! - a local time that does not exist (spring forward: 02:30 in America/New_York on
//!   2026-03-08) is taken at the first instant after the gap (03:00 EDT), so a range starting
//!   or ending in the gap starts or ends when the clocks jump;
//! - a local time that exists twice (fall back: 01:30 on 2026-11-01) is taken at its first
//!   occurrence, so `01:30-03:00` is open for two and a half hours that night.
//!
//! [`BusinessHours::next_change`] is the next instant, strictly after the one asked about, where
//! [`BusinessHours::is_open`] flips, looking at most [`HORIZON_DAYS`] days ahead.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

/// How far [`BusinessHours::next_change`] looks ahead, in days.
pub const HORIZON_DAYS: i64 = 400;

/// The most ranges one day (a weekday or an override) may have.
pub const MAX_RANGES_A_DAY: usize = 48;

/// The weekday keys of `weekly`, Monday first (the index is `Weekday::num_days_from_monday`).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The fields of a schedule's JSON.
const FIELDS: [&str; 4] = ["timezone", "weekly", "holidays", "overrides"];

/// Minutes in a day: the end of a range written `24:00`.
const DAY_MINUTES: u16 = 24 * 60;

/// A range of local time within one day, in minutes since midnight: open from `start`
/// (included) to `end` (excluded). `end` is at most 1440, the next midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeRange {
    /// Opens, minutes after midnight (0 to 1439).
    pub start: u16,
    /// Closes, minutes after midnight (1 to 1440); after `start`.
    pub end: u16,
}

impl TimeRange {
    /// Reads `HH:MM-HH:MM` (two digits each; `24:00` only as an end). `None` when it is not a
    /// range of that form, or when the start is not before the end.
    pub fn parse(text: &str) -> Option<Self> {
        let (start, end) = text.split_once('-')?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        (start < DAY_MINUTES && start < end).then_some(Self { start, end })
    }
}

/// `HH:MM` as minutes after midnight, 0 to 1440 (`24:00`).
pub(crate) fn minutes(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (h, m) = (u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0'), u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0'));
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

/// A parsed, valid schedule of business hours (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// The timezone its times are local to.
    pub timezone: Tz,
    /// Each weekday's ranges, Monday first, sorted and not overlapping; empty is closed.
    pub weekly: [Vec<TimeRange>; 7],
    /// Dates closed all day, with their names (if given).
    pub holidays: BTreeMap<NaiveDate, Option<String>>,
    /// Dates whose ranges replace their weekday's (sorted, not overlapping; empty is closed).
    pub overrides: BTreeMap<NaiveDate, Vec<TimeRange>>,
}

/// A problem of a schedule's JSON: its path (`weekly.mon[0]`) and what is wrong.
type Problems = Vec<(String, String)>;

impl BusinessHours {
    /// Parses and validates a schedule's JSON (`{timezone, weekly, holidays, overrides}`;
    /// `weekly`, `holidays` and `overrides` may be left out). Every problem is reported with its
    /// path, e.g. `("weekly.mon[0]", "09:00-25:00 is not a range like 09:00-17:00")`.
    pub fn parse(json: &Value) -> Result<BusinessHours, Vec<(String, String)>> {
        let Some(map) = json.as_object() else {
            return Err(vec![(String::new(), "a schedule is an object {timezone, weekly, holidays, overrides}".into())]);
        };
        let mut problems = Problems::new();
        for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            problems.push((key.clone(), "unknown field; a schedule has timezone, weekly, holidays and overrides".into()));
        }
        let timezone = match map.get("timezone") {
            None | Some(Value::Null) => {
                problems.push(("timezone".into(), "required: an IANA timezone, e.g. America/New_York".into()));
                None
            }
            Some(Value::String(name)) => match name.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    problems.push(("timezone".into(), format!("'{name}' is not an IANA timezone, e.g. America/New_York or Europe/Berlin")));
                    None
                }
            },
            Some(_) => {
                problems.push(("timezone".into(), "must be a string: an IANA timezone, e.g. America/New_York".into()));
                None
            }
        };

        let mut weekly: [Vec<TimeRange>; 7] = Default::default();
        match map.get("weekly") {
            None | Some(Value::Null) => {}
            Some(Value::Object(days)) => {
                for (day, ranges) in days {
                    let path = format!("weekly.{day}");
                    match WEEKDAYS.iter().position(|d| d == day) {
                        Some(i) => weekly[i] = day_ranges(&path, ranges, &mut problems),
                        None => problems.push((path, format!("unknown weekday '{day}'; one of {}", WEEKDAYS.join(", ")))),
                    }
                }
            }
            Some(_) => problems.push(("weekly".into(), "must be an object keyed by weekday, e.g. {\"mon\": [\"09:00-17:00\"]}".into())),
        }

        let mut holidays = BTreeMap::new();
        for (i, item, path) in objects("holidays", map.get("holidays"), &["date", "name"], &mut problems) {
            let name = match item.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) if name.chars().count() <= 200 => Some(name.clone()),
                Some(_) => {
                    problems.push((format!("{path}.name"), "must be a string of at most 200 characters".into()));
                    None
                }
            };
            if let Some(date) = date_at(&path, item, &mut problems)
                && holidays.insert(date, name).is_some()
            {
                problems.push((format!("{path}.date"), format!("{date} is a holiday twice (holidays[{i}] repeats an earlier date)")));
            }
        }

        let mut overrides = BTreeMap::new();
        for (i, item, path) in objects("overrides", map.get("overrides"), &["date", "hours"], &mut problems) {
            let hours = match item.get("hours") {
                None => {
                    problems.push((format!("{path}.hours"), "required: that day's ranges, e.g. [\"10:00-14:00\"] ([] closes the day)".into()));
                    Vec::new()
                }
                Some(ranges) => day_ranges(&format!("{path}.hours"), ranges, &mut problems),
            };
            if let Some(date) = date_at(&path, item, &mut problems)
                && overrides.insert(date, hours).is_some()
            {
                problems.push((format!("{path}.date"), format!("{date} is overridden twice (overrides[{i}] repeats an earlier date)")));
            }
        }

        match timezone {
            Some(timezone) if problems.is_empty() => Ok(BusinessHours { timezone, weekly, holidays, overrides }),
            _ => Err(problems),
        }
    }

    /// The schedule as JSON, in the form [`BusinessHours::parse`] reads: every weekday present,
    /// holidays and overrides by date.
    pub fn to_json(&self) -> Value {
        let weekly: Map<String, Value> = WEEKDAYS.iter().zip(&self.weekly).map(|(day, ranges)| (day.to_string(), ranges_json(ranges))).collect();
        let holidays: Vec<Value> = self.holidays.iter().map(|(date, name)| json!({ "date": date.to_string(), "name": name })).collect();
        let overrides: Vec<Value> = self.overrides.iter().map(|(date, hours)| json!({ "date": date.to_string(), "hours": ranges_json(hours) })).collect();
        json!({ "timezone": self.timezone.name(), "weekly": weekly, "holidays": holidays, "overrides": overrides })
    }

    /// The ranges of a local date: none on a holiday, the override's if there is one, else its
    /// weekday's.
    pub fn hours_on(&self, date: NaiveDate) -> &[TimeRange] {
        if self.holidays.contains_key(&date) {
            return &[];
        }
        match self.overrides.get(&date) {
            Some(hours) => hours,
            None => &self.weekly[date.weekday().num_days_from_monday() as usize],
        }
    }

    /// Whether the schedule is open at `at_ms` (ms since the Unix epoch).
    pub fn is_open(&self, at_ms: i64) -> bool {
        let Some(date) = self.local_date(at_ms) else { return false };
        // A day's ranges lie between its midnight and the next; the neighbours are looked at
        // too, for zones whose clocks move across midnight.
        [date.pred_opt(), Some(date), date.succ_opt()].into_iter().flatten().any(|d| self.intervals(d).any(|(start, end)| start <= at_ms && at_ms < end))
    }

    /// The first instant strictly after `at_ms` where [`BusinessHours::is_open`] flips, at most
    /// [`HORIZON_DAYS`] days ahead; `None` when it does not change in that time (always closed,
    /// always open).
    pub fn next_change(&self, at_ms: i64) -> Option<i64> {
        let limit = at_ms.checked_add(HORIZON_DAYS * 86_400_000)?;
        let found = |t: i64| (t <= limit).then_some(t);
        // Open periods in time order, ranges that touch or overlap (`18:00-24:00` then the
        // next day's `00:00-02:00`) merged: the state flips exactly at their ends.
        let mut day = self.local_date(at_ms)?.pred_opt()?;
        let mut open: Option<(i64, i64)> = None;
        while self.place(day, 0)? <= limit {
            let mut intervals: Vec<(i64, i64)> = self.intervals(day).collect();
            intervals.sort_unstable();
            for (start, end) in intervals {
                match open {
                    Some((from, until)) if start <= until => open = Some((from, until.max(end))),
                    Some((from, until)) => {
                        if let Some(t) = change_in(at_ms, from, until) {
                            return found(t);
                        }
                        open = Some((start, end));
                    }
                    None => open = Some((start, end)),
                }
            }
            day = day.succ_opt()?;
        }
        // The last period cannot grow any more within the horizon: the next day starts after it.
        open.and_then(|(from, until)| change_in(at_ms, from, until)).and_then(found)
    }

    /// The local date of an instant.
    fn local_date(&self, at_ms: i64) -> Option<NaiveDate> {
        Some(DateTime::from_timestamp_millis(at_ms)?.with_timezone(&self.timezone).date_naive())
    }

    /// A date's ranges on the timeline (`[start, end)` in ms), those that DST leaves empty
    /// dropped.
    fn intervals(&self, date: NaiveDate) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.hours_on(date).iter().filter_map(move |r| Some((self.place(date, r.start)?, self.place(date, r.end)?))).filter(|(start, end)| start < end)
    }

    /// The instant of a local time, `minute` minutes after `date`'s midnight (1440: the next
    /// midnight): in a DST gap, the first instant after it; when it happens twice, the first.
    fn place(&self, date: NaiveDate, minute: u16) -> Option<i64> {
        let (date, minute) = if minute >= DAY_MINUTES { (date.succ_opt()?, minute - DAY_MINUTES) } else { (date, minute) };
        let wall = date.and_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
        crate::schedule::place(wall, self.timezone)
    }
}

/// The next flip after `at` caused by one open period `[from, until)`: its start if it is
/// still ahead, its end if `at` is inside it.
fn change_in(at: i64, from: i64, until: i64) -> Option<i64> {
    if at < from {
        Some(from)
    } else if at < until {
        Some(until)
    } else {
        None
    }
}

/// Ranges as JSON strings.
fn ranges_json(ranges: &[TimeRange]) -> Value {
    Value::Array(ranges.iter().map(|r| Value::String(r.to_string())).collect())
}

/// The objects of the list `field` (absent or null: none), each with its index and path;
/// reports a value that is not a list, an item that is not an object, and unknown keys.
fn objects<'a>(field: &str, value: Option<&'a Value>, keys: &[&str], problems: &mut Problems) -> Vec<(usize, &'a Map<String, Value>, String)> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            problems.push((field.into(), format!("must be a list of objects with {}", keys.join(" and "))));
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Some(object) = item.as_object() else {
            problems.push((path, format!("must be an object with {}", keys.join(" and "))));
            continue;
        };
        for key in object.keys().filter(|k| !keys.contains(&k.as_str())) {
            problems.push((format!("{path}.{key}"), format!("unknown field; one of {}", keys.join(", "))));
        }
        found.push((i, object, path));
    }
    found
}

/// The `date` of a holiday or override at `path`: `YYYY-MM-DD`, a real date.
fn date_at(path: &str, item: &Map<String, Value>, problems: &mut Problems) -> Option<NaiveDate> {
    let path = format!("{path}.date");
    let text = match item.get("date") {
        Some(Value::String(text)) => text,
        None | Some(Value::Null) => {
            problems.push((path, "required: a date like 2026-12-25".into()));
            return None;
        }
        Some(other) => {
            problems.push((path, format!("{other} is not a date like 2026-12-25")));
            return None;
        }
    };
    let b = text.as_bytes();
    let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let date = shaped.then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()).flatten();
    if date.is_none() {
        problems.push((path, format!("{text} is not a date like 2026-12-25 (YYYY-MM-DD)")));
    }
    date
}

/// The ranges of one day at `path`, sorted; reports ranges that do not parse, that end before
/// they start, and that overlap another of the day.
fn day_ranges(path: &str, value: &Value, problems: &mut Problems) -> Vec<TimeRange> {
    let Some(items) = value.as_array() else {
        problems.push((path.into(), "must be a list of ranges like [\"09:00-17:00\"] ([] is closed)".into()));
        return Vec::new();
    };
    if items.len() > MAX_RANGES_A_DAY {
        problems.push((path.into(), format!("at most {MAX_RANGES_A_DAY} ranges a day")));
        return Vec::new();
    }
    let mut ranges = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(text) = item.as_str() else {
            problems.push((at, format!("{item} is not a range like 09:00-17:00")));
            continue;
        };
        match TimeRange::parse(text) {
            Some(range) => ranges.push((range, i)),
            None => match text.split_once('-').map(|(a, b)| (minutes(a), minutes(b))) {
                Some((Some(start), Some(end))) if start < DAY_MINUTES && end <= start => problems.push((
                    at,
                    format!("{text} ends before it starts: the start must be before the end, within one day (00:00-24:00 is the whole day; split a night, e.g. 22:00-24:00 and 00:00-02:00 the next day)"),
                )),
                _ => problems.push((at, format!("{text} is not a range like 09:00-17:00"))),
            },
        }
    }
    ranges.sort();
    // Sorted by start: a range overlaps an earlier one when it starts before the latest end so far.
    let mut latest: Option<(TimeRange, usize)> = None;
    for &(range, i) in &ranges {
        if let Some((before, j)) = latest {
            if range.start < before.end {
                let (first, second, later) = if j < i { (before, range, i) } else { (range, before, j) };
                let earlier = i.min(j);
                problems.push((format!("{path}[{later}]"), format!("{second} overlaps {first} ({path}[{earlier}])")));
            }
            if range.end <= before.end {
                continue;
            }
        }
        latest = Some((range, i));
    }
    ranges.into_iter().map(|(range, _)| range).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as ChronoDuration, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    const NY: Tz = chrono_tz::America::New_York;

    /// `y-mo-d h:mi` local in `tz`, at its first occurrence.
    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap().timestamp_millis()
    }

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn local(ms: Option<i64>, tz: Tz) -> String {
        ms.map_or_else(|| "never".into(), |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap().with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
    }

    fn hours(json: Value) -> BusinessHours {
        BusinessHours::parse(&json).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn problems(json: Value) -> BTreeMap<String, String> {
        BusinessHours::parse(&json).expect_err("invalid").into_iter().collect()
    }

    fn office() -> BusinessHours {
        let day = json!(["09:00-12:00", "13:00-17:00"]);
        hours(json!({ "timezone": "America/New_York", "weekly": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": ["10:00-14:00"] } }))
    }

    #[test]
    fn weekly_hours_open_and_close() {
        let s = office();
        // Monday 2026-03-02.
        assert!(!s.is_open(at(NY, 2026, 3, 2, 8, 59)));
        assert!(s.is_open(at(NY, 2026, 3, 2, 9, 0)));
        assert!(s.is_open(at(NY, 2026, 3, 2, 11, 59)));
        assert!(!s.is_open(at(NY, 2026, 3, 2, 12, 0)), "the end is excluded");
        assert!(!s.is_open(at(NY, 2026, 3, 2, 12, 30)));
        assert!(!s.is_open(at(NY, 2026, 3, 1, 12, 0)), "Sunday is left out: closed");
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 2, 8, 0)), NY), "2026-03-02 09:00 EST");
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 2, 9, 0)), NY), "2026-03-02 12:00 EST", "strictly after");
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 2, 12, 0)), NY), "2026-03-02 13:00 EST");
        // Friday evening → Saturday 10:00; Saturday 14:00 → Monday 09:00.
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 6, 17, 0)), NY), "2026-03-07 10:00 EST");
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 7, 14, 0)), NY), "2026-03-09 09:00 EDT");
        assert_eq!(s.next_change(at(NY, 2026, 3, 2, 9, 0) + 1), s.next_change(at(NY, 2026, 3, 2, 9, 0)));
    }

    #[test]
    fn a_holiday_closes_the_day_and_wins_over_an_override() {
        let mut json = office().to_json();
        json["holidays"] = json!([{ "date": "2026-12-25", "name": "Christmas" }, { "date": "2026-12-31" }]);
        json["overrides"] = json!([{ "date": "2026-12-31", "hours": ["09:00-10:00"] }]);
        let s = hours(json);
        assert!(!s.is_open(at(NY, 2026, 12, 25, 10, 0)), "Friday the 25th is a holiday");
        assert!(s.is_open(at(NY, 2026, 12, 24, 10, 0)));
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 24, 16, 0)), NY), "2026-12-24 17:00 EST");
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 24, 17, 0)), NY), "2026-12-26 10:00 EST", "over the holiday to Saturday");
        assert!(!s.is_open(at(NY, 2026, 12, 31, 9, 30)), "a holiday wins over an override of its date");
        assert_eq!(s.holidays[&NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].as_deref(), Some("Christmas"));
    }

    #[test]
    fn an_override_replaces_the_weekday() {
        let mut json = office().to_json();
        json["overrides"] = json!([
            { "date": "2026-12-24", "hours": ["10:00-14:00"] },
            { "date": "2026-12-26", "hours": [] },
            { "date": "2026-12-27", "hours": ["00:00-24:00"] },
        ]);
        let s = hours(json);
        assert!(!s.is_open(at(NY, 2026, 12, 24, 9, 30)));
        assert!(s.is_open(at(NY, 2026, 12, 24, 12, 30)), "no lunch break on the override");
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 24, 9, 0)), NY), "2026-12-24 10:00 EST");
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 24, 10, 0)), NY), "2026-12-24 14:00 EST");
        assert!(!s.is_open(at(NY, 2026, 12, 26, 11, 0)), "an empty override closes a Saturday");
        assert!(s.is_open(at(NY, 2026, 12, 27, 3, 0)), "a Sunday open all day");
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 26, 11, 0)), NY), "2026-12-27 00:00 EST");
        // All Sunday, then Monday 09:00: closed from midnight.
        assert_eq!(local(s.next_change(at(NY, 2026, 12, 27, 0, 0)), NY), "2026-12-28 00:00 EST");
    }

    #[test]
    fn ranges_that_touch_across_midnight_do_not_flip() {
        let s = hours(json!({ "timezone": "UTC", "weekly": { "fri": ["18:00-24:00"], "sat": ["00:00-02:00", "02:00-03:00"] } }));
        let friday = utc("2026-03-06T19:00:00Z");
        assert!(s.is_open(friday));
        assert_eq!(s.next_change(friday), Some(utc("2026-03-07T03:00:00Z")));
        assert_eq!(s.next_change(utc("2026-03-06T17:00:00Z")), Some(utc("2026-03-06T18:00:00Z")));
        assert!(s.is_open(utc("2026-03-07T00:00:00Z")));
    }

    #[test]
    fn spring_forward_in_new_york() {
        // Sunday 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z); 02:00-02:59 does not exist.
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sun": ["02:30-04:00"], "sat": ["22:00-24:00"] } }));
        let midnight = at(NY, 2026, 3, 8, 0, 0);
        assert_eq!(s.next_change(midnight), Some(utc("2026-03-08T07:00:00Z")), "02:30 starts when the clocks jump");
        assert_eq!(local(s.next_change(midnight), NY), "2026-03-08 03:00 EDT");
        assert!(!s.is_open(utc("2026-03-08T06:59:59Z")));
        assert!(s.is_open(utc("2026-03-08T07:00:00Z")));
        assert_eq!(s.next_change(utc("2026-03-08T07:00:00Z")), Some(utc("2026-03-08T08:00:00Z")), "04:00 EDT: one real hour open");
        // A range that ends in the gap ends at the jump; one wholly inside it never opens.
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sun": ["01:00-02:30"], "mon": ["09:00-17:00"] } }));
        assert_eq!(s.next_change(midnight), Some(utc("2026-03-08T06:00:00Z")), "01:00 EST");
        assert_eq!(s.next_change(utc("2026-03-08T06:00:00Z")), Some(utc("2026-03-08T07:00:00Z")));
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sun": ["02:10-02:50"], "mon": ["09:00-17:00"] } }));
        assert_eq!(local(s.next_change(midnight), NY), "2026-03-09 09:00 EDT", "a range inside the gap is empty");
        // Open all weekend: nothing flips at the jump.
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sat": ["00:00-24:00"], "sun": ["00:00-24:00"] } }));
        assert_eq!(local(s.next_change(at(NY, 2026, 3, 7, 12, 0)), NY), "2026-03-09 00:00 EDT");
    }

    #[test]
    fn fall_back_in_new_york() {
        // Sunday 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z); 01:00-01:59 happens twice.
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sun": ["01:30-03:00"] } }));
        let midnight = at(NY, 2026, 11, 1, 0, 0);
        assert_eq!(s.next_change(midnight), Some(utc("2026-11-01T05:30:00Z")), "the first 01:30 (EDT)");
        assert!(s.is_open(utc("2026-11-01T06:15:00Z")), "the second 01:15 (EST) is inside");
        assert_eq!(s.next_change(utc("2026-11-01T05:30:00Z")), Some(utc("2026-11-01T08:00:00Z")), "03:00 EST: two and a half hours open");
        let s = hours(json!({ "timezone": "America/New_York", "weekly": { "sun": ["00:00-01:30", "02:00-04:00"] } }));
        assert!(s.is_open(utc("2026-11-01T05:00:00Z")), "01:00 EDT");
        assert_eq!(s.next_change(midnight), Some(utc("2026-11-01T05:30:00Z")), "closes at the first 01:30");
        assert!(!s.is_open(utc("2026-11-01T06:00:00Z")), "01:00 EST, the second time round, is after 01:30's first occurrence");
        assert_eq!(s.next_change(utc("2026-11-01T05:30:00Z")), Some(utc("2026-11-01T07:00:00Z")), "02:00 EST");
        assert_eq!(s.next_change(utc("2026-11-01T07:00:00Z")), Some(utc("2026-11-01T09:00:00Z")), "04:00 EST");
    }

    #[test]
    fn half_hour_and_three_quarter_hour_offsets() {
        let kolkata = hours(json!({ "timezone": "Asia/Kolkata", "weekly": { "mon": ["09:00-17:30"] } }));
        // Monday 2026-03-02 09:00 IST is 03:30Z.
        assert_eq!(kolkata.next_change(utc("2026-03-02T00:00:00Z")), Some(utc("2026-03-02T03:30:00Z")));
        assert_eq!(kolkata.next_change(utc("2026-03-02T03:30:00Z")), Some(utc("2026-03-02T12:00:00Z")));
        assert!(!kolkata.is_open(utc("2026-03-02T03:29:59Z")));
        let kathmandu = hours(json!({ "timezone": "Asia/Kathmandu", "weekly": { "mon": ["09:00-17:00"] } }));
        // 09:00 NPT (+05:45) is 03:15Z.
        assert_eq!(kathmandu.next_change(utc("2026-03-02T00:00:00Z")), Some(utc("2026-03-02T03:15:00Z")));
        assert!(kathmandu.is_open(utc("2026-03-02T03:15:00Z")));
        assert_eq!(kathmandu.next_change(utc("2026-03-02T03:15:00Z")), Some(utc("2026-03-02T11:15:00Z")));
    }

    #[test]
    fn next_change_looks_400_days_ahead() {
        let never = hours(json!({ "timezone": "UTC" }));
        assert_eq!(never.next_change(utc("2026-01-01T00:00:00Z")), None);
        assert!(!never.is_open(utc("2026-01-01T00:00:00Z")));
        let day = json!(["00:00-24:00"]);
        let always =
            hours(json!({ "timezone": "Europe/Berlin", "weekly": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day } }));
        assert!(always.is_open(utc("2026-03-29T01:30:00Z")));
        assert_eq!(always.next_change(utc("2026-03-29T00:00:00Z")), None, "not even at DST");
        let once = |date: &str| hours(json!({ "timezone": "UTC", "overrides": [{ "date": date, "hours": ["10:00-11:00"] }] }));
        let start = utc("2026-01-01T10:00:00Z");
        assert_eq!(once("2027-01-30").next_change(start), Some(utc("2027-01-30T10:00:00Z")), "394 days ahead");
        assert_eq!(once("2027-02-05").next_change(start), Some(utc("2027-02-05T10:00:00Z")), "exactly 400 days ahead");
        assert_eq!(once("2027-02-06").next_change(start), None, "401 days ahead");
        assert_eq!(never.next_change(i64::MAX), None);
        assert!(!never.is_open(i64::MIN));
    }

    #[test]
    fn to_json_reads_back() {
        let mut json = office().to_json();
        json["holidays"] = json!([{ "date": "2026-12-25", "name": "Christmas" }]);
        json["overrides"] = json!([{ "date": "2026-12-24", "hours": ["10:00-14:00"] }]);
        let s = hours(json.clone());
        assert_eq!(s.to_json(), json);
        assert_eq!(json["weekly"]["sun"], json!([]));
        assert_eq!(json["holidays"][0]["name"], "Christmas");
        assert_eq!(hours(s.to_json()), s);
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let found = problems(json!({
            "timezone": "Mars/Olympus_Mons",
            "weekly": { "mon": ["09:00-25:00", "9:00-17:00", 5], "tue": ["17:00-09:00"], "wed": ["09:00-12:00", "11:00-13:00", "08:00-08:30"], "funday": [], "thu": "09:00-17:00" },
            "holidays": [{ "date": "2026-02-30", "name": "nope" }, { "date": "26-12-25" }, { "name": "undated" }, "2026-12-25", { "date": "2026-12-25", "why": 1 }],
            "overrides": [{ "date": "2026-12-24" }, { "date": "2026-12-24", "hours": ["10:00-14:00", "13:00-15:00"] }],
            "color": "blue",
        }));
        let expect = |path: &str, needle: &str| {
            let message = found.get(path).unwrap_or_else(|| panic!("no problem at {path}: {found:#?}"));
            assert!(message.contains(needle), "{path}: {message}");
        };
        expect("timezone", "'Mars/Olympus_Mons' is not an IANA timezone");
        expect("weekly.mon[0]", "09:00-25:00 is not a range like 09:00-17:00");
        expect("weekly.mon[1]", "9:00-17:00 is not a range like");
        expect("weekly.mon[2]", "5 is not a range");
        expect("weekly.tue[0]", "ends before it starts");
        expect("weekly.wed[1]", "11:00-13:00 overlaps 09:00-12:00 (weekly.wed[0])");
        expect("weekly.funday", "unknown weekday 'funday'; one of mon, tue");
        expect("weekly.thu", "must be a list of ranges");
        expect("holidays[0].date", "2026-02-30 is not a date like 2026-12-25");
        expect("holidays[1].date", "26-12-25 is not a date");
        expect("holidays[2].date", "required");
        expect("holidays[3]", "must be an object");
        expect("holidays[4].why", "unknown field");
        expect("overrides[0].hours", "required");
        expect("overrides[1].date", "overridden twice");
        expect("overrides[1].hours[1]", "13:00-15:00 overlaps 10:00-14:00 (overrides[1].hours[0])");
        expect("color", "unknown field");
        assert_eq!(found.len(), 17, "{found:#?}");
        assert_eq!(problems(json!({})).keys().collect::<Vec<_>>(), ["timezone"]);
        assert_eq!(problems(json!([])).keys().collect::<Vec<_>>(), [""]);
        assert_eq!(problems(json!({ "timezone": 3 }))["timezone"], "must be a string: an IANA timezone, e.g. America/New_York");
    }

    #[test]
    fn ranges_read_strictly() {
        let r = |s: &str| TimeRange::parse(s).map(|r| (r.start, r.end));
        assert_eq!(r("09:00-17:00"), Some((540, 1020)));
        assert_eq!(r("00:00-24:00"), Some((0, 1440)));
        assert_eq!(r("18:00-24:00"), Some((1080, 1440)));
        for bad in
            ["24:00-24:00", "09:00-09:00", "17:00-09:00", "09:00-24:01", "09:60-10:00", "0900-1000", "09:00 - 17:00", "09:00-17:00 ", "", "-", "a9:00-17:00"]
        {
            assert_eq!(r(bad), None, "{bad}");
        }
        assert_eq!(TimeRange::parse("07:05-23:59").unwrap().to_string(), "07:05-23:59");
        // Touching ranges are not overlapping; listed out of order they are sorted.
        let s = hours(json!({ "timezone": "UTC", "weekly": { "mon": ["13:00-17:00", "09:00-13:00"] } }));
        assert_eq!(s.weekly[0].iter().map(ToString::to_string).collect::<Vec<_>>(), ["09:00-13:00", "13:00-17:00"]);
    }

    /// Zones with DST at different hours and directions, and fractional offsets.
    const ZONES: [&str; 8] =
        ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "Asia/Kathmandu", "America/Santiago", "Pacific/Chatham", "UTC"];

    /// A day's ranges: cut points in the day (a quarter hour or a minute apart), paired up.
    fn day() -> impl Strategy<Value = Vec<String>> {
        (prop::collection::btree_set(prop_oneof![(0u16..=96).prop_map(|q| q * 15), 0u16..=1440], 0..6)).prop_map(|cuts| {
            let cuts: Vec<u16> = cuts.into_iter().collect();
            cuts.chunks_exact(2).map(|p| TimeRange { start: p[0], end: p[1] }.to_string()).collect()
        })
    }

    fn schedule(zones: &[&'static str]) -> impl Strategy<Value = BusinessHours> {
        (
            prop::sample::select(zones.to_vec()),
            prop::collection::vec(day(), 7),
            prop::collection::btree_set(0i64..20, 0..3),
            prop::collection::btree_map(0i64..20, day(), 0..3),
        )
            .prop_map(|(zone, week, holidays, overrides)| {
                // Dates near the instants tried (March 2026, DST in both hemispheres).
                let date = |offset: i64| (NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + ChronoDuration::days(offset)).to_string();
                let weekly: Map<String, Value> = WEEKDAYS.iter().zip(week).map(|(d, r)| (d.to_string(), json!(r))).collect();
                let holidays: Vec<Value> = holidays.into_iter().map(|o| json!({ "date": date(o) })).collect();
                let overrides: Vec<Value> = overrides.into_iter().map(|(o, hours)| json!({ "date": date(o), "hours": hours })).collect();
                hours(json!({ "timezone": zone, "weekly": weekly, "holidays": holidays, "overrides": overrides }))
            })
    }

    /// Instants around DST changes of 2026 (March, April, September, November), to the second.
    fn instant() -> impl Strategy<Value = i64> {
        (
            prop::sample::select(vec!["2026-03-01T00:00:00Z", "2026-03-27T00:00:00Z", "2026-04-02T00:00:00Z", "2026-09-24T00:00:00Z", "2026-10-30T00:00:00Z"]),
            0i64..(14 * 86_400),
        )
            .prop_map(|(base, s)| utc(base) + s * 1000)
    }

    /// How far the minute-by-minute check walks.
    const WALK_MINUTES: i64 = 8 * 24 * 60;

    proptest! {
        #[test]
        fn next_change_flips_and_nothing_flips_before_it(s in schedule(&ZONES), at in instant()) {
            let open = s.is_open(at);
            let next = s.next_change(at);
            if let Some(next) = next {
                prop_assert!(next > at);
                prop_assert_ne!(s.is_open(next), open, "no flip at next_change {}", local(Some(next), s.timezone));
                prop_assert_eq!(s.is_open(next - 1), open, "flipped before next_change {}", local(Some(next), s.timezone));
                prop_assert_eq!(s.next_change(next - 1), Some(next));
            }
            // Every minute after `at` up to the change (or the walk's end) has `at`'s state.
            let until = next.unwrap_or(i64::MAX).min(at + WALK_MINUTES * 60_000);
            let first = at - at.rem_euclid(60_000) + 60_000;
            for t in (first..until).step_by(60_000) {
                prop_assert_eq!(s.is_open(t), open, "flipped at {} before next_change {}", local(Some(t), s.timezone), local(next, s.timezone));
            }
        }

        #[test]
        fn without_dst_open_is_the_local_time_in_a_range(s in schedule(&["Asia/Kolkata", "Asia/Kathmandu", "UTC"]), at in instant()) {
            // Where local time runs straight, "open" is simply: the local minute is in a range
            // of its date.
            for t in (at..at + 3 * 86_400_000).step_by(7 * 60_000) {
                let wall = DateTime::<Utc>::from_timestamp_millis(t).unwrap().with_timezone(&s.timezone).naive_local();
                let minute = (wall.time().signed_duration_since(chrono::NaiveTime::MIN).num_minutes()) as u16;
                let expected = s.hours_on(wall.date()).iter().any(|r| r.start <= minute && minute < r.end);
                prop_assert_eq!(s.is_open(t), expected, "at {}", wall);
            }
        }
    }
}
