//! Safe outputs on the wire: what an `llm` step may propose ([`ProposalLimits`], in the
//! assignment) and what it proposed ([`Proposal`], in the completion).
//!
//! The runner only pre-checks the limits (so the model can correct itself); the engine
//! validates every proposal again on completion and is the only one that writes to the
//! forge. Proposals are *not* masked: the engine refuses any that holds a secret of the
//! run, so a masked copy would only hide the leak.

use serde::{Deserialize, Serialize};

/// The hard bound of a pull request's diff, whatever a plan says: 1 MiB.
pub const MAX_DIFF_BYTES: u64 = 1024 * 1024;
/// The longest title the runner accepts.
pub const MAX_TITLE_BYTES: usize = 256;
/// The longest body (of a pull request, comment or issue) the runner accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Which `propose_*` tools the step offers and the limits the runner pre-checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalLimits {
    #[serde(default)]
    pub pull_request: bool,
    #[serde(default)]
    pub comments: u32,
    /// The labels `propose_labels` may add; empty: not offered.
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub issues: u32,
    #[serde(default)]
    pub max_files: u32,
    /// The diff's bound (at most [`MAX_DIFF_BYTES`]).
    #[serde(default)]
    pub max_diff_bytes: u64,
}

/// One thing an `llm` step proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Proposal {
    /// The step's final workspace against its starting commit, as `git diff --binary`.
    PullRequest {
        title: String,
        body: String,
        diff: String,
    },
    Comment {
        body: String,
    },
    Labels {
        labels: Vec<String>,
    },
    Issue {
        title: String,
        body: String,
    },
}

impl Proposal {
    /// The `kind` tag as it appears in JSON and in the store.
    pub fn kind(&self) -> &'static str {
        match self {
            Proposal::PullRequest { .. } => "pull_request",
            Proposal::Comment { .. } => "comment",
            Proposal::Labels { .. } => "labels",
            Proposal::Issue { .. } => "issue",
        }
    }
}
