//! The built-in prices: Anthropic's published list prices of the Claude models, in USD per
//! million tokens (stored as micro-dollars per million tokens).
//!
//! Source: the "Model pricing" table of <https://platform.claude.com/docs/en/about-claude/pricing>
//! (columns "Base input tokens", "5m cache writes", "Cache hits and refreshes", "Output
//! tokens"), read on 2026-11-25. Prices change: an operator overrides or adds entries with
//! `--llm-prices FILE` ([`super::file`]) without waiting for a release. Models whose API
//! id the page does not give (Fable, Mythos) are left to that file.

use super::Rates;

/// Where the table comes from, for `--check-config` and the docs.
pub const SOURCE: &str = "https://platform.claude.com/docs/en/about-claude/pricing";
/// When the source was read.
pub const SOURCE_DATE: &str = "2026-11-25";

/// USD per million tokens as micro-dollars per million tokens.
const fn usd(dollars: u64, cents_hundredths: u64) -> u64 {
    dollars * 1_000_000 + cents_hundredths * 100
}

/// `$input, $5m cache write, $cache read, $output` per million tokens.
const fn rates(input: u64, cache_write: u64, cache_read: u64, output: u64) -> Rates {
    Rates {
        input,
        output,
        cache_write,
        cache_read,
    }
}

/// Opus 4.5 and later: $5 / $6.25 / $0.50 / $25.
const OPUS_NEW: Rates = rates(usd(5, 0), usd(6, 2500), usd(0, 5000), usd(25, 0));
/// Opus 4, 4.1 and 3: $15 / $18.75 / $1.50 / $75.
const OPUS_OLD: Rates = rates(usd(15, 0), usd(18, 7500), usd(1, 5000), usd(75, 0));
/// Sonnet 3.7 to 4.6: $3 / $3.75 / $0.30 / $15.
const SONNET: Rates = rates(usd(3, 0), usd(3, 7500), usd(0, 3000), usd(15, 0));

/// Model id (or id prefix) → rates.
pub(super) const TABLE: &[(&str, Rates)] = &[
    ("claude-opus-5", OPUS_NEW),
    ("claude-opus-4-8", OPUS_NEW),
    ("claude-opus-4-7", OPUS_NEW),
    ("claude-opus-4-6", OPUS_NEW),
    ("claude-opus-4-5", OPUS_NEW),
    ("claude-opus-4-1", OPUS_OLD),
    ("claude-opus-4", OPUS_OLD),
    ("claude-3-opus", OPUS_OLD),
    ("claude-sonnet-4-6", SONNET),
    ("claude-sonnet-4-5", SONNET),
    ("claude-sonnet-4", SONNET),
    ("claude-3-7-sonnet", SONNET),
    (
        "claude-haiku-4-5",
        rates(usd(1, 0), usd(1, 2500), usd(0, 1000), usd(5, 0)),
    ),
    (
        "claude-3-5-haiku",
        rates(usd(0, 8000), usd(1, 0), usd(0, 800), usd(4, 0)),
    ),
    (
        "claude-3-haiku",
        rates(usd(0, 2500), usd(0, 3000), usd(0, 300), usd(1, 2500)),
    ),
];
