//! How an `llm` step's spending reads: the tokens a usage counts against `max_tokens`, and
//! money and counts written for people. The limits themselves travel as
//! `protocol::Budget`; the runner's `llm::budget` enforces them.
//!
//! Invariant: pure arithmetic and formatting — the same figures print the same text on the
//! engine, the dashboard and the runner.

use crate::protocol::Usage;

/// Every token of `usage`: what `max_tokens` counts.
pub fn tokens(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.cache_read_input_tokens)
        .saturating_add(usage.output_tokens)
}

/// Micro-dollars as dollars for people: at least 2 decimals, at most 6, no trailing zeros
/// beyond the second (`500000` → `0.50`, `498100` → `0.4981`).
pub fn usd(micros: u64) -> String {
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let trimmed = text.trim_end_matches('0');
    let decimals = trimmed.len() - trimmed.find('.').unwrap_or(trimmed.len()) - 1;
    if decimals < 2 {
        text[..text.len() - (6 - 2)].to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_counts_read_for_people() {
        assert_eq!(usd(500_000), "0.50");
        assert_eq!(usd(498_100), "0.4981");
        assert_eq!(usd(12_000_000), "12.00");
        assert_eq!(usd(1), "0.000001");
        assert_eq!(usd(0), "0.00");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn every_kind_of_token_counts_and_the_sum_saturates() {
        let usage = Usage {
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
        };
        assert_eq!(tokens(&usage), 10);
        let huge = Usage {
            input_tokens: u64::MAX,
            ..usage
        };
        assert_eq!(tokens(&huge), u64::MAX);
    }
}
