//! Tokens and cost of a row's answers that were paid for but not kept (they failed
//! `--json-schema`): the live worker carries them between attempts, and a `--via batch` run
//! keeps them in its state file between batches, until they are added to the row's record — so
//! the record's tokens and cost are everything the row cost, and `report` matches the bill.
//! When a `--via batch --fallback live` run hands such rows to the live runner, their spend
//! goes with them ([`Carried`]) and their live records hold it; the state file keeps it until a
//! record does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::TokenUsage;
use crate::events::notice;
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
        self.merge(&Spent {
            usage: *usage,
            cost,
            answers: 1,
        });
    }

    /// Adds other paid answers (another attempt's, another row's for totals).
    pub fn merge(&mut self, other: &Spent) {
        if other.answers == 0 {
            return;
        }
        self.cost = match (self.answers, self.cost, other.cost) {
            (0, _, cost) => cost,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.answers += other.answers;
        self.usage += &other.usage;
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
        // Every answer it holds was an attempt (a batch row whose count of batches was lost
        // when its rows were handed to the live runner and the run stopped).
        let answers = self.answers + u32::from(record.status == crate::output::record::Status::Ok);
        record.attempts = record.attempts.max(answers);
    }
}

/// What the batch part of a `--fallback live` run paid for rows it hands to the live runner,
/// by unit (`input::models::unit`): each row's first live attempt takes its own, with the part
/// of it earlier runs paid (not this run's spend).
#[derive(Debug, Default)]
pub(crate) struct Carried {
    units: Mutex<BTreeMap<u64, (Spent, Spent)>>,
    /// Nothing is carried (every run but a `--fallback live` hand-over): rows take nothing
    /// without locking.
    none: bool,
    /// Models each row goes to (for the unit numbers).
    models: u64,
}

impl Carried {
    pub(crate) fn new(
        spent: BTreeMap<u64, Spent>,
        mut earlier: BTreeMap<u64, Spent>,
        models: u64,
    ) -> Self {
        let units: BTreeMap<u64, (Spent, Spent)> = spent
            .into_iter()
            .map(|(unit, s)| (unit, (s, earlier.remove(&unit).unwrap_or_default())))
            .collect();
        Carried {
            none: units.is_empty(),
            units: Mutex::new(units),
            models,
        }
    }

    /// The spend carried for (row, slot), and the part of it earlier runs paid; taken once
    /// (nothing after, or when none).
    pub(crate) fn take(&self, row: u64, slot: u32) -> (Spent, Spent) {
        if self.none {
            return Default::default();
        }
        let unit = crate::input::models::unit(row, u64::from(slot), self.models.max(1));
        self.units
            .lock()
            .ok()
            .and_then(|mut units| units.remove(&unit))
            .unwrap_or_default()
    }

    /// What the carried answers cost (an unpriced one counts 0).
    pub(crate) fn cost_usd(&self) -> f64 {
        self.units
            .lock()
            .map(|units| units.values().filter_map(|(s, _)| s.cost).sum())
            .unwrap_or(0.0)
    }

    /// The rows whose spend no live attempt took (they were not sent), and that spend.
    pub(crate) fn left(&self) -> (u64, Spent) {
        let mut left = Spent::default();
        let mut rows = 0;
        if let Ok(units) = self.units.lock() {
            for (spent, _) in units.values() {
                left.merge(spent);
                rows += 1;
            }
        }
        (rows, left)
    }

    /// Says that `rows` rows' failed answers (`spent`) will be on no record.
    pub(crate) fn say_unrecorded(rows: u64, spent: &Spent) {
        if rows == 0 {
            return;
        }
        notice!(
            "{rows} rows that are no longer sent had answers that failed --json-schema ({} tokens, {}): no record holds what they cost",
            crate::util::human::group(spent.usage.total),
            spent
                .cost
                .map_or_else(|| "unpriced".to_string(), crate::util::human::format_usd)
        );
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
