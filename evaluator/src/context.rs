//! `ctx`: the read-only facts about the triggering event that a workflow may branch on.
//!
//! Plain data. The worker exposes it to Python as a frozen object; two evaluations with
//! equal contexts and equal sources give byte-identical plans.
//!
//! Invariant: text from `ctx` never becomes template syntax. Branch and file names, pull
//! request branches and manual inputs are chosen by whoever triggers a run, and a trusted
//! workflow pastes them into commands (quoted with `shlex.quote`, as it should); a
//! `{{ raw steps.x.outputs.y }}` inside them must not be expanded there. So workflow code
//! only ever sees [`EvalContext::as_template_text`]: every string with its `{{` escaped
//! (`\{{`), which a step's template renders back to exactly the original text; and a plan
//! whose templates hold a reference written in `ctx` anyway (the escape lost on the way,
//! e.g. to `repr()` or `json.dumps()`, which double the backslash) is refused
//! ([`EvalContext::reference_texts`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The event kinds a workflow can be evaluated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Push,
    PullRequest,
    Schedule,
    Manual,
    /// An issue was opened, labeled, ... (`Trigger.on_issue`).
    Issue,
    /// A comment on an issue or a pull request (`Trigger.on_comment`).
    Comment,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Push => "push",
            Event::PullRequest => "pull_request",
            Event::Schedule => "schedule",
            Event::Manual => "manual",
            Event::Issue => "issue",
            Event::Comment => "comment",
        }
    }
}

/// Pull request facts, present when `event` is `pull_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    /// The base branch the pull request targets.
    pub base: String,
    /// The head branch the changes come from.
    pub head: String,
    /// `opened`, `synchronize`, `reopened`, `closed`, ...
    pub action: String,
}

/// The issue (or pull request) of an `issue` or `comment` event. Every string is whatever
/// its author wrote: data, never template or code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    /// The forge login of the issue's author.
    pub author: String,
    /// The issue's page on the forge.
    pub url: String,
}

/// The comment of a `comment` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// The forge login of the commenter.
    pub author: String,
    /// The commenter's relation to the repository as the forge says it (GitHub's
    /// `author_association`: `OWNER`, `MEMBER`, `COLLABORATOR`, `CONTRIBUTOR`, `NONE`, ...;
    /// Gitea says none, so `NONE`). Informative only: who may summon is decided by the
    /// engine before evaluation.
    pub association: String,
}

/// What the workflow sees as `ctx`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalContext {
    pub event: Event,
    /// `owner/name`.
    pub repo: String,
    /// The full ref, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch name when the ref is a branch.
    pub branch: Option<String>,
    pub sha: String,
    pub pr: Option<PullRequest>,
    pub changed_files: Vec<String>,
    pub inputs: BTreeMap<String, String>,
    /// The issue of an `issue` or `comment` event. Absent from the stored JSON when `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issue: Option<Issue>,
    /// The comment of a `comment` event. Absent from the stored JSON when `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<Comment>,
}

impl EvalContext {
    /// Every reference written in this context's strings ([`crate::template::reference_texts`]),
    /// exactly as written: a plan whose templates hold one of these got it from `ctx` with
    /// its escape lost, and is refused.
    pub fn reference_texts(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut add = |s: &str| {
            found.extend(
                crate::template::reference_texts(s)
                    .into_iter()
                    .map(str::to_owned),
            )
        };
        for s in [&self.repo, &self.git_ref, &self.sha] {
            add(s);
        }
        if let Some(branch) = &self.branch {
            add(branch);
        }
        if let Some(pr) = &self.pr {
            for s in [&pr.base, &pr.head, &pr.action] {
                add(s);
            }
        }
        for s in &self.changed_files {
            add(s);
        }
        for (name, value) in &self.inputs {
            add(name);
            add(value);
        }
        if let Some(issue) = &self.issue {
            for s in [&issue.title, &issue.body, &issue.author, &issue.url] {
                add(s);
            }
            for s in &issue.labels {
                add(s);
            }
        }
        if let Some(comment) = &self.comment {
            for s in [&comment.body, &comment.author, &comment.association] {
                add(s);
            }
        }
        found
    }

    /// This context as workflow code sees it: every string (input names too) escaped with
    /// [`crate::template::escape`], so that pasted into a template it renders as the same
    /// text and never as a reference. Strings without `{{` are unchanged.
    pub fn as_template_text(&self) -> EvalContext {
        let text = |s: &String| crate::template::escape(s).into_owned();
        EvalContext {
            event: self.event,
            repo: text(&self.repo),
            git_ref: text(&self.git_ref),
            branch: self.branch.as_ref().map(text),
            sha: text(&self.sha),
            pr: self.pr.as_ref().map(|pr| PullRequest {
                number: pr.number,
                base: text(&pr.base),
                head: text(&pr.head),
                action: text(&pr.action),
            }),
            changed_files: self.changed_files.iter().map(text).collect(),
            inputs: self
                .inputs
                .iter()
                .map(|(name, value)| (text(name), text(value)))
                .collect(),
            issue: self.issue.as_ref().map(|issue| Issue {
                number: issue.number,
                title: text(&issue.title),
                body: text(&issue.body),
                labels: issue.labels.iter().map(text).collect(),
                author: text(&issue.author),
                url: text(&issue.url),
            }),
            comment: self.comment.as_ref().map(|comment| Comment {
                id: comment.id,
                body: text(&comment.body),
                author: text(&comment.author),
                association: text(&comment.association),
            }),
        }
    }

    /// A context for local use (`plue eval`, `plue check`): a push of `branch` (for an
    /// `issue` or `comment` event, with a sample issue and comment).
    pub fn local(event: Event, branch: &str) -> Self {
        let pr = (event == Event::PullRequest).then(|| PullRequest {
            number: 1,
            base: "main".into(),
            head: branch.into(),
            action: "opened".into(),
        });
        EvalContext {
            event,
            repo: "local/workspace".into(),
            git_ref: format!("refs/heads/{branch}"),
            branch: Some(branch.into()),
            sha: "0".repeat(40),
            pr,
            changed_files: vec![],
            inputs: BTreeMap::new(),
            issue: matches!(event, Event::Issue | Event::Comment).then(|| Issue {
                number: 1,
                title: "A sample issue".into(),
                body: "What the issue's author wrote.".into(),
                labels: vec![],
                author: "octocat".into(),
                url: "https://forge.example/local/workspace/issues/1".into(),
            }),
            comment: (event == Event::Comment).then(|| Comment {
                id: 1,
                body: "/plue fix".into(),
                author: "octocat".into(),
                association: "OWNER".into(),
            }),
        }
    }
}
