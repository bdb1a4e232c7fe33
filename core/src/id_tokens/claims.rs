//! What a step's token says: its claims, modelled on GitHub Actions' so the trust policies
//! clouds and Vault already have for GitHub carry over (`sub` first among them).
//!
//! Invariants: every claim comes from what the engine recorded when it created the run
//! (its repository, ref, commit, event, trust) and from the step as the plan names it,
//! never from anything the step sends; the subject of a step in an environment names the
//! environment, so a policy for `environment:prod` matches only steps the environment's
//! gate let through.

use serde::{Deserialize, Serialize};

/// The run and step a token is for, as the engine recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFacts<'a> {
    /// The engine's URL as relying parties reach it (the tokens' `iss`).
    pub issuer: &'a str,
    /// `owner/name` and the engine's id of the run's repository; `None` for a local run.
    pub repository: Option<(&'a str, i64)>,
    /// The run's full ref (`refs/heads/main`, `refs/pull/7/head`, `refs/tags/v1`).
    pub git_ref: &'a str,
    pub sha: &'a str,
    /// What started the run: `push`, `pull_request`, `schedule`, `manual`, ...
    pub event: &'a str,
    pub workflow: &'a str,
    pub run_id: i64,
    /// The step's attempt number (1 for its first).
    pub attempt: i64,
    pub step: &'a str,
    /// The environment the step runs in, when it names one.
    pub environment: Option<&'a str>,
    /// Who started the run, as the engine shows it.
    pub actor: Option<&'a str>,
    /// Whether the run is trusted: not a pull request from a fork, not an event the engine
    /// itself caused.
    pub trusted: bool,
}

/// A token's claims (the JWT's payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique per token (the audit names it).
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_owner: Option<String>,
    /// The engine's id of the repository, as a string (GitHub's claims are strings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `branch`, `tag`, or empty for another ref.
    pub ref_type: String,
    pub sha: String,
    pub event_name: String,
    pub workflow: String,
    pub run_id: String,
    pub run_attempt: String,
    /// The step's id in the plan.
    pub step: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Whether the run is trusted (see [`StepFacts::trusted`]).
    pub trusted: bool,
    /// Which engine made it: `plue`.
    pub runner_environment: String,
}

impl Claims {
    /// The claims of a token for `audience`, issued at `now` (seconds) and valid for
    /// `ttl_secs`, with id `jti`.
    pub fn new(facts: &StepFacts, audience: &str, now: i64, ttl_secs: i64, jti: String) -> Claims {
        let repository = facts.repository.map(|(name, _)| name.to_owned());
        Claims {
            iss: facts.issuer.to_owned(),
            aud: audience.to_owned(),
            sub: subject(facts),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            jti,
            repository_owner: repository
                .as_deref()
                .and_then(|name| name.split_once('/'))
                .map(|(owner, _)| owner.to_owned()),
            repository,
            repository_id: facts.repository.map(|(_, id)| id.to_string()),
            git_ref: facts.git_ref.to_owned(),
            ref_type: ref_type(facts.git_ref).to_owned(),
            sha: facts.sha.to_owned(),
            event_name: facts.event.to_owned(),
            workflow: facts.workflow.to_owned(),
            run_id: facts.run_id.to_string(),
            run_attempt: facts.attempt.to_string(),
            step: facts.step.to_owned(),
            environment: facts.environment.map(str::to_owned),
            actor: facts.actor.map(str::to_owned),
            trusted: facts.trusted,
            runner_environment: "plue".to_owned(),
        }
    }
}

/// The token's subject, as GitHub forms it: `repo:OWNER/NAME:environment:ENV` for a step
/// in an environment, `repo:OWNER/NAME:pull_request` for a pull request's run,
/// `repo:OWNER/NAME:ref:REF` otherwise; a local run's is `local:workflow:WORKFLOW`.
pub fn subject(facts: &StepFacts) -> String {
    let Some((repository, _)) = facts.repository else {
        return format!("local:workflow:{}", facts.workflow);
    };
    match (facts.environment, facts.event) {
        (Some(environment), _) => format!("repo:{repository}:environment:{environment}"),
        (None, "pull_request") => format!("repo:{repository}:pull_request"),
        (None, _) => format!("repo:{repository}:ref:{}", facts.git_ref),
    }
}

/// `branch`, `tag` or empty, from a full ref.
fn ref_type(git_ref: &str) -> &'static str {
    if git_ref.starts_with("refs/heads/") {
        "branch"
    } else if git_ref.starts_with("refs/tags/") {
        "tag"
    } else {
        ""
    }
}
