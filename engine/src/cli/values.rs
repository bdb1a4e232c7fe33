//! The values clap parses for `plue`'s flags (`value_parser = ...`): each refusal a
//! [`BadValue`], which clap prints after the flag's name.

use std::collections::BTreeMap;
use std::num::ParseIntError;

use ::runner::step_env::NotPassable;

/// Why a flag's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadValue {
    /// `--uid-range` without a `-`.
    #[error("'{0}': expected FIRST-LAST, e.g. 3000000-3065535")]
    UidRangeShape(String),
    /// A bound of `--uid-range` that is not a number.
    #[error("'{number}' in '{text}': {error}")]
    UidNumber {
        number: String,
        text: String,
        error: ParseIntError,
    },
    /// `--uid-range` starting at 0 or ending before it starts.
    #[error("'{0}': need 0 < FIRST <= LAST (steps never run as root)")]
    UidOrder(String),
    /// `--secret ""`.
    #[error("expected NAME or NAME=VALUE")]
    EmptySecret,
    /// `--secret NAME` whose variable is not set.
    #[error("--secret {0}: the environment variable {0} is not set")]
    SecretNotSet(String),
    /// Not `KEY=VALUE` with a non-empty key.
    #[error("expected KEY=VALUE, got '{0}'")]
    NotKeyValue(String),
    /// `--secret-repos NAME=` naming no repository.
    #[error("'{0}': expected NAME=REPO[,REPO...], each REPO `owner/name` or `owner/*`")]
    NoRepository(String),
    /// A repository of `--secret-repos` that is not one.
    #[error(transparent)]
    RepoPattern(#[from] plue_core::engine_secrets::PatternError),
}

/// `--pass-env NAME`: never one of the engine's or a runner's credentials.
pub(crate) fn parse_passed_env(name: &str) -> Result<String, NotPassable> {
    ::runner::step_env::check_passable(name).map(|()| name.to_owned())
}

/// `--uid-range FIRST-LAST`: the step users' uids, never root's.
pub(crate) fn parse_uid_range(text: &str) -> Result<(u32, u32), BadValue> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| BadValue::UidRangeShape(text.to_owned()))?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u32>()
            .map_err(|error| BadValue::UidNumber {
                number: n.to_owned(),
                text: text.to_owned(),
                error,
            })
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first == 0 || last < first {
        return Err(BadValue::UidOrder(text.to_owned()));
    }
    Ok((first, last))
}

/// `k=v,k2=v2` (empty parts ignored).
pub(crate) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, BadValue> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_key_value(part.trim()))
        .collect()
}

/// `NAME=VALUE`, or `NAME` alone to take the value from the environment variable `NAME`
/// (keeps secrets off the command line, where other processes can read them).
pub(crate) fn parse_secret(text: &str) -> Result<(String, String), BadValue> {
    if text.contains('=') {
        return parse_key_value(text);
    }
    if text.is_empty() {
        return Err(BadValue::EmptySecret);
    }
    match std::env::var(text) {
        Ok(value) => Ok((text.to_string(), value)),
        Err(_) => Err(BadValue::SecretNotSet(text.to_owned())),
    }
}

/// `NAME=REPO[,REPO...]`: the repositories an engine secret reaches, each `owner/name` or
/// `owner/*` (blank parts ignored, at least one).
pub(crate) fn parse_secret_repos(
    text: &str,
) -> Result<(String, Vec<plue_core::engine_secrets::RepoPattern>), BadValue> {
    let (name, repos) = parse_key_value(text)?;
    let patterns = repos
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(plue_core::engine_secrets::RepoPattern::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if patterns.is_empty() {
        return Err(BadValue::NoRepository(text.to_owned()));
    }
    Ok((name, patterns))
}

/// `KEY=VALUE` with a non-empty key (the value may be empty or hold `=`).
pub(crate) fn parse_key_value(text: &str) -> Result<(String, String), BadValue> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(BadValue::NotKeyValue(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_repos_name_repositories_or_owners() {
        let (name, patterns) = parse_secret_repos("DEPLOY=acme/app, widgets/*,").unwrap();
        let shown: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        assert_eq!(
            (name.as_str(), shown),
            ("DEPLOY", vec!["acme/app".into(), "widgets/*".into()])
        );
        assert_eq!(
            parse_secret_repos("DEPLOY=").unwrap_err().to_string(),
            "'DEPLOY=': expected NAME=REPO[,REPO...], each REPO `owner/name` or `owner/*`"
        );
        let wide = parse_secret_repos("DEPLOY=*").unwrap_err().to_string();
        assert!(wide.contains("no pattern names every owner"), "{wide}");
        assert!(parse_secret_repos("acme/app").is_err());
    }

    #[test]
    fn refusals_name_the_value_and_what_was_expected() {
        assert_eq!(parse_uid_range("3000-3999"), Ok((3000, 3999)));
        assert_eq!(
            parse_uid_range("0-10").unwrap_err().to_string(),
            "'0-10': need 0 < FIRST <= LAST (steps never run as root)"
        );
        assert!(matches!(
            parse_uid_range("a-10"),
            Err(BadValue::UidNumber { number, .. }) if number == "a"
        ));
        assert_eq!(
            parse_uid_range("10").unwrap_err(),
            BadValue::UidRangeShape("10".into())
        );
        assert_eq!(
            parse_labels("zone=eu, gpu=a100,"),
            Ok(BTreeMap::from([
                ("gpu".to_string(), "a100".to_string()),
                ("zone".to_string(), "eu".to_string())
            ]))
        );
        assert_eq!(
            parse_key_value("=x").unwrap_err().to_string(),
            "expected KEY=VALUE, got '=x'"
        );
        assert_eq!(parse_secret("").unwrap_err(), BadValue::EmptySecret);
        assert_eq!(
            parse_secret("PLUE_TEST_SURELY_UNSET_VARIABLE")
                .unwrap_err()
                .to_string(),
            "--secret PLUE_TEST_SURELY_UNSET_VARIABLE: the environment variable \
             PLUE_TEST_SURELY_UNSET_VARIABLE is not set"
        );
        assert!(parse_passed_env("PLUE_ADMIN_TOKEN").is_err());
    }
}
