//! What `llm` steps cost: a price table per model, and the cost of an attempt's usage.
//!
//! One entry point, [`Prices`]: the built-in table (`builtin`, the published prices of
//! the current Claude models, with their source and date), overridden and extended by the
//! operator's file (`--llm-prices FILE`, [`file`](mod@file)). A model id is priced by the longest
//! table key that is the id itself or a prefix of it followed by `-`
//! (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`); a model no key matches has
//! no price, and its cost is unknown (`None`), never zero.
//!
//! Invariants:
//! - Money is integer micro-dollars end to end (prices in micro-dollars per million
//!   tokens, costs by [`plue_types::protocol::Price::cost_micros`], rounded up): the engine's
//!   stored cost, the runner's budget and the API agree to the last digit.
//! - The table is bounded ([`file::MAX_MODELS`] entries from a file), so the metric label
//!   [`Prices::label`] — a table key, or `other` — has bounded cardinality whatever model
//!   names runners report.

pub mod budget;
mod builtin;
pub mod file;

use std::collections::BTreeMap;
use std::path::Path;

use plue_types::protocol::{Price, Usage};

pub use builtin::{SOURCE, SOURCE_DATE};

/// One model's prices, in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    /// Cache writes (the 5-minute rate: what `cache_creation_input_tokens` are billed at
    /// unless a request asks for the 1-hour cache, which runners do not).
    pub cache_write: u64,
    pub cache_read: u64,
}

/// The price table the engine uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    /// By model id or id prefix.
    models: BTreeMap<String, Rates>,
}

impl Default for Prices {
    fn default() -> Self {
        Prices::builtin()
    }
}

impl Prices {
    /// The built-in table alone.
    pub fn builtin() -> Prices {
        Prices {
            models: builtin::TABLE
                .iter()
                .map(|(model, rates)| ((*model).to_owned(), *rates))
                .collect(),
        }
    }

    /// The built-in table with `path`'s entries added (an entry for a built-in key
    /// replaces it). Every problem of the file is reported at once.
    pub fn with_file(path: &Path) -> anyhow::Result<Prices> {
        let mut prices = Prices::builtin();
        prices.models.extend(file::load(path)?);
        Ok(prices)
    }

    /// The key pricing `model`: the longest key that is `model` or a prefix of it
    /// followed by `-`.
    fn key(&self, model: &str) -> Option<&str> {
        self.models
            .keys()
            .filter(|key| {
                model == key.as_str()
                    || (model.starts_with(key.as_str())
                        && model.as_bytes().get(key.len()) == Some(&b'-'))
            })
            .max_by_key(|key| key.len())
            .map(String::as_str)
    }

    /// `model`'s prices as the runner's budget takes them, if the table prices it.
    pub fn price(&self, model: &str) -> Option<Price> {
        let rates = self.models.get(self.key(model)?)?;
        Some(Price {
            model: model.to_owned(),
            input: rates.input,
            output: rates.output,
            cache_write: rates.cache_write,
            cache_read: rates.cache_read,
        })
    }

    /// What `usage` of `model` cost, in micro-dollars; `None` when the model is unpriced.
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> Option<u64> {
        Some(self.price(model)?.cost_micros(usage))
    }

    /// The metric label of `model`: the table key that prices it, else `other`.
    pub fn label(&self, model: &str) -> String {
        self.key(model).unwrap_or("other").to_owned()
    }

    /// The keys of the table, for `--check-config`.
    pub fn models(&self) -> impl Iterator<Item = (&str, &Rates)> {
        self.models.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// What an attempt that called `model` and used `usage` cost (micro-dollars), if both are
/// known and the model is priced.
pub fn attempt_cost(prices: &Prices, model: Option<&str>, usage: Option<Usage>) -> Option<u64> {
    prices.cost_micros(model?, &usage?)
}

/// Micro-dollars as a JSON number of US dollars (`1234` → `0.001234`): exact, since
/// every micro-dollar amount below 2^53 has a shortest decimal form of at most 6 places.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, write: u64, read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: write,
            cache_read_input_tokens: read,
        }
    }

    #[test]
    fn models_are_priced_by_their_longest_key() {
        let prices = Prices::builtin();
        let sonnet = prices.price("claude-sonnet-4-5-20250929").unwrap();
        assert_eq!((sonnet.input, sonnet.output), (3_000_000, 15_000_000));
        assert_eq!(sonnet.model, "claude-sonnet-4-5-20250929");
        // claude-opus-4-5 is not claude-opus-4 (a third of the price).
        assert_eq!(prices.price("claude-opus-4-5").unwrap().input, 5_000_000);
        assert_eq!(
            prices.price("claude-opus-4-20250514").unwrap().input,
            15_000_000
        );
        assert_eq!(prices.label("claude-opus-4-5-20251101"), "claude-opus-4-5");
        // A prefix must end at a '-': claude-sonnet-45 is no claude-sonnet-4.
        assert_eq!(prices.price("claude-sonnet-45"), None);
        assert_eq!(prices.cost_micros("gpt-5", &usage(1, 1, 0, 0)), None);
        assert_eq!(prices.label("attacker-chosen-label-{}\n"), "other");
    }

    #[test]
    fn cost_is_usage_times_price_in_micro_dollars() {
        let prices = Prices::builtin();
        // Haiku 4.5: $1 in, $5 out, $1.25 cache write, $0.10 cache read per million.
        let cost = prices
            .cost_micros(
                "claude-haiku-4-5",
                &usage(1_000_000, 200_000, 400_000, 3_000_000),
            )
            .unwrap();
        assert_eq!(cost, 1_000_000 + 1_000_000 + 500_000 + 300_000);
        // Sums of many small costs never drift: 1,000 calls of 7 input tokens each.
        let one = prices
            .cost_micros("claude-sonnet-4-5", &usage(7, 0, 0, 0))
            .unwrap();
        assert_eq!(one, 21);
        assert_eq!(usd(one * 1000), 0.021);
    }

    #[test]
    fn every_builtin_rate_is_as_published() {
        // Cache writes are 1.25x the input price and cache reads 0.1x on the source page
        // (Haiku 3, the oldest, rounds its own: $0.30 and $0.03 for $0.25 in).
        let prices = Prices::builtin();
        let haiku3 = prices.price("claude-3-haiku-20240307").unwrap();
        assert_eq!((haiku3.cache_write, haiku3.cache_read), (300_000, 30_000));
        for (model, rates) in prices.models().filter(|(m, _)| *m != "claude-3-haiku") {
            assert_eq!(rates.cache_write * 4, rates.input * 5, "{model}");
            assert_eq!(rates.cache_read * 10, rates.input, "{model}");
            assert_eq!(rates.output, rates.input * 5, "{model}");
        }
    }
}
