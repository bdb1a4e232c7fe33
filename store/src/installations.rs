//! `github_installations` and `github_installation_repos`: the engine's GitHub App
//! installations as the App's `installation` and `installation_repositories` webhooks
//! described them, and the repositories each may reach.
//!
//! Invariants: an installation is keyed by GitHub's id and written whole by each event that
//! carries it (the last one stays); a deleted installation keeps its row (`state` =
//! `deleted`) and loses its repositories; a repository is listed at most once per
//! installation. Nothing here registers a repository: that is an admin's choice.

use crate::{now_ms, on_db, Store};

/// An installation as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstallationRow {
    pub id: i64,
    /// The login of the user or organization it is installed on.
    pub account: String,
    /// `User` or `Organization` (or `Enterprise`).
    pub account_type: String,
    /// `active`, `suspended` or `deleted`.
    pub state: String,
    /// The permissions granted, as GitHub's JSON object.
    pub permissions: String,
    /// The events subscribed to, as a JSON array.
    pub events: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An installation as an event describes it.
#[derive(Debug, Clone, Copy)]
pub struct InstallationFacts<'a> {
    pub id: i64,
    pub account: &'a str,
    pub account_type: &'a str,
    pub state: &'a str,
    pub permissions: &'a str,
    pub events: &'a str,
}

impl Store {
    /// Records installation `facts` (created, or updated by any event that carries it).
    pub async fn record_installation(&self, facts: &InstallationFacts<'_>) -> anyhow::Result<()> {
        let now = now_ms();
        on_db!(self, pool => sqlx::query(
            "INSERT INTO github_installations \
             (id, account, account_type, state, permissions, events, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO UPDATE SET \
             account = excluded.account, account_type = excluded.account_type, \
             state = excluded.state, permissions = excluded.permissions, \
             events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(facts.id)
        .bind(facts.account)
        .bind(facts.account_type)
        .bind(facts.state)
        .bind(facts.permissions)
        .bind(facts.events)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())?);
        if facts.state == "deleted" {
            on_db!(self, pool => sqlx::query(
                "DELETE FROM github_installation_repos WHERE installation_id = $1",
            )
            .bind(facts.id)
            .execute(pool)
            .await
            .map(|_| ())?);
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
            on_db!(self, pool => sqlx::query(
                "INSERT INTO github_installation_repos (installation_id, full_name, added_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (installation_id, full_name) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())?);
        }
        for name in removed {
            on_db!(self, pool => sqlx::query(
                "DELETE FROM github_installation_repos \
                 WHERE installation_id = $1 AND full_name = $2",
            )
            .bind(id)
            .bind(name)
            .execute(pool)
            .await
            .map(|_| ())?);
        }
        Ok(())
    }

    /// Every installation known, by id.
    pub async fn installations(&self) -> anyhow::Result<Vec<InstallationRow>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT id, account, account_type, state, permissions, events, created_at, \
             updated_at FROM github_installations ORDER BY id",
        )
        .fetch_all(pool)
        .await?))
    }

    /// The repositories installation `id` may reach, by name.
    pub async fn installation_repos(&self, id: i64) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(String,)> = on_db!(self, pool => sqlx::query_as(
            "SELECT full_name FROM github_installation_repos WHERE installation_id = $1 \
             ORDER BY full_name",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;

    fn facts(state: &str) -> InstallationFacts<'_> {
        InstallationFacts {
            id: 42,
            account: "acme",
            account_type: "Organization",
            state,
            permissions: r#"{"checks":"write"}"#,
            events: r#"["push"]"#,
        }
    }

    #[tokio::test]
    async fn installations_and_their_repositories_follow_the_events() {
        for (store, _dir) in stores().await {
            store.record_installation(&facts("active")).await.unwrap();
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
                .record_installation(&facts("suspended"))
                .await
                .unwrap();
            let listed = store.installations().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!((listed[0].id, listed[0].state.as_str()), (42, "suspended"));
            assert_eq!(store.installation_repos(42).await.unwrap().len(), 2);
            store.record_installation(&facts("deleted")).await.unwrap();
            assert_eq!(store.installations().await.unwrap()[0].state, "deleted");
            assert!(store.installation_repos(42).await.unwrap().is_empty());
        }
    }
}
