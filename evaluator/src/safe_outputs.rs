//! `safe_outputs=`: what an `llm` step may *propose* to the forge (a pull request, comments,
//! labels, issues), and the limits the engine checks before it writes anything.
//!
//! The step never holds a forge credential: the runner offers `propose_*` tools, the engine
//! validates each proposal against this declaration and applies it itself. This module
//! owns the declaration ([`SafeOutputs`]) and its validation ([`check`]); the engine's
//! `safe_outputs` module owns the checks of what was proposed.
//!
//! Invariants:
//! - [`DEFAULT_DENY`] is always denied, whatever the plan says: [`SafeOutputs::deny`] is
//!   the plan's list plus the default one, and the engine matches against that, so no plan
//!   can let an agent change a workflow file.
//! - Every glob compiles with the one glob compiler ([`crate::glob::compile`]), so a glob
//!   that validates is exactly one that matches in the engine.
//! - Bounds: at most [`MAX_COUNT`] comments or issues, [`MAX_LABELS`] labels,
//!   [`MAX_GLOBS`] globs per list, [`MAX_HOSTS`] link hosts, [`MAX_FILES`] files and
//!   [`MAX_DIFF_BYTES`] bytes of diff.

use serde::{Deserialize, Serialize};

/// Paths no proposal may change, added to every step's `paths_deny`: the workflow files
/// of Plue and of the forges, and the files that change how git or the forge treats the
/// tree — what a reviewer of the pull request would not see the effect of in its diff.
///
/// The engine compares every changed path as it is, lowercased and with each part's
/// trailing dots and spaces dropped (`core/src/safe_outputs/validate.rs`), so the globs are
/// lowercase and `CODEOWNERS` is written `codeowners`. A file git reads only at the root is
/// denied at any depth all the same where nothing legitimate keeps one lower down: a
/// directory may be published as a repository of its own (`git subtree split`).
///
/// Not here: `.gitignore`, which changes only which untracked files git offers to add —
/// never what a tracked file holds or how it is shown — so an agent may keep tidying it.
pub const DEFAULT_DENY: [&str; 13] = [
    // Workflows: Plue's and the forges' (GitHub's `.github/` also holds its `CODEOWNERS`,
    // Dependabot's settings and more; Gitea's `.gitea/` and Forgejo's `.forgejo/` the same).
    ".plue/**",
    ".github/**",
    ".gitea/**",
    ".forgejo/**",
    "**/*.plue.py",
    // Submodules: fetches another repository into every recursive clone (any directory:
    // a nested one declares the submodules of a subtree).
    "**/.gitmodules",
    // Attributes, read in every directory: `filter=` runs a program at checkout, `-diff`
    // and `binary` show a change as "Binary files differ", `linguist-generated` folds it
    // out of the forge's diff view, `merge=`, `eol=`, `export-ignore` change merges, the
    // checked-out bytes and archives.
    "**/.gitattributes",
    // Git LFS's settings (read at the root): where LFS objects are fetched from and pushed
    // to — a checkout's content from another server.
    "**/.lfsconfig",
    // Who the history says wrote what (read at the root by `git log`, `shortlog`, `blame`):
    // a commit shown under another person's name.
    "**/.mailmap",
    // Commits `git blame` (with blame.ignoreRevsFile) and the forges' blame view skip
    // (read at the root): hides who changed a line.
    "**/.git-blame-ignore-revs",
    // Code owners, whose review a protected branch requires: GitHub reads `CODEOWNERS`,
    // `docs/CODEOWNERS` and `.github/CODEOWNERS`, Gitea and Forgejo `CODEOWNERS`,
    // `docs/CODEOWNERS` and `.gitea/CODEOWNERS` (the `.github/` and `.gitea/` ones are
    // denied above); GitLab's `.gitlab/CODEOWNERS` too.
    "codeowners",
    "docs/codeowners",
    ".gitlab/codeowners",
];
/// Most comments or issues one step may propose.
pub const MAX_COUNT: u32 = 10;
/// Most label names a step may list.
pub const MAX_LABELS: usize = 20;
/// Longest label name, in bytes (GitHub's limit is 50 characters).
pub const MAX_LABEL_LEN: usize = 50;
/// Most globs in `paths_allow` or `paths_deny`.
pub const MAX_GLOBS: usize = 64;
/// Most hosts in `allow_links`.
pub const MAX_HOSTS: usize = 32;
/// Most files one pull request may change.
pub const MAX_FILES: u32 = 1000;
/// The hard bound of a pull request's diff: 1 MiB.
pub const MAX_DIFF_BYTES: u64 = 1024 * 1024;
/// Longest `branch_prefix`, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// Most output tokens a threat review may spend per proposal.
pub const MAX_REVIEW_TOKENS: u32 = 16 * 1024;
/// The output tokens a threat review spends per proposal unless the plan says otherwise.
pub const DEFAULT_REVIEW_TOKENS: u32 = 1024;
/// Longest `threat_review_model`, in bytes.
pub const MAX_MODEL_LEN: usize = 100;

/// `threat_check=`: when the engine's threat check judges a step's proposals before they
/// are applied (`core/src/safe_outputs/threat/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreatCheck {
    /// On for runs caused by someone without write access: a run treated like a fork's
    /// (no secrets: an outsider's pull request or push, a stranger's summons) or one
    /// acting on the words of someone who cannot write to the repository (a summons on an
    /// outsider's issue). Off for the rest.
    #[default]
    Auto,
    /// On for every run.
    Always,
    /// Off: the proposals are checked by the validator alone.
    Off,
}

impl ThreatCheck {
    /// The word a plan writes (`auto`, `always`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatCheck::Auto => "auto",
            ThreatCheck::Always => "always",
            ThreatCheck::Off => "off",
        }
    }

    /// The setting a plan's word names.
    pub fn parse(word: &str) -> Option<ThreatCheck> {
        match word {
            "auto" => Some(ThreatCheck::Auto),
            "always" => Some(ThreatCheck::Always),
            "off" => Some(ThreatCheck::Off),
            _ => None,
        }
    }

    fn is_auto(&self) -> bool {
        *self == ThreatCheck::Auto
    }
}

/// `SafeOutputs(pull_request=False, comments=0, labels=[], issues=0, paths_allow=["**"],
/// paths_deny=[], max_files=50, max_diff_bytes=262144, branch_prefix="plue/",
/// allow_links=[], threat_check="auto", threat_review_model=None,
/// threat_review_max_tokens=1024)`, given to `Step.llm(..., safe_outputs=...)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeOutputs {
    /// `propose_pull_request` is offered: the step's final workspace diff becomes one
    /// pull request.
    pub pull_request: bool,
    /// How many `propose_comment` calls are accepted.
    pub comments: u32,
    /// The labels `propose_labels` may add (empty: the tool is not offered).
    pub labels: Vec<String>,
    /// How many `propose_issue` calls are accepted.
    pub issues: u32,
    /// Changed paths must match one of these…
    pub paths_allow: Vec<String>,
    /// …and none of these, nor any of [`DEFAULT_DENY`].
    pub paths_deny: Vec<String>,
    pub max_files: u32,
    pub max_diff_bytes: u64,
    /// The pull request's branch is `{branch_prefix}run-{run}-{step}`.
    pub branch_prefix: String,
    /// `approve_outputs=True`: a person approves each proposal before it is applied.
    pub approve: bool,
    /// Hosts links in proposals may point at, beside the repository's own forge.
    pub allow_links: Vec<String>,
    /// `threat_check=`: when the threat check runs ([`ThreatCheck`]).
    #[serde(default, skip_serializing_if = "ThreatCheck::is_auto")]
    pub threat_check: ThreatCheck,
    /// `threat_review_model=`: the model that also reviews each proposal when the threat
    /// check runs (none: the static rules alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_review_model: Option<String>,
    /// `threat_review_max_tokens=`: the most output tokens the review spends per proposal
    /// (none: [`DEFAULT_REVIEW_TOKENS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_review_max_tokens: Option<u32>,
}

impl Default for SafeOutputs {
    fn default() -> SafeOutputs {
        SafeOutputs {
            pull_request: false,
            comments: 0,
            labels: Vec::new(),
            issues: 0,
            paths_allow: vec!["**".into()],
            paths_deny: Vec::new(),
            max_files: 50,
            max_diff_bytes: 256 * 1024,
            branch_prefix: "plue/".into(),
            approve: false,
            allow_links: Vec::new(),
            threat_check: ThreatCheck::Auto,
            threat_review_model: None,
            threat_review_max_tokens: None,
        }
    }
}

impl SafeOutputs {
    /// Every denied glob: the plan's and [`DEFAULT_DENY`].
    pub fn deny(&self) -> Vec<&str> {
        let mut deny: Vec<&str> = DEFAULT_DENY.to_vec();
        deny.extend(self.paths_deny.iter().map(String::as_str));
        deny
    }

    /// The output tokens the threat review spends per proposal.
    pub fn review_tokens(&self) -> u32 {
        self.threat_review_max_tokens
            .unwrap_or(DEFAULT_REVIEW_TOKENS)
    }

    /// Whether anything may be proposed at all.
    pub fn allows_anything(&self) -> bool {
        self.pull_request || self.comments > 0 || !self.labels.is_empty() || self.issues > 0
    }
}

/// Every problem of `outputs`, each a message without the step's name.
pub fn check(outputs: &SafeOutputs) -> Vec<String> {
    let mut problems = Vec::new();
    if !outputs.allows_anything() {
        problems.push(
            "safe_outputs allows nothing; set pull_request=True, comments=, labels= or issues="
                .to_string(),
        );
    }
    for (what, count) in [("comments", outputs.comments), ("issues", outputs.issues)] {
        if count > MAX_COUNT {
            problems.push(format!("safe_outputs {what}={count}: at most {MAX_COUNT}"));
        }
    }
    if outputs.labels.len() > MAX_LABELS {
        problems.push(format!(
            "safe_outputs lists {} labels; at most {MAX_LABELS}",
            outputs.labels.len()
        ));
    }
    for label in &outputs.labels {
        if let Err(why) = check_label(label) {
            problems.push(format!("safe_outputs label {label:?} {why}"));
        }
    }
    for (what, globs) in [
        ("paths_allow", &outputs.paths_allow),
        ("paths_deny", &outputs.paths_deny),
    ] {
        if globs.len() > MAX_GLOBS {
            problems.push(format!(
                "safe_outputs {what} has {} globs; at most {MAX_GLOBS}",
                globs.len()
            ));
            continue;
        }
        for glob in globs {
            if let Err(why) = crate::glob::compile(glob) {
                problems.push(format!("safe_outputs {what} glob {glob:?}: {why}"));
            }
        }
    }
    if outputs.pull_request && outputs.paths_allow.is_empty() {
        problems.push("safe_outputs paths_allow is empty, so no change could pass".into());
    }
    if !(1..=MAX_FILES).contains(&outputs.max_files) {
        problems.push(format!(
            "safe_outputs max_files={}: between 1 and {MAX_FILES}",
            outputs.max_files
        ));
    }
    if !(1..=MAX_DIFF_BYTES).contains(&outputs.max_diff_bytes) {
        problems.push(format!(
            "safe_outputs max_diff_bytes={}: between 1 and {MAX_DIFF_BYTES} (1 MiB)",
            outputs.max_diff_bytes
        ));
    }
    if let Err(why) = check_branch_prefix(&outputs.branch_prefix) {
        problems.push(format!(
            "safe_outputs branch_prefix {:?} {why}",
            outputs.branch_prefix
        ));
    }
    if outputs.allow_links.len() > MAX_HOSTS {
        problems.push(format!(
            "safe_outputs allow_links has {} hosts; at most {MAX_HOSTS}",
            outputs.allow_links.len()
        ));
    }
    for host in &outputs.allow_links {
        if !is_host_name(host) {
            problems.push(format!(
                "safe_outputs allow_links {host:?} is not a lowercase host name (like \"docs.rs\")"
            ));
        }
    }
    problems.extend(check_threat(outputs));
    problems
}

/// The problems of the threat check's settings.
fn check_threat(outputs: &SafeOutputs) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(model) = &outputs.threat_review_model {
        let valid = !model.is_empty()
            && model.len() <= MAX_MODEL_LEN
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/".contains(&b));
        if !valid {
            problems.push(format!(
                "safe_outputs threat_review_model {model:?} is not a model name (1 to {MAX_MODEL_LEN} bytes of letters, digits and -_.:@/)"
            ));
        }
        if outputs.threat_check == ThreatCheck::Off {
            problems.push(
                "safe_outputs threat_review_model is set but threat_check=\"off\": the review runs only with the threat check; set threat_check=\"auto\" or \"always\", or drop threat_review_model".into(),
            );
        }
    }
    if let Some(tokens) = outputs.threat_review_max_tokens {
        if !(1..=MAX_REVIEW_TOKENS).contains(&tokens) {
            problems.push(format!(
                "safe_outputs threat_review_max_tokens={tokens}: between 1 and {MAX_REVIEW_TOKENS}"
            ));
        }
        if outputs.threat_review_model.is_none() {
            problems.push(
                "safe_outputs threat_review_max_tokens is set without threat_review_model: there is no review to bound".into(),
            );
        }
    }
    problems
}

/// A label name a forge shows as it is: 1 to [`MAX_LABEL_LEN`] bytes, no control or
/// format character, no comma (both forges split on it), no surrounding space.
pub fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err("must be 1 to 50 bytes");
    }
    if label.trim() != label {
        return Err("has leading or trailing space");
    }
    if label
        .chars()
        .any(|c| c.is_control() || c == ',' || is_invisible(c))
    {
        return Err("holds a control character, an invisible character or a comma");
    }
    Ok(())
}

/// Zero-width and direction-changing characters, which make a text read as another.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A branch name prefix: one or more valid ref components, ending with `/` or `-`.
pub fn check_branch_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err("must be 1 to 64 bytes");
    }
    if !(prefix.ends_with('/') || prefix.ends_with('-')) {
        return Err("must end with '/' or '-'");
    }
    let valid_bytes = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if !valid_bytes {
        return Err("may hold only ASCII letters, digits, '-', '_', '.' and '/'");
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    let components_ok = body.split('/').all(|part| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.ends_with(".lock")
            && !part.starts_with('-')
    });
    if !components_ok || prefix.contains("..") || prefix.starts_with('/') {
        return Err("is not a valid git ref prefix (empty component, '..', a leading '.' or '-', or '.lock')");
    }
    Ok(())
}

/// A lowercase DNS name of at least two labels (`docs.rs`, `ci.example.com`).
pub fn is_host_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests;
