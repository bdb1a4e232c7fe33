//! The checkout credential of a claimed step: a step of a repository the engine serves as
//! its GitHub App checks out with a read-only installation token
//! ([`crate::forge::auth::ForgeAuth::git_credential`]), added to the assignment here, at
//! claim time.
//!
//! Invariants: the credential is never stored (the run's stored workspace has none) and
//! is added only when the checkout's URL is the repository's own clone URL — a fork's
//! pull request fetches from elsewhere, and the repository's token never goes to another
//! URL. The runner gives it to the checkout's git only (`runner::workspace`). A
//! repository without the App, or an engine without one, is left as it was.

use runner::protocol::WorkspaceSource;

use crate::executor::Executor;

/// `workspace` with its checkout credential where one is needed; `Err(reason)`: the forge
/// gave none (the attempt fails with that reason, which holds no token).
pub(super) async fn with_credential(
    executor: &Executor,
    run_id: i64,
    workspace: WorkspaceSource,
) -> anyhow::Result<Result<WorkspaceSource, String>> {
    let auth = executor.forge_auth();
    let WorkspaceSource::Git {
        url,
        sha,
        credential: None,
    } = workspace
    else {
        return Ok(Ok(workspace));
    };
    let unchanged = |url, sha| {
        Ok(Ok(WorkspaceSource::Git {
            url,
            sha,
            credential: None,
        }))
    };
    if auth.app().is_none() {
        return unchanged(url, sha);
    }
    let Some(repo_id) = executor.store().run(run_id).await?.and_then(|r| r.repo_id) else {
        return unchanged(url, sha);
    };
    let Some(repo) = executor.store().repo_by_id(repo_id).await? else {
        return unchanged(url, sha);
    };
    if url != repo.clone_url {
        return unchanged(url, sha);
    }
    match auth.git_credential(&repo).await {
        Ok(credential) => Ok(Ok(WorkspaceSource::Git {
            url,
            sha,
            credential,
        })),
        Err(e) => Ok(Err(format!(
            "the forge gave no token to check out {}: {e}",
            repo.name
        ))),
    }
}
