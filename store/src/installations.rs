//! `github_installations` and `github_installation_repos`: the engine's GitHub App
//! installations as the App's `installation` and `installation_repositories` webhooks
//! described them, and the repositories each may reach.
//!
//! Invariants: an installation is keyed by GitHub's id and written whole by each event that
//! carries it (the last one stays), the engine's judgement of it included (`refused`: why
//! it was refused, `None` when accepted); a deleted installation keeps its row (`state` =
//! `deleted`) and loses its repositories; a repository is listed at most once per
//! installation. Nothing here judges an installation or registers a repository: the
//! caller judges (the operator's accepted accounts), an admin or the judged-accepted
//! installation registers.

use plue_types::status::InstallationState;

use crate::tx::Statement;
use crate::{now_ms, Store};

/// An installation as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct InstallationRow {
    pub id: i64,
    /// The login of the user or organization it is installed on.
    pub account: String,
    /// `User` or `Organization` (or `Enterprise`).
    pub account_type: String,
    /// As the App's webhooks last described it.
    #[sqlx(try_from = "String")]
    pub state: InstallationState,
    /// The permissions granted, as GitHub's JSON object.
    pub permissions: String,
    /// The events subscribed to, as a JSON array.
    pub events: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why the engine refused it (its account is not one the operator accepts); `None`:
    /// accepted.
    pub refused: Option<String>,
}

/// An installation as an event describes it.
#[derive(Debug, Clone, Copy)]
pub struct InstallationFacts<'a> {
    pub id: i64,
    pub account: &'a str,
    pub account_type: &'a str,
    pub state: InstallationState,
    pub permissions: &'a str,
    pub events: &'a str,
    /// The engine's judgement: why it refuses the installation, `None` when it accepts it.
    pub refused: Option<&'a str>,
}

impl Store {
    /// Records installation `facts` (created, or updated by any event that carries it).
    pub async fn record_installation(&self, facts: &InstallationFacts<'_>) -> anyhow::Result<()> {
        let now = now_ms();
        self.execute(
            Statement::new(
                "INSERT INTO github_installations \
             (id, account, account_type, state, permissions, events, created_at, updated_at, \
             refused) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             account = excluded.account, account_type = excluded.account_type, \
             state = excluded.state, permissions = excluded.permissions, \
             events = excluded.events, updated_at = excluded.updated_at, \
             refused = excluded.refused",
            )
            .bind(facts.id)
            .bind(facts.account)
            .bind(facts.account_type)
            .bind(facts.state)
            .bind(facts.permissions)
            .bind(facts.events)
            .bind(now)
            .bind(facts.refused),
        )
        .await
        .map(|_| ())?;
        if facts.state == InstallationState::Deleted {
            self.execute(
                Statement::new("DELETE FROM github_installation_repos WHERE installation_id = $1")
                    .bind(facts.id),
            )
            .await
            .map(|_| ())?;
        }
        Ok(())
    }

    /// Lists `added` as reachable by installation `id` and `removed` no longer.
    pub async fn installation_repos_changed(
        &self,
        id: i64,
        added: &[String],
        removed: &[String],
    ) -> anyhow::Result<()> {
        let now = now_ms();
        for name in added {
            self.execute(
                Statement::new(
                    "INSERT INTO github_installation_repos (installation_id, full_name, added_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (installation_id, full_name) DO NOTHING",
                )
                .bind(id)
                .bind(name)
                .bind(now),
            )
            .await
            .map(|_| ())?;
        }
        for name in removed {
            self.execute(
                Statement::new(
                    "DELETE FROM github_installation_repos \
                 WHERE installation_id = $1 AND full_name = $2",
                )
                .bind(id)
                .bind(name),
            )
            .await
            .map(|_| ())?;
        }
        Ok(())
    }

    /// Every installation known, by id.
    pub async fn installations(&self) -> anyhow::Result<Vec<InstallationRow>> {
        self.rows(Statement::new(
            "SELECT id, account, account_type, state, permissions, events, created_at, \
             updated_at, refused FROM github_installations ORDER BY id",
        ))
        .await
    }

    /// Installation `id`, if it was ever recorded.
    pub async fn installation(&self, id: i64) -> anyhow::Result<Option<InstallationRow>> {
        self.row(
            Statement::new(
                "SELECT id, account, account_type, state, permissions, events, created_at, \
             updated_at, refused FROM github_installations WHERE id = $1",
            )
            .bind(id),
        )
        .await
    }

    /// Records the engine's new judgement of installation `id` (`refused`: why it is
    /// refused, `None`: accepted), when the accounts it accepts changed; whether the
    /// judgement differed from the recorded one. `updated_at` is left: nothing GitHub said
    /// changed.
    pub async fn judge_installation(&self, id: i64, refused: Option<&str>) -> anyhow::Result<bool> {
        let changed = self
            .execute(
                Statement::new(
                    "UPDATE github_installations SET refused = $2 \
             WHERE id = $1 AND refused IS DISTINCT FROM $2",
                )
                .bind(id)
                .bind(refused),
            )
            .await?;
        Ok(changed > 0)
    }

    /// The repositories installation `id` may reach, by name.
    pub async fn installation_repos(&self, id: i64) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(String,)> = self
            .rows(
                Statement::new(
                    "SELECT full_name FROM github_installation_repos WHERE installation_id = $1 \
             ORDER BY full_name",
                )
                .bind(id),
            )
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;

    fn facts(state: InstallationState) -> InstallationFacts<'static> {
        InstallationFacts {
            id: 42,
            account: "acme",
            account_type: "Organization",
            state,
            permissions: r#"{"checks":"write"}"#,
            events: r#"["push"]"#,
            refused: None,
        }
    }

    #[tokio::test]
    async fn installations_and_their_repositories_follow_the_events() {
        for (store, _dir) in stores().await {
            store
                .record_installation(&facts(InstallationState::Active))
                .await
                .unwrap();
            let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            store
                .installation_repos_changed(42, &names(&["acme/a", "acme/b", "acme/a"]), &[])
                .await
                .unwrap();
            store
                .installation_repos_changed(42, &names(&["acme/c"]), &names(&["acme/b"]))
                .await
                .unwrap();
            assert_eq!(
                store.installation_repos(42).await.unwrap(),
                names(&["acme/a", "acme/c"])
            );
            store
                .record_installation(&facts(InstallationState::Suspended))
                .await
                .unwrap();
            let listed = store.installations().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(
                (listed[0].id, listed[0].state),
                (42, InstallationState::Suspended)
            );
            assert_eq!(store.installation_repos(42).await.unwrap().len(), 2);
            store
                .record_installation(&facts(InstallationState::Deleted))
                .await
                .unwrap();
            assert_eq!(
                store.installations().await.unwrap()[0].state,
                InstallationState::Deleted
            );
            assert!(store.installation_repos(42).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn the_judgement_is_kept_with_the_installation_and_changed_only_when_it_differs() {
        for (store, _dir) in stores().await {
            let refused = InstallationFacts {
                refused: Some("not an account this engine accepts"),
                ..facts(InstallationState::Active)
            };
            store.record_installation(&refused).await.unwrap();
            let row = store.installation(42).await.unwrap().unwrap();
            assert_eq!(
                row.refused.as_deref(),
                Some("not an account this engine accepts")
            );
            assert!(store.installation(7).await.unwrap().is_none());
            // The operator accepted the account: judged again, accepted.
            assert!(store.judge_installation(42, None).await.unwrap());
            assert!(!store.judge_installation(42, None).await.unwrap());
            assert_eq!(store.installations().await.unwrap()[0].refused, None);
            // Each event carries the judgement made when it arrived.
            store.record_installation(&refused).await.unwrap();
            assert!(store
                .installation(42)
                .await
                .unwrap()
                .unwrap()
                .refused
                .is_some());
            assert!(!store
                .judge_installation(42, Some("not an account this engine accepts"))
                .await
                .unwrap());
        }
    }

    // An installation recorded before installations were judged (the stranger's, which
    // an engine with --register-installed-repos took) is not taken as accepted: it reads as
    // refused until the engine judges it at its start.
    #[tokio::test]
    async fn an_installation_recorded_before_judgements_reads_as_refused() {
        let rows = ["INSERT INTO github_installations \
             (id, account, account_type, state, permissions, events, created_at, updated_at) \
             VALUES (9, 'mallory', 'User', 'active', '{}', '[]', 1, 1)"];
        for (store, _dir) in crate::testing::upgraded_stores(41, &rows).await {
            let row = store.installation(9).await.unwrap().unwrap();
            assert!(
                row.refused.as_deref().unwrap().contains("judged again"),
                "{row:?}"
            );
        }
    }
}
