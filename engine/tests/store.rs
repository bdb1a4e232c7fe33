//! The store against both backends: the claim race (no step handed out twice), the claim
//! index on PostgreSQL, idempotent log appends and completions, and the executor's rules
//! applied through real transactions. PostgreSQL runs on a throw-away server (testkit);
//! without one these tests cover SQLite only, unless PLUE_REQUIRE_POSTGRES=1.
//!
//! Why one file past ~600 lines: the store's contracts on both backends through one backend
//! loop (SQLite, and PostgreSQL when a server starts).

use std::collections::{BTreeMap, HashSet};

use crate::support;

use evaluator::plan::{Plan, Step};
use plue_core::executor::{Executor, Report, RunnerSaid};
use plue_store::{
    now_ms, NewRunner, NewRunnerToken, RedeemedToken, Registration, RunnerTokenKind, Store,
};
use plue_types::protocol::{LogLine, Outcome, Stream};
use plue_types::status::{RunState, StepStatus};

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("test", steps)
}

fn bash(id: &str) -> Step {
    Step::bash(id, format!("echo {id}"))
}

async fn start(executor: &Executor, plan: &Plan) -> i64 {
    support::start_plan_run(executor, "/w/test.plue.py", plan, None).await
}

/// The next step `runner_id` claims (one there must be).
async fn claim(store: &Store, runner_id: i64) -> plue_store::Claimed {
    store
        .claim(runner_id, &[String::new()], now_ms())
        .await
        .unwrap()
        .unwrap()
}

/// Stdout lines `seqs`, each of `text(seq)`.
fn lines(seqs: impl Iterator<Item = u64>, text: impl Fn(u64) -> String) -> Vec<LogLine> {
    seqs.map(|seq| LogLine {
        seq,
        stream: Stream::Stdout,
        text: text(seq),
        ts_ms: 1,
    })
    .collect()
}

fn report(outcome: Outcome, reason: Option<&str>) -> Report {
    Report {
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        reason: reason.map(String::from),
        outputs: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_take_the_same_step() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let steps: Vec<Step> = (0..60).map(|i| bash(&format!("s{i}"))).collect();
        let run_id = start(&executor, &plan(steps)).await;
        let mut runners = Vec::new();
        for i in 0..8 {
            runners.push(support::store_runner(&store, &format!("r{i}")).await);
        }
        let labels = vec![String::new()];
        // Eight claimers race until the queue is empty; each runner takes as many as it can.
        let claims = futures::future::join_all(runners.iter().map(|&runner_id| {
            let store = store.clone();
            let labels = labels.clone();
            async move {
                let mut mine = Vec::new();
                while let Some(claimed) = store.claim(runner_id, &labels, now_ms()).await.unwrap() {
                    mine.push(claimed.step_id);
                }
                mine
            }
        }))
        .await;
        let all: Vec<String> = claims.into_iter().flatten().collect();
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(all.len(), 60, "{} on {}", all.len(), store.backend());
        assert_eq!(
            unique.len(),
            60,
            "a step was claimed twice on {}",
            store.backend()
        );
        let steps = store.step_runs(run_id).await.unwrap();
        assert!(steps
            .iter()
            .all(|s| s.status == StepStatus::Claimed && s.attempts == 1));
    }
}

#[tokio::test]
async fn labels_decide_which_runner_may_claim() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let mut gpu = bash("gpu");
        gpu.runner.insert("gpu".into(), "a100".into());
        let run_id = start(&executor, &plan(vec![gpu])).await;
        let plain = support::store_runner(&store, "plain").await;
        assert!(store
            .claim(plain, &[String::new()], now_ms())
            .await
            .unwrap()
            .is_none());
        let sets = vec![
            String::new(),
            "gpu=a100".into(),
            "gpu=a100,os=linux".into(),
            "os=linux".into(),
        ];
        let claimed = store.claim(plain, &sets, now_ms()).await.unwrap().unwrap();
        assert_eq!((claimed.run_id, claimed.step_id.as_str()), (run_id, "gpu"));
    }
}

#[tokio::test]
async fn the_postgres_claim_uses_its_partial_index() {
    let Some(server) = testkit::shared_postgres().expect("PostgreSQL is required") else {
        return;
    };
    let url = server.new_database().unwrap();
    let _store = Store::connect(&url).await.unwrap();
    let plan = server
        .psql(
            &url,
            "SET enable_seqscan = off; EXPLAIN SELECT id FROM step_runs WHERE status = 'queued' \
             AND ready_at <= 1 AND labels = ANY(ARRAY['']) ORDER BY ready_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .unwrap();
    assert!(plan.contains("step_runs_claim"), "{plan}");
}

#[tokio::test]
async fn log_appends_are_idempotent_and_read_in_order() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let run_id = start(&executor, &plan(vec![bash("a"), bash("b")])).await;
        let step = store.step_run(run_id, "a").await.unwrap().unwrap();
        assert!(store.last_lines(run_id).await.unwrap().is_empty());
        let lines: Vec<LogLine> = lines(1..=2500, |seq| {
            format!("line {seq} ünïcode 'quoted' \"and\" \\ backslash")
        });
        assert_eq!(store.append_logs(step.id, 1, &lines).await.unwrap(), 2500);
        // The same batch again (a runner retrying after a lost answer) adds nothing.
        assert_eq!(
            store.append_logs(step.id, 1, &lines[1000..]).await.unwrap(),
            0
        );
        assert_eq!(
            store.append_logs(step.id, 2, &lines[..10]).await.unwrap(),
            10
        );
        assert_eq!(store.count_logs(step.id).await.unwrap(), 2510);
        let mut cursor = (0, 0);
        let mut read = Vec::new();
        loop {
            let page = store.read_logs(step.id, cursor, 700).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = (last.attempt, last.seq);
            read.extend(page);
        }
        assert_eq!(read.len(), 2510);
        assert_eq!(read[0].text, lines[0].text);
        assert_eq!((read[2499].attempt, read[2499].seq), (1, 2500));
        assert_eq!((read[2500].attempt, read[2500].seq), (2, 1));
        // The last line is the later attempt's (not the highest seq), and a step without
        // lines is not listed.
        let last = store.last_lines(run_id).await.unwrap();
        assert_eq!(
            last.into_iter().collect::<Vec<_>>(),
            vec![(step.id, (2, 10))]
        );
    }
}

#[tokio::test]
async fn log_batches_of_every_size_are_stored_exactly_once_and_read_back_as_sent() {
    let streams = [
        Stream::Stdout,
        Stream::Stderr,
        Stream::System,
        Stream::Token,
    ];
    let texts = [
        "plain",
        "",
        "tab\there, escape \u{1b}[31mred\u{1b}[0m, control \u{7}",
        "emoji 🦀 and 'quotes' \"double\" \\ and [1, \"json-like\"]",
        "{\"id\":\"t1\",\"content\":\"a token\\n\"}",
    ];
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let run_id = start(&executor, &plan(vec![bash("a")])).await;
        let step = store.step_run(run_id, "a").await.unwrap().unwrap();
        let mut sent = Vec::new();
        let mut seq = 0;
        // Every batch size up to past two full statements, and odd ones.
        for size in (1..=131).chain([255, 256, 257, 600]) {
            let batch: Vec<LogLine> = (0..size)
                .map(|i| {
                    seq += 1;
                    LogLine {
                        seq,
                        stream: streams[(seq as usize + i) % streams.len()],
                        text: format!("{} #{seq}", texts[seq as usize % texts.len()]),
                        ts_ms: 1_700_000_000_000 + seq as i64,
                    }
                })
                .collect();
            assert_eq!(
                store.append_logs(step.id, 1, &batch).await.unwrap(),
                size as u64,
                "a batch of {size}"
            );
            sent.extend(batch);
        }
        // Retries overlapping what is stored add only what is new.
        let tail: Vec<LogLine> = lines(seq + 1..=seq + 5, |seq| format!("late {seq}"));
        let mut retry = sent[sent.len() - 130..].to_vec();
        retry.extend(tail.iter().cloned());
        assert_eq!(store.append_logs(step.id, 1, &retry).await.unwrap(), 5);
        assert_eq!(store.append_logs(step.id, 1, &retry).await.unwrap(), 0);
        sent.extend(tail);
        assert_eq!(store.count_logs(step.id).await.unwrap(), sent.len() as i64);

        for page_size in [1, 97, 5000] {
            let mut cursor = (0, 0);
            let mut read = Vec::new();
            loop {
                let page = store.read_logs(step.id, cursor, page_size).await.unwrap();
                assert!(page.len() <= page_size as usize);
                let Some(last) = page.last() else { break };
                cursor = (last.attempt, last.seq);
                read.extend(page);
            }
            let expected: Vec<(i64, i64, String, String, i64)> = sent
                .iter()
                .map(|l| {
                    (
                        1,
                        l.seq as i64,
                        l.stream.as_str().to_string(),
                        l.text.clone(),
                        l.ts_ms,
                    )
                })
                .collect();
            let got: Vec<(i64, i64, String, String, i64)> = read
                .into_iter()
                .map(|l| (l.attempt, l.seq, l.stream, l.text, l.ts))
                .collect();
            assert_eq!(got, expected, "pages of {page_size} on {}", store.backend());
        }
    }
}

// An engine upgraded from a version that stored a row per line on SQLite: its lines are
// read back the same, and new ones follow them.
#[tokio::test]
async fn upgrading_sqlite_keeps_the_lines_stored_a_row_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plue.db");
    let url = format!("sqlite://{}", path.display());
    let (run_id, step_id) = {
        let store = Store::connect(&url).await.unwrap();
        let run_id = start(&support::executor(&store, 1000), &plan(vec![bash("a")])).await;
        let step_id = store.step_run(run_id, "a").await.unwrap().unwrap().id;
        store.close().await;
        (run_id, step_id)
    };
    {
        // Back to the schema before chunks, with lines of two attempts in it.
        let db = rusqlite::Connection::open(&path).unwrap();
        for statement in [
            "DROP TABLE log_chunks",
            "DELETE FROM _sqlx_migrations WHERE version = 12",
            // and before the log quotas (migration 15 adds a column to `log_chunks`).
            "DELETE FROM _sqlx_migrations WHERE version = 15",
            "ALTER TABLE attempts DROP COLUMN log_bytes",
            "ALTER TABLE attempts DROP COLUMN log_last_seq",
            "ALTER TABLE attempts DROP COLUMN log_truncated",
            "ALTER TABLE runs DROP COLUMN log_bytes",
            "CREATE TABLE log_lines (step_run_id BIGINT NOT NULL REFERENCES step_runs (id) \
             ON DELETE CASCADE, attempt BIGINT NOT NULL, seq BIGINT NOT NULL, \
             stream TEXT NOT NULL, text TEXT NOT NULL, ts BIGINT NOT NULL, \
             PRIMARY KEY (step_run_id, attempt, seq)) WITHOUT ROWID",
        ] {
            db.execute_batch(statement).unwrap();
        }
        for (attempt, seq, text) in [(1, 1, "first"), (1, 2, "quote \" and \\"), (2, 1, "retry")] {
            db.execute(
                "INSERT INTO log_lines VALUES (?1, ?2, ?3, 'stdout', ?4, 7)",
                rusqlite::params![step_id, attempt, seq, text],
            )
            .unwrap();
        }
        drop(db);
    }
    let store = Store::connect(&url).await.unwrap();
    let read = |lines: Vec<plue_store::StoredLine>| -> Vec<(i64, i64, String)> {
        lines
            .into_iter()
            .map(|l| (l.attempt, l.seq, l.text))
            .collect()
    };
    assert_eq!(
        read(store.read_logs(step_id, (0, 0), 100).await.unwrap()),
        [
            (1, 1, "first".to_string()),
            (1, 2, "quote \" and \\".to_string()),
            (2, 1, "retry".to_string())
        ]
    );
    assert_eq!(store.count_logs(step_id).await.unwrap(), 3);
    let more = [LogLine {
        seq: 2,
        stream: Stream::Stdout,
        text: "after the upgrade".into(),
        ts_ms: 8,
    }];
    assert_eq!(store.append_logs(step_id, 2, &more).await.unwrap(), 1);
    assert_eq!(
        store.append_logs(step_id, 1, &more).await.unwrap(),
        0,
        "stored already"
    );
    assert_eq!(
        read(store.read_logs(step_id, (1, 2), 100).await.unwrap()),
        [
            (2, 1, "retry".to_string()),
            (2, 2, "after the upgrade".to_string())
        ]
    );
    assert_eq!(
        store
            .last_lines(run_id)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(step_id, (2, 2))]
    );
}

#[tokio::test]
async fn completions_apply_once_and_retries_wait_their_backoff() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let mut flaky = bash("flaky");
        flaky.retries = 1;
        flaky.backoff = 5;
        let run_id = start(
            &executor,
            &plan(vec![flaky, bash("next").after(&["flaky"])]),
        )
        .await;
        let runner_id = support::store_runner(&store, "r").await;
        let claimed = claim(&store, runner_id).await;
        let failed = report(Outcome::Failed, Some("exit code 1"));
        assert!(executor
            .complete(claimed.attempt_id, claimed.run_id, Some(runner_id), &failed)
            .await
            .unwrap());
        // A repeated report (a runner retrying) changes nothing.
        assert!(!executor
            .complete(claimed.attempt_id, claimed.run_id, Some(runner_id), &failed)
            .await
            .unwrap());
        let step = store.step_run(run_id, "flaky").await.unwrap().unwrap();
        assert_eq!(step.status, StepStatus::Queued);
        assert!(step.reason.unwrap().contains("retrying in 5s"));
        // Not claimable before its backoff has passed; claimable after.
        assert!(store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
            .is_none());
        let later = now_ms() + 5_001;
        let second = store
            .claim(runner_id, &[String::new()], later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.number, 2);
        executor
            .complete(
                second.attempt_id,
                second.run_id,
                Some(runner_id),
                &report(Outcome::Succeeded, None),
            )
            .await
            .unwrap();
        let next = store.step_run(run_id, "next").await.unwrap().unwrap();
        assert_eq!(next.status, StepStatus::Queued);
    }
}

#[tokio::test]
async fn another_runner_cannot_complete_an_attempt() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        start(&executor, &plan(vec![bash("a")])).await;
        let owner = support::store_runner(&store, "owner").await;
        let intruder = support::store_runner(&store, "intruder").await;
        let claimed = claim(&store, owner).await;
        let done = report(Outcome::Succeeded, None);
        assert!(!executor
            .complete(claimed.attempt_id, claimed.run_id, Some(intruder), &done)
            .await
            .unwrap());
        assert!(executor
            .complete(claimed.attempt_id, claimed.run_id, Some(owner), &done)
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn cancelling_ends_waiting_steps_and_tells_runners_to_stop() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let run_id = start(
            &executor,
            &plan(vec![bash("a"), bash("b").after(&["a"]), bash("c")]),
        )
        .await;
        let runner_id = support::store_runner(&store, "r").await;
        let claimed = claim(&store, runner_id).await;
        assert!(!store.attempt_should_stop(claimed.attempt_id).await.unwrap());
        assert!(executor.cancel(run_id).await.unwrap());
        assert!(store.attempt_should_stop(claimed.attempt_id).await.unwrap());
        let statuses: Vec<String> = store
            .step_runs(run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.status.to_string())
            .collect();
        // The claimed step waits for its runner's report; the others are cancelled now.
        assert_eq!(
            statuses.iter().filter(|s| *s == "cancelled").count(),
            2,
            "{statuses:?}"
        );
        assert_eq!(
            store.run(run_id).await.unwrap().unwrap().status,
            RunState::Running
        );
        executor
            .complete(
                claimed.attempt_id,
                claimed.run_id,
                Some(runner_id),
                &report(Outcome::Cancelled, Some("cancelled")),
            )
            .await
            .unwrap();
        let run = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Cancelled);
        assert!(
            !executor.cancel(run_id).await.unwrap(),
            "a final run cannot be cancelled again"
        );
    }
}

#[tokio::test]
async fn silent_runners_are_declared_lost_once() {
    for (store, _dir) in support::stores().await {
        let a = support::store_runner(&store, "a").await;
        let b = support::store_runner(&store, "b").await;
        let now = now_ms();
        store.heartbeat(b, now + 10_000).await.unwrap();
        let lost = store.mark_lost(now + 5_000, now).await.unwrap();
        assert_eq!(lost, vec![a]);
        assert!(store.mark_lost(now + 5_000, now).await.unwrap().is_empty());
        assert!(
            !store.heartbeat(a, now).await.unwrap(),
            "a lost runner stays lost"
        );
    }
}

fn once_token<'a>(name: &'a str, hash: &'a str, expires_at: i64) -> NewRunnerToken<'a> {
    NewRunnerToken {
        kind: RunnerTokenKind::Once,
        name,
        token_hash: hash,
        labels_json: "{}",
        secrets: true,
        accept_forks: false,
        expires_at: Some(expires_at),
        now: now_ms(),
    }
}

fn new_runner<'a>(name: &'a str, hash: &'a str, token: Option<RedeemedToken>) -> NewRunner<'a> {
    NewRunner {
        name,
        labels_json: "{}",
        session_hash: hash,
        ephemeral: true,
        token,
        secrets: true,
        accept_forks: false,
        host: None,
        now: now_ms(),
    }
}

#[tokio::test]
async fn a_one_time_token_registers_one_runner_and_names_its_redeemer() {
    for (store, _dir) in support::stores().await {
        let id = store
            .create_runner_token(&once_token("pool-x-1", "once-hash", now_ms() + 60_000))
            .await
            .unwrap();
        let token = Some(RedeemedToken { id, once: true });
        let first = store
            .register(&new_runner("pool-x-1", "s1", token))
            .await
            .unwrap();
        let Registration::Registered(runner_id) = first else {
            panic!("{first:?} on {}", store.backend());
        };
        for name in ["pool-x-1", "other"] {
            let again = store
                .register(&new_runner(name, &format!("s-{name}"), token))
                .await
                .unwrap();
            assert_eq!(again, Registration::TokenSpent, "{}", store.backend());
        }
        let minted = store.minted_runners(&[id]).await.unwrap();
        assert_eq!(minted.len(), 1);
        assert_eq!(
            (minted[0].runner_id, minted[0].state.as_str()),
            (runner_id, "idle")
        );
        // Expired before use: refused.
        let late = store
            .create_runner_token(&once_token("pool-x-2", "late-hash", now_ms() - 1))
            .await
            .unwrap();
        let refused = store
            .register(&new_runner(
                "pool-x-2",
                "s2",
                Some(RedeemedToken {
                    id: late,
                    once: true,
                }),
            ))
            .await
            .unwrap();
        assert_eq!(refused, Registration::TokenSpent);
        // Dropped once the pool is done with it (and expired ones with it).
        store.drop_once_token(id, now_ms()).await.unwrap();
        assert!(store
            .runner_token_by_hash("once-hash")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .runner_token_by_hash("late-hash")
            .await
            .unwrap()
            .is_none());
    }
}

/// How the engine binds an egress credential to a pod: a live attempt of a runner the pool
/// started names that runner's one-time token and pod name; an attempt of a runner that
/// registered without one (no pod), or one that ended, names nothing.
#[tokio::test]
async fn a_live_attempt_names_the_pod_of_its_runner_and_only_while_it_runs() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        start(&executor, &plan(vec![bash("a"), bash("b")])).await;
        let id = store
            .create_runner_token(&once_token("pool-x-7", "pod-hash", now_ms() + 60_000))
            .await
            .unwrap();
        let token = Some(RedeemedToken { id, once: true });
        let Registration::Registered(pod_runner) = store
            .register(&new_runner("pool-x-7", "pod-session", token))
            .await
            .unwrap()
        else {
            panic!("not registered on {}", store.backend());
        };
        let claimed = claim(&store, pod_runner).await;
        let pod = store.attempt_pod(claimed.attempt_id).await.unwrap();
        assert_eq!(
            pod,
            Some(plue_store::AttemptPod {
                token_id: id,
                name: "pool-x-7".into()
            }),
            "{}",
            store.backend()
        );
        let local = support::store_runner(&store, "local").await;
        let other = claim(&store, local).await;
        assert_eq!(store.attempt_pod(other.attempt_id).await.unwrap(), None);
        let done = report(Outcome::Succeeded, None);
        executor
            .complete(claimed.attempt_id, claimed.run_id, Some(pod_runner), &done)
            .await
            .unwrap();
        assert_eq!(store.attempt_pod(claimed.attempt_id).await.unwrap(), None);
        assert_eq!(store.attempt_pod(i64::MAX).await.unwrap(), None);
    }
}

#[tokio::test]
async fn live_runner_names_are_unique() {
    for (store, _dir) in support::stores().await {
        let first = support::store_runner(&store, "twin").await;
        let twin = store
            .register(&new_runner("twin", "twin-2", None))
            .await
            .unwrap();
        assert_eq!(twin, Registration::NameTaken, "{}", store.backend());
        store.runner_gone(first, now_ms()).await.unwrap();
        let again = store
            .register(&new_runner("twin", "twin-3", None))
            .await
            .unwrap();
        assert!(matches!(again, Registration::Registered(_)), "{again:?}");
    }
}

#[tokio::test]
async fn a_runner_without_secrets_claims_only_steps_that_need_none() {
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let mut deploy = bash("deploy");
        deploy.secrets.push("DEPLOY_KEY".into());
        start(&executor, &plan(vec![deploy, bash("lint")])).await;
        let registered = store
            .register(&NewRunner {
                secrets: false,
                accept_forks: false,
                ..new_runner("untrusted", "untrusted-hash", None)
            })
            .await
            .unwrap();
        let Registration::Registered(untrusted) = registered else {
            panic!("{registered:?}");
        };
        let all = [String::new()];
        let claimed = store
            .claim(untrusted, &all, now_ms())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.step_id, "lint", "{}", store.backend());
        assert!(store
            .claim(untrusted, &all, now_ms())
            .await
            .unwrap()
            .is_none());
        let trusted = support::store_runner(&store, "trusted").await;
        let claimed = store.claim(trusted, &all, now_ms()).await.unwrap().unwrap();
        assert_eq!(claimed.step_id, "deploy");
    }
}

#[tokio::test]
async fn revoking_a_scoped_token_stops_its_registrations_and_its_runners() {
    for (store, _dir) in support::stores().await {
        let id = store
            .create_runner_token(&NewRunnerToken {
                kind: RunnerTokenKind::Scoped,
                name: "prod runners",
                token_hash: "scoped-hash",
                labels_json: r#"{"zone":"prod"}"#,
                secrets: true,
                accept_forks: false,
                expires_at: None,
                now: now_ms(),
            })
            .await
            .unwrap();
        let token = Some(RedeemedToken { id, once: false });
        let mut live = Vec::new();
        for name in ["prod-1", "prod-2"] {
            match store
                .register(&new_runner(name, name, token))
                .await
                .unwrap()
            {
                Registration::Registered(id) => live.push(id),
                other => panic!("{other:?}"),
            }
        }
        let listed = store.list_runner_tokens().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].used_at.is_some() && listed[0].revoked_at.is_none());
        let mut retired = store
            .revoke_runner_token(id, now_ms())
            .await
            .unwrap()
            .unwrap();
        retired.sort();
        assert_eq!(retired, live, "{}", store.backend());
        assert!(store.live_runners(10).await.unwrap().is_empty());
        let after = store
            .register(&new_runner("prod-3", "prod-3", token))
            .await
            .unwrap();
        assert_eq!(after, Registration::TokenSpent);
        assert_eq!(
            store
                .revoke_runner_token(id + 1000, now_ms())
                .await
                .unwrap(),
            None
        );
    }
}

// A run stored before its documents moved out of `runs` (migration 28) keeps them, and
// what reads them finds them where they went.
#[tokio::test]
async fn upgrading_keeps_each_runs_plan_context_and_workspace() {
    let inserts = [
        "INSERT INTO workflows (id, source, path, name, created_at) VALUES (1, 'local', '/w', 'w', 1)",
        "INSERT INTO runs (id, workflow_id, event, ref, sha, context, plan, plan_hash, workspace, \
         max_parallel, status, created_at) VALUES (1, 1, 'comment', 'refs/heads/main', '0', \
         '{\"issue\":1}', '{\"name\":\"w\"}', 'h', '{\"kind\":\"empty\"}', 1, 'succeeded', 1)",
    ];
    let upgraded = plue_store::testing::upgraded_stores(27, &inserts).await;
    for (store, _dir) in upgraded {
        let backend = store.backend();
        let docs = store.run_documents(1).await.unwrap().expect(backend);
        assert_eq!(
            (
                docs.plan.as_str(),
                docs.context.as_str(),
                docs.workspace.as_str()
            ),
            ("{\"name\":\"w\"}", "{\"issue\":1}", "{\"kind\":\"empty\"}"),
            "{backend}"
        );
        assert_eq!(
            store.summoned_context(1).await.unwrap().as_deref(),
            Some("{\"issue\":1}"),
            "{backend}"
        );
        assert_eq!(
            store.run(1).await.unwrap().expect(backend).status,
            RunState::Succeeded
        );
        assert!(store.run_documents(2).await.unwrap().is_none(), "{backend}");
    }
}

// An engine upgraded from a version that allowed two live runners with one name: the
// migration that makes live names unique retires the older ones instead of failing.
#[tokio::test]
async fn upgrading_retires_older_live_runners_sharing_a_name() {
    // Three live runners, two of them named alike, as the old schema allowed.
    let inserts = [("twin", "h1"), ("twin", "h2"), ("solo", "h3")].map(|(name, hash)| {
        format!(
            "INSERT INTO runners (name, token_hash, labels, ephemeral, state, registered_at, \
             last_heartbeat, state_since) VALUES ('{name}', '{hash}', '{{}}', TRUE, 'idle', 1, 1, 1)"
        )
    });
    let inserts = inserts.each_ref().map(String::as_str);
    let upgraded = plue_store::testing::upgraded_stores(3, &inserts).await;
    for (store, _dir) in upgraded {
        let mut live: Vec<(String, i64)> = store
            .live_runners(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.id))
            .collect();
        live.sort();
        assert_eq!(
            live,
            [("solo".to_string(), 3), ("twin".to_string(), 2)],
            "{}",
            store.backend()
        );
        let all = store.list_runners(10).await.unwrap();
        assert!(all.iter().all(|r| r.secrets && r.token_id.is_none()));
    }
}

#[tokio::test]
async fn a_start_folded_into_the_completion_is_kept_once_and_never_before_the_claim() {
    // A step shorter than START_REPORT_AFTER never reports its start on its own: its
    // completion says how long ago it started (`started_ms_ago`).
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let run_id = start(
            &executor,
            &plan(vec![
                bash("a"),
                bash("b").after(&["a"]),
                bash("c").after(&["b"]),
            ]),
        )
        .await;
        let runner_id = support::store_runner(&store, "r").await;
        let done = report(Outcome::Succeeded, None);
        let complete = |attempt_id, ago| {
            let executor = &executor;
            let done = &done;
            async move {
                executor
                    .complete_holding(
                        attempt_id,
                        run_id,
                        Some(runner_id),
                        done,
                        RunnerSaid {
                            started_ms_ago: ago,
                            ..RunnerSaid::default()
                        },
                    )
                    .await
                    .unwrap()
                    .completed
            }
        };

        // Folded: the start is the completion's clock minus what the runner said.
        let a = claim(&store, runner_id).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let before = now_ms();
        assert!(complete(a.attempt_id, Some(400)).await);
        let after = now_ms();
        let step = store.step_run(run_id, "a").await.unwrap().unwrap();
        let started = step.started_at.expect("the folded start is recorded");
        assert!(
            (before - 400..=after - 400).contains(&started),
            "{started} not within {}..={}",
            before - 400,
            after - 400
        );
        assert_eq!(step.status, StepStatus::Succeeded);

        // Reported on its own first: that start stays, whatever the completion says.
        let b = claim(&store, runner_id).await;
        let reported = now_ms();
        store
            .start_attempt(b.attempt_id, runner_id, reported)
            .await
            .unwrap();
        assert!(complete(b.attempt_id, Some(60_000)).await);
        let step = store.step_run(run_id, "b").await.unwrap().unwrap();
        assert_eq!(step.started_at, Some(reported));

        // A runner's clock is not trusted past the claim: never started before it.
        let claimed_at = now_ms();
        let c = store
            .claim(runner_id, &[String::new()], claimed_at)
            .await
            .unwrap()
            .unwrap();
        assert!(complete(c.attempt_id, Some(u64::MAX)).await);
        let step = store.step_run(run_id, "c").await.unwrap().unwrap();
        assert_eq!(step.started_at, Some(claimed_at));
        let run = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(run.status, RunState::Succeeded);
    }
}
