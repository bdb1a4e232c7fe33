//! The safe-output tools: `propose_pull_request(title, body)`, `propose_comment(body)`,
//! `propose_labels(labels)` and `propose_issue(title, body)`. Offered only when the step's
//! `safe_outputs` allow them ([`Proposer::offered`]); they write nothing anywhere — they
//! collect proposals that travel in the attempt's completion, and the engine validates and
//! applies them.
//!
//! Counts and sizes are checked at the call, so the model hears what is over and can
//! correct it (an error result, never a failed step). The pull request's diff is computed
//! by the runner ([`crate::llm::proposals`]) at the call (to check its size and file
//! count) and again after the conversation ends ([`Proposer::finish`]), so later edits
//! are in it. The engine checks everything again: these checks are a courtesy to the
//! model, not the boundary.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::args::string_arg;
use super::{blocking, ToolOutput, Toolbox};
use crate::llm::proposals::Start;
use crate::step_user::StepUser;
use plue_types::protocol::{
    Proposal, ProposalLimits, MAX_BODY_BYTES, MAX_DIFF_BYTES, MAX_TITLE_BYTES,
};

pub const PULL_REQUEST: &str = "propose_pull_request";
pub const COMMENT: &str = "propose_comment";
pub const LABELS: &str = "propose_labels";
pub const ISSUE: &str = "propose_issue";

/// The proposals of one attempt, and what it may propose.
#[derive(Debug)]
pub struct Proposer {
    limits: ProposalLimits,
    /// The starting point of the workspace (`Some` when a pull request may be proposed).
    start: Option<Arc<Start>>,
    /// In the order the model proposed them; a pull request's diff is filled in at the end.
    made: Mutex<Vec<Proposal>>,
}

impl Proposer {
    pub fn new(limits: ProposalLimits, start: Option<Start>) -> Proposer {
        Proposer {
            limits,
            start: start.map(Arc::new),
            made: Mutex::new(Vec::new()),
        }
    }

    /// The tools the limits allow, in a fixed order.
    pub fn offered(&self) -> Vec<&'static str> {
        let l = &self.limits;
        [
            (PULL_REQUEST, l.pull_request && self.start.is_some()),
            (COMMENT, l.comments > 0),
            (LABELS, !l.labels.is_empty()),
            (ISSUE, l.issues > 0),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name)
        .collect()
    }

    fn max_diff(&self) -> u64 {
        self.limits.max_diff_bytes.clamp(1, MAX_DIFF_BYTES)
    }

    /// Every proposal, a pull request's diff computed now (blocking). An error when the
    /// final change no longer fits the limits.
    pub fn finish(&self) -> Result<Vec<Proposal>, String> {
        let mut made = self.made.lock().expect("the proposals' lock").clone();
        for proposal in &mut made {
            if let Proposal::PullRequest { diff, .. } = proposal {
                let start = self
                    .start
                    .as_ref()
                    .ok_or("no starting point was recorded")?;
                let computed = start
                    .diff(self.max_diff())
                    .map_err(|e| format!("the proposed pull request: {e}"))?;
                self.check_files(computed.files)
                    .map_err(|e| format!("the proposed pull request: {e}"))?;
                *diff = computed.text;
            }
        }
        Ok(made)
    }

    fn check_files(&self, files: usize) -> Result<(), String> {
        if files == 0 {
            return Err("the workspace has no change against the step's start".into());
        }
        if files > self.limits.max_files as usize {
            return Err(format!(
                "the change touches {files} files; max_files is {}",
                self.limits.max_files
            ));
        }
        Ok(())
    }

    fn count(&self, kind: &str) -> usize {
        let made = self.made.lock().expect("the proposals' lock");
        made.iter().filter(|p| p.kind() == kind).count()
    }

    fn push(&self, proposal: Proposal) {
        self.made
            .lock()
            .expect("the proposals' lock")
            .push(proposal);
    }
}

fn text(input: &Value, name: &str, max: usize) -> Result<String, String> {
    let value = string_arg(input, "the proposal", name)?;
    if value.trim().is_empty() {
        return Err(format!("'{name}' must not be empty"));
    }
    if value.len() > max {
        return Err(format!("'{name}' is {} bytes; at most {max}", value.len()));
    }
    Ok(value.to_owned())
}

impl Toolbox {
    /// Offers the proposal tools `proposer` allows.
    pub fn with_proposer(mut self, proposer: Option<Arc<Proposer>>) -> Toolbox {
        if let Some(proposer) = &proposer {
            for name in proposer.offered() {
                if !self.offered.contains(&name) {
                    self.offered.push(name);
                }
            }
        }
        self.proposer = proposer;
        self
    }

    pub(super) async fn propose(&self, name: &str, input: &Value) -> Result<ToolOutput, String> {
        let proposer = self
            .proposer
            .clone()
            .ok_or("this step may not propose anything")?;
        let limits = &proposer.limits;
        match name {
            PULL_REQUEST => {
                let title = text(input, "title", MAX_TITLE_BYTES)?;
                let body = text(input, "body", MAX_BODY_BYTES)?;
                if proposer.count("pull_request") > 0 {
                    return Err("a pull request is already proposed; the final workspace at the end of the step becomes its change".into());
                }
                let start = proposer
                    .start
                    .clone()
                    .ok_or("no starting point was recorded")?;
                let max = proposer.max_diff();
                let diff = blocking(move || start.diff(max).map_err(|e| e.to_string())).await?;
                proposer.check_files(diff.files)?;
                proposer.push(Proposal::PullRequest {
                    title,
                    body,
                    diff: String::new(),
                });
                Ok(ToolOutput::ok(format!(
                    "pull request proposed ({} files, {} bytes of diff now); the workspace as it is when the step ends becomes its change, checked and opened by Plue",
                    diff.files,
                    diff.text.len()
                )))
            }
            COMMENT => {
                let body = text(input, "body", MAX_BODY_BYTES)?;
                if proposer.count("comment") >= limits.comments as usize {
                    return Err(format!(
                        "this step may propose at most {} comments",
                        limits.comments
                    ));
                }
                proposer.push(Proposal::Comment { body });
                Ok(ToolOutput::ok("comment proposed"))
            }
            LABELS => {
                let labels = input
                    .get("labels")
                    .and_then(Value::as_array)
                    .ok_or("'labels' must be an array of label names")?;
                let mut wanted: Vec<String> = Vec::new();
                for label in labels {
                    let label = label.as_str().ok_or("'labels' must hold strings")?;
                    if !limits.labels.iter().any(|l| l == label) {
                        return Err(format!(
                            "label {label:?} is not allowed; allowed: {}",
                            limits.labels.join(", ")
                        ));
                    }
                    if !wanted.iter().any(|w| w == label) {
                        wanted.push(label.to_owned());
                    }
                }
                if wanted.is_empty() {
                    return Err("'labels' must name at least one label".into());
                }
                if proposer.count("labels") > 0 {
                    return Err("labels are already proposed (one call per step)".into());
                }
                proposer.push(Proposal::Labels { labels: wanted });
                Ok(ToolOutput::ok("labels proposed"))
            }
            ISSUE => {
                let title = text(input, "title", MAX_TITLE_BYTES)?;
                let body = text(input, "body", MAX_BODY_BYTES)?;
                if proposer.count("issue") >= limits.issues as usize {
                    return Err(format!(
                        "this step may propose at most {} issues",
                        limits.issues
                    ));
                }
                proposer.push(Proposal::Issue { title, body });
                Ok(ToolOutput::ok("issue proposed"))
            }
            other => Err(format!("tool '{other}' is not implemented")),
        }
    }
}

/// What the model is told about proposal tool `name`.
pub(super) fn definition(name: &str) -> (&'static str, Value) {
    let title = json!({"type": "string", "description": "One line"});
    let body = json!({"type": "string", "description": "Markdown"});
    match name {
        PULL_REQUEST => (
            "Propose a pull request: the workspace's changes as they are when this step ends \
             (against its start) become its change. Plue checks it and opens it; you never \
             push. Call once.",
            json!({"type": "object", "properties": {"title": title, "body": body}, "required": ["title", "body"]}),
        ),
        COMMENT => (
            "Propose a comment on the issue or pull request this run answers; Plue checks \
             and posts it.",
            json!({"type": "object", "properties": {"body": body}, "required": ["body"]}),
        ),
        LABELS => (
            "Propose labels for the issue or pull request this run answers (only the \
             step's allowed labels).",
            json!({"type": "object", "properties": {"labels": {"type": "array", "items": {"type": "string"}}}, "required": ["labels"]}),
        ),
        _ => (
            "Propose a new issue; Plue checks and opens it.",
            json!({"type": "object", "properties": {"title": title, "body": body}, "required": ["title", "body"]}),
        ),
    }
}

/// The step's [`Proposer`] when it has `safe_outputs`: the starting point is recorded now,
/// before the conversation (only when a pull request may be proposed).
pub async fn proposer(
    limits: Option<&ProposalLimits>,
    workspace: &Path,
    commit: Option<&str>,
    user: Option<StepUser>,
) -> Result<Option<Arc<Proposer>>, String> {
    let Some(limits) = limits else {
        return Ok(None);
    };
    let start = if limits.pull_request {
        let (workspace, commit) = (workspace.to_owned(), commit.map(str::to_owned));
        let start =
            tokio::task::spawn_blocking(move || Start::record(&workspace, commit.as_deref(), user))
                .await
                .map_err(|e| format!("recording the workspace's start failed: {e}"))?
                .map_err(|e| format!("recording the workspace's start for safe outputs: {e}"))?;
        Some(start)
    } else {
        None
    };
    Ok(Some(Arc::new(Proposer::new(limits.clone(), start))))
}

/// What the step proposed, a pull request's diff computed now, after the conversation.
pub async fn collect(proposer: Option<Arc<Proposer>>) -> Result<Vec<Proposal>, String> {
    let Some(proposer) = proposer else {
        return Ok(Vec::new());
    };
    tokio::task::spawn_blocking(move || proposer.finish())
        .await
        .map_err(|e| format!("collecting the proposals failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn toolbox(root: &std::path::Path, limits: ProposalLimits) -> Toolbox {
        let start = limits
            .pull_request
            .then(|| Start::record(root, None, None).unwrap());
        let proposer = Arc::new(Proposer::new(limits, start));
        Toolbox::new(
            root,
            &[],
            Default::default(),
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap()
        .with_proposer(Some(proposer))
    }

    #[tokio::test]
    async fn only_allowed_tools_are_offered_and_limits_come_back_as_tool_errors() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ProposalLimits {
            comments: 1,
            labels: vec!["bug".into()],
            ..ProposalLimits::default()
        };
        let tools = toolbox(dir.path(), limits);
        assert_eq!(tools.offered(), [COMMENT, LABELS]);
        let pr = tools
            .call(PULL_REQUEST, &json!({"title": "t", "body": "b"}))
            .await;
        assert!(
            pr.is_error && pr.content.contains("not available"),
            "{pr:?}"
        );
        let ok = tools.call(COMMENT, &json!({"body": "hi"})).await;
        assert!(!ok.is_error, "{ok:?}");
        let again = tools.call(COMMENT, &json!({"body": "hi"})).await;
        assert!(
            again.is_error && again.content.contains("at most 1"),
            "{again:?}"
        );
        let label = tools.call(LABELS, &json!({"labels": ["deploy"]})).await;
        assert!(
            label.is_error && label.content.contains("not allowed"),
            "{label:?}"
        );
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let long = tools.call(COMMENT, &json!({"body": big})).await;
        assert!(
            long.is_error && long.content.contains("at most"),
            "{long:?}"
        );
    }

    #[tokio::test]
    async fn a_pull_request_is_checked_at_the_call_and_diffed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        let limits = ProposalLimits {
            pull_request: true,
            max_files: 1,
            max_diff_bytes: 4096,
            ..ProposalLimits::default()
        };
        let tools = toolbox(dir.path(), limits);
        let input = json!({"title": "t", "body": "b"});
        let empty = tools.call(PULL_REQUEST, &input).await;
        assert!(
            empty.is_error && empty.content.contains("no change"),
            "{empty:?}"
        );
        std::fs::write(dir.path().join("a.txt"), "two\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "new\n").unwrap();
        let many = tools.call(PULL_REQUEST, &input).await;
        assert!(
            many.is_error && many.content.contains("max_files is 1"),
            "{many:?}"
        );
        std::fs::remove_file(dir.path().join("b.txt")).unwrap();
        let ok = tools.call(PULL_REQUEST, &input).await;
        assert!(!ok.is_error, "{ok:?}");
        // A later edit is in the diff: it is computed when the step ends.
        std::fs::write(dir.path().join("a.txt"), "three\n").unwrap();
        let made = tools.proposer.as_ref().unwrap().finish().unwrap();
        let Proposal::PullRequest { diff, .. } = &made[0] else {
            panic!("{made:?}");
        };
        assert!(diff.contains("-one\n+three\n"), "{diff}");
    }
}
