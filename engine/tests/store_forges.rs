//! The forge side of the store against both backends: repositories, webhook delivery
//! de-duplication and schedule ticks under concurrent claimers, commit status reports in
//! order with leases and retries, and repository secrets withheld from fork runs.
//! PostgreSQL runs on a throw-away server (testkit); without one these tests cover SQLite
//! only, unless PLUE_REQUIRE_POSTGRES=1.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support;

use evaluator::plan::{Plan, Step};
use plue_core::engine_secrets::{EngineSecrets, RepoPattern};
use plue_core::executor::Executor;
use plue_store::events::Events;
use plue_store::{now_ms, NewRepo, NewRun, RunRepo, ScheduleEntry, Store};
use plue_types::status::CommitState;
use plue_vault::Vault;

async fn repo(store: &Store, name: &str) -> i64 {
    store
        .create_repo(&NewRepo {
            name,
            clone_url: "/srv/git/hello",
            forge: "github",
            webhook_secret_sealed: "plain:secret",
            api_url: Some("http://127.0.0.1:9"),
            api_token_sealed: None,
            default_branch: Some("main"),
            forge_repo_id: None,
        })
        .await
        .unwrap()
        .expect("a new repository")
        .id
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("wf", steps)
}

async fn start(executor: &Executor, repo_id: i64, plan: &Plan, secrets_allowed: bool) -> i64 {
    let json = serde_json::to_string(plan).unwrap();
    executor
        .start_run(&NewRun {
            workflow_source: "octo/hello",
            workflow_path: ".plue/wf.plue.py",
            event: "push",
            sha: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            repo: Some(RunRepo {
                repo_id,
                secrets_allowed,
            }),
            ..plue_store::testing::local_run(plan, &json)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn repositories_are_unique_and_take_their_data_with_them() {
    for (store, _dir) in support::stores().await {
        let id = repo(&store, "octo/hello").await;
        let again = store
            .create_repo(&NewRepo {
                name: "octo/hello",
                clone_url: "/elsewhere",
                forge: "gitea",
                webhook_secret_sealed: "plain:x",
                api_url: None,
                api_token_sealed: None,
                default_branch: None,
                forge_repo_id: None,
            })
            .await
            .unwrap();
        assert!(again.is_none(), "{}", store.backend());
        store.put_secret(id, "TOKEN", "v1:00:00").await.unwrap();
        assert!(store
            .record_delivery("github", "d1", id, "push")
            .await
            .unwrap());
        let executor = support::executor(&store, 8);
        start(&executor, id, &plan(vec![]), true).await;
        assert!(store.delete_repo(id).await.unwrap());
        assert!(store.repo_by_name("octo/hello").await.unwrap().is_none());
        assert!(store
            .list_runs_of_repo("octo/hello", 10)
            .await
            .unwrap()
            .is_empty());
        assert!(store.secret_names(id).await.unwrap().is_empty());
        // The delivery went with the repository: the same id is new again for a new one.
        let id = repo(&store, "octo/hello").await;
        assert!(store
            .record_delivery("github", "d1", id, "push")
            .await
            .unwrap());
    }
}

/// Runs `race` in 8 tasks at once; how many of them won it (answered true).
async fn winners<F, Fut>(race: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(race())).collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_id_and_a_schedule_tick_are_taken_once_under_concurrency() {
    for (store, _dir) in support::stores().await {
        let id = repo(&store, "octo/hello").await;
        let won = winners(|| {
            let store = store.clone();
            async move {
                store
                    .record_delivery("github", "same", id, "push")
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(won, 1, "{}: one delivery proceeds", store.backend());
        assert!(
            store
                .record_delivery("gitea", "same", id, "push")
                .await
                .unwrap(),
            "ids are per forge"
        );

        let due = now_ms() - 1000;
        store
            .replace_schedules(
                id,
                "main",
                "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                &[ScheduleEntry {
                    workflow_path: ".plue/n.plue.py".into(),
                    cron: "0 3 * * *".into(),
                    next_fire_at: due,
                }],
            )
            .await
            .unwrap();
        let schedule = store
            .due_schedules(now_ms())
            .await
            .unwrap()
            .pop()
            .expect("due");
        let won = winners(|| {
            let store = store.clone();
            let seen = schedule.next_fire_at;
            async move {
                store
                    .take_schedule_tick(schedule.id, seen, seen + 86_400_000, now_ms())
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(won, 1, "{}: one engine takes the tick", store.backend());
        assert!(store.due_schedules(now_ms()).await.unwrap().is_empty());
        // Replacing keeps the next fire time of a schedule that stays; drops the rest.
        store
            .replace_schedules(
                id,
                "main",
                "1111111111111111111111111111111111111111",
                &[ScheduleEntry {
                    workflow_path: ".plue/n.plue.py".into(),
                    cron: "0 3 * * *".into(),
                    next_fire_at: 0,
                }],
            )
            .await
            .unwrap();
        let kept = store.schedules_of_repo(id).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].next_fire_at, due + 86_400_000);
        assert_eq!(kept[0].sha, "1111111111111111111111111111111111111111");
        store
            .replace_schedules(id, "main", "1111111111111111111111111111111111111111", &[])
            .await
            .unwrap();
        assert!(store.schedules_of_repo(id).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn status_reports_go_out_in_order_with_leases_and_retries() {
    for (store, _dir) in support::stores().await {
        let id = repo(&store, "octo/hello").await;
        let executor = support::executor(&store, 8);
        // No steps: the run is final at once, so both reports exist.
        let run = start(&executor, id, &plan(vec![]), true).await;
        let now = now_ms();
        let first = store.claim_status_reports(now, 60_000, 10).await.unwrap();
        assert_eq!(
            first.len(),
            1,
            "{}: only the oldest report of a run is due",
            store.backend()
        );
        assert_eq!(
            (first[0].run_id, first[0].state.as_str(), first[0].attempts),
            (run, "pending", 1)
        );
        assert_eq!(first[0].repo_name, "octo/hello");
        assert!(
            store
                .claim_status_reports(now, 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "leased"
        );
        // The forge failed: retried after the backoff, not before.
        store
            .status_retry_at(first[0].id, "HTTP 500", now + 1000)
            .await
            .unwrap();
        assert!(store
            .claim_status_reports(now, 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        let retry = store
            .claim_status_reports(now + 1000, 60_000, 10)
            .await
            .unwrap();
        assert_eq!((retry[0].id, retry[0].attempts), (first[0].id, 2));
        store.status_delivered(retry[0].id).await.unwrap();
        let last = store
            .claim_status_reports(now + 1000, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].state, CommitState::Success);
        store
            .status_abandoned(last[0].id, "HTTP 422")
            .await
            .unwrap();
        assert!(
            store
                .claim_status_reports(now + 10_000_000, 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "abandoned"
        );
        let reports = store.status_reports_of_run(run).await.unwrap();
        assert_eq!(
            reports,
            vec![
                (CommitState::Pending, true, 2, Some("HTTP 500".to_string())),
                (CommitState::Success, false, 1, Some("HTTP 422".to_string())),
            ]
        );
    }
}

#[tokio::test]
async fn repository_secrets_open_with_the_vault_and_are_withheld_from_forks() {
    let vault = Vault::new("a key of enough length for tests").unwrap();
    for (store, _dir) in support::stores().await {
        let id = repo(&store, "octo/hello").await;
        store
            .put_secret(id, "DEPLOY", &vault.seal("d3pl0y").unwrap())
            .await
            .unwrap();
        // The engine's own secrets: SHARED named for this repository, OPERATOR for none.
        let engine_wide = EngineSecrets::new(
            BTreeMap::from([
                ("SHARED".to_string(), "everyone".to_string()),
                ("OPERATOR".to_string(), "the-operators-own".to_string()),
            ]),
            BTreeMap::from([(
                "SHARED".to_string(),
                vec![RepoPattern::parse("octo/*").unwrap()],
            )]),
        )
        .unwrap();
        let executor = Executor::new(store.clone(), Arc::new(Events::default()), engine_wide, 8)
            .with_vault(vault.clone());
        let step = Step::bash("s", "true");
        let names = vec!["DEPLOY".to_string(), "SHARED".to_string()];

        let trusted = start(&executor, id, &plan(vec![step.clone()]), true).await;
        let secrets = executor
            .secret_values(trusted, "s", &names)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secrets.values["DEPLOY"], "d3pl0y", "{}", store.backend());
        assert_eq!(secrets.values["SHARED"], "everyone");
        assert!(secrets.withheld.is_empty());
        let missing = executor
            .secret_values(trusted, "s", &["NOPE".to_string()])
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&missing, plue_core::executor::SecretsRefused::NotSet(name) if name == "NOPE"),
            "{missing}"
        );
        assert_eq!(missing.to_string(), "secret 'NOPE' is not set");
        // The attack: the repository's step names the engine secret no one named for it.
        let withheld = executor
            .secret_values(trusted, "s", &["OPERATOR".to_string()])
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&withheld, plue_core::executor::SecretsRefused::NotForRepository { name, repository }
                if name == "OPERATOR" && repository == "octo/hello"),
            "{withheld}"
        );
        assert!(!withheld.to_string().contains("the-operators-own"));

        let fork = start(&executor, id, &plan(vec![step]), false).await;
        let secrets = executor
            .secret_values(fork, "s", &names)
            .await
            .unwrap()
            .unwrap();
        assert!(secrets.values.is_empty(), "a fork gets nothing");
        assert_eq!(secrets.withheld, names);

        // Sealed under another key: a clear error, not the ciphertext.
        let other = support::executor(&store, 8)
            .with_vault(Vault::new("some other key, also long").unwrap());
        let err = other
            .secret_values(trusted, "s", &["DEPLOY".to_string()])
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("secret 'DEPLOY': "), "{err}");
    }
}

// The lists a caller reads are filtered in the query, so `limit` counts readable rows: a
// page of 2 of repository A's runs is 2 of A's runs however many of B's came since, and
// an empty set of repositories lists nothing (never everything).
#[tokio::test]
async fn runs_and_repositories_are_listed_only_of_the_given_repositories() {
    use plue_store::RunFilter;
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 8);
        let a = repo(&store, "acme/a").await;
        let b = repo(&store, "acme/b").await;
        let wf = plan(vec![Step::bash("s", "true")]);
        let mut of_a = Vec::new();
        for _ in 0..3 {
            of_a.push(start(&executor, a, &wf, true).await);
        }
        for _ in 0..5 {
            start(&executor, b, &wf, true).await;
        }
        let local = support::start_plan_run(&executor, "/w/local.plue.py", &wf, None).await;
        let all = RunFilter::default();
        let page = store.runs_page(&all, Some(&[a]), 2).await.unwrap();
        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![of_a[2], of_a[1]], "{}", store.backend());
        assert!(store
            .runs_page(&all, Some(&[]), 50)
            .await
            .unwrap()
            .is_empty());
        let both = store.runs_page(&all, Some(&[a, b]), 50).await.unwrap();
        assert_eq!(both.len(), 8);
        assert!(both.iter().all(|r| r.id != local), "no local run");
        let everything = store.runs_page(&all, None, 50).await.unwrap();
        assert_eq!(everything.len(), 9);
        let names = |repos: Vec<plue_store::RepoRow>| -> Vec<String> {
            repos.into_iter().map(|r| r.name).collect()
        };
        assert_eq!(
            names(store.list_repos_in(Some(&[b])).await.unwrap()),
            ["acme/b"]
        );
        assert!(store.list_repos_in(Some(&[])).await.unwrap().is_empty());
        assert_eq!(
            names(store.list_repos_in(None).await.unwrap()),
            ["acme/a", "acme/b"]
        );
    }
}
