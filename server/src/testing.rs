//! Set-up this crate's tests share: the API's state over a fresh SQLite store in a
//! temporary directory ([`TestApi`]), and users holding fresh API tokens
//! ([`user_with_token`]). Test-only: compiled under `cfg(test)`.

use std::sync::Arc;

use plue_core::artifacts::{Artifacts, ArtifactsConfig};
use plue_core::executor::Executor;
use plue_store::events::Events;
use plue_store::{NewToken, Store};
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;

/// An engine's API without its background parts: a fresh store, its executor, and the
/// API's state over them. Change what a test needs with struct update syntax:
/// `ApiState { shutdown, ..api.state }`.
pub(crate) struct TestApi {
    pub(crate) executor: Arc<Executor>,
    /// No evaluator, pool or registry; the store's artifacts kept in [`TestApi::dir`].
    pub(crate) state: ApiState,
    /// Holds the store and the artifacts; both go when it drops.
    pub(crate) dir: tempfile::TempDir,
}

impl TestApi {
    /// A fresh API whose admin signs in with `admin_token`.
    pub(crate) async fn new(admin_token: &str) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let executor = Arc::new(Executor::new(
            store.clone(),
            Arc::new(Events::default()),
            Default::default(),
            8,
        ));
        let artifacts = Artifacts::open(&ArtifactsConfig::local(dir.path().join("artifacts")));
        let state = ApiState {
            executor: executor.clone(),
            evaluator: None,
            pool: None,
            pool_classes: None,
            registry: None,
            resolver: crate::access::Resolver::new(store, Some(admin_token)),
            shutdown: CancellationToken::new(),
            local_workflows: Arc::new(Vec::new()),
            artifacts: Arc::new(artifacts.unwrap()),
            followers: Default::default(),
        };
        TestApi {
            executor,
            state,
            dir,
        }
    }
}

/// How a new token is narrowed (default: not at all, and it never expires).
#[derive(Default, Clone, Copy)]
pub(crate) struct TokenScope<'a> {
    pub(crate) max_role: Option<&'a str>,
    pub(crate) repos: Option<&'a str>,
    pub(crate) expires_at: Option<i64>,
}

/// User `name` (a person, made when there is none yet) and a fresh API token of it named
/// `laptop`, narrowed by `scope`: (user id, token id, token).
pub(crate) async fn user_with_token(
    store: &Store,
    name: &str,
    scope: TokenScope<'_>,
) -> (i64, i64, String) {
    let user_id = match store.user_by_name(name).await.unwrap() {
        Some(user) => user.id,
        None => store
            .create_user(&plue_store::NewUser::person(name))
            .await
            .unwrap(),
    };
    let token = plue_vault::tokens::new_token().unwrap();
    let token_id = store
        .create_user_token(&NewToken {
            user_id,
            name: "laptop",
            token_hash: &plue_vault::tokens::hash_token(&token),
            max_role: scope.max_role,
            repos: scope.repos,
            expires_at: scope.expires_at,
        })
        .await
        .unwrap();
    (user_id, token_id, token)
}
