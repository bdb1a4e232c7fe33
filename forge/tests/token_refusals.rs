//! A forge that refuses an installation token before its planned refresh (issue 70),
//! against the fake GitHub in App-only mode that revokes every cached token at its next
//! use: the lookups that decide who may summon, and whether a name is still its
//! repository, complete with one refusal and one new token each; a lookup that still
//! cannot be answered is an error with its reason, never "no permission".

use std::time::Duration;

use evaluator::plan::Authors;
use plue_forge::auth::{ForgeAuth, GitHubApp, Use};
use plue_forge::permission::{Permission, Permissions};
use plue_forge::repo_identity::confirm;
use plue_store::{NewRepo, RepoRow, Store};
use plue_vault::Vault;
use testkit::forge::app::{AppConfig, APP_KEY_PEM};
use testkit::forge::{FakeForge, Fault, FaultAction, Flavor};

const REPO: &str = "octo/app";

struct World {
    _dir: tempfile::TempDir,
    fake: FakeForge,
    store: Store,
    auth: ForgeAuth,
    repo: RepoRow,
}

impl World {
    /// `REPO` on the fake GitHub in App mode, registered without a token; `alice` may
    /// write to it.
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeForge::start(Flavor::GitHub, "personal-token-never-given").unwrap();
        fake.create_repo(REPO).unwrap();
        fake.set_permission("alice", "write");
        fake.enable_app(AppConfig::test(Duration::from_secs(3600)));
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let api = fake.api_url();
        let clone = fake.clone_url(REPO);
        let repo = store
            .create_repo(&NewRepo {
                name: REPO,
                clone_url: &clone,
                forge: "github",
                webhook_secret_sealed: "plain:secret",
                api_url: Some(&api),
                api_token_sealed: None,
                default_branch: None,
                forge_repo_id: None,
            })
            .await
            .unwrap()
            .expect("registered");
        let app = GitHubApp::new(4242, APP_KEY_PEM)
            .unwrap()
            .with_api_url(Some(api));
        World {
            _dir: dir,
            fake,
            store,
            auth: ForgeAuth::new(Vault::unkeyed(), Some(app)),
            repo,
        }
    }

    /// What `alice` may do, asked afresh (no answer kept from an earlier asking).
    async fn alice(&self) -> anyhow::Result<Permission> {
        let standing = Permissions::default()
            .of(
                &self.store,
                &self.auth,
                &self.repo,
                "alice",
                None,
                Authors::Write,
            )
            .await?;
        Ok(standing.permission)
    }
}

// regression (issue 70): a permission lookup whose installation token the forge refused
// counted as "holds no permission", so a writer's comment was refused, and the next one too.
#[tokio::test]
async fn a_writer_is_a_writer_after_the_lookups_token_was_revoked() {
    let world = World::new().await;
    assert_eq!(world.alice().await.unwrap(), Permission::Write);
    let mark = world.fake.revocation_mark();
    let minted = world.fake.installation_tokens().len();
    world.fake.revoke_tokens_at_next_use(None);
    assert_eq!(world.alice().await.unwrap(), Permission::Write);
    assert_eq!(world.fake.check_renewals(&mark), Ok(1));
    // The new token is kept: the next lookup asks nothing of the App.
    assert_eq!(world.alice().await.unwrap(), Permission::Write);
    assert_eq!(world.fake.installation_tokens().len(), minted + 1);
}

// A lookup the forge does not answer (a 5xx; the new token refused too) is an error that
// says why: a writer is never told they hold nothing because of it.
#[tokio::test]
async fn a_lookup_that_cannot_be_answered_is_an_error_never_no_permission() {
    let world = World::new().await;
    world
        .fake
        .fault(Fault::new("GET", "/permission", FaultAction::Status(502)));
    let failed = world.alice().await.unwrap_err();
    let said = format!("{failed:#}");
    assert!(
        said.contains("could not say which permission alice holds") && said.contains("502"),
        "{said}"
    );
    // The forge refuses the token, and the one minted after it as well.
    world.fake.fault(Fault {
        times: 2,
        ..Fault::new("GET", "/permission", FaultAction::Status(401))
    });
    let failed = world.alice().await.unwrap_err();
    let said = format!("{failed:#}");
    assert!(
        said.contains("lookup") && said.contains("new one"),
        "{said}"
    );
    assert!(!said.contains("ghs_"), "{said}");
    // Answered again: a writer.
    assert_eq!(world.alice().await.unwrap(), Permission::Write);
}

// Whether a name still names its repository is asked with a lookup token too: a revoked
// one is renewed, and the repository is confirmed.
#[tokio::test]
async fn a_repository_is_confirmed_after_its_lookups_token_was_revoked() {
    let world = World::new().await;
    world.auth.token(&world.repo, Use::Lookup).await.unwrap();
    let mark = world.fake.revocation_mark();
    world.fake.revoke_tokens_at_next_use(None);
    let client = reqwest::Client::new();
    confirm(&client, &world.auth, &world.store, &world.repo)
        .await
        .unwrap();
    assert_eq!(world.fake.check_renewals(&mark), Ok(1));
    let bound = world
        .store
        .repo_by_id(world.repo.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bound.forge_repo_id,
        Some(world.fake.repository_id(REPO) as i64)
    );
}
