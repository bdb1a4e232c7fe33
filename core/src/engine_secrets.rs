//! The engine's own secrets (`--secret NAME[=VALUE]`) and the repositories each may reach
//! (`plue serve --secret-repos NAME=REPO,...`).
//!
//! An engine secret is the operator's: whoever can get a workflow run on the engine can
//! name it in a step. On a server that includes every account whose repository gets
//! registered (by an admin, or by an accepted installation of the GitHub App), so a secret
//! reaches a repository's run only when the operator named that repository for it.
//!
//! Invariants:
//! - A run without a repository (`plue run`, or a workflow an admin posted to the server)
//!   gets every engine secret its steps name: it was started by the operator.
//! - A repository's run gets an engine secret only when one of the secret's patterns names
//!   the repository: `owner/name`, or `owner/*` for every repository of `owner` (ASCII case
//!   ignored, as GitHub and Gitea ignore it). A secret with no pattern reaches no
//!   repository at all; there is no pattern for "every repository".
//! - Values never print: `Debug` shows names and patterns only.

use std::collections::BTreeMap;
use std::fmt;

/// Every engine secret, by name.
#[derive(Clone, Default)]
pub struct EngineSecrets {
    by_name: BTreeMap<String, EngineSecret>,
}

#[derive(Clone)]
struct EngineSecret {
    value: String,
    reaches: Vec<RepoPattern>,
}

/// A repository, or every repository of an owner, named for an engine secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPattern {
    /// `owner/name`.
    Repository { owner: String, name: String },
    /// `owner/*`.
    Owner(String),
}

/// Why a pattern is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not `owner/name` or `owner/*`.
    #[error(
        "'{0}': expected a repository `owner/name` or every repository of an owner \
         `owner/*`"
    )]
    Shape(String),
    /// A `*` anywhere else than as the whole name.
    #[error("'{0}': `*` stands only for the whole name (`owner/*`); no pattern names every owner")]
    Wildcard(String),
}

/// What an engine secret is to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Given: its value.
    Given(&'a str),
    /// The engine has it, but not for the run's repository.
    NotForRepository,
    /// The engine has no secret of that name.
    Unknown,
}

impl RepoPattern {
    /// `owner/name` or `owner/*`.
    pub fn parse(text: &str) -> Result<RepoPattern, PatternError> {
        let shape = || PatternError::Shape(text.to_owned());
        let Some((owner, name)) = text.trim().split_once('/') else {
            return Err(if text.contains('*') {
                PatternError::Wildcard(text.to_owned())
            } else {
                shape()
            });
        };
        let plain = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if owner.contains('*') || (name.contains('*') && name != "*") {
            return Err(PatternError::Wildcard(text.to_owned()));
        }
        if !plain(owner) {
            return Err(shape());
        }
        if name == "*" {
            return Ok(RepoPattern::Owner(owner.to_owned()));
        }
        if !plain(name) {
            return Err(shape());
        }
        Ok(RepoPattern::Repository {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Whether this names `repository` (`owner/name`).
    pub fn names(&self, repository: &str) -> bool {
        let Some((owner, name)) = repository.split_once('/') else {
            return false;
        };
        match self {
            RepoPattern::Repository { owner: o, name: n } => {
                o.eq_ignore_ascii_case(owner) && n.eq_ignore_ascii_case(name)
            }
            RepoPattern::Owner(o) => o.eq_ignore_ascii_case(owner),
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoPattern::Repository { owner, name } => write!(f, "{owner}/{name}"),
            RepoPattern::Owner(owner) => write!(f, "{owner}/*"),
        }
    }
}

impl EngineSecrets {
    /// The secrets `values`, each reaching the repositories `reaches` names for it (none:
    /// only runs without a repository). A name in `reaches` that `values` lacks is an
    /// error naming it.
    pub fn new(
        values: BTreeMap<String, String>,
        mut reaches: BTreeMap<String, Vec<RepoPattern>>,
    ) -> anyhow::Result<EngineSecrets> {
        let by_name = values
            .into_iter()
            .map(|(name, value)| {
                let reaches = reaches.remove(&name).unwrap_or_default();
                (name, EngineSecret { value, reaches })
            })
            .collect();
        if let Some(name) = reaches.keys().next() {
            anyhow::bail!(
                "--secret-repos names the secret {name}, which no --secret gives (add \
                 --secret {name}[=VALUE])"
            );
        }
        Ok(EngineSecrets { by_name })
    }

    /// Secret `name` for a run of `repository` (`None`: a run without one).
    pub fn lookup(&self, name: &str, repository: Option<&str>) -> Lookup<'_> {
        let Some(secret) = self.by_name.get(name) else {
            return Lookup::Unknown;
        };
        match repository {
            None => Lookup::Given(&secret.value),
            Some(repository) if secret.reaches.iter().any(|p| p.names(repository)) => {
                Lookup::Given(&secret.value)
            }
            Some(_) => Lookup::NotForRepository,
        }
    }

    /// Whether the engine has a secret called `name` (for any run).
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every value by name, whatever it reaches: what a run's wall refuses and masks (a
    /// value refused to a run can still be refused in its texts).
    pub fn values(&self) -> BTreeMap<String, String> {
        self.by_name
            .iter()
            .map(|(name, secret)| (name.clone(), secret.value.clone()))
            .collect()
    }
}

/// Secrets that reach only runs without a repository (`plue run`; tests).
impl From<BTreeMap<String, String>> for EngineSecrets {
    fn from(values: BTreeMap<String, String>) -> EngineSecrets {
        EngineSecrets {
            by_name: values
                .into_iter()
                .map(|(name, value)| {
                    let reaches = Vec::new();
                    (name, EngineSecret { value, reaches })
                })
                .collect(),
        }
    }
}

impl fmt::Debug for EngineSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.by_name.iter().map(|(name, secret)| {
                let reaches: Vec<String> = secret.reaches.iter().map(|p| p.to_string()).collect();
                (name, reaches)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(reaches: &[(&str, &[&str])]) -> EngineSecrets {
        let values = [("DEPLOY", "deploy-value"), ("KEY", "key-value")]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let reaches = reaches
            .iter()
            .map(|(name, patterns)| {
                let patterns = patterns.iter().map(|p| RepoPattern::parse(p).unwrap());
                (name.to_string(), patterns.collect())
            })
            .collect();
        EngineSecrets::new(values, reaches).unwrap()
    }

    // The attack: a stranger's repository (registered by the App's installation, or by an
    // admin) names the engine's secret in a step. Only a repository the operator named for
    // it gets it; a secret named for nobody reaches runs without a repository only.
    #[test]
    fn a_secret_reaches_only_the_repositories_named_for_it() {
        let secrets = secrets(&[("DEPLOY", &["acme/app", "Widgets/*"])]);
        for named in ["acme/app", "ACME/App", "widgets/anything", "widgets/app"] {
            assert_eq!(
                secrets.lookup("DEPLOY", Some(named)),
                Lookup::Given("deploy-value"),
                "{named}"
            );
        }
        for stranger in [
            "mallory/app",
            "acme/app2",
            "acme/ap",
            "acme/app/x",
            "widgets",
            "acme-app",
            "mallory/acme/app",
        ] {
            assert_eq!(
                secrets.lookup("DEPLOY", Some(stranger)),
                Lookup::NotForRepository,
                "{stranger}"
            );
        }
        assert_eq!(
            secrets.lookup("KEY", Some("acme/app")),
            Lookup::NotForRepository
        );
        assert_eq!(secrets.lookup("KEY", None), Lookup::Given("key-value"));
        assert_eq!(
            secrets.lookup("DEPLOY", None),
            Lookup::Given("deploy-value")
        );
        assert_eq!(secrets.lookup("OTHER", None), Lookup::Unknown);
        let plain = EngineSecrets::from(secrets.values());
        assert_eq!(
            plain.lookup("DEPLOY", Some("acme/app")),
            Lookup::NotForRepository
        );
    }

    #[test]
    fn patterns_are_a_repository_or_an_owner_and_nothing_wider() {
        assert_eq!(
            RepoPattern::parse("acme/*"),
            Ok(RepoPattern::Owner("acme".into()))
        );
        assert_eq!(
            RepoPattern::parse("my-org/my.repo_1").map(|p| p.to_string()),
            Ok("my-org/my.repo_1".into())
        );
        for wild in ["*", "*/*", "*/app", "acme/app*", "ac*/app"] {
            assert!(RepoPattern::parse(wild).is_err(), "{wild}");
        }
        for bad in [
            "",
            "acme",
            "acme/",
            "/app",
            "acme/app/x",
            "acme /app",
            "acme/a b",
        ] {
            let refused = RepoPattern::parse(bad).unwrap_err();
            assert!(
                refused.to_string().contains("owner/name"),
                "{bad}: {refused}"
            );
        }
    }

    #[test]
    fn a_pattern_for_a_secret_never_given_is_refused_and_values_never_print() {
        let refused = EngineSecrets::new(
            BTreeMap::new(),
            [("DEPLOY".to_owned(), vec![RepoPattern::Owner("acme".into())])].into(),
        )
        .unwrap_err();
        assert!(refused.to_string().contains("--secret DEPLOY"), "{refused}");
        let shown = format!("{:?}", secrets(&[("DEPLOY", &["acme/*"])]));
        assert!(
            shown.contains("acme/*") && !shown.contains("value"),
            "{shown}"
        );
    }
}
