//! The operator's price file (`--llm-prices FILE`, checked by `plue serve --check-config`):
//! YAML or JSON (JSON is YAML), USD per million tokens per model id or id prefix:
//!
//! ```yaml
//! models:
//!   claude-sonnet-4-5: {input: 3, output: 15, cache_write: 3.75, cache_read: 0.30}
//!   my-gateway-model:  {input: 1, output: 4, cache_write: 1.25, cache_read: 0.10}
//! ```
//!
//! Invariants: every problem of the file is reported at once, each naming the model and
//! the field; a price is a finite number from 0 to [`MAX_USD_PER_MTOK`] with at most 6
//! decimals (a whole number of micro-dollars), all four are required, unknown fields are
//! refused (a typo never silently prices a model at 0); at most [`MAX_MODELS`] entries,
//! model keys of 1 to 100 characters `[a-z0-9._-]` (they become metric labels).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::Rates;

/// The most models one file may price.
pub const MAX_MODELS: usize = 200;
/// The highest price accepted, USD per million tokens.
pub const MAX_USD_PER_MTOK: f64 = 10_000.0;

const FIELDS: [&str; 4] = ["input", "output", "cache_write", "cache_read"];

/// Reads and checks `path`.
pub fn load(path: &Path) -> anyhow::Result<BTreeMap<String, Rates>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the price file {}", path.display()))?;
    parse(&text).map_err(|problems| {
        anyhow::anyhow!(
            "{}: {} problem(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        )
    })
}

/// `plue serve --check-config --llm-prices FILE`: validates `path`, prints what it prices
/// (stdout) or every problem (stderr), and answers the exit status.
pub fn check_command(path: &Path) -> std::process::ExitCode {
    match load(path) {
        Ok(table) => {
            let models: Vec<&str> = table.keys().map(String::as_str).collect();
            println!(
                "{}: valid: {} model(s) priced ({}), over the built-in table of {} ({})",
                path.display(),
                table.len(),
                models.join(", "),
                super::SOURCE,
                super::SOURCE_DATE
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            eprintln!("{}: invalid price file", path.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The file's entries, or every problem found.
pub fn parse(text: &str) -> Result<BTreeMap<String, Rates>, Vec<String>> {
    let document: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| vec![format!("not YAML or JSON: {e}")])?;
    let mut problems = Vec::new();
    let Some(top) = document.as_mapping() else {
        return Err(vec!["the file must be a mapping with a `models` key".into()]);
    };
    for key in top.keys() {
        if key.as_str() != Some("models") {
            problems.push(format!(
                "unknown key {}: the file holds only `models`",
                shown(key)
            ));
        }
    }
    let Some(models) = top.get("models") else {
        problems.push("no `models` key".into());
        return Err(problems);
    };
    let Some(models) = models.as_mapping() else {
        problems.push("`models` must map model ids to their prices".into());
        return Err(problems);
    };
    if models.len() > MAX_MODELS {
        problems.push(format!(
            "{} models; at most {MAX_MODELS} may be priced",
            models.len()
        ));
    }
    let mut table = BTreeMap::new();
    for (name, entry) in models {
        let Some(model) = name.as_str().filter(|m| valid_model(m)) else {
            problems.push(format!(
                "model {}: use 1 to 100 characters a-z, 0-9, '.', '_' and '-'",
                shown(name)
            ));
            continue;
        };
        if let Some(rates) = rates(model, entry, &mut problems) {
            table.insert(model.to_owned(), rates);
        }
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(problems)
    }
}

fn rates(model: &str, entry: &yaml_serde::Value, problems: &mut Vec<String>) -> Option<Rates> {
    let Some(fields) = entry.as_mapping() else {
        problems.push(format!(
            "model {model}: give input, output, cache_write and cache_read (USD per million tokens)"
        ));
        return None;
    };
    let before = problems.len();
    for key in fields.keys() {
        if !key.as_str().is_some_and(|k| FIELDS.contains(&k)) {
            problems.push(format!(
                "model {model}: unknown field {}; the fields are {}",
                shown(key),
                FIELDS.join(", ")
            ));
        }
    }
    let mut micros = [0u64; 4];
    for (slot, field) in micros.iter_mut().zip(FIELDS) {
        match fields.get(field) {
            None => problems.push(format!("model {model}: {field} is missing")),
            Some(value) => match price(value) {
                Ok(m) => *slot = m,
                Err(why) => problems.push(format!("model {model}: {field} {why}")),
            },
        }
    }
    (problems.len() == before).then_some(Rates {
        input: micros[0],
        output: micros[1],
        cache_write: micros[2],
        cache_read: micros[3],
    })
}

/// A price in USD per million tokens as micro-dollars per million tokens.
fn price(value: &yaml_serde::Value) -> Result<u64, String> {
    let Some(usd) = value.as_f64() else {
        return Err(format!(
            "must be a number of USD per million tokens, got {}",
            shown(value)
        ));
    };
    if !usd.is_finite() || !(0.0..=MAX_USD_PER_MTOK).contains(&usd) {
        return Err(format!("must be from 0 to {MAX_USD_PER_MTOK}, got {usd}"));
    }
    let micros = (usd * 1_000_000.0).round();
    if (usd * 1_000_000.0 - micros).abs() > 1e-6 {
        return Err(format!(
            "has more than 6 decimals ({usd}); prices are whole micro-dollars"
        ));
    }
    Ok(micros as u64)
}

fn valid_model(model: &str) -> bool {
    (1..=100).contains(&model.len())
        && model
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

fn shown(value: &yaml_serde::Value) -> String {
    let text = yaml_serde::to_string(value).unwrap_or_default();
    let text: String = text.trim().chars().take(60).collect();
    format!("'{text}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_files_give_micro_dollars() {
        let yaml =
            "models:\n  my-model: {input: 3, output: 15, cache_write: 3.75, cache_read: 0.30}\n";
        let json = r#"{"models": {"my-model": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}}"#;
        for text in [yaml, json] {
            let table = parse(text).unwrap();
            assert_eq!(
                table["my-model"],
                Rates {
                    input: 3_000_000,
                    output: 15_000_000,
                    cache_write: 3_750_000,
                    cache_read: 300_000
                }
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "models:\n  a: {input: -1, output: .nan, cache_write: 1, cach_read: 1}\n  \
                    B@d: {input: 1, output: 1, cache_write: 1, cache_read: 1}\n  \
                    c: {input: '3', output: 0.0000001, cache_write: 1e9, cache_read: 0}\n  \
                    d: 5\nextra: 1\n";
        let problems = parse(text).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "unknown key 'extra'",
            "model a: unknown field 'cach_read'",
            "model a: input must be from 0 to 10000, got -1",
            "model a: output must be from 0",
            "model a: cache_read is missing",
            "model 'B@d': use 1 to 100 characters",
            "model c: input must be a number of USD per million tokens, got ''3''",
            "model c: output has more than 6 decimals",
            "model c: cache_write must be from 0 to 10000",
            "model d: give input, output, cache_write and cache_read",
        ] {
            assert!(all.contains(expected), "{expected:?} not in\n{all}");
        }
        assert_eq!(problems.len(), 10, "{all}");
        assert!(parse("[1, 2]").is_err());
        assert!(parse("models: {a: {").unwrap_err()[0].starts_with("not YAML or JSON"));
    }

    #[test]
    fn a_file_entry_replaces_and_extends_the_builtin_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.yaml");
        std::fs::write(
            &path,
            "models:\n  claude-sonnet-4-5: {input: 2, output: 10, cache_write: 2.5, cache_read: 0.2}\n  \
             gateway: {input: 1, output: 1, cache_write: 1, cache_read: 1}\n",
        )
        .unwrap();
        let prices = super::super::Prices::with_file(&path).unwrap();
        assert_eq!(
            prices.price("claude-sonnet-4-5-20250929").unwrap().input,
            2_000_000
        );
        assert_eq!(prices.price("gateway-v2").unwrap().output, 1_000_000);
        assert_eq!(prices.price("claude-haiku-4-5").unwrap().input, 1_000_000);
        std::fs::write(&path, "models: {x: {input: 1}}").unwrap();
        let e = format!("{:#}", super::super::Prices::with_file(&path).unwrap_err());
        assert!(e.contains("prices.yaml: 3 problem(s)"), "{e}");
    }
}
