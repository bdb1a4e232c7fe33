//! What several commands send to the API alike: a repository's API path from `owner/name`,
//! and a secret's value from `--value` or stdin. Pure but for reading stdin.

use std::io::Read;

use anyhow::{bail, Context};

/// `owner/name` as two path segments (validated by the server too).
pub(crate) fn repo_path(name: &str) -> anyhow::Result<String> {
    match name.split_once('/') {
        Some((owner, repo)) if !owner.is_empty() && !repo.is_empty() && !repo.contains('/') => {
            Ok(format!("/api/repos/{owner}/{repo}"))
        }
        _ => bail!("'{name}' is not owner/name"),
    }
}

/// A secret's value: `given` (`--value`), else stdin without the one trailing newline
/// `echo value | plue secret set ...` adds.
pub(crate) fn secret_value(given: Option<String>) -> anyhow::Result<String> {
    if let Some(value) = given {
        return Ok(value);
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the secret from stdin")?;
    Ok(value.strip_suffix('\n').unwrap_or(&value).to_string())
}
