//! Units and prices of the usage ledger. Integers only: tokens in thousandths
//! (`tokens_milli`), money in millionths of a dollar (`cost_micros`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The price of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Tokens charged per unit, in thousandths.
    pub tokens_milli: i64,
    /// Money charged per unit, in millionths of a dollar.
    pub cost_micros: i64,
}

/// A unit of the usage ledger. Action modules declare the units they bill in
/// ([`crate::action::Action::UNITS`]); the registry refuses a unit without a price
/// ([`crate::action::ActionRegistry::check_prices`]). Stored and priced by its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A run started.
    WorkflowRun,
    /// One SMS segment.
    SmsSegment,
    /// One email.
    Email,
    /// A started minute of a standard call.
    VoiceMinuteStandard,
    /// A started minute of a premium call.
    VoiceMinutePremium,
    /// A started minute of transcription.
    TranscriptionMinute,
    /// One Slack message.
    SlackMessage,
    /// One calendar event.
    CalendarEvent,
    /// One Stripe API request.
    StripeRequest,
    /// One outbound HTTP request.
    HttpRequest,
}

impl Unit {
    /// Every unit.
    pub const ALL: [Unit; 10] = [
        Unit::WorkflowRun,
        Unit::SmsSegment,
        Unit::Email,
        Unit::VoiceMinuteStandard,
        Unit::VoiceMinutePremium,
        Unit::TranscriptionMinute,
        Unit::SlackMessage,
        Unit::CalendarEvent,
        Unit::StripeRequest,
        Unit::HttpRequest,
    ];

    /// The unit's name in the ledger and the price table, e.g. `sms_segment`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::WorkflowRun => "workflow_run",
            Unit::SmsSegment => "sms_segment",
            Unit::Email => "email",
            Unit::VoiceMinuteStandard => "voice_minute_standard",
            Unit::VoiceMinutePremium => "voice_minute_premium",
            Unit::TranscriptionMinute => "transcription_minute",
            Unit::SlackMessage => "slack_message",
            Unit::CalendarEvent => "calendar_event",
            Unit::StripeRequest => "stripe_request",
            Unit::HttpRequest => "http_request",
        }
    }

    /// `quantity` of this unit, as a ledger line.
    pub fn times(self, quantity: i64) -> Usage {
        Usage { unit: self.as_str().to_owned(), quantity }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prices by unit name. Rows keep the price they were charged at; changing a price here affects
/// new rows only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriceList(pub HashMap<String, Price>);

impl Default for PriceList {
    fn default() -> Self {
        let p = |tokens_milli, cost_micros| Price { tokens_milli, cost_micros };
        let mut m = HashMap::new();
        for unit in Unit::ALL {
            let price = match unit {
                Unit::WorkflowRun => p(500, 5_000),
                Unit::SmsSegment => p(1_000, 20_000),
                Unit::Email => p(100, 1_000),
                Unit::VoiceMinuteStandard => p(10_000, 80_000),
                Unit::VoiceMinutePremium => p(10_000, 350_000),
                Unit::TranscriptionMinute => p(5_000, 50_000),
                Unit::SlackMessage | Unit::CalendarEvent | Unit::StripeRequest | Unit::HttpRequest => p(100, 1_000),
            };
            m.insert(unit.as_str().to_owned(), price);
        }
        Self(m)
    }
}

impl PriceList {
    /// The charge for `quantity` of `unit`; an unpriced unit is recorded at zero.
    pub fn charge(&self, unit: &str, quantity: i64) -> Price {
        let p = self.0.get(unit).copied().unwrap_or(Price { tokens_milli: 0, cost_micros: 0 });
        Price { tokens_milli: p.tokens_milli * quantity, cost_micros: p.cost_micros * quantity }
    }

    /// Whether `unit` has a price.
    pub fn prices(&self, unit: Unit) -> bool {
        self.0.contains_key(unit.as_str())
    }
}

/// A plan: tokens included per calendar month in the account's timezone, and what
/// tokens past that cost (`None`: no overage, the account stops at its included tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `trial`, `starter`, `professional` or `enterprise`.
    pub name: &'static str,
    /// Included tokens a month, in thousandths.
    pub included_tokens_milli: i64,
    /// The monthly price, in millionths of a dollar.
    pub monthly_price_micros: i64,
    /// The price of one token past the included ones, in millionths of a dollar.
    pub overage_micros_per_token: Option<i64>,
}

/// The plans and their defaults.
pub const PLANS: [Plan; 4] = [
    Plan { name: "trial", included_tokens_milli: 100_000, monthly_price_micros: 0, overage_micros_per_token: None },
    Plan { name: "starter", included_tokens_milli: 1_000_000, monthly_price_micros: 99_000_000, overage_micros_per_token: Some(15_000) },
    Plan { name: "professional", included_tokens_milli: 5_000_000, monthly_price_micros: 299_000_000, overage_micros_per_token: Some(12_000) },
    Plan { name: "enterprise", included_tokens_milli: 20_000_000, monthly_price_micros: 999_000_000, overage_micros_per_token: Some(10_000) },
];

/// A plan by name.
pub fn plan(name: &str) -> Option<Plan> {
    PLANS.iter().copied().find(|p| p.name == name)
}

/// The calendar month containing `ms` in `timezone`, as local dates `[first day, first day of
/// the next month)`.
pub fn month_of(ms: i64, timezone: &str) -> (String, String) {
    use chrono::Datelike;
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let local = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&tz).date_naive();
    let first = local.with_day(1).unwrap_or(local);
    let next = if first.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    (first.format("%Y-%m-%d").to_string(), next.format("%Y-%m-%d").to_string())
}

/// The local calendar date (`YYYY-MM-DD`) of an instant in an IANA timezone (UTC if unknown):
/// the `day` a ledger row is counted on, for per-day aggregates and monthly periods.
pub fn local_day(ms: i64, timezone: &str) -> String {
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let utc = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// GSM 03.38 basic characters: one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension characters: an escape plus the character, two septets each.
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// The SMS segments a message body is sent as: GSM-7 when every character is in the
/// GSM 03.38 alphabet (160 septets in one segment, 153 a segment when split), else UCS-2 (70
/// UTF-16 units in one segment, 67 when split). An empty body is one segment.
pub fn sms_segments(body: &str) -> i64 {
    let gsm: Option<usize> = body.chars().try_fold(0usize, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENDED.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (units, single, split) = match gsm {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single { 1 } else { units.div_ceil(split) as i64 }
}

/// Started minutes of a call (each started minute of an answered call); an unanswered
/// call costs nothing.
pub fn voice_minutes(duration_secs: i64, answered: bool) -> i64 {
    if answered { (duration_secs.max(0) as u64).div_ceil(60) as i64 } else { 0 }
}

/// One quantity of a unit consumed by a step, before pricing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The unit, e.g. `http_request`.
    pub unit: String,
    /// How many units.
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_segments_count_gsm7_and_ucs2() {
        assert_eq!(sms_segments(""), 1);
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"a".repeat(306)), 2);
        assert_eq!(sms_segments(&"a".repeat(307)), 3);
        // Extension characters take two septets: 80 euro signs fill one segment, 81 need two.
        assert_eq!(sms_segments(&"€".repeat(80)), 1);
        assert_eq!(sms_segments(&"€".repeat(81)), 2);
        // One character outside GSM-7 switches the whole message to UCS-2.
        assert_eq!(sms_segments(&format!("{}ł", "a".repeat(69))), 1);
        assert_eq!(sms_segments(&format!("{}ł", "a".repeat(70))), 2);
        assert_eq!(sms_segments(&"😀".repeat(35)), 1, "an emoji is two UTF-16 units");
        assert_eq!(sms_segments(&"😀".repeat(36)), 2);
        assert_eq!(sms_segments(&"ł".repeat(134)), 2);
        assert_eq!(sms_segments(&"ł".repeat(135)), 3);
    }

    #[test]
    fn voice_minutes_count_started_minutes_of_answered_calls() {
        assert_eq!(voice_minutes(0, true), 0);
        assert_eq!(voice_minutes(1, true), 1);
        assert_eq!(voice_minutes(60, true), 1);
        assert_eq!(voice_minutes(61, true), 2);
        assert_eq!(voice_minutes(300, false), 0);
    }

    #[test]
    fn month_of_follows_the_timezone_and_rolls_over_the_year() {
        let ms = chrono::DateTime::parse_from_rfc3339("2027-01-01T03:00:00Z").unwrap().timestamp_millis();
        assert_eq!(month_of(ms, "America/Los_Angeles"), ("2026-12-01".to_string(), "2027-01-01".to_string()));
        assert_eq!(month_of(ms, "UTC"), ("2027-01-01".to_string(), "2027-02-01".to_string()));
        assert_eq!(plan("trial").unwrap().overage_micros_per_token, None);
        assert_eq!(plan("starter").unwrap().included_tokens_milli, 1_000_000);
    }

    #[test]
    fn local_day_follows_the_timezone() {
        // 2026-03-01 02:30 UTC is still February 28 in New York and March 1 in Berlin.
        let ms = chrono::DateTime::parse_from_rfc3339("2026-03-01T02:30:00Z").unwrap().timestamp_millis();
        assert_eq!(local_day(ms, "America/New_York"), "2026-02-28");
        assert_eq!(local_day(ms, "Europe/Berlin"), "2026-03-01");
        assert_eq!(local_day(ms, "Not/AZone"), "2026-03-01");
    }

    #[test]
    fn default_prices_follow_the_spec() {
        let prices = PriceList::default();
        assert_eq!(prices.charge("workflow_run", 1), Price { tokens_milli: 500, cost_micros: 5_000 });
        assert_eq!(prices.charge("sms_segment", 3), Price { tokens_milli: 3_000, cost_micros: 60_000 });
        assert_eq!(prices.charge("unknown", 3), Price { tokens_milli: 0, cost_micros: 0 });
    }
}
