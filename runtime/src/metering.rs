//! Units and prices of the usage ledger (SPEC §5). Integers only: tokens in thousandths
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

/// Prices by unit name. Rows keep the price they were charged at; changing a price here affects
/// new rows only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriceList(pub HashMap<String, Price>);

impl Default for PriceList {
    fn default() -> Self {
        let p = |tokens_milli, cost_micros| Price { tokens_milli, cost_micros };
        let mut m = HashMap::new();
        m.insert("workflow_run".into(), p(500, 5_000));
        m.insert("sms_segment".into(), p(1_000, 20_000));
        m.insert("email".into(), p(100, 1_000));
        m.insert("voice_minute_standard".into(), p(10_000, 80_000));
        m.insert("voice_minute_premium".into(), p(10_000, 350_000));
        m.insert("transcription_minute".into(), p(5_000, 50_000));
        for unit in ["slack_message", "calendar_event", "stripe_request", "http_request"] {
            m.insert(unit.into(), p(100, 1_000));
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
    fn default_prices_follow_the_spec() {
        let prices = PriceList::default();
        assert_eq!(prices.charge("workflow_run", 1), Price { tokens_milli: 500, cost_micros: 5_000 });
        assert_eq!(prices.charge("sms_segment", 3), Price { tokens_milli: 3_000, cost_micros: 60_000 });
        assert_eq!(prices.charge("unknown", 3), Price { tokens_milli: 0, cost_micros: 0 });
    }
}
