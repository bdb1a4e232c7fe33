//! Check runs on GitHub, for a repository served through the engine's GitHub App (the
//! Checks API takes writes only from an App's installation token; a personal token and
//! Gitea keep commit statuses, [`super::status`]): one check run per workflow run and
//! commit. [`ensure`] creates it (`POST /repos/{o}/{r}/check-runs`, `queued` or
//! `in_progress`) unless the commit already has it; [`complete`] ends it (`PATCH
//! /repos/{o}/{r}/check-runs/{id}`) with a conclusion, the output's title and summary and
//! the annotations, at most 50 a request ([`body`]).
//!
//! Invariants:
//! - Every text sent is an `Outbound` ([`body`] takes nothing else); the link is the
//!   engine's own dashboard.
//! - Idempotent: a check run is looked up by its `external_id` among the commit's check runs
//!   of its name before one is created, so a create whose answer was lost makes no second
//!   one — only among the engine's App's own ([`CheckTarget::app_id`]): another App (a
//!   GitHub Actions workflow of the repository) can make a check run of the same name and
//!   external id, which the engine could not complete, and whose conclusion would stand
//!   for the run's; [`complete`] reads how many annotations GitHub already holds
//!   (`output.annotations_count`) and sends only the rest, so a retry after a lost answer
//!   appends nothing twice.
//! - The token travels only in the `Authorization` header; errors are
//!   [`PostError`]s (retry on network errors, 429 and 5xx) without it or the URL's
//!   credentials.

pub mod body;
pub mod report;

use plue_outbound::Outbound;
use serde::Deserialize;

use super::status::{api_request, refusal, without_url, PostError};
use super::Forge;
pub use body::{CheckAnnotation, Completion, Conclusion, Level, NewCheckRun, Progress};

/// The repository check runs go to.
#[derive(Debug, Clone)]
pub struct CheckTarget<'a> {
    /// e.g. `https://api.github.com`, or a GitHub Enterprise Server's `…/api/v3`.
    pub api_url: &'a str,
    /// The App installation's token.
    pub token: Option<&'a str>,
    /// `owner/name`.
    pub repo: &'a str,
    /// The engine's GitHub App (its id): only its check runs are the engine's
    /// (`None`: any, for a token that is no App's).
    pub app_id: Option<u64>,
}

/// What [`complete`] reads of a check run.
#[derive(Debug, Deserialize)]
struct CheckRunJson {
    id: u64,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    output: Option<OutputJson>,
    #[serde(default)]
    app: Option<AppJson>,
}

#[derive(Debug, Deserialize)]
struct AppJson {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    #[serde(default)]
    annotations_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ListJson {
    check_runs: Vec<CheckRunJson>,
}

impl CheckTarget<'_> {
    fn url(&self, tail: &str) -> Result<String, PostError> {
        let Some((owner, name)) = self.repo.split_once('/') else {
            return Err(PostError::Permanent(format!(
                "repository name '{}' is not owner/name",
                self.repo
            )));
        };
        Ok(format!(
            "{}/repos/{owner}/{name}/{tail}",
            self.api_url.trim_end_matches('/')
        ))
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PostError> {
        let shown = super::without_credentials(url);
        let response = api_request(request, Forge::GitHub, self.token)
            .send()
            .await
            .map_err(|e| PostError::Retry(format!("{method} {shown}: {}", without_url(&e))))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refusal(method, &shown, response, self.token).await)
    }
}

/// The id of `run`'s check run on its commit: `known` (the id the engine remembered), else
/// the one GitHub holds with its name and `external_id`, else a new one.
pub async fn ensure(
    client: &reqwest::Client,
    target: &CheckTarget<'_>,
    run: &NewCheckRun,
    known: Option<u64>,
) -> Result<u64, PostError> {
    if let Some(id) = known {
        return Ok(id);
    }
    if let Some(id) = find(client, target, &run.name, &run.head_sha, &run.external_id).await? {
        return Ok(id);
    }
    let url = target.url("check-runs")?;
    let response = target
        .send("POST", &url, client.post(&url).json(&body::create(run)))
        .await?;
    let created: CheckRunJson = read(response, "POST", &url).await?;
    Ok(created.id)
}

/// The check run named `name` on `sha` whose `external_id` is `external_id`, made by the
/// target's App, if any.
async fn find(
    client: &reqwest::Client,
    target: &CheckTarget<'_>,
    name: &Outbound,
    sha: &str,
    external_id: &str,
) -> Result<Option<u64>, PostError> {
    let url = target.url(&format!("commits/{sha}/check-runs"))?;
    let request = client.get(&url).query(&[
        ("check_name", name.as_str()),
        ("filter", "all"),
        ("per_page", "100"),
    ]);
    let response = target.send("GET", &url, request).await?;
    let listed: ListJson = read(response, "GET", &url).await?;
    Ok(listed
        .check_runs
        .into_iter()
        .find(|c| {
            c.external_id.as_deref() == Some(external_id)
                && target
                    .app_id
                    .is_none_or(|app| c.app.as_ref().is_some_and(|a| a.id == app))
        })
        .map(|c| c.id))
}

/// Completes check run `id` with `done`: the annotations GitHub does not hold yet, 50 a
/// request, each request saying the conclusion.
pub async fn complete(
    client: &reqwest::Client,
    target: &CheckTarget<'_>,
    id: u64,
    done: &Completion,
) -> Result<(), PostError> {
    let url = target.url(&format!("check-runs/{id}"))?;
    let response = target.send("GET", &url, client.get(&url)).await?;
    let current: CheckRunJson = read(response, "GET", &url).await?;
    let held = current
        .output
        .and_then(|o| o.annotations_count)
        .unwrap_or(0);
    for request in body::completion(done, usize::try_from(held).unwrap_or(usize::MAX)) {
        target
            .send("PATCH", &url, client.patch(&url).json(&request))
            .await?;
    }
    Ok(())
}

/// A successful answer's JSON; one GitHub would never send is not retried.
async fn read<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    method: &str,
    url: &str,
) -> Result<T, PostError> {
    let shown = super::without_credentials(url);
    let bytes = response
        .bytes()
        .await
        .map_err(|e| PostError::Retry(format!("{method} {shown}: {}", without_url(&e))))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        PostError::Permanent(format!(
            "{method} {shown}: an answer GitHub never gives: {e}"
        ))
    })
}

#[cfg(test)]
mod tests;
