//! End-to-end tests of agent-pipeline features through the real `plue` binary (`plue
//! serve` with a local pool, `plue token create`, `plue approve`):
//! - an approval step puts the run in `waiting` with no attempt; only a listed approver's
//!   token may decide it; the decision (who, when, why) is stored and the run resumes;
//! - a rejection fails the step with who rejected and why, and skips what depends on it;
//! - an approval nobody decides fails when its timeout passes;
//! - with `exclude_triggerer`, whoever started the run may not decide it.
//!
//! Each test owns a [`Sandbox`] whose drop kills every process it started; every wait has
//! a deadline.

use crate::support;
use std::process::Output;
use std::time::Duration;

use crate::support::{
    client, get_json, printed, run_view, start_run, step, wait_final, wait_for, wait_succeeded,
    Sandbox,
};
use serde_json::Value;

/// `plue token create NAME` on `engine`: the new token.
/// Makes user `name` with `plue user create` — an installation admin, since only admins
/// act on local runs — and a token of it with `plue token create --user`; the token.
fn make_token(sandbox: &Sandbox, engine: &str, name: &str) -> String {
    let created = sandbox
        .plue(&["user", "create", name, "--admin", "--server", engine])
        .output()
        .expect("plue user create");
    assert!(created.status.success(), "{}", printed(&created));
    let output = sandbox
        .plue(&[
            "token", "create", "laptop", "--user", name, "--server", engine,
        ])
        .output()
        .expect("plue token create");
    assert!(output.status.success(), "{}", printed(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `plue approve RUN STEP EXTRA...` as the holder of `token`.
fn approve(sandbox: &Sandbox, engine: &str, token: &str, run_id: i64, extra: &[&str]) -> Output {
    let run = run_id.to_string();
    let mut args = vec!["approve", run.as_str()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--server", engine]);
    sandbox
        .plue(&args)
        .env("PLUE_TOKEN", token)
        .output()
        .expect("plue approve")
}

/// Waits until step `id` of the run is `waiting`; returns the run view.
async fn wait_waiting(http: &reqwest::Client, engine: &str, run_id: i64, id: &str) -> Value {
    wait_for(
        Duration::from_secs(60),
        &format!("step {id} of run {run_id} to wait"),
        || async {
            let run = run_view(http, engine, run_id).await?;
            (step(&run, id)["status"] == "waiting").then_some(run)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_steps_wait_for_a_listed_approver_and_record_the_decision() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("approval");
    let ws = sandbox.path("ws");
    let approved = sandbox.write_workflow(
        "approved",
        &[
            "Step.bash('build', 'echo built')",
            "Step.approval('ship', message='Ship it?', approvers=['alice'], depends_on=['build'])",
            "Step.bash('deploy', 'echo deployed', depends_on=['ship'])",
        ],
    );
    let rejected = sandbox.write_workflow(
        "rejected",
        &[
            "Step.approval('ship')",
            "Step.bash('deploy', 'echo deployed', depends_on=['ship'])",
        ],
    );
    let expiring = sandbox.write_workflow("expiring", &["Step.approval('ship', timeout=1)"]);
    let guarded = sandbox.write_workflow(
        "guarded",
        &["Step.approval('ship', exclude_triggerer=True)"],
    );
    let http = client();
    let engine = sandbox.serve_local("1", &["--heartbeat-ms", "200"]).await;
    let url = engine.url.as_str();
    let alice = make_token(&sandbox, url, "alice");
    let bob = make_token(&sandbox, url, "bob");

    // Approved: waits with no attempt, refuses bob, takes alice's decision once.
    let run_id = start_run(&http, url, &approved, &ws).await;
    let run = wait_waiting(&http, url, run_id, "ship").await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(step(&run, "build")["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "ship")["attempts"], 0, "{run}");
    assert_eq!(step(&run, "deploy")["status"], "pending", "{run}");
    let refused = approve(&sandbox, url, &bob, run_id, &["ship"]);
    assert!(!refused.status.success(), "{}", printed(&refused));
    assert!(
        printed(&refused).contains("'bob' may not decide"),
        "{}",
        printed(&refused)
    );
    let run = run_view(&http, url, run_id).await.expect("the run");
    assert_eq!(step(&run, "ship")["status"], "waiting", "{run}");
    let done = approve(
        &sandbox,
        url,
        &alice,
        run_id,
        &["ship", "--comment", "looks good"],
    );
    assert!(done.status.success(), "{}", printed(&done));
    assert!(
        printed(&done).contains("approved by alice"),
        "{}",
        printed(&done)
    );
    let run = wait_succeeded(&http, url, run_id, Duration::from_secs(60)).await;
    assert_eq!(step(&run, "deploy")["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "ship")["reason"], "approved by alice", "{run}");
    let again = approve(&sandbox, url, &alice, run_id, &["ship", "--reject"]);
    assert!(!again.status.success(), "{}", printed(&again));
    assert!(
        printed(&again).contains("not waiting for a decision"),
        "{}",
        printed(&again)
    );
    let decisions = get_json(&http, &format!("{url}/api/runs/{run_id}/approvals")).await;
    let decisions = decisions.as_array().expect("a list");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["step_id"], "ship");
    assert_eq!(decisions[0]["decision"], "approved");
    assert_eq!(decisions[0]["decided_by"], "alice");
    assert_eq!(decisions[0]["comment"], "looks good");
    assert!(decisions[0]["decided_at"].as_i64().is_some_and(|t| t > 0));

    // Rejected: the step fails with who and why, its dependant is skipped.
    let run_id = start_run(&http, url, &rejected, &ws).await;
    wait_waiting(&http, url, run_id, "ship").await;
    let done = approve(
        &sandbox,
        url,
        support::ADMIN_TOKEN,
        run_id,
        &["ship", "--reject", "--comment", "not on a Friday"],
    );
    assert!(done.status.success(), "{}", printed(&done));
    let run = wait_final(&http, url, run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "ship")["status"], "failed", "{run}");
    assert_eq!(
        step(&run, "ship")["reason"],
        "rejected by admin: not on a Friday",
        "{run}"
    );
    assert_eq!(step(&run, "deploy")["status"], "skipped", "{run}");

    // Guarded: the admin token started the run, so it may not approve it; alice may.
    let run_id = start_run(&http, url, &guarded, &ws).await;
    wait_waiting(&http, url, run_id, "ship").await;
    let refused = approve(&sandbox, url, support::ADMIN_TOKEN, run_id, &["ship"]);
    assert!(!refused.status.success(), "{}", printed(&refused));
    assert!(
        printed(&refused).contains("'admin' started this run"),
        "{}",
        printed(&refused)
    );
    let done = approve(&sandbox, url, &alice, run_id, &["ship"]);
    assert!(done.status.success(), "{}", printed(&done));
    wait_succeeded(&http, url, run_id, Duration::from_secs(60)).await;

    // Undecided: fails when its timeout passes.
    let run_id = start_run(&http, url, &expiring, &ws).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(
        step(&run, "ship")["reason"],
        "no decision before the approval timed out",
        "{run}"
    );
}
