//! Provenance in the store (`provenance`, `provenance_keys`, migrations 0030 and 0040): the
//! signed statement of each proposal the outbox writes, with its [`StatementState`], and
//! the public keys the engine has signed with.
//!
//! Invariants:
//! - A proposal has at most one statement — the first recorded is kept
//!   ([`Store::record_statement`] inserts nothing when one is there, and returns the kept
//!   one), so a retried apply links to what was signed first; the envelope is stored as the
//!   text that was signed around, never re-serialised; a key, once listed, stays listed.
//! - A statement is recorded `pending` (before its change is written) and settles with its
//!   proposal, in the same transaction: `applied` only in [`Store::mark_applied`] (the forge
//!   accepted the write), `failed` with the proposal's reason only in
//!   [`Store::mark_failed`] without a retry. Nothing else writes its state, and a settled
//!   statement never changes again.

use plue_types::status::StatementState;

use super::{now_ms, Store};
use crate::tx::Statement;

/// A stored statement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct StatementRow {
    pub proposal_id: i64,
    pub run_id: i64,
    pub key_id: String,
    /// The DSSE envelope (JSON).
    pub envelope: String,
    pub created_at: i64,
    /// Whether its change landed.
    #[sqlx(try_from = "String")]
    pub state: StatementState,
    /// Why the write failed (a `failed` statement's; already through the run's wall).
    pub reason: Option<String>,
}

/// Whether a statement's change landed, with the reason of one that did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing<'a> {
    /// Its change is being written, or will be tried again.
    Pending,
    /// The forge accepted the write.
    Applied,
    /// The write failed for good, for this reason.
    Failed(&'a str),
}

impl StatementRow {
    /// Its state with the reason a failed one keeps.
    pub fn landing(&self) -> Landing<'_> {
        match self.state {
            StatementState::Pending => Landing::Pending,
            StatementState::Applied => Landing::Applied,
            StatementState::Failed => Landing::Failed(
                self.reason
                    .as_deref()
                    .unwrap_or("the change was not applied"),
            ),
        }
    }
}

/// A public key the engine signs or signed with.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct SigningKeyRow {
    pub key_id: String,
    /// The raw ed25519 key, hex.
    pub public_key: String,
    pub first_seen: i64,
}

const COLUMNS: &str = "proposal_id, run_id, key_id, envelope, created_at, state, reason";

impl Store {
    /// Records the statement of proposal `proposal_id` of run `run_id`, `pending`, unless one
    /// is there; the envelope kept (this one, or the one recorded first).
    pub async fn record_statement(
        &self,
        proposal_id: i64,
        run_id: i64,
        key_id: &str,
        envelope: &str,
    ) -> anyhow::Result<String> {
        {
            self.execute(
                Statement::new(
                    "INSERT INTO provenance (proposal_id, run_id, key_id, envelope, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id) DO NOTHING",
                )
                .bind(proposal_id)
                .bind(run_id)
                .bind(key_id)
                .bind(envelope)
                .bind(now_ms()),
            )
            .await?;
            self.one_scalar(
                Statement::new("SELECT envelope FROM provenance WHERE proposal_id = $1")
                    .bind(proposal_id),
            )
            .await
        }
    }

    /// The statement of proposal `proposal_id` of run `run_id`.
    pub async fn statement(
        &self,
        run_id: i64,
        proposal_id: i64,
    ) -> anyhow::Result<Option<StatementRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM provenance WHERE run_id = $1 AND proposal_id = $2");
        self.row(Statement::new(&sql).bind(run_id).bind(proposal_id))
            .await
    }

    /// Every statement of run `run_id`, by proposal.
    pub async fn statements_of_run(&self, run_id: i64) -> anyhow::Result<Vec<StatementRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM provenance WHERE run_id = $1 ORDER BY proposal_id");
        self.rows(Statement::new(&sql).bind(run_id)).await
    }

    /// Lists public key `key_id` (`public_key` in hex) unless it is listed.
    pub async fn record_signing_key(&self, key_id: &str, public_key: &str) -> anyhow::Result<()> {
        {
            self.execute(
                Statement::new(
                    "INSERT INTO provenance_keys (key_id, public_key, first_seen) \
                     VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(key_id)
                .bind(public_key)
                .bind(now_ms()),
            )
            .await?;
            Ok(())
        }
    }

    /// Every listed key, newest first.
    pub async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRow>> {
        self.rows(Statement::new(
            "SELECT key_id, public_key, first_seen FROM provenance_keys \
             ORDER BY first_seen DESC, key_id",
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Plan;
    use plue_types::status::StatementState;

    use crate::tx::Statement;

    use super::Landing;

    // The attack: a statement was signed before the push, and served as the agent's change
    // although the forge refused the push. Now it is `pending` until its proposal settles,
    // and settles with it in one transaction: applied only when the proposal is, failed
    // (with the proposal's reason) only when the proposal fails for good.
    #[tokio::test]
    async fn a_statement_settles_with_its_proposal_and_only_then() {
        for (store, _dir) in crate::testing::stores().await {
            let plan = Plan::new("ci", Vec::new());
            let json = serde_json::to_string(&plan).unwrap();
            let run = store
                .create_run(&crate::testing::local_run(&plan, &json), 4)
                .await
                .unwrap()
                .id;
            let mut ids = Vec::new();
            for position in 0..3i64 {
                let id: i64 = store
                    .one_scalar(
                        Statement::new(
                            "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, \
                             kind, payload, state, created_at) \
                             VALUES ($1, 1, 1, $2, 'comment', '{}', 'ready', 0) RETURNING id",
                        )
                        .bind(run)
                        .bind(position),
                    )
                    .await
                    .unwrap();
                store.record_statement(id, run, "k1", "{}").await.unwrap();
                assert!(store.mark_applying(id).await.unwrap());
                ids.push(id);
            }
            let state = |id: i64| {
                let store = store.clone();
                async move { store.statement(run, id).await.unwrap().unwrap() }
            };
            for &id in &ids {
                assert_eq!(state(id).await.landing(), Landing::Pending);
            }
            // Written: applied.
            assert!(store
                .mark_applied(ids[0], "https://forge/pr/1")
                .await
                .unwrap());
            assert_eq!(state(ids[0]).await.landing(), Landing::Applied);
            // A failure to be retried leaves it pending; the final one fails it, with the
            // proposal's reason.
            assert!(store
                .mark_failed(ids[1], "pushing: 503", Some(i64::MAX))
                .await
                .unwrap());
            assert_eq!(state(ids[1]).await.landing(), Landing::Pending);
            assert!(store.mark_applying(ids[1]).await.unwrap());
            assert!(store
                .mark_failed(ids[1], "the forge refused the push", None)
                .await
                .unwrap());
            let failed = state(ids[1]).await;
            assert_eq!(failed.state, StatementState::Failed);
            assert_eq!(
                failed.landing(),
                Landing::Failed("the forge refused the push")
            );
            // A late report of the other outcome changes neither.
            assert!(!store.mark_applied(ids[1], "u").await.unwrap());
            assert_eq!(state(ids[1]).await.state, StatementState::Failed);
            assert!(!store.mark_failed(ids[0], "late", None).await.unwrap());
            assert_eq!(state(ids[0]).await.landing(), Landing::Applied);
            // The third is being written still.
            assert_eq!(state(ids[2]).await.landing(), Landing::Pending);
            let listed: Vec<_> = store
                .statements_of_run(run)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.state)
                .collect();
            assert_eq!(
                listed,
                [
                    StatementState::Applied,
                    StatementState::Failed,
                    StatementState::Pending
                ]
            );
        }
    }

    // Statements an older engine recorded (before migration 0040) settle as their
    // proposals did: applied, failed for good (with its reason), or still pending.
    #[tokio::test]
    async fn statements_recorded_before_their_state_settle_as_their_proposals_did() {
        let rows = [
            "INSERT INTO workflows (id, source, path, name, created_at) \
             VALUES (1, 'local', 'w', 'w', 0)",
            "INSERT INTO runs (id, workflow_id, event, ref, sha, plan_hash, max_parallel, \
             status, created_at) VALUES (1, 1, 'manual', 'refs/heads/main', 'x', 'h', 1, \
             'succeeded', 0)",
            "INSERT INTO proposals (id, run_id, step_run_id, attempt_id, position, kind, \
             payload, state, reason, retry_at, created_at) VALUES \
             (1, 1, 1, 1, 0, 'pull_request', '{}', 'applied', NULL, NULL, 0), \
             (2, 1, 1, 1, 1, 'pull_request', '{}', 'failed', 'pushing: rejected', NULL, 0), \
             (3, 1, 1, 1, 2, 'comment', '{}', 'failed', '503', 99, 0), \
             (4, 1, 1, 1, 3, 'comment', '{}', 'applying', NULL, 99, 0)",
            "INSERT INTO provenance (proposal_id, run_id, key_id, envelope, created_at) VALUES \
             (1, 1, 'k', '{}', 0), (2, 1, 'k', '{}', 0), (3, 1, 'k', '{}', 0), \
             (4, 1, 'k', '{}', 0)",
        ];
        for (store, _dir) in crate::testing::upgraded_stores(39, &rows).await {
            let found: Vec<(i64, StatementState, Option<String>)> = store
                .statements_of_run(1)
                .await
                .unwrap()
                .into_iter()
                .map(|s| (s.proposal_id, s.state, s.reason))
                .collect();
            assert_eq!(
                found,
                [
                    (1, StatementState::Applied, None),
                    (2, StatementState::Failed, Some("pushing: rejected".into())),
                    (3, StatementState::Pending, None),
                    (4, StatementState::Pending, None),
                ]
            );
        }
    }

    #[tokio::test]
    async fn the_first_statement_of_a_proposal_is_kept_and_keys_stay_listed() {
        for (store, _dir) in crate::testing::stores().await {
            let plan = Plan::new("ci", Vec::new());
            let json = serde_json::to_string(&plan).unwrap();
            let run = store
                .create_run(&crate::testing::local_run(&plan, &json), 4)
                .await
                .unwrap()
                .id;
            let kept = store
                .record_statement(5, run, "k1", "{\"a\":1}")
                .await
                .unwrap();
            assert_eq!(kept, "{\"a\":1}");
            // A retry signed again: the first stays.
            let again = store
                .record_statement(5, run, "k1", "{\"a\":2}")
                .await
                .unwrap();
            assert_eq!(again, "{\"a\":1}");
            store
                .record_statement(6, run, "k2", "{\"b\":1}")
                .await
                .unwrap();
            let all = store.statements_of_run(run).await.unwrap();
            assert_eq!(
                all.iter().map(|s| s.proposal_id).collect::<Vec<_>>(),
                [5, 6]
            );
            assert_eq!(store.statement(run, 6).await.unwrap().unwrap().key_id, "k2");
            // Another run's id does not reach it.
            assert_eq!(store.statement(run + 1, 6).await.unwrap(), None);
            store.record_signing_key("k1", "aa").await.unwrap();
            store.record_signing_key("k2", "bb").await.unwrap();
            store.record_signing_key("k1", "cc").await.unwrap();
            let keys = store.signing_keys().await.unwrap();
            assert_eq!(keys.len(), 2);
            assert_eq!(
                keys.iter().find(|k| k.key_id == "k1").unwrap().public_key,
                "aa"
            );
        }
    }
}
