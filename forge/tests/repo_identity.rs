//! A repository's name changing hands, against the fake GitHub in App-only mode (issue 69):
//! an installation token cached before the takeover is not used for the new holder of the
//! name, an engine that starts afresh (nothing cached) refuses it too, and the refusal is
//! the repository moved — a reason, never an internal error.

use plue_forge::auth::{ForgeAuth, GitHubApp, Use};
use plue_forge::repo_identity::{confirm, NotConfirmed};
use plue_forge::status::PostError;
use plue_store::{NewRepo, RepoRow, Store};
use plue_vault::Vault;
use testkit::forge::app::{AppConfig, APP_KEY_PEM};
use testkit::forge::{FakeForge, Flavor};

const REPO: &str = "octo/app";

struct World {
    _dir: tempfile::TempDir,
    fake: FakeForge,
    store: Store,
    client: reqwest::Client,
}

impl World {
    /// The fake GitHub in App-only mode, holding `REPO`.
    async fn new() -> World {
        let world = World::of(Flavor::GitHub, "personal-token-never-given").await;
        world
            .fake
            .enable_app(AppConfig::test(std::time::Duration::from_secs(3600)));
        world
    }

    /// A fake forge of `flavor` whose personal token is `token`, holding `REPO`.
    async fn of(flavor: Flavor, token: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeForge::start(flavor, token).unwrap();
        fake.create_repo(REPO).unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        World {
            _dir: dir,
            fake,
            store,
            client: reqwest::Client::new(),
        }
    }

    /// The engine's credentials afresh (a restart: nothing cached).
    fn auth(&self) -> ForgeAuth {
        let app = GitHubApp::new(4242, APP_KEY_PEM)
            .unwrap()
            .with_api_url(Some(self.fake.api_url()));
        ForgeAuth::new(Vault::unkeyed(), Some(app))
    }

    /// `REPO` registered without a token (served through the App), bound to `bound`.
    async fn register(&self, bound: Option<i64>) -> RepoRow {
        self.register_on("github", None, bound).await
    }

    /// `REPO` registered on `forge` with the sealed personal token `token`, bound to `bound`.
    async fn register_on(&self, forge: &str, token: Option<&str>, bound: Option<i64>) -> RepoRow {
        let api = self.fake.api_url();
        let clone = self.fake.clone_url(REPO);
        self.store
            .create_repo(&NewRepo {
                name: REPO,
                clone_url: &clone,
                forge,
                webhook_secret_sealed: "plain:secret",
                api_url: Some(&api),
                api_token_sealed: token,
                default_branch: None,
                forge_repo_id: bound,
            })
            .await
            .unwrap()
            .expect("registered")
    }

    async fn reread(&self, repo: &RepoRow) -> RepoRow {
        self.store.repo_by_id(repo.id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_name_taken_over_is_refused_through_a_cached_token_and_after_a_restart() {
    let world = World::new().await;
    let auth = world.auth();
    let repo = world.register(None).await;
    // Confirmed, and bound to the id the forge gives the name (the App's repository).
    confirm(&world.client, &auth, &world.store, &repo)
        .await
        .unwrap();
    let repo = world.reread(&repo).await;
    let id = i64::try_from(world.fake.repository_id(REPO)).unwrap();
    assert_eq!(repo.forge_repo_id, Some(id));
    // Tokens are cached for the lookup and the code.
    auth.token(&repo, Use::ReadCode).await.unwrap().unwrap();

    world.fake.give_name_to(REPO, 9_000_009);
    let Err(NotConfirmed::Moved(why)) = confirm(&world.client, &auth, &world.store, &repo).await
    else {
        panic!("the cached token must not confirm the new holder of the name")
    };
    assert!(
        why.contains("9000009") && why.contains(&id.to_string()) && why.contains("Re-register"),
        "{why}"
    );
    // The cached tokens were forgotten: the next token for any use is asked anew — and
    // refused, being for the other repository.
    let refused = auth.token(&repo, Use::ReadCode).await.unwrap_err();
    assert!(matches!(refused, PostError::Moved(_)), "{refused:?}");

    // A restart: nothing cached, the mint itself names the other id.
    let fresh = world.auth();
    let Err(NotConfirmed::Moved(why)) = confirm(&world.client, &fresh, &world.store, &repo).await
    else {
        panic!("a fresh engine must refuse it too")
    };
    assert!(why.contains("9000009"), "{why}");
    let refused = fresh.token(&repo, Use::Write).await.unwrap_err();
    assert!(matches!(refused, PostError::Moved(_)), "{refused:?}");
}

#[tokio::test]
async fn a_cached_token_is_only_for_the_repository_id_it_was_minted_for() {
    let world = World::new().await;
    let auth = world.auth();
    let id = i64::try_from(world.fake.repository_id(REPO)).unwrap();
    let repo = world.register(Some(id)).await;
    auth.token(&repo, Use::Lookup).await.unwrap().unwrap();
    // The same name, registered anew for another id (the operator re-registered it, or the
    // engine learnt another binding): the cached token is not handed out for it.
    let other = RepoRow {
        forge_repo_id: Some(id + 1),
        ..repo.clone()
    };
    let refused = auth.token(&other, Use::Lookup).await.unwrap_err();
    let PostError::Moved(why) = refused else {
        panic!("{refused:?}")
    };
    assert!(why.contains(&(id + 1).to_string()), "{why}");
}

#[tokio::test]
async fn the_same_repository_is_confirmed_and_an_app_gone_from_it_is_unconfirmed_not_moved() {
    let world = World::new().await;
    let auth = world.auth();
    let id = i64::try_from(world.fake.repository_id(REPO)).unwrap();
    let repo = world.register(Some(id)).await;
    for _ in 0..2 {
        confirm(&world.client, &auth, &world.store, &repo)
            .await
            .unwrap();
    }
    // The App is removed from the name (the repository went elsewhere): the token request
    // fails, which is no proof of a move, so it is unconfirmed with the forge's reason.
    world.fake.uninstall_app(REPO);
    let fresh = world.auth();
    let refused = confirm(&world.client, &fresh, &world.store, &repo)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, NotConfirmed::Unavailable(why) if why.contains("not installed")),
        "{refused:?}"
    );
}

// Issue 69, found in review: a Gitea repository (a personal token, no App) was never bound
// to its forge id, so a dispatch after its name moved ran the new holder's workflow with
// the old repository's secrets. Confirming binds it, and a move is then seen.
#[tokio::test]
async fn a_gitea_repository_is_bound_at_its_first_confirmation_and_a_move_is_seen() {
    const TOKEN: &str = "gitea-personal-token";
    let world = World::of(Flavor::Gitea, TOKEN).await;
    let repo = world
        .register_on("gitea", Some(&format!("plain:{TOKEN}")), None)
        .await;
    let auth = ForgeAuth::personal(Vault::unkeyed());
    let (client, store, fake) = (&world.client, &world.store, &world.fake);
    confirm(client, &auth, store, &repo).await.unwrap();
    let repo = world.reread(&repo).await;
    let id = i64::try_from(fake.repository_id(REPO)).unwrap();
    assert_eq!(
        repo.forge_repo_id,
        Some(id),
        "bound at its first confirmation"
    );
    confirm(client, &auth, store, &repo).await.unwrap();

    fake.give_name_to(REPO, 7_000_007);
    let Err(NotConfirmed::Moved(why)) = confirm(client, &auth, store, &repo).await else {
        panic!("the new holder of a Gitea name must not be confirmed")
    };
    assert!(
        why.contains("7000007") && why.contains(&id.to_string()),
        "{why}"
    );
}
