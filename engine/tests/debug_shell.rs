//! `plue debug RUN STEP`, end to end: an in-process engine (the `plue serve` code) with
//! repository `acme/app`, its secret `SECRET_X`, users of every role, and a real local
//! `plue runner` (root here, so steps run as step users), driven through the public API
//! the CLI uses — and once through `plue debug` itself.
//!
//! What is played: a scripted session (the shell answers as the step's uid, in the step's
//! workspace, with the step's secret — masked, as in logs — and without one the step did
//! not have); the idle timeout ending a session and the runner removing the sandbox;
//! who may open and attach (per role, anonymous, another writer, the same user with
//! another token); and an attacker guessing or reusing a session id, or feeding the stream
//! from a runner that did not claim the session.
//!
//! Why one file past ~600 lines: the debug shell's scripted session, confinement, timeouts,
//! roles and attacks all run on one engine-and-root-runner fixture.

use crate::support;
use std::time::Duration;

use base64::Engine as _;
use evaluator::plan::Step;
use plue_types::status::DebugSessionStatus;
use serde_json::{json, Value};

const ADMIN: &str = support::ADMIN_TOKEN;
const KEY: &str = "a vault key long enough for the debug shell tests";
const SECRET: &str = "s3cr3t-of-the-debug-shell";
const LIMIT: Duration = Duration::from_secs(90);

/// The engine with `acme/app` and its secret, and one local runner (its pid).
type Harness = support::RepoEngine<u32>;

/// A user's token.
struct Person {
    token: String,
}

/// The engine with `acme/app` and its secret, and one local runner.
async fn start(name: &str) -> Harness {
    let h = Harness::with_local_runner(name, KEY, "debug-runner").await;
    let secret = Some(json!({ "value": SECRET }));
    let path = "/api/repos/acme/app/secrets/SECRET_X";
    h.call_ok(ADMIN, "PUT", path, secret, 204).await;
    h
}

impl Harness {
    async fn person(&self, name: &str, role: Option<&str>) -> Person {
        let roles: Vec<(i64, &str)> = role.map(|r| (self.repo_id, r)).into_iter().collect();
        let (_, _, token) = support::user_with_token(self.store(), name, &roles).await;
        Person { token }
    }

    /// A run of `steps` on `acme/app`, waited for until it is final.
    async fn failed_run(&self, steps: Vec<Step>) -> i64 {
        let plan = support::plan("ci", steps);
        let run =
            support::start_repo_run(&self.engine.executor, "acme/app", self.repo_id, &plan).await;
        self.wait_run(run, LIMIT).await;
        run
    }

    async fn type_in(&self, token: &str, session: &str, text: &str) -> (u16, Value) {
        let data = base64::engine::general_purpose::STANDARD.encode(text);
        self.call(
            token,
            "POST",
            &format!("/api/debug/{session}/input"),
            Some(json!({ "data": data })),
        )
        .await
    }
}

/// The failing step: prints its uid and directory, holds `SECRET_X` when `with_secret`.
fn failing_step(id: &str, with_secret: bool) -> Step {
    let mut step = support::bash_step(
        id,
        "echo \"step-uid=$(id -u)\"; echo \"step-pwd=$(pwd)\"; echo built > out.txt; exit 3",
    );
    if with_secret {
        step.secrets = vec!["SECRET_X".into()];
    }
    step
}

/// The value after `key=` on a line of `text` that starts with it (terminal escapes
/// aside): an answer, not the echo of the command that asked.
fn answer<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    text.lines().find_map(|line| {
        let mut line = line.trim_matches('\r');
        // Bracketed-paste and other CSI sequences bash writes before an answer, and the
        // carriage returns between them.
        while let Some(rest) = line.strip_prefix("\u{1b}[") {
            let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
            line = rest[end + 1..].trim_start_matches('\r');
        }
        line.strip_prefix(&prefix)
    })
}

fn debug_dirs(h: &Harness) -> Vec<String> {
    std::fs::read_dir(h.sandbox.path("work-debug-runner"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("debug-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_answers_as_the_step_in_its_workspace_with_its_secrets() {
    let _serial = support::serial().await;
    let h = start("debug-scripted").await;
    let writer = h.person("wendy", Some("writer")).await;
    let run = h
        .failed_run(vec![
            failing_step("build", true),
            failing_step("plain", false),
        ])
        .await;

    for (step, secret_shown) in [("build", "[***]"), ("plain", "[]")] {
        let id = h.open_debug_ok(&writer.token, run, step, 60).await;
        assert_eq!(id.len(), 32);
        let stream = h.attach(&writer.token, &id).await;
        let script = "echo \"uid=$(id -u)\"; echo \"pwd=$(pwd)\"; echo \"secret=[$SECRET_X]\"; \
                      echo \"kept=$(cat out.txt)\"; exit 7\n";
        let said = h
            .transcript(&writer.token, &id, stream, Some(script), LIMIT)
            .await;
        let text = &said.text;
        let step_uid = answer(text, "step-uid").unwrap_or_else(|| panic!("no step uid in {text}"));
        let uid = answer(text, "uid").unwrap_or_else(|| panic!("no uid in {text}"));
        assert_eq!(uid, step_uid, "{text}");
        assert_ne!(uid, "0", "the shell ran as root: {text}");
        let step_pwd = answer(text, "step-pwd").unwrap();
        assert_eq!(answer(text, "pwd"), Some(step_pwd), "{text}");
        assert!(step_pwd.ends_with("/workspace"), "{text}");
        // The step's own run wrote out.txt: the shell is in the workspace it left.
        assert_eq!(answer(text, "kept"), Some("built"), "{text}");
        assert_eq!(answer(text, "secret"), Some(secret_shown), "{text}");
        assert!(!text.contains(SECRET), "the secret showed in clear: {text}");
        assert!(text.contains("failed again: exit code 3"), "{text}");
        assert_eq!(
            said.reason().as_deref(),
            Some("the shell exited with code 7"),
            "{text}"
        );
        // The runner removed the sandbox and the workspace before it reported the end.
        assert!(
            debug_dirs(&h).is_empty(),
            "left behind: {:?}",
            debug_dirs(&h)
        );
        let (_, row) = h
            .call(&writer.token, "GET", &format!("/api/debug/{id}"), None)
            .await;
        assert_eq!(row["status"], "ended");
    }
    // Opening and ending are in the audit trail, with who opened it.
    let (_, audit) = h.call(ADMIN, "GET", "/api/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions.iter().filter(|a| **a == "debug.open").count(),
        2,
        "{audit}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "debug.end").count(),
        2,
        "{audit}"
    );
}

// The shell is confined like the step: no_new_privs, the seccomp filter, its own cgroup,
// its network policy (`none`: the engine's port on the host's loopback is out of reach),
// and a private /proc showing only its own processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_is_confined_like_the_step() {
    let _serial = support::serial().await;
    let h = start("debug-confined").await;
    let writer = h.person("wendy", Some("writer")).await;
    let mut step = failing_step("isolated", false);
    step.network = Some(evaluator::network::Network::None);
    let run = h.failed_run(vec![step]).await;
    let id = h.open_debug_ok(&writer.token, run, "isolated", 60).await;
    let port = h.engine.url.rsplit(':').next().unwrap().to_owned();
    let script = format!(
        "echo \"nnp=$(grep NoNewPrivs /proc/self/status | tr -dc 0-9)\"; \
         echo \"seccomp=$(grep '^Seccomp:' /proc/self/status | tr -dc 0-9)\"; \
         (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo \"net=open\" || echo \"net=closed\"; \
         echo \"cgroup=$(cut -d: -f3 /proc/self/cgroup)\"; \
         echo \"procs=$(ls /proc | grep -c '^[0-9]')\"; exit 0\n"
    );
    let stream = h.attach(&writer.token, &id).await;
    let said = h
        .transcript(&writer.token, &id, stream, Some(&script), LIMIT)
        .await;
    let text = &said.text;
    assert_eq!(answer(text, "nnp"), Some("1"), "{text}");
    assert_eq!(answer(text, "seccomp"), Some("2"), "{text}");
    assert_eq!(
        answer(text, "net"),
        Some("closed"),
        "the shell reached the host: {text}"
    );
    let cgroups = &text[text.rfind("cgroup=").unwrap()..];
    assert!(
        cgroups.contains("/plue-step-"),
        "the shell is not in a step cgroup: {text}"
    );
    // bash, the command substitution's processes: a handful, never the host's.
    let procs: u32 = answer(text, "procs").unwrap().parse().unwrap();
    assert!(procs < 10, "the shell sees {procs} processes: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_and_the_runner_removes_its_sandbox() {
    let _serial = support::serial().await;
    let h = start("debug-idle").await;
    let writer = h.person("wendy", Some("writer")).await;
    let run = h.failed_run(vec![failing_step("build", false)]).await;
    let id = h.open_debug_ok(&writer.token, run, "build", 5).await;
    let stream = h.attach(&writer.token, &id).await;
    let said = h.transcript(&writer.token, &id, stream, None, LIMIT).await;
    let reason = said
        .reason()
        .unwrap_or_else(|| panic!("no end: {}", said.text));
    assert!(reason.contains("idle for 5s"), "{reason}");
    support::wait_for(Duration::from_secs(20), "the sandbox to go", || async {
        debug_dirs(&h).is_empty().then_some(())
    })
    .await;
    // A session nobody attaches to ends too.
    let (_, again) = h.open_debug(&writer.token, run, "build", 5).await;
    let id = again["id"].as_str().unwrap().to_owned();
    support::wait_for(
        Duration::from_secs(30),
        "the detached session to end",
        || async {
            let (_, row) = h
                .call(&writer.token, "GET", &format!("/api/debug/{id}"), None)
                .await;
            (row["status"] == "ended").then_some(row)
        },
    )
    .await;
}

// Ending a session while its step still runs again stops the step there and then: the
// runner hears it on its input poll, not only once a shell is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_stops_the_step_running_again() {
    let _serial = support::serial().await;
    let h = start("debug-stop").await;
    let writer = h.person("wendy", Some("writer")).await;
    let mark = h.sandbox.path("slow-now");
    let step = support::bash_step(
        "build",
        &format!("if [ -e '{}' ]; then sleep 120; fi; exit 1", mark.display()),
    );
    let run = h.failed_run(vec![step]).await;
    std::fs::write(&mark, "").unwrap();
    let id = h.open_debug_ok(&writer.token, run, "build", 300).await;
    support::wait_for(LIMIT, "the runner to run the step again", || async {
        let (_, row) = h
            .call(&writer.token, "GET", &format!("/api/debug/{id}"), None)
            .await;
        (row["status"] == "claimed" && !debug_dirs(&h).is_empty()).then_some(())
    })
    .await;
    let ended_at = std::time::Instant::now();
    let (status, _) = h
        .call(&writer.token, "DELETE", &format!("/api/debug/{id}"), None)
        .await;
    assert_eq!(status, 200);
    support::wait_for(Duration::from_secs(30), "the sandbox to go", || async {
        debug_dirs(&h).is_empty().then_some(())
    })
    .await;
    assert!(
        ended_at.elapsed() < Duration::from_secs(30),
        "the step ran on for {:?}",
        ended_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writers_open_and_only_the_creator_attaches() {
    let _serial = support::serial().await;
    let h = start("debug-roles").await;
    let reader = h.person("rita", Some("reader")).await;
    let writer = h.person("wendy", Some("writer")).await;
    let other_writer = h.person("walt", Some("writer")).await;
    let maintainer = h.person("mia", Some("maintainer")).await;
    let stranger = h.person("sam", None).await;
    let mut prod = failing_step("deploy", false);
    prod.environment = Some("prod".into());
    let run = h
        .failed_run(vec![
            failing_step("build", false),
            support::bash_step("ok", "true"),
        ])
        .await;

    let (status, body) = h.open_debug("", run, "build", 60).await;
    assert_eq!(status, 401, "anonymous: {body}");
    let (status, body) = h.open_debug(&stranger.token, run, "build", 60).await;
    assert_eq!(status, 404, "no role: {body}");
    let (status, body) = h.open_debug(&reader.token, run, "build", 60).await;
    assert_eq!(status, 403, "reader: {body}");
    let (status, body) = h.open_debug(&writer.token, run, "ok", 60).await;
    assert_eq!(status, 409, "a step that succeeded: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only a failed step"),
        "{body}"
    );

    let admin = ADMIN.to_owned();
    for (who, token) in [
        ("writer", &writer.token),
        ("maintainer", &maintainer.token),
        ("admin", &admin),
    ] {
        let (status, session) = h.open_debug(token, run, "build", 60).await;
        assert_eq!(status, 201, "{who}: {session}");
        let id = session["id"].as_str().unwrap().to_owned();
        // One session per step at a time.
        let (status, body) = h.open_debug(token, run, "build", 60).await;
        assert_eq!(status, 409, "{who}: {body}");
        // Nobody but the credential that opened it sees or attaches to it: the same 404
        // as for a session that does not exist.
        for (intruder, their) in [
            ("another writer", &other_writer.token),
            ("the reader", &reader.token),
        ] {
            if their == token {
                continue;
            }
            let response = h.attach(their, &id).await;
            assert_eq!(
                response.status(),
                404,
                "{intruder} attached to {who}'s session"
            );
            let (status, _) = h.type_in(their, &id, "id\n").await;
            assert_eq!(status, 404, "{intruder} typed into {who}'s session");
            let (status, _) = h
                .call(their, "DELETE", &format!("/api/debug/{id}"), None)
                .await;
            assert_eq!(status, 404, "{intruder} ended {who}'s session");
        }
        let response = h.attach("", &id).await;
        assert_eq!(response.status(), 401, "anonymous attached");
        // The creator attaches once; a second attach is refused while the first is on.
        let first = h.attach(token, &id).await;
        assert_eq!(first.status(), 200);
        let second = h.attach(token, &id).await;
        assert_eq!(second.status(), 409, "{who}: a second attach");
        drop(first);
        let (status, ended) = h
            .call(token, "DELETE", &format!("/api/debug/{id}"), None)
            .await;
        assert_eq!(
            (status, ended["status"].as_str()),
            (200, Some("ended")),
            "{ended}"
        );
        support::wait_for(LIMIT, "the runner to let the session go", || async {
            debug_dirs(&h).is_empty().then_some(())
        })
        .await;
    }
    // The same user with another token is not the creator either.
    let (_, _, wendys_other_token) = support::user_with_token(h.store(), "wendy", &[]).await;
    let id = h.open_debug_ok(&writer.token, run, "build", 60).await;
    assert_eq!(h.attach(&wendys_other_token, &id).await.status(), 404);
    h.call(&writer.token, "DELETE", &format!("/api/debug/{id}"), None)
        .await;

    // A step in an environment: its secrets are the maintainers' to hand out.
    let env_run = h.failed_run(vec![prod]).await;
    let (status, body) = h.open_debug(&writer.token, env_run, "deploy", 60).await;
    assert_eq!(
        status, 403,
        "a writer debugging an environment's step: {body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("maintainer"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_or_reused_ids_and_runners_that_did_not_claim_reach_nothing() {
    let _serial = support::serial().await;
    let h = start("debug-attacker").await;
    let writer = h.person("wendy", Some("writer")).await;
    let run = h.failed_run(vec![failing_step("build", true)]).await;
    // A runner of the engine's own, which never claimed the session.
    let rogue =
        support::register_runner(&h.http, &h.engine.url, support::RUNNER_TOKEN, "rogue").await;

    let id = h.open_debug_ok(&writer.token, run, "build", 60).await;
    let stream = h.attach(&writer.token, &id).await;
    assert_eq!(stream.status(), 200);
    // The rogue runner feeds the stream, reads the input, reports the end: all 404.
    for (path, body) in [
        (format!("/internal/debug/{id}/output?seq=1"), None),
        (
            format!("/internal/debug/{id}/input"),
            Some(json!({"after": 0, "wait_ms": 0})),
        ),
        (format!("/internal/debug/{id}/ready"), None),
        (
            format!("/internal/debug/{id}/end"),
            Some(json!({"reason": "forged"})),
        ),
    ] {
        let mut request = h
            .http
            .post(format!("{}{path}", h.engine.url))
            .bearer_auth(&rogue);
        request = match body {
            Some(body) => request.json(&body),
            None => request.body("uid=0 FORGED"),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "the rogue runner reached {path}");
    }
    // A user token on the runner protocol, and a runner token on the API: refused.
    let response = h
        .http
        .post(format!("{}/internal/debug/{id}/output?seq=1", h.engine.url))
        .bearer_auth(&writer.token)
        .body("FORGED")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(h.attach(&rogue, &id).await.status(), 401);

    let script = "echo \"uid=$(id -u)\"; exit 0\n";
    let said = h
        .transcript(&writer.token, &id, stream, Some(script), LIMIT)
        .await;
    assert!(
        !said.text.contains("FORGED"),
        "the rogue's bytes reached the terminal: {}",
        said.text
    );
    assert_eq!(
        said.reason().as_deref(),
        Some("the shell exited with code 0"),
        "{}",
        said.text
    );

    // Guessed ids: well-formed or not, the same 404 as any missing session.
    for guess in [
        "0123456789abcdef0123456789abcdef".to_owned(),
        // The real id with its last digit changed (never the id itself: one in 16 ends in 0).
        format!("{}{}", &id[..31], if id.ends_with('0') { '1' } else { '0' }),
        "../../runs/1".to_owned(),
        id.to_uppercase(),
    ] {
        let response = h.attach(&writer.token, &guess).await;
        assert!(
            matches!(response.status().as_u16(), 404),
            "attach {guess}: {}",
            response.status()
        );
        let (status, _) = h.type_in(&writer.token, &guess, "id\n").await;
        assert_eq!(status, 404, "input to {guess}");
    }
    // A reused id: the session is over, and stays over.
    let response = h.attach(&writer.token, &id).await;
    assert_eq!(response.status(), 409);
    let (status, _) = h.type_in(&writer.token, &id, "id\n").await;
    assert_eq!(status, 409);
    // The runner that claimed it cannot bring it back either (its claim ended with it).
    let row = h.store().debug_session(&id).await.unwrap().unwrap();
    assert_eq!(row.status, DebugSessionStatus::Ended);

    // A token revoked while attached: the session ends with it, within seconds.
    let (_, token_id, token) = support::user_with_token(h.store(), "wendy", &[]).await;
    let id = h.open_debug_ok(&token, run, "build", 60).await;
    let stream = h.attach(&token, &id).await;
    let (status, body) = h
        .call(ADMIN, "DELETE", &format!("/api/tokens/{token_id}"), None)
        .await;
    assert!(status < 300, "revoking: {status} {body}");
    let said = h.transcript(&token, &id, stream, None, LIMIT).await;
    assert_eq!(
        said.reason().as_deref(),
        Some("its creator's token is no longer valid"),
        "{}",
        said.text
    );
    let row = h.store().debug_session(&id).await.unwrap().unwrap();
    assert_eq!(row.status, DebugSessionStatus::Ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_debug_relays_a_piped_session_and_exits_with_its_end() {
    let _serial = support::serial().await;
    let h = start("debug-cli").await;
    let writer = h.person("wendy", Some("writer")).await;
    let run = h.failed_run(vec![failing_step("build", false)]).await;
    let mut command = h.sandbox.plue(&[
        "debug",
        &run.to_string(),
        "build",
        "--idle-timeout",
        "60s",
        "--server",
        &h.engine.url,
    ]);
    command
        .env("PLUE_TOKEN", &writer.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"echo \"uid=$(id -u)\"; exit 5\n").unwrap();
        // Kept open until the session ends: EOF on a pipe is not the end.
        std::mem::forget(stdin);
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let uid = answer(&stdout, "uid").unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    assert_ne!(uid, "0");
    assert!(
        stderr.contains("debug session ended: the shell exited with code 5"),
        "{stderr}"
    );
}

#[test]
fn answers_skip_the_echoed_command() {
    let text = "$ echo \"uid=$(id -u)\"\r\n\u{1b}[?2004l\ruid=1234\r\n";
    assert_eq!(answer(text, "uid"), Some("1234"));
}
