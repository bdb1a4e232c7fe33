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
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Push => "push",
            Event::PullRequest => "pull_request",
            Event::Schedule => "schedule",
            Event::Manual => "manual",
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
        }
    }

    /// A context for local use (`plue eval`, `plue check`): a push of `branch`.
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
        }
    }
}
