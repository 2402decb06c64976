//! Tokens and cost of a row's answers that were paid for but not kept (they failed
//! `--json-schema`): the live worker carries them between attempts, and a `--via batch` run
//! keeps them in its state file between batches, until they are added to the row's record — so
//! the record's tokens and cost are everything the row cost, and `report` matches the bill.

use serde::{Deserialize, Serialize};

use crate::api::TokenUsage;
use crate::output::Record;

/// Paid answers of one row that no record holds yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    pub usage: TokenUsage,
    /// `None` once an answer had no price.
    pub cost: Option<f64>,
    /// How many answers.
    pub answers: u32,
}

impl Spent {
    /// Adds one paid answer.
    pub fn add(&mut self, usage: &TokenUsage, cost: Option<f64>) {
        self.cost = match (self.answers, self.cost, cost) {
            (0, _, cost) => cost,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.answers += 1;
        self.usage += usage;
    }

    /// Adds these answers to a row's record: its tokens and cost are the row's total.
    pub fn add_to(&self, record: &mut Record) {
        if self.answers == 0 {
            return;
        }
        record.prompt_tokens += self.usage.prompt;
        record.cached_tokens += self.usage.cached;
        record.completion_tokens += self.usage.completion;
        record.reasoning_tokens += self.usage.reasoning;
        record.total_tokens += self.usage.total;
        record.cost_usd = match (record.cost_usd, self.cost) {
            (Some(own), Some(spent)) => Some(own + spent),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_add_up_and_an_unpriced_one_makes_the_sum_unknown() {
        let usage = TokenUsage {
            prompt: 10,
            cached: 2,
            completion: 5,
            reasoning: 1,
            total: 15,
        };
        let mut spent = Spent::default();
        spent.add(&usage, Some(0.25));
        spent.add(&usage, Some(0.5));
        assert_eq!((spent.answers, spent.cost), (2, Some(0.75)));
        assert_eq!(spent.usage.total, 30);
        let text = serde_json::to_string(&spent).unwrap();
        assert_eq!(serde_json::from_str::<Spent>(&text).unwrap(), spent);
        spent.add(&usage, None);
        assert_eq!(spent.cost, None);
    }
}
