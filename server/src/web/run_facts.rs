//! The run page's facts (`templates/run_facts.html`): who started the run, the inputs it
//! was given, and what it is about — the issue (or pull request) an issue or comment
//! summoned it from, with its title; a pull request run's pull request, with the title its
//! webhook delivery carried (stored with the run, `run_titles`); the message of the run's
//! commit, read from the repository's mirror; and on GitHub, the check run the engine
//! reports the run to (`check_runs`); and the OpenID Connect identities its steps got
//! (`id_tokens`: audience and subject, from the audit, never a token).
//!
//! Invariants:
//! - Everything here is text people wrote (inputs, titles, commit messages, logins): the
//!   template escapes it, and a link is made only of an `http(s)` URL.
//! - The commit message comes from the engine's own mirror of the repository, by the run's
//!   commit id, kept in memory per commit ([`plue_core::registry::Registry::commit_message`]);
//!   a run without a repository, or whose commit the mirror lacks, shows none.
//! - Reads only: the run page checked that the caller may read the run.

use evaluator::EvalContext;
use plue_store::RunRow;
use serde::Serialize;

use super::error::WebResult;
use super::Web;

/// The longest input value shown in full (a longer one is cut, with its length said).
const MAX_SHOWN_INPUT: usize = 500;

#[derive(Debug, Default, Serialize)]
pub(super) struct RunFacts {
    /// Who started it (a user, a forge login, `schedule`).
    actor: Option<String>,
    /// The forge logins behind it, when a forge's delivery started it (`github:octocat`).
    forge_logins: Option<String>,
    /// The inputs it was given (a dispatch's, completed with defaults), by name.
    inputs: Vec<InputValue>,
    /// The issue or pull request it is about.
    about: Option<About>,
    /// The first line of its commit's message.
    subject: Option<String>,
    /// The rest of the message (after the first line and the blank one).
    body: Option<String>,
    /// The page of the GitHub check run the engine reports the run to, on its commit.
    check_run: Option<String>,
    /// The OpenID Connect tokens its steps got, oldest first.
    identities: Vec<Identity>,
}

/// A token a step got, as the run page shows it.
#[derive(Debug, Serialize)]
struct Identity {
    step: String,
    attempt: i64,
    variable: String,
    audience: String,
    subject: String,
}

#[derive(Debug, Serialize)]
struct InputValue {
    name: String,
    value: String,
    /// How many characters were cut from `value`.
    cut: usize,
}

#[derive(Debug, Serialize)]
struct About {
    /// `Issue` or `Pull request`.
    kind: &'static str,
    number: u64,
    /// Its title (an issue's or comment's from `ctx`, a pull request's as stored).
    title: Option<String>,
    /// Its page on the forge (`http(s)` only).
    url: Option<String>,
    /// A pull request's `head → base`.
    branches: Option<String>,
}

/// The facts of `run`.
pub(super) async fn load(web: &Web, run: &RunRow) -> WebResult<RunFacts> {
    let store = web.store();
    let mut facts = RunFacts::default();
    if let Some(who) = store.trigger_of(run.id).await? {
        facts.actor = Some(who.name);
        facts.forge_logins = who.forge_login;
    }
    let ctx = store
        .run_documents(run.id)
        .await?
        .and_then(|docs| serde_json::from_str::<EvalContext>(&docs.context).ok());
    if let Some(ctx) = &ctx {
        facts.inputs = ctx
            .inputs
            .iter()
            .map(|(name, value)| shown_input(name, value))
            .collect();
        facts.about = about(ctx);
        if let Some(about) = facts.about.as_mut().filter(|a| a.title.is_none()) {
            about.title = store.run_title(run.id).await?;
        }
    }
    facts.identities = store
        .id_tokens_issued(run.id)
        .await?
        .iter()
        .filter_map(crate::api::id_tokens::IssuedView::of)
        .map(|issued| Identity {
            step: issued.step,
            attempt: issued.attempt,
            variable: issued.variable,
            audience: issued.audience,
            subject: issued.subject,
        })
        .collect();
    let repo = match run.repo_id {
        Some(repo_id) => store.repo_by_id(repo_id).await?,
        None => None,
    };
    if let Some(repo) = &repo {
        if let Some(registry) = &web.state.registry {
            if let Some(message) = registry.commit_message(repo, &run.sha).await {
                let (subject, body) = split_message(&message);
                facts.subject = subject;
                facts.body = body;
            }
        }
        if repo.forge == "github" {
            if let Some(id) = store.check_run_id(run.id, &run.sha).await? {
                facts.check_run = check_run_page(&repo.clone_url, id);
            }
        }
    }
    Ok(facts)
}

fn shown_input(name: &str, value: &str) -> InputValue {
    let chars = value.chars().count();
    let (value, cut) = if chars > MAX_SHOWN_INPUT {
        (
            value.chars().take(MAX_SHOWN_INPUT).collect(),
            chars - MAX_SHOWN_INPUT,
        )
    } else {
        (value.to_string(), 0)
    };
    InputValue {
        name: name.to_string(),
        value,
        cut,
    }
}

/// The issue or pull request of the run's event.
fn about(ctx: &EvalContext) -> Option<About> {
    if let Some(issue) = &ctx.issue {
        // A comment on a pull request carries the pull request as its issue.
        let kind = if ctx.pr.is_some() || issue.url.contains("/pull/") {
            "Pull request"
        } else {
            "Issue"
        };
        return Some(About {
            kind,
            number: issue.number,
            title: Some(issue.title.clone()),
            url: web_link(&issue.url),
            branches: None,
        });
    }
    ctx.pr.as_ref().map(|pr| About {
        kind: "Pull request",
        number: pr.number,
        title: None,
        url: None,
        branches: Some(format!("{} → {}", pr.head, pr.base)),
    })
}

/// The page of check run `id` of the GitHub repository cloned from `clone_url`
/// (`https://github.com/acme/app/runs/17`; GitHub Enterprise alike), without the clone
/// URL's credentials; `None` for a URL that is not `http(s)`.
fn check_run_page(clone_url: &str, id: i64) -> Option<String> {
    let mut url = reqwest::Url::parse(clone_url).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    let path = url
        .path()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_owned();
    url.set_path(&format!("{path}/runs/{id}"));
    Some(url.to_string())
}

/// `url` when it is an `http(s)` URL (a link of any other scheme could run script).
fn web_link(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.to_string())
}

/// A commit message's first line and the rest (after the blank line that follows it).
fn split_message(message: &str) -> (Option<String>, Option<String>) {
    let message = message.trim();
    let (subject, body) = message.split_once('\n').unwrap_or((message, ""));
    let subject = subject.trim();
    let body = body.trim();
    (
        (!subject.is_empty()).then(|| subject.to_string()),
        (!body.is_empty()).then(|| body.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_message_is_its_subject_and_body() {
        assert_eq!(
            split_message("fix: the thing\n\nBecause it broke.\nTwice.\n"),
            (
                Some("fix: the thing".to_string()),
                Some("Because it broke.\nTwice.".to_string())
            )
        );
        assert_eq!(split_message("one line"), (Some("one line".into()), None));
        assert_eq!(split_message("  \n"), (None, None));
    }

    #[test]
    fn a_check_run_links_to_its_page_without_the_clone_urls_credential() {
        assert_eq!(
            check_run_page("https://x-access-token:ghs_1@github.com/acme/app.git", 17).as_deref(),
            Some("https://github.com/acme/app/runs/17")
        );
        assert_eq!(
            check_run_page("https://ghe.example:8443/acme/app/", 3).as_deref(),
            Some("https://ghe.example:8443/acme/app/runs/3")
        );
        assert_eq!(check_run_page("file:///srv/app.git", 1), None);
        assert_eq!(check_run_page("javascript:alert(1)", 1), None);
    }

    #[test]
    fn only_web_urls_become_links() {
        assert_eq!(
            web_link("https://forge.example/o/r/issues/3").as_deref(),
            Some("https://forge.example/o/r/issues/3")
        );
        for hostile in [
            "javascript:alert(1)",
            "JAVASCRIPT:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "//evil.example/x",
            "vbscript:x",
        ] {
            assert_eq!(web_link(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn long_inputs_are_cut_and_say_so() {
        let shown = shown_input("notes", &"é".repeat(MAX_SHOWN_INPUT + 7));
        assert_eq!(shown.value.chars().count(), MAX_SHOWN_INPUT);
        assert_eq!(shown.cut, 7);
        assert_eq!(shown_input("a", "b").cut, 0);
    }
}
