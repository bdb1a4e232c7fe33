//! What the command line shows of a run's approvals and artifacts, read from the API or,
//! for a local run, from the store: one shape for both, so `plue runs show` and `plue run`'s
//! summary print them alike.

use serde::{Deserialize, Serialize};

/// A decision on an approval step, as `GET /api/runs/{id}/approvals` lists it.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct ApprovalLine {
    pub(crate) step_id: String,
    /// `approved` or `rejected`.
    pub(crate) decision: String,
    pub(crate) decided_by: String,
    pub(crate) comment: String,
    pub(crate) decided_at: i64,
}

impl ApprovalLine {
    pub(crate) fn from_row(row: plue_store::ApprovalRow) -> ApprovalLine {
        ApprovalLine {
            step_id: row.step_id,
            decision: row.decision,
            decided_by: row.decided_by,
            comment: row.comment,
            decided_at: row.decided_at,
        }
    }
}

/// One artifact file, as `GET /api/runs/{id}/artifacts` lists it.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct ArtifactLine {
    pub(crate) step: String,
    pub(crate) attempt: i64,
    pub(crate) name: String,
    pub(crate) size: i64,
    pub(crate) digest: String,
}

impl ArtifactLine {
    pub(crate) fn from_row(row: plue_store::ArtifactRow) -> ArtifactLine {
        ArtifactLine {
            step: row.step_id,
            attempt: row.attempt,
            name: row.name,
            size: row.size,
            digest: row.digest,
        }
    }
}
