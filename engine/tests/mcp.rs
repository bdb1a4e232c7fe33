//! End to end: `plue lock` and `plue run` on workflows whose `llm` step uses MCP servers,
//! against the scripted Messages API (`testkit::claude`). The test servers are
//! `testkit/mcp/` (Python, standard library); npm's reference servers and one written with
//! the Python SDK come from `scripts/mcp/install.sh` (`PLUE_MCP_*`; required when
//! `PLUE_REQUIRE_MCP=1`, as in CI).
//!
//! What is checked, as an attacker would try it: only the allow-listed tools reach the
//! model (a tool the server hides behind the list is neither shown nor callable); the
//! server runs in the step's room (another uid, only loopback, its own `/tmp`), so under the
//! default `network="none"` it reaches nothing; a secret it returns is masked before the
//! model or the log sees it; a definition that changed after `plue lock` (a rug pull) or one
//! never pinned fails the step before the model is asked anything; and a server that leaves
//! a daemon behind does not outlive its step.

use crate::support;
use std::path::{Path, PathBuf};

use crate::support::mcp::{lock, result_of, root, run, test_server, tool_names, write_workflow};
use crate::support::Sandbox;
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Turn};

const SECRET: &str = "deploy-tok-5e4d3c2b1a09";

#[test]
fn an_agent_uses_only_its_allowed_mcp_tools_inside_the_steps_room() {
    let sandbox = Sandbox::new("mcp-room");
    let marker = sandbox.shared("hidden-admin-called");
    std::fs::remove_file(&marker).unwrap();
    let servers = format!(
        "{{\"f\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"add\", \"whoami\", \
         \"secret_echo\", \"fetch\"], \"env\": {{\"HIDDEN_ADMIN_MARKER\": \"{}\"}}}}}}",
        test_server("friendly.py"),
        marker.display()
    );
    write_workflow(&sandbox, 4, &servers, ", secrets=[\"DEPLOY_TOKEN\"]");
    let lock = lock(&sandbox);
    assert_eq!(lock["mcp"].as_array().unwrap().len(), 4, "{lock}");

    // A port that answers on the host: a server with the host's network would connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__f__whoami", &json!({}))
            .tool_use(
                "t2",
                "mcp__f__secret_echo",
                &json!({"name": "DEPLOY_TOKEN"}),
            )
            .tool_use(
                "t3",
                "mcp__f__fetch",
                &json!({"host": "127.0.0.1", "port": port, "timeout": 2}),
            )
            .tool_use("t4", "mcp__f__hidden_admin", &json!({"command": "id"}))
            .tool_use("t5", "mcp__f__add", &json!({"a": 40, "b": 2}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[&format!("DEPLOY_TOKEN={SECRET}")]);
    assert!(ok, "{output}");
    assert!(!output.contains(SECRET), "{output}");
    let requests = claude.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        tool_names(&requests[0]),
        [
            "read_file",
            "mcp__f__add",
            "mcp__f__whoami",
            "mcp__f__secret_echo",
            "mcp__f__fetch"
        ]
    );
    assert!(!requests[0].body.to_string().contains("hidden_admin"));
    let answer = &requests[1];
    assert_eq!(result_of(answer, "t5"), ("42".to_owned(), false));
    let (echoed, _) = result_of(answer, "t2");
    assert!(
        !echoed.contains(SECRET) && echoed.contains("***"),
        "{echoed}"
    );
    let (hidden, is_error) = result_of(answer, "t4");
    assert!(is_error && hidden.contains("not available"), "{hidden}");
    assert!(!marker.exists(), "the hidden tool ran");
    let (fetched, _) = result_of(answer, "t3");
    assert!(
        fetched.starts_with("error"),
        "the server reached the host: {fetched}"
    );
    let (whoami, _) = result_of(answer, "t1");
    let whoami: Value = serde_json::from_str(&whoami).expect(&whoami);
    assert_eq!(whoami["interfaces"], json!(["lo"]), "{whoami}");
    if root() {
        assert_ne!(whoami["uid"], 0, "{whoami}");
        // Its /tmp is the step's own: nothing of the host's but the entry holding the
        // runner's work directory, bound back.
        let sandbox_entry = sandbox
            .path("")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let entries = whoami["tmp_entries"].as_array().unwrap();
        assert!(
            entries.iter().all(|e| e == sandbox_entry.as_str()),
            "{whoami}"
        );
        assert!(
            whoami["cgroup"].as_str().unwrap().contains("plue-step-"),
            "{whoami}"
        );
    }
    // The calls and results are in the step's log (and so the conversation view).
    assert!(output.contains("mcp__f__add"), "{output}");
    drop(listener);
}

#[test]
fn a_tool_definition_changed_after_the_lock_or_never_pinned_fails_before_the_model_is_asked() {
    let sandbox = Sandbox::new("mcp-rugpull");
    let servers = |variant: &str| {
        format!(
            "{{\"r\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"echo\"], \
             \"env\": {{\"RUGPULL_VARIANT\": \"{variant}\"}}}}}}",
            test_server("rugpull.py")
        )
    };
    write_workflow(&sandbox, 4, &servers("a"), "");
    let claude = FakeClaude::start(vec![Turn::text(&["never"]).reply()]);

    // Never pinned.
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(
        !ok && output.contains("'echo'") && output.contains("not pinned"),
        "{output}"
    );

    // Pinned, then the server's definition changes (its description, then its schema).
    lock(&sandbox);
    for variant in ["b", "c"] {
        write_workflow(&sandbox, 4, &servers(variant), "");
        let (ok, output) = run(&sandbox, &claude, &[]);
        assert!(
            !ok && output.contains("'echo'") && output.contains("changed since it was pinned"),
            "{variant}: {output}"
        );
    }
    assert!(claude.requests().is_empty(), "the model was asked");
}

#[test]
fn a_server_that_leaves_a_daemon_does_not_outlive_its_step() {
    let sandbox = Sandbox::new("mcp-forker");
    let beat_dir = sandbox.shared("daemons");
    std::fs::remove_file(&beat_dir).unwrap();
    std::fs::create_dir(&beat_dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&beat_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let servers = format!(
        "{{\"k\": {{\"command\": [\"/usr/bin/python3\", \"{}\", \"--dir\", \"{}\"], \"tools\": [\"echo\"]}}}}",
        test_server("forker.py"),
        beat_dir.display()
    );
    write_workflow(&sandbox, 4, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__k__echo", &json!({"text": "hi"}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(ok, "{output}");
    let beats = || -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        std::fs::read_dir(&beat_dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "beat"))
            .map(|p| {
                let at = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, at)
            })
            .collect()
    };
    let before = beats();
    assert!(
        !before.is_empty(),
        "the server never left a daemon: {output}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(before, beats(), "a daemon of the step's server still beats");
}

/// The reference servers (npm) and an SDK server, when installed.
fn installed() -> Option<(String, String, String, String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("PLUE_MCP_NODE"),
        var("PLUE_MCP_EVERYTHING"),
        var("PLUE_MCP_FILESYSTEM"),
        var("PLUE_MCP_PYTHON"),
        var("PLUE_MCP_SERVERS"),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e)) => Some((a, b, c, d, e)),
        _ => {
            assert!(
                std::env::var("PLUE_REQUIRE_MCP").as_deref() != Ok("1"),
                "PLUE_REQUIRE_MCP=1 but no PLUE_MCP_* servers: source \"$(scripts/mcp/install.sh)\""
            );
            eprintln!("skipped: no PLUE_MCP_* servers (source \"$(scripts/mcp/install.sh)\")");
            None
        }
    }
}

#[test]
fn the_reference_servers_and_an_sdk_server_work_from_the_steps_room() {
    let Some((node, everything, filesystem, python, servers)) = installed() else {
        return;
    };
    let sandbox = Sandbox::new("mcp-reference");
    std::fs::write(sandbox.path("notes.txt"), "from the workspace\n").unwrap();
    let sdk = Path::new(&servers).join("sdk_server.py");
    let declared = format!(
        "{{\"everything\": {{\"command\": [\"{node}\", \"{everything}\"], \"tools\": [\"echo\"]}}, \
         \"fs\": {{\"command\": [\"{node}\", \"{filesystem}\", \".\"], \"tools\": [\"read_text_file\"]}}, \
         \"sdk\": {{\"command\": [\"{python}\", \"{}\"], \"tools\": [\"add\"]}}}}",
        sdk.display()
    );
    write_workflow(&sandbox, 4, &declared, "");
    let lock = lock(&sandbox);
    assert_eq!(lock["mcp"].as_array().unwrap().len(), 3, "{lock}");
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__everything__echo", &json!({"message": "hello"}))
            .tool_use(
                "t2",
                "mcp__fs__read_text_file",
                &json!({"path": "notes.txt"}),
            )
            .tool_use("t3", "mcp__sdk__add", &json!({"a": 20, "b": 22}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(ok, "{output}");
    let requests = claude.requests();
    assert_eq!(
        tool_names(&requests[0]),
        [
            "read_file",
            "mcp__everything__echo",
            "mcp__fs__read_text_file",
            "mcp__sdk__add"
        ]
    );
    let answer = &requests[1];
    let (echo, e1) = result_of(answer, "t1");
    assert!(!e1 && echo.contains("hello"), "{echo}");
    let (read, e2) = result_of(answer, "t2");
    assert!(!e2 && read.contains("from the workspace"), "{read}");
    let (sum, e3) = result_of(answer, "t3");
    assert!(!e3 && sum.contains("42"), "{sum}");
    assert!(output.contains("protocol"), "{output}");
}

#[test]
fn the_reference_server_over_streamable_http_is_reached_through_the_allow_list() {
    let Some((node, everything, _, _, _)) = installed() else {
        return;
    };
    let sandbox = Sandbox::new("mcp-http");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(&node)
        .args([everything.as_str(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server-everything did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let declared =
        format!("{{\"web\": {{\"url\": \"http://127.0.0.1:{port}/mcp\", \"tools\": [\"echo\"]}}}}");
    write_workflow(
        &sandbox,
        4,
        &declared,
        &format!(", network=[\"127.0.0.1:{port}\"]"),
    );
    let lock = lock(&sandbox);
    assert_eq!(lock["mcp"][0]["tool"], "echo", "{lock}");
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__web__echo", &json!({"message": "over http"}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    let requests = claude.requests();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{output}");
    let (echo, is_error) = result_of(&requests[1], "t1");
    assert!(!is_error && echo.contains("over http"), "{echo}");
    assert!(output.contains("mcp web: http server"), "{output}");

    // The same server, not in the allow-list: the step fails before the model is asked.
    write_workflow(&sandbox, 4, &declared, ", network=[\"127.0.0.1:1\"]");
    let check = sandbox.plue(&["check", "w.plue.py"]).output().unwrap();
    assert!(!check.status.success());
    assert!(
        support::stdout(&check).contains("not in the step's network allow-list"),
        "{}",
        support::stdout(&check)
    );
}

#[test]
fn an_mcp_conversation_is_replayed_with_its_servers_started_again_in_the_room() {
    let sandbox = Sandbox::new("mcp-replay");
    let servers = format!(
        "{{\"f\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"add\", \"whoami\"]}}}}",
        test_server("friendly.py")
    );
    write_workflow(&sandbox, 4, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__f__add", &json!({"a": 1, "b": 2}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(ok, "{output}");
    let replay = sandbox
        .plue(&["rerun", "1", "--step", "agent", "--replay"])
        .env_remove("PLUE_DATA_DIR")
        .env("ANTHROPIC_BASE_URL", claude.url())
        .output()
        .expect("plue rerun");
    let text = format!("{}\n{}", support::stdout(&replay), support::stderr(&replay));
    assert!(replay.status.success(), "{text}");
    assert!(text.contains("replayed 2 of 2 recorded turns"), "{text}");
    assert!(text.contains("every tool result is as recorded"), "{text}");
    assert!(
        text.contains("mcp f: stdio server"),
        "the servers were not started: {text}"
    );
    assert_eq!(claude.requests().len(), 2, "a replay made requests: {text}");
}

#[tokio::test]
async fn under_plue_serve_the_lock_beside_the_workflow_pins_its_tools() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("mcp-serve");
    let servers = format!(
        "{{\"f\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"add\"]}}}}",
        test_server("friendly.py")
    );
    write_workflow(&sandbox, 4, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__f__add", &json!({"a": 20, "b": 22}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let secret = format!("ANTHROPIC_API_KEY={}", support::LLM_KEY);
    let engine = sandbox
        .serve_local_with_env(
            "1",
            &["--secret", &secret],
            &[("ANTHROPIC_BASE_URL", claude.url())],
        )
        .await;
    let http = support::client();
    let run_id = support::start_run(
        &http,
        &engine.url,
        &sandbox.path("w.plue.py"),
        &sandbox.path(""),
    )
    .await;
    support::wait_succeeded(
        &http,
        &engine.url,
        run_id,
        std::time::Duration::from_secs(60),
    )
    .await;
    let requests = claude.requests();
    assert_eq!(result_of(&requests[1], "t1"), ("42".to_owned(), false));
}

#[tokio::test]
async fn a_pushed_repository_pins_its_tools_with_the_lock_file_at_the_commit() {
    use testkit::forge::{FakeForge, Flavor};
    const HOOK: &str = "webhook-secret-of-the-mcp-test";
    const FORGE_TOKEN: &str = "token-of-the-mcp-test";
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("mcp-forge");
    // The lock file, made as a developer would: `plue lock` in a clone.
    let servers = format!(
        "{{\"f\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"add\"]}}}}",
        test_server("friendly.py")
    );
    let workflow = format!(
        "def workflow():\n    return Plan(name=\"mcp\", triggers=[Trigger.on_push()], steps=[\n        \
         Step.llm(\"agent\", prompt=\"Use the tools.\", tools=[\"read_file\"], max_turns=4,\n                 \
         mcp={servers}),\n    ])\n"
    );
    std::fs::write(sandbox.path("w.plue.py"), &workflow).unwrap();
    let lock_text = {
        lock(&sandbox);
        std::fs::read_to_string(sandbox.path(".plue/lock.json")).unwrap()
    };
    let forge = FakeForge::start(Flavor::GitHub, FORGE_TOKEN).unwrap();
    let pinned = forge
        .create_repo_with(
            "acme/app",
            &[
                (".plue/ci.plue.py", &workflow),
                (".plue/lock.json", &lock_text),
            ],
        )
        .unwrap();
    let unpinned = forge
        .create_repo_with("acme/bare", &[(".plue/ci.plue.py", &workflow)])
        .unwrap();
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__f__add", &json!({"a": 40, "b": 2}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let engine = sandbox
        .serve_local_with_env("1", &[], &[("ANTHROPIC_BASE_URL", claude.url())])
        .await;
    let http = support::client();
    let mut runs = Vec::new();
    for (repo, commit) in [("acme/app", &pinned), ("acme/bare", &unpinned)] {
        let registered = http
            .post(format!("{}/api/repos", engine.url))
            .json(&json!({
                "name": repo,
                "clone_url": forge.clone_url(repo),
                "forge": "github",
                "webhook_secret": HOOK,
                "api_url": forge.api_url(),
                "api_token": FORGE_TOKEN,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            registered.status(),
            201,
            "{}",
            registered.text().await.unwrap()
        );
        let key = http
            .put(format!(
                "{}/api/repos/{repo}/secrets/ANTHROPIC_API_KEY",
                engine.url
            ))
            .json(&json!({"value": support::LLM_KEY}))
            .send()
            .await
            .unwrap();
        assert!(key.status().is_success(), "{}", key.text().await.unwrap());
        let mut payload = support::webhook_fixture("github/push-new-branch.json");
        payload["repository"]["full_name"] = json!(repo);
        payload["repository"]["default_branch"] = json!("main");
        payload["ref"] = json!("refs/heads/main");
        payload["after"] = json!(commit);
        let (status, answer) = support::deliver_webhook(
            &engine.url,
            "github",
            "push",
            &format!("push-{repo}"),
            &payload,
            HOOK,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let ids = support::run_ids(&answer);
        assert_eq!(ids.len(), 1, "{answer}");
        runs.push(ids[0]);
    }
    support::wait_succeeded(
        &http,
        &engine.url,
        runs[0],
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        result_of(&claude.requests()[1], "t1"),
        ("42".to_owned(), false)
    );
    // Without the lock file at its commit, the same workflow's tool is not pinned.
    let run = support::wait_final(
        &http,
        &engine.url,
        runs[1],
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    let lines = support::log_lines(&http, &engine.url, runs[1], "agent")
        .await
        .expect("a log");
    assert!(
        lines.iter().any(|l| l.to_string().contains("not pinned")),
        "{lines:?}"
    );
    assert_eq!(
        claude.requests().len(),
        2,
        "the unpinned run asked the model"
    );
}
