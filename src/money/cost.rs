//! Prices and cost: the embedded price table (`prices.toml` at the repo root, USD per 1M tokens),
//! `--prices FILE` overrides, and the cost of one answer's usage:
//! uncached prompt × input + cached × cached_input + completion × output (reasoning tokens are
//! part of completion and billed as output), with the tier chosen by the request's prompt tokens.
//! A run through the provider's Batch API (`--via batch`) is billed at the model's `batch` rates
//! (its `[models."NAME".batch]` table); a model without one is billed at its live rates, so a
//! batch cost is never under-reported.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use crate::api::model_name::strip_snapshot_date;
use crate::api::TokenUsage;
use crate::error::Error;

/// Prices and the budget.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostOptions {
    /// Price table overrides (TOML, the shape of the embedded prices.toml).
    pub prices: Option<PathBuf>,
    /// Budget cap in USD for the total cost recorded in the output (earlier runs included).
    pub max_cost: Option<f64>,
}

/// The table shipped in the binary.
pub(crate) const EMBEDDED_PRICES: &str = include_str!("../../prices.toml");

/// Rates of one tier, USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

/// A higher tier for large prompts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    /// The tier applies when a request's prompt tokens exceed this.
    pub above_prompt_tokens: u64,
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

/// A model's Batch API rates (USD per 1M tokens), with their own long-context tier.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPrice {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    #[serde(default)]
    pub long_context: Option<LongContext>,
    /// Where the rates come from (or that they are assumed).
    #[serde(default)]
    pub source: Option<String>,
}

/// Which price list applies: the live API's or the Batch API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Billing {
    #[default]
    Live,
    Batch,
}

/// One model's prices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    #[serde(default)]
    pub long_context: Option<LongContext>,
    /// Batch API rates; `None`: the live rates apply to batches too.
    #[serde(default)]
    pub batch: Option<BatchPrice>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
}

impl ModelPrice {
    /// The rates that apply to a request with `prompt_tokens` prompt tokens.
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        match self.long_context {
            Some(long) if prompt_tokens > long.above_prompt_tokens => Rates {
                input: long.input,
                cached_input: long.cached_input,
                output: long.output,
            },
            _ => Rates {
                input: self.input,
                cached_input: self.cached_input,
                output: self.output,
            },
        }
    }

    /// The rates that apply under `billing` to a request with `prompt_tokens` prompt tokens.
    pub fn rates_via(&self, billing: Billing, prompt_tokens: u64) -> Rates {
        match (billing, &self.batch) {
            (Billing::Batch, Some(batch)) => match batch.long_context {
                Some(long) if prompt_tokens > long.above_prompt_tokens => Rates {
                    input: long.input,
                    cached_input: long.cached_input,
                    output: long.output,
                },
                _ => Rates {
                    input: batch.input,
                    cached_input: batch.cached_input,
                    output: batch.output,
                },
            },
            _ => self.rates_for(prompt_tokens),
        }
    }

    /// USD cost of one answer's usage.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        self.cost_via(Billing::Live, usage)
    }

    /// USD cost of one answer's usage under `billing`.
    pub fn cost_via(&self, billing: Billing, usage: &TokenUsage) -> f64 {
        let rates = self.rates_via(billing, usage.prompt);
        let cached = usage.cached.min(usage.prompt);
        let uncached = usage.prompt - cached;
        (uncached as f64 * rates.input
            + cached as f64 * rates.cached_input
            + usage.completion as f64 * rates.output)
            / 1_000_000.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
}

/// The price table in force for a run.
#[derive(Debug)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
    warned: Mutex<HashSet<String>>,
}

impl PriceTable {
    /// The embedded table, extended or overridden by `--prices FILE`.
    pub fn load(overrides: Option<&Path>) -> Result<Self, Error> {
        let mut models = parse(EMBEDDED_PRICES, "the embedded prices.toml")?;
        if let Some(path) = overrides {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("cannot read --prices {}", path.display()), e))?;
            models.extend(parse(&text, &path.display().to_string())?);
        }
        Ok(PriceTable {
            models,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// The price of `model`: an exact entry, else the entry without a trailing date snapshot
    /// suffix (`gpt-5.2-2025-12-11` → `gpt-5.2`).
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .get(model)
            .or_else(|| self.models.get(strip_snapshot_date(model)?))
    }

    /// Cost of a usage under the first priced model of `models` (e.g. the answer's model, then
    /// the requested one); `None` when none is priced, with one warning per model name.
    pub fn cost(&self, models: &[&str], usage: &TokenUsage) -> Option<f64> {
        self.cost_via(Billing::Live, models, usage)
    }

    /// [`cost`](Self::cost) under `billing` (the Batch API's rates for `Billing::Batch`).
    pub fn cost_via(&self, billing: Billing, models: &[&str], usage: &TokenUsage) -> Option<f64> {
        if let Some(price) = models.iter().find_map(|m| self.get(m)) {
            return Some(price.cost_via(billing, usage));
        }
        if let Some(model) = models.first() {
            let first_time = self
                .warned
                .lock()
                .map(|mut w| !w.contains(*model) && w.insert(model.to_string()))
                .unwrap_or(false);
            if first_time {
                tracing::warn!(
                    "model `{model}` has no price: its cost is shown as unpriced; add it with --prices FILE"
                );
            }
        }
        None
    }
}

fn parse(text: &str, what: &str) -> Result<BTreeMap<String, ModelPrice>, Error> {
    let file: PriceFile = toml::from_str(text).map_err(|e| {
        Error::Config(format!(
            "{what} is not a valid price table: {e}\nexpected entries like:\n[models.\"my-model\"]\ninput = 1.0\ncached_input = 0.1\noutput = 8.0"
        ))
    })?;
    Ok(file.models)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            prompt,
            cached,
            completion,
            reasoning,
            total: prompt + completion,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn seed_sample_cost_counts_reasoning_as_output() {
        // Seed: 13 prompt, 1891 completion (1480 of them reasoning), 0 cached, gpt-5.2.
        // 13 × 1.75 + 1891 × 14.00 = 22.75 + 26474 = 26496.75 per 1M → $0.02649675.
        let table = PriceTable::load(None).unwrap();
        let cost = table.cost(&["gpt-5.2"], &usage(13, 0, 1891, 1480)).unwrap();
        assert!(close(cost, 0.026_496_75), "{cost}");
    }

    #[test]
    fn cached_tokens_use_the_cached_rate() {
        // 10,000 prompt of which 8,000 cached, 500 completion, gpt-5.2:
        // 2,000 × 1.75 + 8,000 × 0.175 + 500 × 14 = 3,500 + 1,400 + 7,000 = 11,900 → $0.0119.
        let table = PriceTable::load(None).unwrap();
        let cost = table
            .cost(&["gpt-5.2"], &usage(10_000, 8_000, 500, 0))
            .unwrap();
        assert!(close(cost, 0.0119), "{cost}");
    }

    #[test]
    fn gemini_long_context_tier_above_200k() {
        let table = PriceTable::load(None).unwrap();
        let m = ["gemini-3.1-pro-preview"];
        // At exactly 200k: base tier. 200,000 × 2 + 1,000 × 12 = 412,000 → $0.412.
        assert!(close(
            table.cost(&m, &usage(200_000, 0, 1_000, 0)).unwrap(),
            0.412
        ));
        // Above: 250,000 prompt (50,000 cached), 2,000 completion:
        // 200,000 × 4 + 50,000 × 0.40 + 2,000 × 18 = 800,000 + 20,000 + 36,000 → $0.856.
        assert!(close(
            table.cost(&m, &usage(250_000, 50_000, 2_000, 0)).unwrap(),
            0.856
        ));
    }

    #[test]
    fn unpriced_models_have_no_cost_and_snapshots_resolve() {
        let table = PriceTable::load(None).unwrap();
        assert_eq!(table.cost(&["no-such-model"], &usage(1, 0, 1, 0)), None);
        assert!(table.get("gpt-5.2-2025-12-11").is_some());
        assert!(table.get("gpt-5.2-pro").is_some());
        assert_eq!(
            table.cost(&["unknown", "gpt-5.2"], &usage(1_000_000, 0, 0, 0)),
            Some(1.75)
        );
    }

    #[test]
    fn override_file_extends_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[models.\"gpt-5.2\"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n[models.\"local\"]\ninput = 0\ncached_input = 0\noutput = 0\n",
        )
        .unwrap();
        let table = PriceTable::load(Some(&path)).unwrap();
        assert_eq!(table.get("gpt-5.2").unwrap().output, 2.0);
        assert_eq!(table.cost(&["local"], &usage(5, 0, 5, 0)), Some(0.0));
        std::fs::write(&path, "[models.x]\ninput = \"cheap\"\n").unwrap();
        let err = PriceTable::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("not a valid price table"), "{err}");
    }

    #[test]
    fn batch_rates_are_half_for_gpt_5_2_and_live_without_a_batch_table() {
        let table = PriceTable::load(None).unwrap();
        let u = usage(10_000, 8_000, 500, 0);
        let live = table.cost(&["gpt-5.2"], &u).unwrap();
        let batch = table.cost_via(Billing::Batch, &["gpt-5.2"], &u).unwrap();
        assert!(close(batch, live / 2.0), "{batch} vs {live}");
        // Gemini's long-context tier has its own batch rates: 250,000 prompt → half of $0.856.
        let m = ["gemini-3.1-pro-preview"];
        let long = table
            .cost_via(Billing::Batch, &m, &usage(250_000, 50_000, 2_000, 0))
            .unwrap();
        assert!(close(long, 0.428), "{long}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[models.local]\ninput = 1\ncached_input = 1\noutput = 1\n",
        )
        .unwrap();
        let table = PriceTable::load(Some(&path)).unwrap();
        let u = usage(1_000_000, 0, 0, 0);
        assert_eq!(table.cost_via(Billing::Batch, &["local"], &u), Some(1.0));
    }

    #[test]
    fn every_embedded_entry_names_its_source_and_date() {
        let table = PriceTable::load(None).unwrap();
        for (name, price) in &table.models {
            assert!(price.source.is_some() && price.date.is_some(), "{name}");
            if let Some(batch) = &price.batch {
                assert!(
                    batch.source.is_some(),
                    "{name}: batch rates without a source"
                );
            }
        }
    }
}
