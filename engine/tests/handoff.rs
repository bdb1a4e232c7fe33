//! End-to-end tests of step hand-off and artifacts through the real `plue` binary:
//! - a builder edits a file and writes `dist/out.txt`; a reviewer with `workspace_from`
//!   starts from the builder's final workspace (it sees the edit); a third step with
//!   `needs_artifacts` gets a fresh checkout plus `dist/out.txt`; the artifacts are listed
//!   and downloadable through the API (one file, or the step's tar), and `plue runs --json`
//!   and `plue run --summary-json` include them;
//! - a step whose artifacts pass `--artifacts-max-bytes` fails with a reason saying so;
//! - with `--artifacts-url s3://...` the hand-off goes through an S3-compatible bucket
//!   (moto's server from PyPI, in a virtual environment built as the deployment tests'
//!   is). Without network access to PyPI that test says why and passes, unless
//!   `PLUE_REQUIRE_S3=1`.

use crate::python;
use crate::support;
use std::time::Duration;

use crate::support::{client, free_port, get_json, start_run, step, wait_final, Sandbox};
use serde_json::Value;

/// The builder edits `src.txt` and keeps `dist/**` and `report.json`; the reviewer starts
/// from its workspace; the shipper gets its artifacts into a fresh copy.
const PIPELINE: &str = r#"def workflow():
    return Plan(name='handoff', triggers=[Trigger.manual()], steps=[
        Step.bash('build', "echo edited > src.txt && mkdir -p dist && echo built > dist/out.txt && echo '{\"ok\": true}' > report.json",
                  artifacts=['dist/**', 'report.json']),
        Step.bash('review', 'test "$(cat src.txt)" = edited && test -f dist/out.txt && echo review saw the edit',
                  depends_on=['build'], workspace_from='build'),
        Step.python('ship', "out = open('dist/out.txt').read().strip()\nsrc = open('src.txt').read().strip()\nassert (out, src) == ('built', 'original'), (out, src)\nprint('ship got', out)",
                    depends_on=['build'], needs_artifacts=['build']),
    ])
"#;

const TOO_BIG: &str = r#"def workflow():
    return Plan(name='too-big', triggers=[Trigger.manual()], steps=[
        Step.bash('big', 'head -c 200000 /dev/zero > big.bin', artifacts=['big.bin']),
    ])
"#;

fn workspace(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write("ws/src.txt", "original\n");
    sandbox.write("ws/handoff.plue.py", PIPELINE);
    sandbox.write("ws/too_big.plue.py", TOO_BIG);
    sandbox.path("ws")
}

/// Checks a finished run of [`PIPELINE`] and its artifacts through the API.
async fn check_pipeline(http: &reqwest::Client, url: &str, run: &Value) {
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    for id in ["build", "review", "ship"] {
        assert_eq!(step(run, id)["status"], "succeeded", "{run}");
    }
    let listed = get_json(http, &format!("{url}/api/runs/{run_id}/artifacts")).await;
    let names: Vec<(&str, &str, i64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["step"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                a["size"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("build", "dist/out.txt", 6), ("build", "report.json", 13)],
        "{listed}"
    );
    assert!(listed[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    let file_url = format!("{url}{}", listed[0]["url"].as_str().unwrap());
    let body = http.get(&file_url).send().await.unwrap();
    assert!(body.status().is_success(), "{file_url}: {}", body.status());
    assert_eq!(body.text().await.unwrap(), "built\n");

    let missing = http
        .get(format!(
            "{url}/api/runs/{run_id}/steps/build/artifacts/src.txt"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "only listed files are served");

    let tar = http
        .get(format!("{url}/api/runs/{run_id}/steps/build/artifacts"))
        .send()
        .await
        .unwrap();
    assert!(tar.status().is_success());
    let bytes = tar.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, ["dist/out.txt", "report.json"]);
}

async fn review_log(http: &reqwest::Client, url: &str, run_id: i64) -> String {
    let lines = support::log_lines(http, url, run_id, "review")
        .await
        .unwrap_or_default();
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_starts_from_a_dependency_workspace_and_artifacts_are_kept() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("handoff");
    let ws = workspace(&sandbox);
    let http = client();
    let extra = ["--heartbeat-ms", "200", "--artifacts-max-bytes", "65536"];
    let engine = sandbox.serve_local("2", &extra).await;
    let url = engine.url.as_str();

    let run_id = start_run(&http, url, &ws.join("handoff.plue.py"), &ws).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(120)).await;
    check_pipeline(&http, url, &run).await;
    assert!(
        review_log(&http, url, run_id)
            .await
            .contains("review saw the edit"),
        "{}",
        sandbox.diagnostics()
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("src.txt")).unwrap(),
        "original\n",
        "the workspace a run was started from is never written"
    );

    // `plue runs --json` lists the run with its artifacts.
    let output = sandbox
        .plue(&["runs", "--json", "--server", url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let runs: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run_id)
        .unwrap_or_else(|| panic!("{runs}"));
    assert_eq!(listed["artifacts"].as_array().unwrap().len(), 2, "{listed}");

    // Over the per-step limit: the step fails and says why.
    let big = start_run(&http, url, &ws.join("too_big.plue.py"), &ws).await;
    let run = wait_final(&http, url, big, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let reason = step(&run, "big")["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("artifacts") && reason.contains("larger than the limit of 64 KiB"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_run_summary_json_lists_the_artifacts() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("handoff-run");
    let ws = workspace(&sandbox);
    let summary = sandbox.path("summary.json");
    let workflow = ws.join("handoff.plue.py");
    let output = sandbox
        .plue_run_with_summary(workflow.to_str().unwrap(), "2", &[])
        .current_dir(&ws)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let artifacts: Vec<&str> = summary["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(artifacts, ["dist/out.txt", "report.json"], "{summary}");
}

/// moto's S3 server from PyPI, pinned.
const MOTO: &[&str] = &["moto[server]==5.2.5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_offs_go_through_an_s3_bucket() {
    let _serial = support::serial().await;
    let python = match python::try_venv("moto-venv", MOTO) {
        Ok(python) => python,
        Err(why) if std::env::var("PLUE_REQUIRE_S3").as_deref() != Ok("1") => {
            eprintln!("skipping the S3 test (PLUE_REQUIRE_S3=1 makes this an error): {why}");
            return;
        }
        Err(why) => panic!("PLUE_REQUIRE_S3=1 but {why}"),
    };
    let sandbox = Sandbox::new("handoff-s3");
    let ws = workspace(&sandbox);
    let port = free_port();
    // `-m`: the venv was renamed into place, so its scripts' `#!` lines point elsewhere.
    let mut command = std::process::Command::new(&python);
    command.args([
        "-m",
        "moto.server",
        "-p",
        &port.to_string(),
        "-H",
        "127.0.0.1",
    ]);
    sandbox.spawn("moto", command);
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = client();
    support::wait_for(Duration::from_secs(30), "moto to answer", || async {
        http.put(format!("{endpoint}/plue-test"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;

    let extra = [
        "--heartbeat-ms",
        "200",
        "--artifacts-url",
        "s3://plue-test/ci/blobs",
    ];
    let engine = sandbox
        .serve_local_with_env(
            "2",
            &extra,
            &[
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
        )
        .await;
    let url = engine.url.as_str();
    let run_id = start_run(&http, url, &ws.join("handoff.plue.py"), &ws).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(120)).await;
    check_pipeline(&http, url, &run).await;

    // The blobs are in the bucket, under the prefix, and not on the local disk.
    let listing =
        support::send_text(http.get(format!("{endpoint}/plue-test?list-type=2&prefix=ci/blobs/")))
            .await;
    // Each upload has its own key: the ids, then a random suffix.
    for kind in ["workspace", "artifacts"] {
        assert!(
            listing.contains(&format!("ci/blobs/runs/{run_id}/build/1/{kind}-")),
            "{listing}"
        );
    }
    assert_eq!(listing.matches(".tar</Key>").count(), 2, "{listing}");
    assert!(!sandbox.path("data").join("artifacts").exists());
}
