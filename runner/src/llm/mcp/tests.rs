//! The MCP client against the project's own test servers (`testkit/mcp/`, Python standard
//! library only): pins, the allow-list, limits, masking and the end of a server that tries
//! to outlive its step. The room itself (user, network, places) is tested end to end
//! (`engine/tests/mcp.rs`), where a runner makes one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plue_types::mcp::{McpServer, McpTransport};
use serde_json::json;

use super::{digests, McpTools, Room};
use crate::llm::tools::MoreTools;
use crate::mask::Masker;

fn server_script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testkit/mcp")
        .join(name)
        .canonicalize()
        .expect("the test server exists")
        .display()
        .to_string()
}

fn spec(name: &str, script: &str, args: &[&str], tools: &[&str]) -> McpServer {
    let mut command = vec!["/usr/bin/python3".to_owned(), server_script(script)];
    command.extend(args.iter().map(|a| a.to_string()));
    McpServer {
        name: name.into(),
        transport: McpTransport::Stdio {
            command,
            env: BTreeMap::new(),
        },
        tools: tools.iter().map(|t| t.to_string()).collect(),
        pins: BTreeMap::new(),
        timeout_secs: 10,
        max_calls: 100,
    }
}

fn base_env() -> BTreeMap<String, String> {
    BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())])
}

/// `spec` with the pins `plue lock` would write now.
async fn pinned(mut spec: McpServer, env: &BTreeMap<String, String>) -> McpServer {
    let dir = std::env::temp_dir();
    let no_secrets = BTreeMap::new();
    let room = Room::unconfined(
        &dir,
        env,
        &plue_types::protocol::NetworkPolicy::None,
        &no_secrets,
    );
    spec.pins = digests(&spec, room)
        .await
        .expect("digests")
        .into_iter()
        .collect();
    spec
}

async fn start(
    specs: &[McpServer],
    env: &BTreeMap<String, String>,
    masker: Masker,
) -> (Result<McpTools, String>, Vec<String>) {
    let dir = std::env::temp_dir();
    let no_secrets = BTreeMap::new();
    let room = Room::unconfined(
        &dir,
        env,
        &plue_types::protocol::NetworkPolicy::None,
        &no_secrets,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let started = McpTools::start(specs, room, Arc::new(masker), &tx).await;
    drop(tx);
    let mut lines = Vec::new();
    while let Ok(Some((_, line))) =
        tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
    {
        lines.push(line);
    }
    (started, lines)
}

#[tokio::test]
async fn allowed_tools_only_are_shown_and_called_under_the_servers_name() {
    let env = base_env();
    let friendly = pinned(spec("f", "friendly.py", &[], &["add", "echo"]), &env).await;
    let (tools, lines) = start(&[friendly], &env, Masker::default()).await;
    let mut tools = tools.expect("started");
    let names: Vec<String> = tools
        .definitions()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["mcp__f__add", "mcp__f__echo"]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mcp f: stdio server") && l.contains("protocol")),
        "{lines:?}"
    );
    let sum = tools.call("mcp__f__add", &json!({"a": 2, "b": 3})).await;
    assert_eq!((sum.content.as_str(), sum.is_error), ("5", false));
    // What the server offers beyond the list is neither shown nor callable.
    let hidden = tools.call("mcp__f__hidden_admin", &json!({})).await;
    assert!(
        hidden.is_error && hidden.content.contains("not available"),
        "{hidden:?}"
    );
    assert!(!tools
        .definitions()
        .iter()
        .any(|d| d.to_string().contains("hidden_admin")));
    let not_object = tools.call("mcp__f__echo", &json!("text")).await;
    assert!(not_object.is_error);
    tools.finish().await;
}

#[tokio::test]
async fn an_unpinned_or_changed_definition_fails_before_the_model_sees_a_tool() {
    let env = base_env();
    let unpinned = spec("f", "friendly.py", &[], &["add"]);
    let (refused, _) = start(&[unpinned], &env, Masker::default()).await;
    let reason = refused.expect_err("unpinned");
    assert!(
        reason.contains("'add'") && reason.contains("not pinned") && reason.contains("plue lock"),
        "{reason}"
    );

    // Pinned while the server said one thing, run while it says another: a rug pull.
    let mut a_env = base_env();
    a_env.insert("RUGPULL_VARIANT".into(), "a".into());
    let pinned_a = pinned(spec("r", "rugpull.py", &[], &["echo"]), &a_env).await;
    for variant in ["b", "c"] {
        let mut env = base_env();
        env.insert("RUGPULL_VARIANT".into(), variant.into());
        let (refused, _) = start(std::slice::from_ref(&pinned_a), &env, Masker::default()).await;
        let reason = refused.expect_err("changed");
        assert!(
            reason.contains("'echo'") && reason.contains("changed since it was pinned"),
            "{variant}: {reason}"
        );
    }
    let (same, _) = start(&[pinned_a], &a_env, Masker::default()).await;
    same.expect("the pinned definition starts").finish().await;

    // A listed tool the server does not offer.
    let missing = spec("f", "friendly.py", &[], &["nope"]);
    let (refused, _) = start(&[missing], &env, Masker::default()).await;
    assert!(refused
        .expect_err("missing")
        .contains("offers no tool 'nope'"));
}

#[tokio::test]
async fn a_definition_changed_mid_session_is_not_taken() {
    // The server announces a new list after the first listing; the model keeps the one
    // that was checked, and no new tool appears.
    let mut env = base_env();
    env.insert("RUGPULL_VARIANT".into(), "a".into());
    env.insert("RUGPULL_SWITCH".into(), "after-list".into());
    env.insert("RUGPULL_NEXT".into(), "d".into());
    let spec = pinned(spec("r", "rugpull.py", &[], &["echo"]), &env).await;
    let (tools, _) = start(&[spec], &env, Masker::default()).await;
    let mut tools = tools.expect("started");
    let first = tools.definitions();
    let _ = tools.call("mcp__r__echo", &json!({"text": "hi"})).await;
    assert_eq!(first, tools.definitions());
    assert!(!tools
        .definitions()
        .iter()
        .any(|d| d.to_string().contains("sync_keys")));
    tools.finish().await;
}

#[tokio::test]
async fn huge_endless_slow_and_garbage_answers_are_error_results_within_the_limit() {
    let env = base_env();
    let mut huge = pinned(
        spec(
            "h",
            "huge.py",
            &[],
            &["huge", "endless", "slow", "badjson", "flood"],
        ),
        &env,
    )
    .await;
    huge.timeout_secs = 3;
    let (tools, _) = start(&[huge], &env, Masker::default()).await;
    let mut tools = tools.expect("started");
    let began = std::time::Instant::now();
    let big = tools.call("mcp__h__huge", &json!({"megabytes": 8})).await;
    assert!(
        big.is_error && big.content.contains("no answer within 3s"),
        "{}",
        &big.content[..big.content.len().min(300)]
    );
    for (tool, input) in [
        ("endless", json!({})),
        ("slow", json!({"seconds": 60})),
        ("badjson", json!({})),
    ] {
        let answer = tools.call(&format!("mcp__h__{tool}"), &input).await;
        assert!(answer.is_error, "{tool}: {answer:?}");
        assert!(answer.content.len() <= super::OUTPUT_CAP + 200);
    }
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    tools.finish().await;
}

#[tokio::test]
async fn calls_are_counted_and_results_masked() {
    let mut env = base_env();
    env.insert("DEPLOY_TOKEN".into(), "tok-9f8e7d6c5b4a".into());
    let mut friendly = pinned(spec("f", "friendly.py", &[], &["secret_echo"]), &env).await;
    friendly.max_calls = 2;
    let (tools, _) = start(&[friendly], &env, Masker::new(["tok-9f8e7d6c5b4a"])).await;
    let mut tools = tools.expect("started");
    let leaked = tools
        .call("mcp__f__secret_echo", &json!({"name": "DEPLOY_TOKEN"}))
        .await;
    assert!(
        !leaked.content.contains("tok-9f8e7d6c5b4a") && leaked.content.contains("***"),
        "{leaked:?}"
    );
    let _ = tools
        .call("mcp__f__secret_echo", &json!({"name": "DEPLOY_TOKEN"}))
        .await;
    let third = tools
        .call("mcp__f__secret_echo", &json!({"name": "DEPLOY_TOKEN"}))
        .await;
    assert!(
        third.is_error && third.content.contains("limit of 2 calls"),
        "{third:?}"
    );
    tools.finish().await;
}

#[tokio::test]
async fn a_server_that_forks_and_stays_is_gone_when_the_step_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = base_env();
    env.insert("FORKER_DIR".into(), dir.path().display().to_string());
    let forker = pinned(spec("k", "forker.py", &[], &["echo"]), &env).await;
    let (tools, _) = start(&[forker], &env, Masker::default()).await;
    let mut tools = tools.expect("started");
    let beats = || -> Vec<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "beat"))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while beats().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One daemon of `pinned`'s run (already stopped) and one of this run's.
    assert!(!beats().is_empty(), "the daemon never beat");
    tools.finish().await;
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let before: Vec<_> = beats().iter().map(modified).collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after: Vec<_> = beats().iter().map(modified).collect();
    assert_eq!(before, after, "a daemon the server forked still beats");
}

/// `http_server.py` on a free port with `TOKEN=token`; its port and the child, which the
/// caller kills and waits for.
#[allow(clippy::zombie_processes)]
fn http_server(token: &str) -> (u16, std::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let child = std::process::Command::new("/usr/bin/python3")
        .arg(server_script("http_server.py"))
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .env("TOKEN", token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = text.trim().parse() {
                return (port, child);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_spec(port: u16, secret: Option<&str>) -> McpServer {
    McpServer {
        name: "web".into(),
        transport: McpTransport::Http {
            url: format!("http://127.0.0.1:{port}/mcp"),
            bearer_secret: secret.map(str::to_owned),
        },
        tools: vec!["whoami".into(), "echo".into()],
        pins: BTreeMap::new(),
        timeout_secs: 10,
        max_calls: 100,
    }
}

async fn start_http(
    spec: &McpServer,
    policy: &plue_types::protocol::NetworkPolicy,
    secrets: &BTreeMap<String, String>,
) -> Result<McpTools, String> {
    let dir = std::env::temp_dir();
    let env = base_env();
    let room = Room::unconfined(&dir, &env, policy, secrets);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let started = McpTools::start(
        std::slice::from_ref(spec),
        room,
        Arc::new(Masker::default()),
        &tx,
    )
    .await;
    drop(tx);
    let _ = drain.await;
    started
}

#[tokio::test]
async fn an_http_server_is_reached_only_as_the_policy_allows_with_the_steps_secret() {
    use plue_types::protocol::NetworkPolicy;
    let (port, mut child) = http_server("bearer-7a6b5c");
    let secrets = BTreeMap::from([("WEB_TOKEN".to_owned(), "bearer-7a6b5c".to_owned())]);
    let allowed = NetworkPolicy::Allow(vec![format!("127.0.0.1:{port}")]);
    let open_room_digests = {
        let dir = std::env::temp_dir();
        let env = base_env();
        let room = Room::unconfined(&dir, &env, &allowed, &secrets);
        digests(&http_spec(port, Some("WEB_TOKEN")), room)
            .await
            .expect("digests")
    };
    let mut spec = http_spec(port, Some("WEB_TOKEN"));
    spec.pins = open_room_digests.into_iter().collect();

    let mut tools = start_http(&spec, &allowed, &secrets)
        .await
        .expect("allowed");
    let whoami = tools.call("mcp__web__whoami", &json!({})).await;
    let said: serde_json::Value = serde_json::from_str(&whoami.content).expect(&whoami.content);
    assert!(!whoami.is_error && said["authorized"] == true, "{whoami:?}");
    assert!(!whoami.content.contains("bearer-7a6b5c"));
    tools.finish().await;

    for (policy, wanted) in [
        (NetworkPolicy::None, "network is 'none'"),
        (
            NetworkPolicy::Allow(vec!["127.0.0.1:1".into()]),
            "not in the step's network allow-list",
        ),
        (
            NetworkPolicy::Allow(vec!["example.com".into()]),
            "not in the step's network allow-list",
        ),
    ] {
        let refused = start_http(&spec, &policy, &secrets)
            .await
            .expect_err("refused");
        assert!(refused.contains(wanted), "{policy:?}: {refused}");
    }
    // A wrong token is the server's refusal; no token declared at all, too.
    let wrong = BTreeMap::from([("WEB_TOKEN".to_owned(), "not-it".to_owned())]);
    assert!(start_http(&spec, &allowed, &wrong).await.is_err());
    let mut anonymous = spec.clone();
    anonymous.transport = http_spec(port, None).transport;
    assert!(start_http(&anonymous, &allowed, &secrets).await.is_err());
    let missing = start_http(&spec, &allowed, &BTreeMap::new())
        .await
        .expect_err("no secret");
    assert!(missing.contains("no secret 'WEB_TOKEN'"), "{missing}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_definition_hiding_text_from_its_reviewer_is_refused_and_hidden_results_revealed() {
    let env = base_env();
    let dir = std::env::temp_dir();
    let no_secrets = BTreeMap::new();
    let room = Room::unconfined(
        &dir,
        &env,
        &plue_types::protocol::NetworkPolicy::None,
        &no_secrets,
    );
    // `plue lock` refuses to pin it.
    let notes = spec("p", "poisoned.py", &[], &["notes"]);
    let refused = digests(&notes, room).await.expect_err("hidden characters");
    assert!(
        refused.contains("'notes'") && refused.contains("cannot see"),
        "{refused}"
    );
    // A pin made anyway (by hand) does not let it through.
    let mut forged = notes.clone();
    forged.pins.insert("notes".into(), "sha256:0".to_string());
    let (started, _) = start(&[forged], &env, Masker::default()).await;
    assert!(started.expect_err("refused").contains("cannot see"));

    // A result spelling an order in tag characters reaches the model written out.
    let page = pinned(spec("p", "poisoned.py", &[], &["read_page"]), &env).await;
    let (tools, _) = start(&[page], &env, Masker::default()).await;
    let mut tools = tools.expect("started");
    let read = tools
        .call("mcp__p__read_page", &json!({"url": "https://example.com"}))
        .await;
    assert!(
        !read.content.chars().any(super::content::is_hidden),
        "{read:?}"
    );
    assert!(read.content.contains("<U+E00"), "{read:?}");
    tools.finish().await;
}
