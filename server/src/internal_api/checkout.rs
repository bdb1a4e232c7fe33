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

use plue_types::protocol::WorkspaceSource;

use super::refused::AttemptRefused;
use crate::executor::Executor;

/// `workspace` with its checkout credential where one is needed; `Err`: the forge gave
/// none (the attempt fails with that reason, which holds no token).
pub(super) async fn with_credential(
    executor: &Executor,
    run_id: i64,
    workspace: WorkspaceSource,
) -> anyhow::Result<Result<WorkspaceSource, AttemptRefused>> {
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
        Err(error) => Ok(Err(AttemptRefused::CheckoutToken {
            repo: repo.name,
            error,
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use evaluator::plan::Plan;
    use plue_types::protocol::WorkspaceSource;
    use testkit::forge::app::{AppConfig, APP_KEY_PEM};
    use testkit::forge::{FakeForge, Flavor};

    use super::with_credential;
    use crate::executor::Executor;
    use crate::forge::auth::{ForgeAuth, GitHubApp};
    use crate::store::{NewRepo, NewRun, RunRepo};
    use crate::vault::Vault;

    fn git(url: &str, sha: &str) -> WorkspaceSource {
        WorkspaceSource::Git {
            url: url.into(),
            sha: sha.into(),
            credential: None,
        }
    }

    fn credential(workspace: &WorkspaceSource) -> Option<String> {
        match workspace {
            WorkspaceSource::Git { credential, .. } => {
                credential.as_ref().map(|c| c.token().to_string())
            }
            _ => None,
        }
    }

    // The attack: a pull request from a fork checks out the fork's URL (the attacker's
    // server); the repository's token must not go there. And a repository that is not the
    // App's keeps its checkout as it was.
    #[tokio::test]
    async fn only_the_repositorys_own_clone_url_gets_a_read_only_token() {
        let forge = FakeForge::start(Flavor::GitHub, "unused").unwrap();
        let sha = forge
            .create_repo_with("acme/app", &[("README", "hi\n")])
            .unwrap();
        forge.enable_app(AppConfig::test(Duration::from_secs(600)));
        let (store, _dir) = plue_store::testing::sqlite().await;
        let clone_url = forge.clone_url("acme/app");
        let api_url = forge.api_url();
        let repo_id = store
            .create_repo(&NewRepo {
                clone_url: &clone_url,
                forge: "github",
                api_url: Some(&api_url),
                ..plue_store::testing::repo("acme/app")
            })
            .await
            .unwrap()
            .unwrap()
            .id;
        let plan = Plan::new("ci", vec![]);
        let run = store
            .create_run(
                &NewRun {
                    repo: Some(RunRepo {
                        repo_id,
                        secrets_allowed: false,
                    }),
                    ..plue_store::testing::local_run(&plan, "{}")
                },
                100,
            )
            .await
            .unwrap()
            .id;
        let app = GitHubApp::new(4242, APP_KEY_PEM)
            .unwrap()
            .with_api_url(Some(api_url.clone()));
        let executor = Executor::new(store.clone(), Arc::default(), Default::default(), 4)
            .with_forge_auth(ForgeAuth::new(Vault::unkeyed(), Some(app)));

        let own = with_credential(&executor, run, git(&clone_url, &sha))
            .await
            .unwrap()
            .unwrap();
        let token = credential(&own).expect("a token for the repository's own URL");
        let handed = forge.installation_tokens();
        let minted = handed.iter().find(|t| t.token == token).unwrap();
        assert!(minted.permissions.values().all(|level| level == "read"));
        assert_eq!(
            minted.permissions.get("contents").map(String::as_str),
            Some("read")
        );

        let fork = with_credential(&executor, run, git("https://evil.example/fork.git", &sha))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(credential(&fork), None);

        // Without the App the same checkout stays as it was.
        let personal = Executor::new(store.clone(), Arc::default(), Default::default(), 4);
        let plain = with_credential(&personal, run, git(&clone_url, &sha))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(credential(&plain), None);

        // The App uninstalled: the attempt fails with the forge's reason, never a token.
        forge.uninstall_app("acme/app");
        let refused = with_credential(
            &Executor::new(store, Arc::default(), Default::default(), 4).with_forge_auth(
                ForgeAuth::new(
                    Vault::unkeyed(),
                    Some(
                        GitHubApp::new(4242, APP_KEY_PEM)
                            .unwrap()
                            .with_api_url(Some(api_url.clone())),
                    ),
                ),
            ),
            run,
            git(&clone_url, &sha),
        )
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(refused.contains("not installed on acme/app"), "{refused}");
        assert!(!refused.contains(&token), "{refused}");
    }
}
