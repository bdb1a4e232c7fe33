//! "Re-run failed steps", end to end:
//! - against `plue serve` with a local runner: a run whose `test` step fails is re-run
//!   with `plue rerun RUN --failed`; the new run carries `build` and `lint` over (their
//!   outputs say they ran in the first run, no attempt of theirs in the second), runs
//!   `test` and the step after it again, and that step starts from the carried `build`'s
//!   workspace; the carried `build`'s artifacts are listed under the new run. A run with
//!   nothing failed, an unknown option and the CLI's flag beside `--replay` are refused;
//! - per role, on a repository's run: the anonymous, a stranger and a reader cannot
//!   re-run its failed steps (401, 404, 403), a writer and the admin can; a run that has
//!   not ended is a 409. The dashboard offers the button to the writer, not the reader,
//!   and refuses the reader's post and a post with a forged CSRF token.

use crate::support;
use std::time::Duration;

use crate::support::{client, start_run, step, wait_final, wait_succeeded, Sandbox, ADMIN_TOKEN};
use plue_types::status::RunState;
use serde_json::Value;

/// `build` keeps a file and an output naming the run it ran in; `test` fails until the
/// flag file exists; `package` starts from `build`'s workspace.
fn workflow(flag: &str) -> String {
    format!(
        "def workflow():\n    return Plan(name='ci', triggers=[Trigger.manual()], steps=[\n        \
         Step.bash('build', 'echo \"built=$PLUE_RUN_ID\" >> $PLUE_OUTPUT; echo \"from run $PLUE_RUN_ID\" > out.txt', artifacts=['out.txt']),\n        \
         Step.bash('lint', 'echo \"linted=$PLUE_RUN_ID\" >> $PLUE_OUTPUT'),\n        \
         Step.bash('test', 'echo \"tested=$PLUE_RUN_ID\" >> $PLUE_OUTPUT; [ -s {flag} ] || exit 3', depends_on=['build']),\n        \
         Step.bash('package', 'cat out.txt', depends_on=['build', 'test'], workspace_from='build'),\n    ])\n"
    )
}

async fn post(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.post(url).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_failed_steps_and_those_after_them_run_again() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("rerun-failed");
    let flag = sandbox.shared("flag");
    let workflow = sandbox.write(
        "ws/ci.plue.py",
        &workflow(flag.to_str().expect("a UTF-8 path")),
    );
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    let http = client();
    let url = engine.url.as_str();
    let first = start_run(&http, url, &workflow, &sandbox.path("ws")).await;
    let run = wait_final(&http, url, first, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "test")["exit_code"], 3, "{run}");
    assert_eq!(step(&run, "package")["status"], "skipped", "{run}");

    // Fixed; re-run the failed steps from the CLI.
    std::fs::write(&flag, "fixed").unwrap();
    let out = sandbox
        .plue(&["rerun", &first.to_string(), "--failed", "--server", url])
        .env("PLUE_TOKEN", ADMIN_TOKEN)
        .output()
        .expect("plue rerun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: i64 = stdout
        .strip_prefix("run ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {stdout:?}"));
    assert!(
        stdout.contains(&format!("re-run of the failed steps of {first}")),
        "{stdout}"
    );
    let run = wait_succeeded(&http, url, second, Duration::from_secs(60)).await;
    assert_eq!(run["rerun_of"], first, "{run}");
    // Carried: the outputs of the first run, no attempt here, and the reason says so.
    for (id, key) in [("build", "built"), ("lint", "linted")] {
        let carried = step(&run, id);
        assert_eq!(carried["status"], "succeeded", "{carried}");
        assert_eq!(carried["attempts"], 0, "{carried}");
        assert_eq!(carried["outputs"][key], first.to_string(), "{carried}");
        assert_eq!(
            carried["reason"],
            format!("carried over from run #{first}"),
            "{carried}"
        );
    }
    // Ran again, in the new run.
    let tested = step(&run, "test");
    assert_eq!(tested["attempts"], 1, "{tested}");
    assert_eq!(tested["outputs"]["tested"], second.to_string(), "{tested}");
    assert_eq!(step(&run, "package")["status"], "succeeded", "{run}");
    // `package` started from the carried build's workspace (the first run's file).
    let lines = support::log_lines(&http, url, second, "package")
        .await
        .expect("package's log");
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert!(
        texts.contains(&format!("from run {first}").as_str()),
        "{texts:?}"
    );
    // The carried build's artifacts are the new run's too.
    let artifacts = support::get_json(&http, &format!("{url}/api/runs/{second}/artifacts")).await;
    assert!(
        artifacts.as_array().is_some_and(|files| files
            .iter()
            .any(|f| f["step"] == "build" && f["name"] == "out.txt")),
        "{artifacts}"
    );

    // Nothing failed in the second run: refused, saying so.
    let (status, body) = post(&http, &format!("{url}/api/runs/{second}/rerun?failed=true")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("no failed or cancelled step"),
        "{body}"
    );
    // An unknown option or value is a 400, never a full re-run.
    for query in ["failed=yes", "only=failed"] {
        let (status, body) = post(&http, &format!("{url}/api/runs/{first}/rerun?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    // The CLI's flag does not mix with --replay.
    let out = sandbox
        .plue(&[
            "rerun",
            &first.to_string(),
            "--failed",
            "--replay",
            "--step",
            "test",
        ])
        .output()
        .expect("plue rerun");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const REGISTRATION: &str = "registration-token-of-the-rerun-tests";
const ADMIN: &str = "admin-token-of-the-rerun-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writers_rerun_failed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::admin_config(REGISTRATION, ADMIN);
    config.mirrors_dir = dir.path().join("mirrors");
    let engine = support::start_in_process(&dir.path().join("data"), config).await;
    let store = engine.executor.store();
    let repo_id = support::create_repo(store).await;
    // No runner: the run stays queued (a 409), then is cancelled, so its steps are.
    let plan = support::plan(
        "ci",
        vec![
            support::bash_step("a", "true"),
            support::bash_step("b", "true").after(&["a"]),
        ],
    );
    let run = support::start_repo_run(&engine.executor, "acme/app", repo_id, &plan).await;
    let (_, _, reader) = support::user_with_token(store, "rita", &[(repo_id, "reader")]).await;
    let (_, _, writer) = support::user_with_token(store, "walt", &[(repo_id, "writer")]).await;
    let (_, _, stranger) = support::user_with_token(store, "sam", &[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/runs/{run}/rerun?failed=true", engine.url);
    let as_ = |token: Option<&str>| {
        let request = http.post(&url);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.expect("POST");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let (status, body) = as_(Some(&writer)).await;
    assert_eq!(status, 409, "a live run: {body}");
    assert!(body.contains("once it has ended"), "{body}");
    assert!(engine.executor.cancel(run).await.unwrap());
    support::wait_for(
        Duration::from_secs(10),
        "the run to be cancelled",
        || async {
            let row = store.run(run).await.unwrap()?;
            (row.status == RunState::Cancelled).then_some(())
        },
    )
    .await;
    for (who, token, expected) in [
        ("the anonymous", None, 401),
        ("a stranger", Some(stranger.as_str()), 404),
        ("a reader", Some(reader.as_str()), 403),
    ] {
        let (status, body) = as_(token).await;
        assert_eq!(status, expected, "{who}: {body}");
    }
    // The dashboard offers the button to writers only, and refuses a reader's post.
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (token, offered) in [(reader.as_str(), false), (writer.as_str(), true)] {
        let cookie = support::dashboard_session(&engine.url, token).await;
        let page = support::send_text(
            web.get(format!("{}/runs/{run}", engine.url))
                .header(reqwest::header::COOKIE, &cookie),
        )
        .await;
        assert_eq!(page.contains("id=\"rerun-failed\""), offered, "{page}");
        let csrf = cookie
            .split("; ")
            .find_map(|pair| pair.strip_prefix("plue_csrf="))
            .expect("a CSRF cookie");
        // The reader with the right token, the writer with a forged one: both refused.
        let csrf = if offered { "forged" } else { csrf };
        let posted = web
            .post(format!("{}/runs/{run}/rerun-failed", engine.url))
            .header(reqwest::header::COOKIE, &cookie)
            .header(reqwest::header::ORIGIN, &engine.url)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 403, "offered: {offered}");
    }
    let runs_before = store.list_runs(100).await.unwrap().len();
    assert_eq!(runs_before, 1, "a refused re-run started nothing");
    for token in [writer.as_str(), ADMIN] {
        let (status, body) = as_(Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let created: Value = serde_json::from_str(&body).unwrap();
        let new = created["run_id"].as_i64().unwrap();
        let row = store.run(new).await.unwrap().unwrap();
        assert_eq!(row.rerun_of, Some(run));
        // Both steps were cancelled: both run again (nothing to carry).
        let steps = store.step_states(new).await.unwrap();
        assert!(
            steps.iter().all(|s| s.attempts == 0 && s.reason.is_none()),
            "{steps:?}"
        );
    }
}
