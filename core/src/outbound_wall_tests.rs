//! A run's wall knows every value the run was handed, not only the current ones.

use std::sync::Arc;

use evaluator::plan::{Plan, Step};
use plue_store::events::Events;
use plue_store::{EnvironmentSettings, NewRun, RunRepo};
use plue_vault::Vault;

use crate::executor::Executor;

const OLD_TOKEN: &str = "t0ken-before-the-rotation-A1";
const NEW_TOKEN: &str = "t0ken-after-the-rotation-B2";
const DELETED: &str = "deleted-mid-run-C3";
const DEPLOY: &str = "env-deploy-key-D4";

// The attack: a step reads TOKEN (value A); while the run goes on, a maintainer rotates it
// to B and deletes OLD, or the environment holding DEPLOY. The wall was made from the
// current values alone, so an agent that had read A (or OLD's value, or DEPLOY's) could
// publish it in a pull request or a comment, and its log kept it in clear. Now every
// value handed to a step of the run stays in its wall and its masking.
#[tokio::test]
async fn a_secret_rotated_or_deleted_mid_run_stays_in_the_runs_wall() {
    let vault = Vault::new("a key of enough length for the wall's test").unwrap();
    for (store, _dir) in plue_store::testing::stores().await {
        let backend = store.backend();
        let repo = plue_store::testing::create_repo(&store, "acme/app").await;
        let seal = |value: &str| vault.seal(value).unwrap();
        store
            .put_secret(repo, "TOKEN", &seal(OLD_TOKEN))
            .await
            .unwrap();
        store.put_secret(repo, "OLD", &seal(DELETED)).await.unwrap();
        let prod = store
            .put_environment(
                repo,
                "prod",
                &EnvironmentSettings {
                    allowed_refs: vec!["main".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store
            .put_environment_secret(prod.id, "DEPLOY", &seal(DEPLOY))
            .await
            .unwrap();
        let mut build = Step::bash("build", "true");
        build.secrets = vec!["TOKEN".into(), "OLD".into()];
        let mut deploy = Step::bash("deploy", "true");
        deploy.secrets = vec!["DEPLOY".into()];
        deploy.environment = Some("prod".into());
        let plan = Plan::new("ci", vec![build, deploy]);
        let json = serde_json::to_string(&plan).unwrap();
        let executor = Executor::new(
            store.clone(),
            Arc::new(Events::default()),
            Default::default(),
            4,
        )
        .with_vault(vault.clone());
        let run = executor
            .start_run(&NewRun {
                workflow_source: "acme/app",
                event: "push",
                context_json: r#"{"branch": "main"}"#,
                repo: Some(RunRepo {
                    repo_id: repo,
                    secrets_allowed: true,
                }),
                ..plue_store::testing::local_run(&plan, &json)
            })
            .await
            .unwrap();
        // The steps are handed their values (what a claim does).
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let handed = executor
            .secret_values(run, "build", &names(&["TOKEN", "OLD"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.values["TOKEN"], OLD_TOKEN, "{backend}");
        let handed = executor
            .secret_values(run, "deploy", &names(&["DEPLOY"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handed.values["DEPLOY"], DEPLOY, "{backend}");
        // Handed again: nothing new to hold.
        executor
            .secret_values(run, "build", &names(&["TOKEN", "OLD"]))
            .await
            .unwrap()
            .unwrap();
        let held = store.held_secrets(run).await.unwrap();
        assert_eq!(held.len(), 3, "{backend}: {held:?}");
        // Sealed, never in clear.
        for (_, sealed) in &held {
            assert!(sealed.starts_with("v1:"), "{backend}");
            assert!(![OLD_TOKEN, DELETED, DEPLOY]
                .iter()
                .any(|v| sealed.contains(v)));
        }

        // Mid-run: TOKEN rotated, OLD deleted, the environment removed with its secret.
        store
            .put_secret(repo, "TOKEN", &seal(NEW_TOKEN))
            .await
            .unwrap();
        assert!(store.delete_secret(repo, "OLD").await.unwrap());
        assert!(store.delete_environment(repo, "prod").await.unwrap());

        let wall = executor
            .walls("https://plue.example".into())
            .of_run(run)
            .await
            .unwrap();
        for value in [OLD_TOKEN, DELETED, DEPLOY, NEW_TOKEN] {
            let text = format!("the value is {value}, enjoy");
            assert!(
                wall.check(&text).is_err(),
                "{backend}: the wall let a value of the run through"
            );
            // What the log masking does with a line (`internal_api`'s wall of the run).
            let masked = wall.mask_spellings(&text).expect("masked");
            assert!(!masked.contains(value), "{backend}: {masked}");
        }
        // A run that was handed nothing holds nothing of this one's.
        let other = executor
            .start_run(&plue_store::testing::local_run(&plan, &json))
            .await
            .unwrap();
        let theirs = executor.walls(String::new()).of_run(other).await.unwrap();
        assert!(theirs.check(OLD_TOKEN).is_ok(), "{backend}");
    }
}
