//! [`Use`]: what a forge credential is for, and the GitHub App permissions each use asks
//! an installation access token for — no more than the use needs.
//!
//! Permission names and levels are GitHub's (`app-permissions` of the REST API:
//! `contents`, `metadata`, `pull_requests`, `issues`, `statuses`, `checks`, each `read` or
//! `write`). Metadata is always readable by an installation token, so uses that only need
//! it (a collaborator's permission) ask for `metadata: read` alone.

use std::collections::BTreeMap;

/// What the engine needs a credential for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Use {
    /// Fetching the repository's code: mirror fetches and a runner's checkout.
    ReadCode,
    /// Reading pull requests (a comment's pull request's refs) and the repository's
    /// metadata (a collaborator's permission).
    Lookup,
    /// Commit statuses and check runs on the commits a run ran at.
    Report,
    /// Answering where a run was summoned: comments on the issue or pull request, and the
    /// statuses of the pull requests it opened.
    Answer,
    /// Writing an agent's accepted work: pushing its branch, opening pull requests and
    /// issues, commenting, labelling, and the proposal's final status.
    Write,
}

impl Use {
    pub const ALL: [Use; 5] = [
        Use::ReadCode,
        Use::Lookup,
        Use::Report,
        Use::Answer,
        Use::Write,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Use::ReadCode => "read-code",
            Use::Lookup => "lookup",
            Use::Report => "report",
            Use::Answer => "answer",
            Use::Write => "write",
        }
    }

    /// The permissions an installation access token for this use is narrowed to.
    pub fn permissions(self) -> BTreeMap<&'static str, &'static str> {
        let pairs: &[(&str, &str)] = match self {
            Use::ReadCode => &[("contents", "read"), ("metadata", "read")],
            Use::Lookup => &[("metadata", "read"), ("pull_requests", "read")],
            Use::Report => &[
                ("checks", "write"),
                ("metadata", "read"),
                ("pull_requests", "read"),
                ("statuses", "write"),
            ],
            Use::Answer => &[
                ("issues", "write"),
                ("metadata", "read"),
                ("pull_requests", "write"),
                ("statuses", "write"),
            ],
            Use::Write => &[
                ("contents", "write"),
                ("issues", "write"),
                ("metadata", "read"),
                ("pull_requests", "write"),
                ("statuses", "write"),
            ],
        };
        pairs.iter().copied().collect()
    }
}
