//! Writes an agent's accepted work to a forge (GitHub REST v3, Gitea API v1): pull
//! requests, issue comments, labels and issues, each with the lookup that makes a retry
//! safe.
//!
//! Idempotence, per kind:
//! - pull request: `POST …/pulls`; a second one for the same head and base is GitHub's
//!   `422` or Gitea's `409` (Gitea also `422` in some cases), upon which the open pull
//!   request for that head is looked up (GitHub `GET …/pulls?head=owner:branch&base=…
//!   &state=open`, Gitea `GET …/pulls/{base}/{head}`) and used;
//! - comment and issue: the text carries a hidden marker (`<!-- plue:… -->`) and, before
//!   any post, the issue's comments (or the repository's issues) are read for one that
//!   carries it, which is used instead. The marker is signed with the token (an HMAC
//!   beside it, [`Writer::signed`]): anyone can write a marker's guessable text on an
//!   issue (a stranger, the agent's own text), and it would pass for the engine's answer,
//!   which would then never be posted;
//! - labels: adding a label twice changes nothing.
//!
//! Invariants: every text written (titles, bodies, comments, labels, branch names) is an
//! [`Outbound`]: it passed the run's outbound wall before it got here; the token only ever goes into the `Authorization` header (through
//! `super::status::api_request`), never into a URL or an error; path segments are
//! percent-encoded by the URL builder; errors say whether a retry can help
//! ([`PostError::Retry`]: network errors, a lost answer, 429, 5xx) or not
//! ([`PostError::Permanent`]), like commit statuses.

use hmac::{Hmac, Mac};
use plue_outbound::Outbound;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::status::{api_request, refusal, without_url, PostError};
use super::Forge;

/// At most this many pages are read when looking for a marker (100 or 50 items each).
const MAX_PAGES: u32 = 20;

/// The repository to write to and the credential to write with.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    pub client: &'a reqwest::Client,
    pub forge: Forge,
    /// e.g. `https://api.github.com` or `https://gitea.example.com/api/v1`.
    pub api_url: &'a str,
    pub token: Option<&'a str>,
    /// `owner/name`.
    pub repo: &'a str,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("forge", &self.forge)
            .field("api_url", &super::without_credentials(self.api_url))
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

/// A pull request to open: `head` is a branch of the same repository. Its texts passed
/// the outbound wall; `base` is the run's own branch, named by the forge.
#[derive(Debug, Clone)]
pub struct NewPull<'a> {
    pub title: &'a Outbound,
    pub body: &'a Outbound,
    pub head: &'a Outbound,
    pub base: &'a str,
}

/// A pull request, issue or comment on the forge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The pull request's or issue's number, or the comment's id.
    pub number: u64,
    pub html_url: String,
    /// Whether this call created it (`false`: an earlier attempt had, and it was found).
    pub created: bool,
}

#[derive(Deserialize)]
struct Item {
    number: u64,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct CommentItem {
    id: u64,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    body: Option<String>,
}

/// What the forge answered.
struct Answer {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

/// `text` followed by the hidden `marker` (an HTML comment both forges leave unrendered).
pub fn with_marker(text: &str, marker: &str) -> String {
    if text.contains(marker) {
        return text.to_string();
    }
    format!("{}\n\n{marker}", text.trim_end())
}

impl Writer<'_> {
    fn owner(&self) -> Result<&str, PostError> {
        self.repo
            .split_once('/')
            .map(|(owner, _)| owner)
            .ok_or_else(|| {
                PostError::Permanent(format!("repository name '{}' is not owner/name", self.repo))
            })
    }

    /// `{api_url}/repos/{owner}/{name}/{rest…}`, every segment encoded.
    fn url(&self, rest: &[&str], query: &[(&str, String)]) -> Result<reqwest::Url, PostError> {
        let bad = |e: String| PostError::Permanent(format!("api_url: {e}"));
        let mut url = reqwest::Url::parse(self.api_url).map_err(|e| bad(e.to_string()))?;
        let (owner, name) = self.repo.split_once('/').ok_or_else(|| {
            PostError::Permanent(format!("repository name '{}' is not owner/name", self.repo))
        })?;
        url.path_segments_mut()
            .map_err(|()| bad("cannot be a base".into()))?
            .pop_if_empty()
            .extend(["repos", owner, name])
            .extend(rest);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        rest: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(Answer, String), PostError> {
        let url = self.url(rest, query)?;
        let method_name = method.to_string();
        let shown_url = super::without_credentials(url.as_str());
        let shown = format!("{method_name} {shown_url}");
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = api_request(request, self.forge, self.token)
            .send()
            .await
            .map_err(|e| PostError::Retry(format!("{shown}: {}", without_url(&e))))?;
        let status = response.status();
        if !status.is_success() && !matches!(status.as_u16(), 404 | 409 | 422) {
            return Err(refusal(&method_name, &shown_url, response, self.token).await);
        }
        // A success whose answer is lost may still have written: a retry looks it up.
        let body = response
            .bytes()
            .await
            .map_err(|e| {
                PostError::Retry(format!("{shown}: reading the answer: {}", without_url(&e)))
            })?
            .to_vec();
        Ok((Answer { status, body }, shown))
    }

    /// Opens the pull request, or finds the open one an earlier attempt opened for the
    /// same head and base.
    pub async fn open_pull_request(&self, pull: &NewPull<'_>) -> Result<Written, PostError> {
        let body = json!({
            "title": pull.title.as_str(),
            "body": pull.body.as_str(),
            "head": pull.head.as_str(),
            "base": pull.base,
        });
        let (answer, shown) = self
            .call(reqwest::Method::POST, &["pulls"], &[], Some(&body))
            .await?;
        match answer.status.as_u16() {
            201 | 200 => parse::<Item>(&answer, &shown).map(|item| Written {
                number: item.number,
                html_url: item.html_url,
                created: true,
            }),
            409 | 422 => match self
                .find_pull_request(pull.head.as_str(), pull.base)
                .await?
            {
                Some(found) => Ok(found),
                None => Err(PostError::Permanent(describe(&answer, &shown))),
            },
            _ => Err(PostError::Permanent(describe(&answer, &shown))),
        }
    }

    /// The open pull request from `head` into `base`, if there is one.
    pub async fn find_pull_request(
        &self,
        head: &str,
        base: &str,
    ) -> Result<Option<Written>, PostError> {
        let found = match self.forge {
            Forge::GitHub => {
                let query = [
                    ("head", format!("{}:{head}", self.owner()?)),
                    ("base", base.to_string()),
                    ("state", "open".to_string()),
                    ("per_page", "100".to_string()),
                ];
                let (answer, shown) = self
                    .call(reqwest::Method::GET, &["pulls"], &query, None)
                    .await?;
                expect_ok(&answer, &shown)?;
                parse::<Vec<Item>>(&answer, &shown)?.into_iter().next()
            }
            Forge::Gitea => {
                let mut rest = vec!["pulls", base];
                rest.extend(head.split('/'));
                let (answer, shown) = self.call(reqwest::Method::GET, &rest, &[], None).await?;
                if answer.status.as_u16() == 404 {
                    return Ok(None);
                }
                expect_ok(&answer, &shown)?;
                Some(parse::<Item>(&answer, &shown)?)
                    .filter(|item| item.state.as_deref().is_none_or(|s| s == "open"))
            }
        };
        Ok(found.map(|item| Written {
            number: item.number,
            html_url: item.html_url,
            created: false,
        }))
    }

    /// Comments `body` (followed by `marker`) on issue or pull request `issue`, unless a
    /// comment carrying `marker` is already there.
    pub async fn comment(
        &self,
        issue: u64,
        body: &Outbound,
        marker: &str,
    ) -> Result<Written, PostError> {
        let marker = &self.signed(marker);
        if let Some(found) = self.find_comment(issue, marker).await? {
            return Ok(found);
        }
        let number = issue.to_string();
        let text = json!({ "body": with_marker(body.as_str(), marker) });
        let (answer, shown) = self
            .call(
                reqwest::Method::POST,
                &["issues", &number, "comments"],
                &[],
                Some(&text),
            )
            .await?;
        if answer.status.as_u16() != 201 && answer.status.as_u16() != 200 {
            return Err(PostError::Permanent(describe(&answer, &shown)));
        }
        let item = parse::<CommentItem>(&answer, &shown)?;
        Ok(Written {
            number: item.id,
            html_url: item.html_url,
            created: true,
        })
    }

    /// `marker` followed by a signature only the token's holder makes
    /// (`<!-- plue:… --><!-- 3f9a… -->`, the same for the same marker every time): what
    /// carries it was written by this engine, not by someone who copied a marker's text.
    pub fn signed(&self, marker: &str) -> String {
        let Some(token) = self.token else {
            return marker.to_owned();
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(marker.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        format!("{marker}<!-- {} -->", &signature[..24])
    }

    /// The comment on `issue` whose body carries `marker`.
    pub async fn find_comment(
        &self,
        issue: u64,
        marker: &str,
    ) -> Result<Option<Written>, PostError> {
        let number = issue.to_string();
        let (size_name, size) = self.page_size();
        for page in 1..=MAX_PAGES {
            let query = [(size_name, size.to_string()), ("page", page.to_string())];
            let (answer, shown) = self
                .call(
                    reqwest::Method::GET,
                    &["issues", &number, "comments"],
                    &query,
                    None,
                )
                .await?;
            expect_ok(&answer, &shown)?;
            let items = parse::<Vec<CommentItem>>(&answer, &shown)?;
            let count = items.len();
            if let Some(item) = items
                .into_iter()
                .find(|c| c.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Ok(Some(Written {
                    number: item.id,
                    html_url: item.html_url,
                    created: false,
                }));
            }
            if count < size {
                break;
            }
        }
        Ok(None)
    }

    /// Adds `labels` (by name) to issue or pull request `issue`.
    pub async fn add_labels(&self, issue: u64, labels: &[Outbound]) -> Result<(), PostError> {
        let number = issue.to_string();
        let labels: Vec<&str> = labels.iter().map(Outbound::as_str).collect();
        let body = json!({ "labels": labels });
        let (answer, shown) = self
            .call(
                reqwest::Method::POST,
                &["issues", &number, "labels"],
                &[],
                Some(&body),
            )
            .await?;
        expect_ok(&answer, &shown)
    }

    /// Opens an issue (its body followed by `marker`), unless an open issue carrying
    /// `marker` exists.
    pub async fn open_issue(
        &self,
        title: &Outbound,
        body: &Outbound,
        marker: &str,
    ) -> Result<Written, PostError> {
        let marker = &self.signed(marker);
        let (size_name, size) = self.page_size();
        for page in 1..=MAX_PAGES {
            let mut query = vec![
                (size_name, size.to_string()),
                ("page", page.to_string()),
                ("state", "open".to_string()),
            ];
            if self.forge == Forge::Gitea {
                query.push(("type", "issues".to_string()));
            }
            let (answer, shown) = self
                .call(reqwest::Method::GET, &["issues"], &query, None)
                .await?;
            expect_ok(&answer, &shown)?;
            let items = parse::<Vec<Item>>(&answer, &shown)?;
            let count = items.len();
            if let Some(item) = items
                .into_iter()
                .find(|i| i.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Ok(Written {
                    number: item.number,
                    html_url: item.html_url,
                    created: false,
                });
            }
            if count < size {
                break;
            }
        }
        let text = json!({ "title": title.as_str(), "body": with_marker(body.as_str(), marker) });
        let (answer, shown) = self
            .call(reqwest::Method::POST, &["issues"], &[], Some(&text))
            .await?;
        if answer.status.as_u16() != 201 {
            return Err(PostError::Permanent(describe(&answer, &shown)));
        }
        let item = parse::<Item>(&answer, &shown)?;
        Ok(Written {
            number: item.number,
            html_url: item.html_url,
            created: true,
        })
    }

    /// GitHub pages with `per_page` (at most 100), Gitea with `limit` (at most 50).
    fn page_size(&self) -> (&'static str, usize) {
        match self.forge {
            Forge::GitHub => ("per_page", 100),
            Forge::Gitea => ("limit", 50),
        }
    }
}

fn describe(answer: &Answer, shown: &str) -> String {
    let text: String = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(300)
        .collect();
    format!("{shown}: HTTP {}: {}", answer.status, text.trim())
}

fn expect_ok(answer: &Answer, shown: &str) -> Result<(), PostError> {
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(PostError::Permanent(describe(answer, shown)))
    }
}

fn parse<T: serde::de::DeserializeOwned>(answer: &Answer, shown: &str) -> Result<T, PostError> {
    serde_json::from_slice(&answer.body)
        .map_err(|e| PostError::Retry(format!("{shown}: unexpected answer: {e}")))
}

#[cfg(test)]
mod tests;
