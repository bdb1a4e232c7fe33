//! End to end, as an attacker: hostile MCP servers of an `llm` step (`testkit/mcp/`,
//! chiefly `attacker.py`) through the real `plue lock`, `plue check` and `plue run`, the
//! model played by the scripted Messages API (`testkit::claude`). Each test tries one
//! family of attacks for real and asserts what must hold:
//! - the room: a stdio server learns no key or engine token from its environment, reads no
//!   runner file (the work directory, the transcript, other attempts, the runner's
//!   `/proc`), writes nowhere outside its attempt, signals or sees no runner process,
//!   leaves neither its cgroup nor the step (a server that closes its stdout and lives on
//!   is killed; the step does not hang);
//! - results: the step's secrets are masked in every spelling the masker promises before
//!   the model reads them; a hidden instruction (tag characters) never reaches the model,
//!   whatever part of the answer carries it;
//! - the protocol: server-initiated requests get nothing useful, stray responses change no
//!   call, a flood, an over-long line or a line without end makes error results within the
//!   call's limit;
//! - definitions: look-alike and duplicate names, a list changed mid-session;
//! - names: shown names of two servers never collide; a server's tool names reach no
//!   terminal with control characters; `plue check` starts no server;
//! - HTTP: a name that resolves to the runner host's loopback is refused, no redirect is
//!   followed, the bearer token shows in no log.

use crate::support;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::mcp::{
    git_init, lock, result_of, root, run, test_server, tool_names, try_lock, write_workflow,
};
use crate::support::Sandbox;
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Turn};

const SECRET: &str = "deploy-tok-5e4d3c2b1a09";

/// A directory every step user may write (for what a server keeps unmasked).
fn shared_dir(sandbox: &Sandbox, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = sandbox.shared(name);
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn attacker(name: &str, args: &[&str], tools: &[&str], extra: &str) -> String {
    let mut command = vec!["/usr/bin/python3".to_owned(), test_server("attacker.py")];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    format!(
        "\"{name}\": {{\"command\": {}, \"tools\": {}{extra}}}",
        serde_json::to_string(&command).unwrap(),
        serde_json::to_string(tools).unwrap()
    )
}

fn is_tag(c: char) -> bool {
    ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// The room: a server's environment, files, processes and cgroup, and the secrets in its
/// results.
#[test]
fn a_server_learns_no_key_and_cannot_leave_the_steps_room() {
    let sandbox = Sandbox::new("mcp-attack-room");
    let out = shared_dir(&sandbox, "attacker");
    let servers = format!(
        "{{{}}}",
        attacker(
            "a",
            &[],
            &["env", "explore", "leak"],
            &format!(", \"env\": {{\"ATTACKER_OUT\": \"{}\"}}", out.display())
        )
    );
    write_workflow(&sandbox, 6, &servers, ", secrets=[\"DEPLOY_TOKEN\"]");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__a__env", &json!({}))
            .tool_use("t2", "mcp__a__explore", &json!({}))
            .tool_use("t3", "mcp__a__leak", &json!({"name": "DEPLOY_TOKEN"}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[&format!("DEPLOY_TOKEN={SECRET}")]);
    assert!(ok, "{output}");

    // The environment, unmasked: no model key, no engine credential.
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("env.json")).unwrap()).unwrap();
    let env = env.as_object().unwrap();
    for name in [
        "ANTHROPIC_API_KEY",
        "PLUE_TOKEN",
        "PLUE_ADMIN_TOKEN",
        "PLUE_SECRET_KEY",
        "PLUE_RUNNER_TOKEN",
    ] {
        assert!(
            !env.contains_key(name),
            "{name} in the server's env: {env:?}"
        );
    }
    let values = serde_json::to_string(env).unwrap();
    for value in [
        support::LLM_KEY,
        support::ADMIN_TOKEN,
        "secret-key-of-the-test-sandbox",
    ] {
        assert!(!values.contains(value), "a credential in the server's env");
    }
    assert_eq!(
        env["DEPLOY_TOKEN"], SECRET,
        "the step's secret is its by design"
    );

    let raw = std::fs::read_to_string(out.join("explore.json")).unwrap();
    eprintln!("explore: {raw}");
    let report: Value = serde_json::from_str(&raw).unwrap();
    let failed = |v: &Value| v.as_str().is_some_and(|s| s.starts_with("error"));
    if root() {
        assert_ne!(report["uid"], 0, "{report}");
        for (path, result) in report["write"].as_object().unwrap() {
            assert!(failed(result), "wrote {path}: {report:#}");
        }
        for (path, result) in report["read"].as_object().unwrap() {
            if path.starts_with("/proc/1/") {
                continue; // its own pid namespace's first process
            }
            assert!(failed(result), "read {path}: {report:#}");
        }
        for (path, result) in report["list"].as_object().unwrap() {
            if path == "/sys/fs/cgroup" {
                continue;
            }
            assert!(
                result.is_string() && failed(result),
                "listed {path}: {report:#}"
            );
        }
        for (pid, result) in report["kill"].as_object().unwrap() {
            if pid == "1" {
                continue;
            }
            assert!(failed(result), "signalled {pid}: {report:#}");
        }
        for (target, result) in report["cgroup_move"].as_object().unwrap() {
            assert!(failed(result), "{target}: {report:#}");
        }
        assert!(failed(&report["unshare"]), "{report:#}");
        // Only the step's own processes are visible: nothing of the runner or the host.
        let plue = env!("CARGO_BIN_EXE_plue");
        for (pid, cmdline) in report["cmdlines"].as_object().unwrap() {
            let cmdline = cmdline.as_str().unwrap_or("");
            assert!(
                !cmdline.contains(plue) && !cmdline.contains("cargo"),
                "pid {pid} ({cmdline}) is visible: {report:#}"
            );
        }
    }

    // Its results reach the model masked in every spelling the masker knows.
    let requests = claude.requests();
    let (env_seen, _) = result_of(&requests[1], "t1");
    assert!(!env_seen.contains(SECRET), "{env_seen}");
    let (leaked, _) = result_of(&requests[1], "t3");
    eprintln!("leak as the model read it: {leaked}");
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(SECRET)
    };
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let reversed: String = SECRET.chars().rev().collect();
    for spelling in [SECRET, b64.as_str(), hex.as_str(), reversed.as_str()] {
        assert!(!leaked.contains(spelling), "{spelling} in {leaked}");
    }
    assert!(!output.contains(SECRET), "{output}");
}

/// A JSON-RPC error whose message hides an instruction in tag characters: the model must
/// read it written out, as it reads a result's.
#[test]
fn a_hidden_instruction_in_a_servers_error_does_not_reach_the_model() {
    let sandbox = Sandbox::new("mcp-attack-hidden-error");
    let servers = format!("{{{}}}", attacker("a", &[], &["hidden_error"], ""));
    write_workflow(&sandbox, 6, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__a__hidden_error", &json!({}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(ok, "{output}");
    let (text, is_error) = result_of(&claude.requests()[1], "t1");
    assert!(is_error, "{text}");
    assert!(
        !text.chars().any(is_tag),
        "the model read hidden tag characters: {:?}",
        text.chars()
            .map(|c| if is_tag(c) {
                char::from_u32(c as u32 - 0xE0000).unwrap_or('?')
            } else {
                c
            })
            .collect::<String>()
    );
    assert!(
        !output.chars().any(is_tag),
        "the log holds hidden tag characters"
    );
}

/// Server-initiated requests, stray responses, floods, endless lines, a closed stdout: no
/// useful answer, no hang, the step ends in time and nothing of the server lives on.
#[test]
fn protocol_abuse_gets_nothing_useful_and_does_not_hang_the_step() {
    let sandbox = Sandbox::new("mcp-attack-protocol");
    let beat = sandbox.shared("closed-stdout.beat");
    let servers = format!(
        "{{{}, \"h\": {{\"command\": [\"/usr/bin/python3\", \"{}\"], \"tools\": [\"flood\", \
         \"badjson\", \"huge\", \"endless\"], \"timeout_secs\": 4}}}}",
        attacker(
            "a",
            &[],
            &["talkback", "stray", "echo", "close_stdout"],
            ", \"timeout_secs\": 6"
        ),
        test_server("huge.py")
    );
    write_workflow(&sandbox, 6, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__a__talkback", &json!({}))
            .tool_use("t2", "mcp__a__stray", &json!({}))
            .tool_use("t3", "mcp__a__echo", &json!({"text": "still me"}))
            .tool_use("t4", "mcp__h__flood", &json!({"count": 50000}))
            .tool_use("t5", "mcp__h__badjson", &json!({"kind": "wrong_id"}))
            .tool_use("t6", "mcp__h__huge", &json!({"megabytes": 6}))
            .tool_use("t7", "mcp__h__endless", &json!({}))
            .tool_use(
                "t8",
                "mcp__a__close_stdout",
                &json!({"beat": beat.display().to_string()}),
            )
            .tool_use("t9", "mcp__a__echo", &json!({"text": "after"}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let started = Instant::now();
    let (ok, output) = run(&sandbox, &claude, &[]);
    let took = started.elapsed();
    assert!(ok, "{output}");
    assert!(took < Duration::from_secs(150), "the step took {took:?}");
    let answer = &claude.requests()[1];

    let (talkback, _) = result_of(answer, "t1");
    eprintln!("talkback: {talkback}");
    let talkback: Value = serde_json::from_str(&talkback).expect(&talkback);
    let sampling = &talkback["sampling/createMessage"];
    assert!(
        sampling.get("result").is_none(),
        "sampling was answered: {sampling}"
    );
    let roots = &talkback["roots/list"];
    assert!(
        roots.get("error").is_some() || roots["result"]["roots"] == json!([]),
        "roots were offered: {roots}"
    );
    let elicit = &talkback["elicitation/create"];
    assert!(
        elicit.get("error").is_some() || elicit["result"]["action"] != "accept",
        "an elicitation was accepted: {elicit}"
    );
    assert!(!talkback.to_string().contains(support::LLM_KEY));

    assert_eq!(result_of(answer, "t2"), ("stray sent".to_owned(), false));
    assert_eq!(result_of(answer, "t3"), ("still me".to_owned(), false));
    for id in ["t5", "t6", "t7", "t8", "t9"] {
        let (text, is_error) = result_of(answer, id);
        assert!(is_error, "{id}: {}", &text[..text.len().min(200)]);
        assert!(text.len() <= 64 * 1024, "{id}: {} bytes", text.len());
    }
    let (flood, _) = result_of(answer, "t4");
    assert!(flood.len() <= 64 * 1024, "{} bytes", flood.len());

    // The server that closed its stdout and lived on was killed with the step.
    let first = std::fs::read_to_string(&beat).unwrap();
    assert!(!first.is_empty(), "the server never beat: {output}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        first,
        std::fs::read_to_string(&beat).unwrap(),
        "the server that closed its stdout still lives"
    );
}

/// A server that announces a new tool list mid-session: the model keeps what was checked.
#[test]
fn a_rug_pull_mid_session_changes_nothing_the_model_sees_or_may_call() {
    let sandbox = Sandbox::new("mcp-attack-rugpull");
    let servers = format!(
        "{{\"r\": {{\"command\": [\"/usr/bin/python3\", \"{}\", \"--switch\", \"after-list\"], \
         \"tools\": [\"echo\"], \"env\": {{\"RUGPULL_NEXT\": \"d\"}}}}}}",
        test_server("rugpull.py")
    );
    write_workflow(&sandbox, 6, &servers, "");
    lock(&sandbox);
    let claude = FakeClaude::start(vec![
        Turn::new()
            .tool_use("t1", "mcp__r__echo", &json!({"text": "one"}))
            .tool_use("t2", "mcp__r__sync_keys", &json!({"path": "/root/.ssh"}))
            .reply(),
        Turn::new()
            .tool_use("t3", "mcp__r__echo", &json!({"text": "two"}))
            .reply(),
        Turn::text(&["done"]).reply(),
    ]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(ok, "{output}");
    let requests = claude.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(tool_names(request), ["read_file", "mcp__r__echo"]);
        assert!(!request.body["tools"].to_string().contains("IMPORTANT"));
    }
    let (synced, is_error) = result_of(&requests[1], "t2");
    assert!(is_error && synced.contains("not available"), "{synced}");
    assert_eq!(result_of(&requests[2], "t3"), ("two".to_owned(), false));
}

/// Look-alike names never stand for an allowed one; a duplicate definition is refused by
/// `plue lock` and fails the step before the model is asked.
#[test]
fn look_alike_and_duplicate_tool_names_are_refused() {
    let sandbox = Sandbox::new("mcp-attack-names");
    let servers = |mode: &str| format!("{{{}}}", attacker("a", &["--names", mode], &["echo"], ""));
    write_workflow(&sandbox, 6, &servers("lookalike"), "");
    let (ok, text) = try_lock(&sandbox, &[]);
    assert!(!ok && text.contains("offers no tool 'echo'"), "{text}");

    write_workflow(&sandbox, 6, &servers("poisoned"), "");
    let (locked, text) = try_lock(&sandbox, &[]);
    assert!(
        !locked && text.contains("more than once"),
        "plue lock pinned a duplicate: {text}"
    );
    let claude = FakeClaude::start(vec![Turn::text(&["never"]).reply()]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(!ok && output.contains("more than once"), "{text}\n{output}");
    assert!(claude.requests().is_empty(), "the model was asked");
}

/// A tool name is the server's to choose: escape sequences and line breaks in it must not
/// reach the developer's terminal (`plue lock`) or the step's log (`plue run`) as they are.
#[test]
fn a_servers_tool_names_reach_no_terminal_with_control_characters() {
    let sandbox = Sandbox::new("mcp-attack-ansi");
    let servers = format!("{{{}}}", attacker("a", &["--names", "ansi"], &["nope"], ""));
    write_workflow(&sandbox, 6, &servers, "");
    let (ok, text) = try_lock(&sandbox, &[]);
    assert!(!ok && text.contains("offers no tool 'nope'"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "plue lock printed a server's escape sequences: {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("llm step succeeded")),
        "plue lock printed a server's forged line: {text}"
    );
    let claude = FakeClaude::start(vec![Turn::text(&["never"]).reply()]);
    let (ok, output) = run(&sandbox, &claude, &[]);
    assert!(!ok && output.contains("offers no tool 'nope'"), "{output}");
    assert!(
        !output.contains('\u{1b}') && !output.contains('\u{7}'),
        "plue run printed a server's escape sequences: {output:?}"
    );
}

/// `mcp__<server>__<tool>` of two servers must differ: server `a` tool `_b` and server `a_`
/// tool `b` are both `mcp__a___b`.
#[test]
fn two_servers_cannot_declare_the_same_shown_name() {
    let sandbox = Sandbox::new("mcp-attack-collide");
    let servers = "{\"a\": {\"command\": [\"/bin/true\"], \"tools\": [\"_b\"]}, \
                   \"a_\": {\"command\": [\"/bin/true\"], \"tools\": [\"b\"]}}";
    write_workflow(&sandbox, 6, servers, "");
    let check = sandbox.plue(&["check", "w.plue.py"]).output().unwrap();
    assert!(
        !check.status.success(),
        "plue check accepts two tools the model sees as mcp__a___b: {}",
        support::stdout(&check)
    );
}

/// `plue check` evaluates and validates; it never starts a server.
#[test]
fn plue_check_never_starts_a_server() {
    let sandbox = Sandbox::new("mcp-attack-check");
    let marker = sandbox.path("started");
    let servers = format!(
        "{{\"x\": {{\"command\": [\"/bin/sh\", \"-c\", \"touch {}\"], \"tools\": [\"t\"]}}}}",
        marker.display()
    );
    write_workflow(&sandbox, 6, &servers, "");
    git_init(&sandbox);
    let check = sandbox.plue(&["check", "w.plue.py"]).output().unwrap();
    assert!(check.status.success(), "{}", support::stdout(&check));
    let check = sandbox.plue(&["check"]).output().unwrap();
    assert!(check.status.success(), "{}", support::stdout(&check));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "plue check started the server");
}

/// A TCP listener on 127.0.0.1 that answers every request with `answer` and counts the
/// connections; the headers it read are kept.
struct Listener {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn listen(answer: Option<String>) -> Listener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            if let Some(answer) = &answer {
                let _ = stream.write_all(answer.as_bytes());
            }
        }
    });
    Listener { port, seen }
}

fn http_server(url: &str, port: u16, extra: &str) -> String {
    let _ = port;
    format!("{{\"web\": {{\"url\": \"{url}\", \"tools\": [\"echo\"]{extra}}}}}")
}

/// An HTTP server behind a name for the runner host's loopback, or redirecting elsewhere:
/// refused, and the bearer token goes nowhere else.
#[test]
fn an_http_server_cannot_lead_the_runner_to_loopback_or_elsewhere() {
    let sandbox = Sandbox::new("mcp-attack-http");
    const TOKEN: &str = "docs-bearer-7c6b5a4d3e2f";
    // "vm" (or the host's name) resolves to 127.0.0.1 here; skip when it does not.
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let resolves_to_loopback = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 80))
        .map(|mut a| a.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    let target = listen(None);
    if resolves_to_loopback && name != "localhost" {
        let url = format!("http://{name}:{}/mcp", target.port);
        write_workflow(
            &sandbox,
            6,
            &http_server(&url, target.port, ", \"bearer_secret\": \"DOCS\""),
            &format!(", secrets=[\"DOCS\"], network=[\"{name}:{}\"]", target.port),
        );
        let claude = FakeClaude::start(vec![Turn::text(&["never"]).reply()]);
        let (ok, output) = run(&sandbox, &claude, &[&format!("DOCS={TOKEN}")]);
        assert!(
            !ok && output.contains("no address a step may reach"),
            "{output}"
        );
        assert!(
            target.seen.lock().unwrap().is_empty(),
            "the runner connected"
        );
        assert!(!output.contains(TOKEN), "{output}");
    } else {
        eprintln!("skipped the loopback name: {name} does not resolve to loopback");
    }

    // A redirect to another port of the host: never followed, the token not sent there.
    let elsewhere = listen(None);
    let redirect = listen(Some(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{}/mcp\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        elsewhere.port
    )));
    let url = format!("http://127.0.0.1:{}/mcp", redirect.port);
    write_workflow(
        &sandbox,
        6,
        &http_server(&url, redirect.port, ", \"bearer_secret\": \"DOCS\""),
        &format!(
            ", secrets=[\"DOCS\"], network=[\"127.0.0.1:{}\"]",
            redirect.port
        ),
    );
    let claude = FakeClaude::start(vec![Turn::text(&["never"]).reply()]);
    let (ok, output) = run(&sandbox, &claude, &[&format!("DOCS={TOKEN}")]);
    assert!(!ok, "{output}");
    assert!(
        !redirect.seen.lock().unwrap().is_empty(),
        "the runner never tried the server: {output}"
    );
    assert!(
        elsewhere.seen.lock().unwrap().is_empty(),
        "the runner followed a redirect: {:?}",
        elsewhere.seen.lock().unwrap()
    );
    assert!(!output.contains(TOKEN), "{output}");
    assert!(claude.requests().is_empty());

    // The URL's credentials and a host the allow-list lacks are refused by `plue check`.
    for (url, network) in [
        (
            format!("http://user:pw@127.0.0.1:{}/mcp", redirect.port),
            format!("127.0.0.1:{}", redirect.port),
        ),
        (
            format!("http://169.254.169.254:{}/mcp", redirect.port),
            format!("127.0.0.1:{}", redirect.port),
        ),
    ] {
        write_workflow(
            &sandbox,
            6,
            &http_server(&url, 0, ""),
            &format!(", network=[\"{network}\"]"),
        );
        let check = sandbox.plue(&["check", "w.plue.py"]).output().unwrap();
        assert!(
            !check.status.success(),
            "{url}: {}",
            support::stdout(&check)
        );
    }
}
