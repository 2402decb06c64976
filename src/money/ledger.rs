//! [`Ledger`]: usage and cost by model, the one accumulator behind the run's progress line and
//! summary and `promptbatch report`. Money is summed in whole nano-dollars, so a total does not
//! depend on the order rows finished in (a float sum does) and a million rows of $0.000001 add up
//! to exactly $1.

use std::collections::BTreeMap;

use super::nanos::{self, Nanos};
use crate::api::TokenUsage;

/// Usage and cost of one model's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelLedger {
    /// Records added.
    pub rows: u64,
    /// Their tokens.
    pub usage: TokenUsage,
    /// Rows with a price, answered by a real API.
    pub priced_rows: u64,
    /// Rows without a price (the model is not in the price table).
    pub unpriced_rows: u64,
    /// Rows with a price, answered by the `--dry-run` simulator (nothing was spent).
    pub simulated_rows: u64,
    spent: Nanos,
    simulated: Nanos,
}

impl ModelLedger {
    /// What the real rows cost.
    pub fn spent_usd(&self) -> f64 {
        nanos::usd(self.spent)
    }

    /// What the simulated rows would have cost.
    pub fn simulated_usd(&self) -> f64 {
        nanos::usd(self.simulated)
    }

    /// Whether any row had a price (real or simulated): the model's cost is known, maybe $0.
    pub fn priced(&self) -> bool {
        self.priced_rows + self.simulated_rows > 0
    }
}

/// Usage and cost by model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    models: BTreeMap<String, ModelLedger>,
}

impl Ledger {
    /// Adds one row of `model`: its usage and its cost (`None`: no price).
    pub fn add(&mut self, model: &str, usage: &TokenUsage, cost: Option<f64>, simulated: bool) {
        let entry = match self.models.get_mut(model) {
            Some(entry) => entry,
            None => self.models.entry(model.to_string()).or_default(),
        };
        entry.rows += 1;
        entry.usage += usage;
        match cost {
            None => entry.unpriced_rows += 1,
            Some(usd) if simulated => {
                entry.simulated_rows += 1;
                entry.simulated += nanos::nearest(usd);
            }
            Some(usd) => {
                entry.priced_rows += 1;
                entry.spent += nanos::nearest(usd);
            }
        }
    }

    /// These totals less `part` (a part of them: usage and cost, by model; rows are kept).
    pub fn less(&self, part: &Ledger) -> Ledger {
        let mut rest = self.clone();
        for (model, taken) in &part.models {
            if let Some(entry) = rest.models.get_mut(model) {
                entry.usage = entry.usage.less(&taken.usage);
                entry.spent = entry.spent.saturating_sub(taken.spent);
                entry.simulated = entry.simulated.saturating_sub(taken.simulated);
            }
        }
        rest
    }

    /// Tokens of every model.
    pub fn usage(&self) -> TokenUsage {
        let mut usage = TokenUsage::default();
        for entry in self.models.values() {
            usage += &entry.usage;
        }
        usage
    }

    /// Each model's entry, by model name.
    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelLedger)> {
        self.models
            .iter()
            .map(|(model, entry)| (model.as_str(), entry))
    }

    /// What the real rows cost, all models.
    pub fn spent_usd(&self) -> f64 {
        nanos::usd(self.models.values().map(|m| m.spent).sum())
    }

    /// What the simulated rows would have cost, all models.
    pub fn simulated_usd(&self) -> f64 {
        nanos::usd(self.models.values().map(|m| m.simulated).sum())
    }

    /// Rows without a price, all models.
    pub fn unpriced_rows(&self) -> u64 {
        self.models.values().map(|m| m.unpriced_rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64) -> TokenUsage {
        TokenUsage {
            prompt,
            cached: 0,
            completion,
            reasoning: 0,
            total: prompt + completion,
        }
    }

    #[test]
    fn sums_are_exact_and_kinds_of_rows_stay_apart() {
        let mut ledger = Ledger::default();
        for _ in 0..1_000_000 {
            ledger.add("a", &usage(1, 1), Some(0.000_001), false);
        }
        // A float sum of the same million costs is off in the last digits; whole nanos are not.
        assert_eq!(ledger.spent_usd(), 1.0);
        ledger.add("b", &usage(5, 0), None, false);
        ledger.add("c", &usage(2, 3), Some(0.25), true);
        assert_eq!(ledger.unpriced_rows(), 1);
        assert_eq!(ledger.simulated_usd(), 0.25);
        assert_eq!(ledger.spent_usd(), 1.0);
        let models: Vec<(&str, u64, bool)> = ledger
            .models()
            .map(|(m, e)| (m, e.rows, e.priced()))
            .collect();
        assert_eq!(
            models,
            [("a", 1_000_000, true), ("b", 1, false), ("c", 1, true)]
        );
        let a = ledger.models().next().unwrap().1;
        assert_eq!((a.usage.prompt, a.usage.total), (1_000_000, 2_000_000));
    }

    #[test]
    fn a_negative_or_nan_cost_adds_nothing() {
        let mut ledger = Ledger::default();
        ledger.add("a", &usage(0, 0), Some(-1.0), false);
        ledger.add("a", &usage(0, 0), Some(f64::NAN), false);
        assert_eq!(ledger.spent_usd(), 0.0);
    }
}
