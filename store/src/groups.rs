//! Concurrency groups in the store: which run of a group is active, which waits.
//!
//! **Invariant:** at most one run of a group is active (`queued` or `running`, approval
//! waits included); newer runs wait in `pending`, where none of their steps is claimable.
//! Every decision about a group — a run entering it ([`Store::create_run`]), a run
//! finishing and the next one starting (the run's transition, [`Store::lock_run`]) — is taken in one transaction
//! that first locks the group's row in `concurrency_groups`, so two engine replicas on one
//! PostgreSQL are ordered by the row lock (SQLite has one writer anyway). The unique index
//! `runs_one_active_per_group` makes the invariant the schema's: a bug here fails a
//! transaction, it never starts a second run.
//!
//! Runs of pull requests from forks (`secrets_allowed` false) have a scope of their own
//! ([`scope`]): a fork's plan that names `deploy` with `cancel_in_progress`, or that waits
//! for an approval while it holds the group, meets only other forks' runs, never cancels,
//! supersedes or holds a run of the repository itself.
//!
//! Lock order: group row, then run rows, then step rows. `Store::lock_run` reads a run's group id
//! (which never changes) before its transaction and locks the group first.
//!
//! [`Store::create_run`]: super::Store::create_run
//! [`Store::lock_run`]: super::Store::lock_run

use anyhow::Context;
use evaluator::context::EvalContext;
use evaluator::plan::Plan;

use crate::tx::{Statement, Tx};

/// A run's concurrency group, resolved from its plan's template and its `ctx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) cancel_in_progress: bool,
}

/// The group of a new run, if its plan names one. Groups are scoped to the workflow's
/// source (a repository, or `local`), as GitHub Actions scopes them to a repository.
/// `context_json` is the run's `ctx` as stored.
pub(crate) fn group_of(plan: &Plan, context_json: &str) -> anyhow::Result<Option<Group>> {
    let Some(concurrency) = &plan.concurrency else {
        return Ok(None);
    };
    let ctx: EvalContext =
        serde_json::from_str(context_json).context("the run's ctx, for its group name")?;
    Ok(Some(Group {
        name: evaluator::concurrency::resolve(&concurrency.group, &plan.name, &ctx),
        cancel_in_progress: concurrency.cancel_in_progress,
    }))
}

/// The scope of a run's group: its workflow's source, or for a run of a pull request from
/// a fork (`secrets_allowed` false) `fork:` and the source, a namespace of its own. (A
/// source never starts with `fork:`: it is a repository's `owner/name` or `local`.)
pub(crate) fn scope(source: &str, secrets_allowed: bool) -> std::borrow::Cow<'_, str> {
    if secrets_allowed {
        source.into()
    } else {
        format!("fork:{source}").into()
    }
}

/// A group's name as a run shows it (`runs.concurrency_group`, the reasons of its waits
/// and cancels): the plan's name, or for a run of a pull request from a fork `fork:` and
/// the name, since that run's group is kept apart from the repository's group of the same
/// name ([`scope`]).
pub(crate) fn shown(name: &str, secrets_allowed: bool) -> std::borrow::Cow<'_, str> {
    if secrets_allowed {
        name.into()
    } else {
        format!("fork:{name}").into()
    }
}

/// The reason of a run that a newer run of its group replaced.
pub(crate) fn superseded(by: i64, group: &str) -> String {
    format!("superseded by run {by} in concurrency group '{group}'")
}

/// The reason a run shows while it waits.
pub(crate) fn waiting(for_run: i64, group: &str) -> String {
    format!("waiting for run {for_run} in concurrency group '{group}'")
}

/// Creates the group's row if needed and locks it for the transaction; its id.
pub(crate) async fn lock_group(tx: &mut Tx<'_>, scope: &str, name: &str) -> anyhow::Result<i64> {
    tx.scalar(
        Statement::new(
            "INSERT INTO concurrency_groups (scope, name) VALUES ($1, $2) \
             ON CONFLICT (scope, name) DO UPDATE SET name = excluded.name RETURNING id",
        )
        .bind(scope)
        .bind(name),
    )
    .await?
    .context("the group's row")
}

/// Locks the row of an existing group by id.
pub(crate) async fn relock_group(tx: &mut Tx<'_>, group_id: i64) -> anyhow::Result<()> {
    tx.execute(
        Statement::new("UPDATE concurrency_groups SET name = name WHERE id = $1").bind(group_id),
    )
    .await
    .map(drop)
}

/// The active run of a locked group, if any.
pub(crate) async fn active_run(tx: &mut Tx<'_>, group_id: i64) -> anyhow::Result<Option<i64>> {
    tx.scalar(
        Statement::new(
            "SELECT id FROM runs WHERE concurrency_group_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(group_id),
    )
    .await
}

/// In a locked group with no active run, starts (`pending` → `queued`) the oldest waiting
/// run that was not superseded; its id. The caller advances it after the commit.
pub(crate) async fn promote(tx: &mut Tx<'_>, group_id: i64) -> anyhow::Result<Option<i64>> {
    if active_run(tx, group_id).await?.is_some() {
        return Ok(None);
    }
    tx.scalar(
        Statement::new(
            "UPDATE runs SET status = 'queued', reason = NULL WHERE id = \
             (SELECT id FROM runs WHERE concurrency_group_id = $1 AND status = 'pending' \
              AND cancel_requested = FALSE ORDER BY id LIMIT 1) \
             AND status = 'pending' RETURNING id",
        )
        .bind(group_id),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forks_have_a_scope_of_their_own() {
        assert_eq!(scope("acme/app", true), "acme/app");
        assert_eq!(scope("acme/app", false), "fork:acme/app");
        assert_eq!(shown("deploy", true), "deploy");
        assert_eq!(shown("deploy", false), "fork:deploy");
        assert_ne!(scope("local", false), scope("local", true));
    }

    #[test]
    fn reasons_name_the_run_and_the_group() {
        assert_eq!(
            superseded(7, "deploy-main"),
            "superseded by run 7 in concurrency group 'deploy-main'"
        );
        assert_eq!(
            waiting(3, "g"),
            "waiting for run 3 in concurrency group 'g'"
        );
    }
}
