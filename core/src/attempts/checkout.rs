//! The checkout credential of a claimed step: a step of a repository the engine serves as
//! its GitHub App checks out with a read-only installation token
//! ([`plue_forge::auth::ForgeAuth::git_credential`]), added to the assignment here, at
//! claim time; and what follows when the forge refuses it there ([`after_attempt`]).
//!
//! Invariants: the credential is never stored (the run's stored workspace has none) and
//! is added only when the checkout's URL is the repository's own clone URL — a fork's
//! pull request fetches from elsewhere, and the repository's token never goes to another
//! URL. The runner gives it to the checkout's git only (`runner::workspace`). A
//! repository without the App, or an engine without one, is left as it was.
//!
//! A token the forge refuses at the runner's checkout (revoked before its planned
//! refresh) fails that attempt with git's reason — the runner cannot ask for another —
//! and is forgotten when the attempt completes: exactly the token handed with that
//! attempt (remembered in memory, [`Handed`], until the attempt completes), so the step's next
//! attempt and every later checkout get a new one. That the failed attempt is not
//! replayed with the new token is a limit: it counts as one of the step's tries.

use std::collections::HashMap;
use std::sync::Mutex;

use plue_forge::auth::{git_refused, Token};
use plue_types::protocol::{Outcome, WorkspaceSource};

use super::AttemptRefused;
use crate::executor::Executor;

/// The most handed tokens remembered; past it they are all forgotten (those attempts'
/// refusals then go unnoticed, as they did before).
const MAX_HANDED: usize = 10_000;

/// The checkout tokens handed with attempts, until each attempt completes: attempt → the
/// repository (its id) and the token.
#[derive(Debug, Default)]
pub(super) struct Handed(Mutex<HashMap<i64, (i64, Token)>>);

impl Handed {
    fn remember(&self, attempt_id: i64, repo_id: i64, token: Token) {
        let mut handed = super::lock(&self.0);
        if handed.len() >= MAX_HANDED {
            handed.clear();
        }
        handed.insert(attempt_id, (repo_id, token));
    }

    fn take(&self, attempt_id: i64) -> Option<(i64, Token)> {
        super::lock(&self.0).remove(&attempt_id)
    }
}

/// `workspace` of attempt `attempt_id` with its checkout credential where one is needed
/// (remembered in `handed`); `Err`: the forge gave none (the attempt fails with that
/// reason, which holds no token).
pub(super) async fn with_credential(
    executor: &Executor,
    handed: &Handed,
    run_id: i64,
    attempt_id: i64,
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
        Ok(credential) => {
            if let Some(given) = &credential {
                handed.remember(attempt_id, repo.id, Token::new(given.token().to_string()));
            }
            Ok(Ok(WorkspaceSource::Git {
                url,
                sha,
                credential,
            }))
        }
        Err(error) => Ok(Err(AttemptRefused::CheckoutToken {
            repo: repo.name,
            error,
        })),
    }
}

/// Attempt `attempt_id` completed with `outcome` and the runner's `reason`: when its
/// checkout was refused the token handed with it, that token is forgotten (see the module
/// doc). Whatever the outcome, the attempt's token is no longer remembered in `handed`.
pub(super) async fn after_attempt(
    executor: &Executor,
    handed: &Handed,
    attempt_id: i64,
    outcome: Outcome,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let Some((repo_id, token)) = handed.take(attempt_id) else {
        return Ok(());
    };
    // The runner's reason for a workspace it could not fill (`runner::agent`): `workspace:
    // checking out … from …: git fetch … failed …: <git's words>`.
    let refused = outcome == Outcome::Failed
        && reason.is_some_and(|why| why.starts_with("workspace:") && git_refused(why));
    if !refused {
        return Ok(());
    }
    if let Some(repo) = executor.store().repo_by_id(repo_id).await? {
        executor.forge_auth().refused_where_handed(&repo, &token);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use evaluator::plan::Plan;
    use plue_forge::auth::{ForgeAuth, GitHubApp};
    use plue_store::{NewRepo, NewRun, RunRepo};
    use plue_types::protocol::Outcome;
    use plue_types::protocol::WorkspaceSource;
    use plue_vault::Vault;
    use testkit::forge::app::{AppConfig, APP_KEY_PEM};
    use testkit::forge::{FakeForge, Flavor};

    use super::{after_attempt, with_credential, Handed};
    use crate::executor::Executor;

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

        let own = with_credential(&executor, &Handed::default(), run, 1, git(&clone_url, &sha))
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

        let fork = with_credential(
            &executor,
            &Handed::default(),
            run,
            2,
            git("https://evil.example/fork.git", &sha),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(credential(&fork), None);

        // Without the App the same checkout stays as it was.
        let personal = Executor::new(store.clone(), Arc::default(), Default::default(), 4);
        let plain = with_credential(&personal, &Handed::default(), run, 3, git(&clone_url, &sha))
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
            &Handed::default(),
            run,
            4,
            git(&clone_url, &sha),
        )
        .await
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(refused.contains("not installed on acme/app"), "{refused}");
        assert!(!refused.contains(&token), "{refused}");
    }

    // regression (issue 70): a runner's checkout whose token GitHub had revoked failed its
    // attempt, and every later attempt was handed the same refused token.
    #[tokio::test]
    async fn a_refused_checkout_forgets_exactly_the_token_handed_with_it() {
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
            .with_api_url(Some(api_url));
        let executor = Executor::new(store, Arc::default(), Default::default(), 4)
            .with_forge_auth(ForgeAuth::new(Vault::unkeyed(), Some(app)));
        let handed = Handed::default();
        let checkout = |attempt| {
            let (executor, handed, clone_url, sha) = (&executor, &handed, &clone_url, &sha);
            async move {
                let given = with_credential(executor, handed, run, attempt, git(clone_url, sha))
                    .await
                    .unwrap()
                    .unwrap();
                credential(&given).unwrap()
            }
        };
        let refused = "workspace: checking out 0123 from http://127.0.0.1/acme/app: git fetch -q \
                       --depth 1 -- http://127.0.0.1/acme/app 0123 failed (exit status: 128): \
                       fatal: could not read Username for 'http://127.0.0.1': terminal prompts \
                       disabled";
        let first = checkout(11).await;
        // Another attempt's failure, or a success, forgets nothing.
        for (outcome, reason) in [
            (Outcome::Failed, Some("the step exited with 1")),
            (Outcome::Succeeded, None),
        ] {
            let token = checkout(12).await;
            assert_eq!(token, first);
            after_attempt(&executor, &handed, 12, outcome, reason)
                .await
                .unwrap();
        }
        assert_eq!(checkout(13).await, first, "still cached");
        after_attempt(&executor, &handed, 11, Outcome::Failed, Some(refused))
            .await
            .unwrap();
        let second = checkout(14).await;
        assert_ne!(second, first, "the refused token is never handed again");
        // An attempt handed the refused token that completes later forgets nothing more.
        after_attempt(&executor, &handed, 13, Outcome::Failed, Some(refused))
            .await
            .unwrap();
        assert_eq!(checkout(15).await, second);
        assert_eq!(forge.installation_tokens().len(), 2, "one new token");
    }
}
