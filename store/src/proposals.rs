//! Safe-output proposals in the store (`proposals`, migration 0022; `threat`, 0045): recorded
//! with their attempt once validated and threat-checked ([`Store::record_checked_proposals`]),
//! decided by a person ([`Store::decide_proposal`]), and taken by the engine's outbox
//! ([`Store::next_ready`], [`Store::mark_applying`], [`Store::mark_applied`],
//! [`Store::mark_failed`]).
//!
//! Invariants: an attempt's proposals are recorded once (`UNIQUE (attempt_id, position)`,
//! a repeated report inserts nothing); every state change is one `UPDATE` guarded by the
//! state it leaves, so two deciders or two appliers leave exactly one outcome; a proposal's
//! provenance statement settles in the transaction that settles the proposal, and only
//! when that `UPDATE` took effect (`store::provenance`).

use anyhow::Context;
use plue_types::status::ProposalState;

use super::{now_ms, Store, Verdict};
use crate::tx::Conn;
use crate::tx::Statement;

/// A stored proposal (the API shows it as `api::proposals::ProposalView`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ProposalRow {
    pub id: i64,
    pub run_id: i64,
    pub step_run_id: i64,
    pub attempt_id: i64,
    pub position: i64,
    pub kind: String,
    /// The proposal as the runner sent it (`plue_types::protocol::Proposal` JSON).
    pub payload: String,
    #[sqlx(try_from = "String")]
    pub state: ProposalState,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub applied_url: Option<String>,
    pub applied_at: Option<i64>,
    pub created_at: i64,
    /// The threat check's assessment (`core::safe_outputs::threat::Assessment` JSON);
    /// `None` when the proposal was not threat-checked (migration 0045).
    pub threat: Option<String>,
}

/// What [`Store::decide_proposal`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalDecided {
    Done,
    /// The run has no proposal with that id.
    NotFound,
    /// The proposal is not waiting for a decision (its state is given).
    NotWaiting(ProposalState),
}

const COLUMNS: &str = "id, run_id, step_run_id, attempt_id, position, kind, payload, state, \
     reason, decided_by, decided_at, applied_url, applied_at, created_at, threat";

/// One proposal to record: its kind and payload JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProposal {
    pub kind: String,
    pub payload: String,
}

/// One proposal to record with its own state and threat check
/// ([`Store::record_checked_proposals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedProposal {
    pub proposal: NewProposal,
    /// `Refused`, `Waiting` or `Ready`.
    pub state: ProposalState,
    /// The threat check's assessment (JSON), when it ran.
    pub threat: Option<String>,
}

impl Store {
    /// Records the proposals of attempt `attempt_id` in `state` (`Refused`, `Waiting` or
    /// `Ready`), with `reason` for refused ones. A repeated call inserts nothing.
    pub async fn record_proposals(
        &self,
        attempt_id: i64,
        proposals: &[NewProposal],
        state: ProposalState,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let checked: Vec<CheckedProposal> = proposals
            .iter()
            .map(|proposal| CheckedProposal {
                proposal: proposal.clone(),
                state,
                threat: None,
            })
            .collect();
        self.record_checked_proposals(attempt_id, &checked, reason)
            .await
    }

    /// Records the proposals of attempt `attempt_id`, each in its own state with its threat
    /// check, with `reason` for refused ones. A repeated call inserts nothing.
    pub async fn record_checked_proposals(
        &self,
        attempt_id: i64,
        proposals: &[CheckedProposal],
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            for (position, checked) in proposals.iter().enumerate() {
                let reason = (checked.state == ProposalState::Refused)
                    .then_some(reason)
                    .flatten();
                tx.execute(
                    Statement::new(
                        "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, kind, \
                     payload, state, reason, created_at, threat) \
                     SELECT sr.run_id, a.step_run_id, a.id, $2, $3, $4, $5, $6, $7, $8 \
                     FROM attempts a JOIN step_runs sr ON sr.id = a.step_run_id WHERE a.id = $1 \
                     ON CONFLICT (attempt_id, position) DO NOTHING",
                    )
                    .bind(attempt_id)
                    .bind(position as i64)
                    .bind(&checked.proposal.kind)
                    .bind(&checked.proposal.payload)
                    .bind(checked.state)
                    .bind(reason)
                    .bind(now)
                    .bind(&checked.threat),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }

    /// Every proposal of run `run_id`, in the order they were made.
    pub async fn list_for_run(&self, run_id: i64) -> anyhow::Result<Vec<ProposalRow>> {
        let sql = format!("SELECT {COLUMNS} FROM proposals WHERE run_id = $1 ORDER BY id");
        {
            self.rows::<ProposalRow>(Statement::new(&sql).bind(run_id))
                .await
        }
    }

    /// A person's decision on the waiting proposal `id` of run `run_id`: `ready` when
    /// approved, `rejected` otherwise.
    pub async fn decide_proposal(
        &self,
        run_id: i64,
        id: i64,
        by: &str,
        verdict: Verdict,
    ) -> anyhow::Result<ProposalDecided> {
        let state = match verdict {
            Verdict::Approve => ProposalState::Ready,
            Verdict::Reject => ProposalState::Rejected,
        };
        {
            let done = self
                .execute(
                    Statement::new(
                        "UPDATE proposals SET state = $3, decided_by = $4, decided_at = $5 \
                 WHERE id = $1 AND run_id = $2 AND state = 'waiting'",
                    )
                    .bind(id)
                    .bind(run_id)
                    .bind(state)
                    .bind(by)
                    .bind(now_ms()),
                )
                .await?;
            if done == 1 {
                return Ok(ProposalDecided::Done);
            }
            let found: Option<String> = self
                .scalar(
                    Statement::new("SELECT state FROM proposals WHERE id = $1 AND run_id = $2")
                        .bind(id)
                        .bind(run_id),
                )
                .await?;
            Ok(match found {
                None => ProposalDecided::NotFound,
                Some(state) => ProposalDecided::NotWaiting(
                    state
                        .parse()
                        .with_context(|| format!("the state of proposal {id}"))?,
                ),
            })
        }
    }

    /// The oldest `ready` proposal (or `failed` one whose `retry_at` has come), for the
    /// outbox. Proposals of one run come in order.
    pub async fn next_ready(&self) -> anyhow::Result<Option<ProposalRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM proposals WHERE state = 'ready' \
             OR (state = 'failed' AND retry_at IS NOT NULL AND retry_at <= $1) \
             ORDER BY id LIMIT 1"
        );
        {
            self.row::<ProposalRow>(Statement::new(&sql).bind(now_ms()))
                .await
        }
    }

    /// `ready` (or retryable `failed`) → `applying`; false when another applier took it.
    pub async fn mark_applying(&self, id: i64) -> anyhow::Result<bool> {
        {
            let done = self
                .execute(
                    Statement::new(
                        "UPDATE proposals SET state = 'applying', retry_at = NULL WHERE id = $1 \
                 AND (state = 'ready' OR (state = 'failed' AND retry_at IS NOT NULL))",
                    )
                    .bind(id),
                )
                .await?;
            Ok(done == 1)
        }
    }

    /// `applying` → `applied` at `url` (the forge accepted the write); its provenance
    /// statement, if it has one, becomes `applied` in the same transaction.
    pub async fn mark_applied(&self, id: i64, url: &str) -> anyhow::Result<bool> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let done = tx
                .execute(
                    Statement::new(
                        "UPDATE proposals SET state = 'applied', applied_url = $2, \
                         applied_at = $3, reason = NULL WHERE id = $1 AND state = 'applying'",
                    )
                    .bind(id)
                    .bind(url)
                    .bind(now_ms()),
                )
                .await?;
            if done == 1 {
                tx.execute(
                    Statement::new(
                        "UPDATE provenance SET state = 'applied', reason = NULL \
                     WHERE proposal_id = $1 AND state = 'pending'",
                    )
                    .bind(id),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(done == 1)
        }
    }

    /// `applying` → `failed` with `reason`, retried from `retry_at` when given. Without a
    /// retry the failure is final, and the proposal's provenance statement, if it has one,
    /// becomes `failed` with the same reason in the same transaction (with one it stays
    /// `pending`).
    pub async fn mark_failed(
        &self,
        id: i64,
        reason: &str,
        retry_at: Option<i64>,
    ) -> anyhow::Result<bool> {
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let done = tx
                .execute(
                    Statement::new(
                        "UPDATE proposals SET state = 'failed', reason = $2, retry_at = $3 \
                 WHERE id = $1 AND state = 'applying'",
                    )
                    .bind(id)
                    .bind(reason)
                    .bind(retry_at),
                )
                .await?;
            if done == 1 && retry_at.is_none() {
                tx.execute(
                    Statement::new(
                        "UPDATE provenance SET state = 'failed', reason = $2 \
                     WHERE proposal_id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(reason),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(done == 1)
        }
    }
}

/// The applier's side of proposals (`safe_outputs::apply` and the forge answers).
impl Store {
    /// Claims up to `limit` proposals due now — `ready` ones, and `failed` or `applying`
    /// ones whose `retry_at` (the retry time, or the lease of an applier that died) has
    /// come — none while an earlier proposal of its run is unsettled; each becomes
    /// `applying` leased for `lease_ms`.
    pub async fn claim_proposals(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<i64>> {
        let candidates: Vec<i64> = self
            .scalars(
                Statement::new(
                    "SELECT p.id FROM proposals p WHERE (p.state = 'ready' \
                 OR (p.state IN ('failed', 'applying') AND p.retry_at IS NOT NULL \
                     AND p.retry_at <= $1)) \
             AND NOT EXISTS (SELECT 1 FROM proposals o WHERE o.run_id = p.run_id AND o.id < p.id \
                 AND (o.state IN ('ready', 'applying', 'waiting') \
                      OR (o.state = 'failed' AND o.retry_at IS NOT NULL))) \
             ORDER BY p.id LIMIT $2",
                )
                .bind(now)
                .bind(limit),
            )
            .await?;
        let mut claimed = Vec::new();
        for id in candidates {
            let taken = self
                .execute(
                    Statement::new(
                        "UPDATE proposals SET state = 'applying', retry_at = $3 WHERE id = $2 \
                 AND (state = 'ready' OR (state IN ('failed', 'applying') \
                      AND retry_at IS NOT NULL AND retry_at <= $1))",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(now + lease_ms),
                )
                .await?;
            if taken == 1 {
                claimed.push(id);
            }
        }
        Ok(claimed)
    }

    /// Proposal `id`.
    pub async fn proposal(&self, id: i64) -> anyhow::Result<Option<ProposalRow>> {
        self.row::<ProposalRow>(
            Statement::new(
                "SELECT id, run_id, step_run_id, attempt_id, position, kind, payload, state, \
             reason, decided_by, decided_at, applied_url, applied_at, created_at, threat \
             FROM proposals WHERE id = $1",
            )
            .bind(id),
        )
        .await
    }

    /// Whether a proposal of run `run_id` is still to be applied: `ready`, `applying`, or
    /// `failed` with a retry due.
    pub async fn proposals_unsettled(&self, run_id: i64) -> anyhow::Result<bool> {
        let count: i64 = self
            .one_scalar(
                Statement::new(
                    "SELECT COUNT(*) FROM proposals \
                     WHERE run_id = $1 AND (state IN ('ready', 'applying') \
                     OR (state = 'failed' AND retry_at IS NOT NULL))",
                )
                .bind(run_id),
            )
            .await?;
        Ok(count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bash_run, claim_first_step, stores};

    // A state is read back as it was written and a decision names the state it found; a
    // word no state has is an error naming the proposal, never a default.
    #[tokio::test]
    async fn states_read_back_as_written_and_an_unknown_one_is_an_error() {
        for (store, _dir) in stores().await {
            let run = bash_run(&store, "p", &["write"]).await;
            let (claimed, _, _) = claim_first_step(&store, run, "r").await;
            let checked = |kind: &str, state| CheckedProposal {
                proposal: NewProposal {
                    kind: kind.into(),
                    payload: "{}".into(),
                },
                state,
                threat: None,
            };
            store
                .record_checked_proposals(
                    claimed.attempt_id,
                    &[
                        checked("comment", ProposalState::Waiting),
                        checked("labels", ProposalState::Refused),
                    ],
                    Some("why"),
                )
                .await
                .unwrap();
            let rows = store.list_for_run(run).await.unwrap();
            let states: Vec<_> = rows
                .iter()
                .map(|r| (r.state, r.reason.as_deref()))
                .collect();
            assert_eq!(
                states,
                [
                    (ProposalState::Waiting, None),
                    (ProposalState::Refused, Some("why"))
                ]
            );
            let (waiting, refused) = (rows[0].id, rows[1].id);
            let decide = |id, verdict| store.decide_proposal(run, id, "wendy", verdict);
            assert_eq!(
                decide(waiting, Verdict::Approve).await.unwrap(),
                ProposalDecided::Done
            );
            assert_eq!(
                decide(waiting, Verdict::Reject).await.unwrap(),
                ProposalDecided::NotWaiting(ProposalState::Ready)
            );
            assert_eq!(
                decide(refused, Verdict::Approve).await.unwrap(),
                ProposalDecided::NotWaiting(ProposalState::Refused)
            );
            assert_eq!(
                decide(refused + 100, Verdict::Approve).await.unwrap(),
                ProposalDecided::NotFound
            );
            store
                .execute(
                    Statement::new("UPDATE proposals SET state = 'withheld' WHERE id = $1")
                        .bind(refused),
                )
                .await
                .unwrap();
            let error = decide(refused, Verdict::Approve).await.unwrap_err();
            let error = format!("{error:#}");
            assert!(
                error.contains(&format!("the state of proposal {refused}"))
                    && error.contains("unknown proposal status \"withheld\""),
                "{error}"
            );
            // SQLite's serde names the word; sqlx names the column (its `try_from` error
            // prints as "unprintable").
            let error = format!("{:#}", store.list_for_run(run).await.unwrap_err());
            assert!(
                error.contains("`withheld`") || error.contains("decoding column state"),
                "{}: {error}",
                store.backend()
            );
        }
    }
}
