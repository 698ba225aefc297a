//! Contact rules: when a workflow may reach a person, and whom it may not reach at all.
//!
//! - **Quiet hours** ([`ContactRules`]): per account, a window of local time (default
//!   21:00–08:00, US TCPA's "8 a.m. to 9 p.m.") and optional whole days off, applied to the
//!   action kinds in `applies_to` (default `sms.send` and `voice.call`). Local means the lead's:
//!   `event.lead.timezone` when it names an IANA zone, else the account's ([`zone`]). A step
//!   due inside them is deferred to [`ContactRules::deferral`], the first minute they allow.
//!
//!   Quiet hours are read on the wall clock: a local time is quiet when its minute falls in the
//!   window, or its date's weekday is a day off. Daylight saving time changes nothing in that
//!   reading: at 02:10 on a spring-forward night (a time that does not exist) nothing is due
//!   anyway, and the hour that happens twice on a fall-back night is quiet both times if the
//!   window covers it. The first allowed minute is found on the timeline, so a window ending in
//!   a DST gap ends when the clocks jump.
//! - **Local-time delays** ([`next_local_time`]): the next time the local clock reads `09:00`.
//!   A time in a gap is taken when the clocks jump past it; a time that happens twice, at its
//!   first occurrence only, so such a delay fires once.
//! - **Opt-outs** ([`Channel`], [`keyword`]): numbers that said STOP. Twilio's opt-out keywords
//!   record one, its opt-in keywords clear it.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, Timelike};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::hours::WEEKDAYS;

/// The action kinds quiet hours apply to unless an account says otherwise.
pub const DEFAULT_APPLIES_TO: [&str; 2] = ["sms.send", "voice.call"];

/// The fields of the rules' JSON.
const FIELDS: [&str; 2] = ["quiet_hours", "applies_to"];

/// The fields of `quiet_hours`.
const QUIET_FIELDS: [&str; 3] = ["start", "end", "days_off"];

/// Minutes in a day.
const DAY_MINUTES: i64 = 24 * 60;

/// A window of local time in which nobody is contacted, and whole local days off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    /// Starts, minutes after midnight (included).
    pub start: u16,
    /// Ends, minutes after midnight (excluded). Before `start`: the window crosses midnight.
    pub end: u16,
    /// Days off, by `Weekday::num_days_from_monday`: quiet all day.
    pub days_off: [bool; 7],
}

/// An account's contact rules (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRules {
    /// The quiet hours; `None` switches them off.
    pub quiet_hours: Option<QuietHours>,
    /// The action kinds they apply to.
    pub applies_to: Vec<String>,
}

impl Default for ContactRules {
    fn default() -> Self {
        Self { quiet_hours: Some(QuietHours { start: 21 * 60, end: 8 * 60, days_off: [false; 7] }), applies_to: DEFAULT_APPLIES_TO.map(String::from).to_vec() }
    }
}

impl QuietHours {
    /// Whether the local time of `at_ms` in `tz` is quiet.
    pub fn is_quiet(&self, tz: Tz, at_ms: i64) -> bool {
        let Some(utc) = DateTime::from_timestamp_millis(at_ms) else { return false };
        let wall = utc.with_timezone(&tz);
        if self.days_off[wall.weekday().num_days_from_monday() as usize] {
            return true;
        }
        let minute = (wall.hour() * 60 + wall.minute()) as u16;
        if self.start < self.end { self.start <= minute && minute < self.end } else { minute >= self.start || minute < self.end }
    }

    /// The first instant at or after `at_ms` that is not quiet.
    ///
    /// Quietness changes only on a whole minute (the window's edges and midnight are whole
    /// local minutes, and zones change their offsets on whole minutes), so the minutes after
    /// `at_ms` are tried in order. At most seven days and a window are walked: the rules keep
    /// at least one day on, and the window shorter than a day.
    fn first_allowed(&self, tz: Tz, at_ms: i64) -> i64 {
        if !self.is_quiet(tz, at_ms) {
            return at_ms;
        }
        let first = at_ms - at_ms.rem_euclid(60_000) + 60_000;
        (0..9 * DAY_MINUTES).map(|m| first + m * 60_000).find(|t| !self.is_quiet(tz, *t)).unwrap_or(first + 9 * DAY_MINUTES * 60_000)
    }
}

impl ContactRules {
    /// Parses and validates the rules' JSON (`{quiet_hours: {start, end, days_off}, applies_to}`;
    /// a field left out keeps its default, `quiet_hours: null` switches quiet hours off). Every
    /// problem comes with its path, e.g. `("quiet_hours.start", …)`. The action kinds named are
    /// not checked against a registry here.
    pub fn parse(json: &Value) -> Result<Self, Vec<(String, String)>> {
        let Some(map) = json.as_object() else {
            return Err(vec![(String::new(), "contact rules are an object {quiet_hours, applies_to}".into())]);
        };
        let mut problems = Vec::new();
        for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            problems.push((key.clone(), "unknown field; contact rules have quiet_hours and applies_to".into()));
        }
        let mut rules = ContactRules::default();
        match map.get("quiet_hours") {
            None => {}
            Some(Value::Null) => rules.quiet_hours = None,
            Some(Value::Object(q)) => rules.quiet_hours = quiet_hours(q, &mut problems),
            Some(_) => problems.push(("quiet_hours".into(), "must be an object {start, end, days_off} or null".into())),
        }
        match map.get("applies_to") {
            None => {}
            Some(Value::Array(kinds)) => {
                rules.applies_to.clear();
                for (i, kind) in kinds.iter().enumerate() {
                    match kind.as_str() {
                        Some(k) if rules.applies_to.iter().any(|seen| seen == k) => {
                            problems.push((format!("applies_to[{i}]"), format!("'{k}' is listed twice")))
                        }
                        Some(k) if !k.is_empty() && k.len() <= 64 => rules.applies_to.push(k.to_string()),
                        _ => problems.push((format!("applies_to[{i}]"), "must be an action kind, e.g. sms.send".into())),
                    }
                }
            }
            Some(_) => problems.push(("applies_to".into(), "must be a list of action kinds, e.g. [\"sms.send\", \"voice.call\"]".into())),
        }
        if problems.is_empty() { Ok(rules) } else { Err(problems) }
    }

    /// The rules as stored; the defaults when nothing (or something unreadable) is.
    pub fn from_stored(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str::<Value>(t).ok()).and_then(|v| Self::parse(&v).ok()).unwrap_or_default()
    }

    /// The rules as JSON, every field present, in the form [`ContactRules::parse`] reads.
    pub fn to_json(&self) -> Value {
        let quiet = self.quiet_hours.as_ref().map(|q| {
            let days_off: Vec<&str> = WEEKDAYS.iter().zip(q.days_off).filter(|(_, off)| *off).map(|(d, _)| *d).collect();
            json!({ "start": hhmm(q.start), "end": hhmm(q.end), "days_off": days_off })
        });
        json!({ "quiet_hours": quiet, "applies_to": self.applies_to })
    }

    /// Whether quiet hours apply to an action kind.
    pub fn applies_to(&self, kind: &str) -> bool {
        self.quiet_hours.is_some() && self.applies_to.iter().any(|k| k == kind)
    }

    /// `None` when a step may contact someone in `tz` at `at_ms`; else the first minute the
    /// quiet hours allow, which is never earlier than `at_ms`.
    pub fn deferral(&self, tz: Tz, at_ms: i64) -> Option<i64> {
        let q = self.quiet_hours.as_ref()?;
        let allowed = q.first_allowed(tz, at_ms);
        (allowed > at_ms).then_some(allowed)
    }
}

fn quiet_hours(q: &Map<String, Value>, problems: &mut Vec<(String, String)>) -> Option<QuietHours> {
    for key in q.keys().filter(|k| !QUIET_FIELDS.contains(&k.as_str())) {
        problems.push((format!("quiet_hours.{key}"), "unknown field; quiet hours have start, end and days_off".into()));
    }
    let before = problems.len();
    let mut time = |field: &str| -> u16 {
        match q.get(field).and_then(Value::as_str).and_then(minutes) {
            Some(m) => m,
            None => {
                problems.push((format!("quiet_hours.{field}"), "required: a local time HH:MM, e.g. 21:00".into()));
                0
            }
        }
    };
    let (start, end) = (time("start"), time("end"));
    let mut days_off = [false; 7];
    match q.get("days_off") {
        None | Some(Value::Null) => {}
        Some(Value::Array(days)) => {
            for (i, day) in days.iter().enumerate() {
                match day.as_str().and_then(|d| WEEKDAYS.iter().position(|w| *w == d)) {
                    Some(d) if days_off[d] => problems.push((format!("quiet_hours.days_off[{i}]"), "is listed twice".into())),
                    Some(d) => days_off[d] = true,
                    None => problems.push((format!("quiet_hours.days_off[{i}]"), format!("must be a weekday: one of {}", WEEKDAYS.join(", ")))),
                }
            }
        }
        Some(_) => problems.push(("quiet_hours.days_off".into(), "must be a list of weekdays, e.g. [\"sun\"]".into())),
    }
    if problems.len() > before {
        return None;
    }
    if start == end {
        problems.push(("quiet_hours.end".into(), "must differ from start (to switch quiet hours off, write quiet_hours: null)".into()));
    }
    if days_off.iter().all(|off| *off) {
        problems.push(("quiet_hours.days_off".into(), "leaves no day to contact anyone; keep at least one day".into()));
    }
    (problems.len() == before).then_some(QuietHours { start, end, days_off })
}

/// `HH:MM` (00:00 to 23:59) as minutes after midnight: business hours' reading, without
/// their `24:00`.
pub fn minutes(text: &str) -> Option<u16> {
    crate::hours::minutes(text).filter(|m| *m < DAY_MINUTES as u16)
}

/// Minutes after midnight as `HH:MM`.
pub fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The zone a contact's local time is read in: `preferred` (the lead's) when it names an IANA
/// zone, else the account's, else UTC. The second value says whether the preferred one was used.
pub fn zone(preferred: Option<&str>, account: &str) -> (Tz, bool) {
    match preferred.map(str::trim).filter(|s| !s.is_empty()).and_then(|s| s.parse::<Tz>().ok()) {
        Some(tz) => (tz, true),
        None => (account.parse::<Tz>().unwrap_or(Tz::UTC), false),
    }
}

/// The first instant strictly after `after_ms` at which the local clock in `tz` reads `minute`
/// (minutes after midnight): in a DST gap, when the clocks jump past it; when it happens twice,
/// at its first occurrence only.
pub fn next_local_time(tz: Tz, minute: u16, after_ms: i64) -> Option<i64> {
    let today: NaiveDate = DateTime::from_timestamp_millis(after_ms)?.with_timezone(&tz).date_naive();
    (-1..=3).find_map(|offset| {
        let wall = (today + ChronoDuration::days(offset)).and_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
        crate::schedule::place(wall, tz).filter(|t| *t > after_ms)
    })
}

/// The channel an opt-out covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Texts (`sms.send`).
    Sms,
    /// Calls (`voice.call`).
    Voice,
    /// Both.
    All,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Voice, Channel::All];

    /// Its stored and shown name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::All => "all",
        }
    }

    /// Reads a name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// What an inbound text asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// Stop texting and calling me.
    OptOut,
    /// Start again.
    OptIn,
}

/// Twilio's opt-out keywords.
pub const OPT_OUT_KEYWORDS: [&str; 8] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"];

/// Twilio's opt-in keywords.
pub const OPT_IN_KEYWORDS: [&str; 3] = ["START", "UNSTOP", "YES"];

/// The keyword an inbound text is, if it is one: the whole body, case and surrounding white
/// space and punctuation aside (`Stop.` is STOP; `stop texting me` is not a keyword), as Twilio
/// matches them.
pub fn keyword(body: &str) -> Option<Keyword> {
    let word = body.trim().trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace()).to_ascii_uppercase();
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
        Some(Keyword::OptIn)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Offset, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;

    const NY: Tz = chrono_tz::America::New_York;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn local(ms: i64, tz: Tz) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap().with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
    }

    fn rules(json: Value) -> ContactRules {
        ContactRules::parse(&json).unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn defaults_defer_a_night_step_to_eight_in_the_morning() {
        let r = ContactRules::default();
        assert_eq!(r.to_json(), json!({ "quiet_hours": { "start": "21:00", "end": "08:00", "days_off": [] }, "applies_to": ["sms.send", "voice.call"] }));
        assert!(r.applies_to("sms.send") && r.applies_to("voice.call") && !r.applies_to("email.send"));
        // 06:00 in New York is 03:00 in Los Angeles: deferred to 08:00 Pacific.
        let la = chrono_tz::America::Los_Angeles;
        let at = utc("2026-06-10T10:00:00Z");
        assert_eq!(local(r.deferral(la, at).unwrap(), la), "2026-06-10 08:00 PDT");
        assert_eq!(local(r.deferral(NY, at).unwrap(), NY), "2026-06-10 08:00 EDT", "06:00 EDT is quiet too");
        assert_eq!(r.deferral(NY, utc("2026-06-10T13:00:00Z")), None, "09:00 EDT is allowed");
        assert_eq!(local(r.deferral(NY, utc("2026-06-11T01:00:00Z")).unwrap(), NY), "2026-06-11 08:00 EDT", "21:00 is quiet");
        assert_eq!(r.deferral(NY, utc("2026-06-11T00:59:59Z")), None, "20:59:59 is not");
        assert_eq!(r.deferral(NY, utc("2026-06-10T12:00:00Z")), None, "08:00 is allowed");
    }

    #[test]
    fn the_spring_forward_night_ends_at_eight_local() {
        // 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT. 02:10 does not exist; a step
        // due at 07:10 UTC (03:10 EDT, what "02:10" becomes) waits until 08:00 EDT.
        let r = ContactRules::default();
        let due = utc("2026-03-08T07:10:00Z");
        assert_eq!(local(due, NY), "2026-03-08 03:10 EDT");
        assert_eq!(local(r.deferral(NY, due).unwrap(), NY), "2026-03-08 08:00 EDT");
        assert_eq!(r.deferral(NY, due).unwrap(), utc("2026-03-08T12:00:00Z"));
        // A window that ends in the gap ends when the clocks jump.
        let r = rules(json!({ "quiet_hours": { "start": "23:00", "end": "02:30" } }));
        assert_eq!(local(r.deferral(NY, utc("2026-03-08T06:59:00Z")).unwrap(), NY), "2026-03-08 03:00 EDT");
    }

    #[test]
    fn the_fall_back_hour_is_quiet_both_times() {
        // 2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST.
        let r = rules(json!({ "quiet_hours": { "start": "00:30", "end": "01:30" } }));
        let first = utc("2026-11-01T05:00:00Z");
        assert_eq!(local(first, NY), "2026-11-01 01:00 EDT");
        assert_eq!(local(r.deferral(NY, first).unwrap(), NY), "2026-11-01 01:30 EDT");
        let second = utc("2026-11-01T06:00:00Z");
        assert_eq!(local(second, NY), "2026-11-01 01:00 EST");
        assert_eq!(local(r.deferral(NY, second).unwrap(), NY), "2026-11-01 01:30 EST", "the second 01:00 is quiet again");
    }

    #[test]
    fn days_off_are_quiet_all_day() {
        let r = rules(json!({ "quiet_hours": { "start": "21:00", "end": "08:00", "days_off": ["sun"] } }));
        // Saturday 2026-06-13 22:00 EDT → Monday 08:00 EDT.
        assert_eq!(local(r.deferral(NY, utc("2026-06-14T02:00:00Z")).unwrap(), NY), "2026-06-15 08:00 EDT");
        // A window inside the day.
        let r = rules(json!({ "quiet_hours": { "start": "12:00", "end": "13:30", "days_off": ["sat", "sun"] } }));
        assert_eq!(local(r.deferral(NY, utc("2026-06-12T16:15:00Z")).unwrap(), NY), "2026-06-12 13:30 EDT");
        assert_eq!(local(r.deferral(NY, utc("2026-06-13T16:15:00Z")).unwrap(), NY), "2026-06-15 00:00 EDT", "the weekend is off");
    }

    #[test]
    fn rules_read_strictly_and_report_every_problem() {
        assert_eq!(rules(json!({})), ContactRules::default());
        assert_eq!(rules(json!({ "quiet_hours": null })).quiet_hours, None);
        assert!(!rules(json!({ "quiet_hours": null })).applies_to("sms.send"));
        let r = rules(json!({ "quiet_hours": { "start": "20:00", "end": "09:30", "days_off": ["sun", "sat"] }, "applies_to": ["sms.send"] }));
        assert_eq!(r.to_json(), json!({ "quiet_hours": { "start": "20:00", "end": "09:30", "days_off": ["sat", "sun"] }, "applies_to": ["sms.send"] }));
        assert_eq!(ContactRules::parse(&r.to_json()), Ok(r));
        let bad = ContactRules::parse(&json!({
            "quiet_hours": { "start": "25:00", "days_off": ["sunday", "mon", "mon"], "tz": 1 },
            "applies_to": ["sms.send", "sms.send", 3],
            "color": "red",
        }))
        .unwrap_err();
        let paths: Vec<&str> = bad.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "color",
                "quiet_hours.tz",
                "quiet_hours.start",
                "quiet_hours.end",
                "quiet_hours.days_off[0]",
                "quiet_hours.days_off[2]",
                "applies_to[1]",
                "applies_to[2]"
            ],
            "{bad:?}"
        );
        let same = ContactRules::parse(&json!({ "quiet_hours": { "start": "08:00", "end": "08:00" } })).unwrap_err();
        assert_eq!(same[0].0, "quiet_hours.end");
        let every = ContactRules::parse(&json!({ "quiet_hours": { "start": "21:00", "end": "08:00", "days_off": WEEKDAYS } })).unwrap_err();
        assert_eq!(every[0].0, "quiet_hours.days_off");
        assert!(ContactRules::parse(&json!([])).is_err());
        assert_eq!(ContactRules::from_stored(Some("not json")), ContactRules::default());
    }

    #[test]
    fn local_times_in_gaps_and_overlaps() {
        // The next 09:00 in New York after a Monday noon is Tuesday's.
        assert_eq!(local(next_local_time(NY, 9 * 60, utc("2026-06-15T16:00:00Z")).unwrap(), NY), "2026-06-16 09:00 EDT");
        assert_eq!(local(next_local_time(NY, 9 * 60, utc("2026-06-15T12:59:00Z")).unwrap(), NY), "2026-06-15 09:00 EDT");
        // Spring forward: 02:30 does not exist; taken when the clocks jump, at 03:00 EDT.
        assert_eq!(local(next_local_time(NY, 150, utc("2026-03-08T05:00:00Z")).unwrap(), NY), "2026-03-08 03:00 EDT");
        // Fall back: 01:30 happens twice; only the first counts.
        let first = next_local_time(NY, 90, utc("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(local(first, NY), "2026-11-01 01:30 EDT");
        let after = next_local_time(NY, 90, first).unwrap();
        assert_eq!(local(after, NY), "2026-11-02 01:30 EST", "not the second 01:30 of the same night");
        assert_eq!(next_local_time(NY, 90, first - 1), Some(first));
    }

    #[test]
    fn keywords_are_twilios() {
        for stop in ["STOP", "stop", " Stop. ", "unsubscribe", "STOPALL", "cancel", "end", "quit", "revoke", "optout", "stop!"] {
            assert_eq!(keyword(stop), Some(Keyword::OptOut), "{stop}");
        }
        for start in ["START", "start", "Unstop", "yes", "YES!"] {
            assert_eq!(keyword(start), Some(Keyword::OptIn), "{start}");
        }
        for other in ["stop texting me", "STOP STOP", "help", "", "Stopp", "no"] {
            assert_eq!(keyword(other), None, "{other}");
        }
    }

    #[test]
    fn zones_fall_back_to_the_account() {
        assert_eq!(zone(Some("America/Los_Angeles"), "Europe/Berlin"), (chrono_tz::America::Los_Angeles, true));
        assert_eq!(zone(Some("Mars/Olympus"), "Europe/Berlin"), (chrono_tz::Europe::Berlin, false));
        assert_eq!(zone(None, "Europe/Berlin"), (chrono_tz::Europe::Berlin, false));
        assert_eq!(zone(Some(""), "nowhere"), (Tz::UTC, false));
    }

    /// Zones with 30- and 45-minute offsets, southern-hemisphere DST, a 30-minute DST shift
    /// (Lord Howe), DST at midnight (Santiago), and the plain ones.
    const ZONES: [&str; 12] = [
        "America/New_York",
        "America/Los_Angeles",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Adelaide",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/St_Johns",
        "America/Santiago",
        "Australia/Sydney",
        "UTC",
    ];

    fn quiet() -> impl Strategy<Value = QuietHours> {
        let minute = prop_oneof![(0u16..96).prop_map(|q| q * 15), 0u16..1440];
        (minute.clone(), minute, prop::collection::vec(prop::bool::weighted(0.15), 7))
            .prop_filter("start differs from end", |(s, e, _)| s != e)
            .prop_filter("a day on", |(_, _, off)| off.iter().any(|o| !o))
            .prop_map(|(start, end, off)| QuietHours { start, end, days_off: off.try_into().unwrap() })
    }

    /// Instants over several years, around both hemispheres' DST changes, to the millisecond.
    fn instant() -> impl Strategy<Value = i64> {
        (
            prop::sample::select(vec![
                "2026-03-06T00:00:00Z",
                "2026-03-27T00:00:00Z",
                "2026-04-03T00:00:00Z",
                "2026-09-25T00:00:00Z",
                "2026-10-30T00:00:00Z",
                "2031-01-01T00:00:00Z",
            ]),
            0i64..(5 * 86_400_000),
        )
            .prop_map(|(base, ms)| utc(base) + ms)
    }

    /// The local minute of an instant, and its weekday, read independently of the code tested.
    fn wall(tz: Tz, ms: i64) -> (u16, usize) {
        let t = tz.timestamp_millis_opt(ms).unwrap();
        ((t.hour() * 60 + t.minute()) as u16, t.weekday().num_days_from_monday() as usize)
    }

    proptest! {
        #[test]
        fn a_deferred_step_is_outside_the_window_never_early_and_at_most_one_window_late(
            q in quiet(),
            zone in prop::sample::select(ZONES.to_vec()),
            at in instant(),
        ) {
            let tz: Tz = zone.parse().unwrap();
            let r = ContactRules { quiet_hours: Some(q.clone()), applies_to: vec!["sms.send".into()] };
            let (minute, day) = wall(tz, at);
            let in_window = if q.start < q.end { q.start <= minute && minute < q.end } else { minute >= q.start || minute < q.end };
            let quiet = in_window || q.days_off[day];
            match r.deferral(tz, at) {
                None => prop_assert!(!quiet, "sent at {} inside quiet hours", local(at, tz)),
                Some(until) => {
                    prop_assert!(quiet, "deferred at {} outside quiet hours", local(at, tz));
                    prop_assert!(until > at, "earlier than due");
                    let (m, d) = wall(tz, until);
                    let inside = if q.start < q.end { q.start <= m && m < q.end } else { m >= q.start || m < q.end };
                    prop_assert!(!inside && !q.days_off[d], "deferred into quiet hours: {}", local(until, tz));
                    prop_assert_eq!(until % 60_000, 0, "on a whole minute");
                    // The first allowed minute: the window's end, a day off's end, or the
                    // moment the clocks jump past one of them.
                    let offset = |ms: i64| tz.timestamp_millis_opt(ms).unwrap().offset().fix().local_minus_utc();
                    prop_assert!(m == q.end || m == 0 || offset(until) != offset(until - 60_000), "{} is not where quiet hours end", local(until, tz));
                    prop_assert!(r.deferral(tz, until - 60_000).is_some() || until - 60_000 < at, "the minute before {} was allowed", local(until, tz));
                    // At most one window late: the window's length (plus the days off in a
                    // row, plus a DST shift of up to an hour).
                    let window = i64::from((q.end + 1440 - q.start) % 1440);
                    let days_off = q.days_off.iter().filter(|o| **o).count() as i64;
                    prop_assert!(until - at <= (window + days_off * 1440 + 1440 * i64::from(days_off > 0) + 60) * 60_000,
                        "{} to {} is more than a window", local(at, tz), local(until, tz));
                }
            }
        }

        #[test]
        fn a_local_time_delay_lands_on_that_time_within_a_day(minute in 0u16..1440, zone in prop::sample::select(ZONES.to_vec()), at in instant()) {
            let tz: Tz = zone.parse().unwrap();
            let t = next_local_time(tz, minute, at).unwrap();
            prop_assert!(t > at);
            prop_assert!(t - at <= 25 * 3_600_000, "{} after {}", local(t, tz), local(at, tz));
            let (m, _) = wall(tz, t);
            let jumped = tz.timestamp_millis_opt(t).unwrap().offset().fix() != tz.timestamp_millis_opt(t - 60_000).unwrap().offset().fix();
            prop_assert!(m == minute || jumped, "{} is not {}", local(t, tz), hhmm(minute));
        }
    }
}
