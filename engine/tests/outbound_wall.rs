//! End to end, the outbound wall played as the attacker: the real `plue serve`, its
//! runners and the scripted Claude, whose replies and tool calls are the attacker's. What
//! leaks is looked for where readers read: the steps' reasons, the stored proposals and
//! their reasons, the transcripts.
//!
//! - A file named after a secret, outside `paths_allow`: refused, and the refusal names
//!   `***`, never the secret (it was in clear in the step's reason and the proposal's).
//! - A token another step left in the workspace it hands on (`workspace_from`): the agent
//!   that got the workspace holds no secret of its own, yet its pull request carrying the
//!   token is refused (the run's secrets, not the step's), and its transcript, which read
//!   the token, shows it to nobody.
//! - A UTF-16 copy of that token after 8,100 bytes of text (git calls a file binary only by
//!   its first 8,000): refused as binary.
//! - A mention and an image link spelt with character references longer than 8 digits:
//!   refused.
//! - What users hit: a pull request that adds an empty file and changes a mode passes.
//! - A repository secret rotated (and another deleted) while a step of the run that read
//!   them is running: the old values stay in the run's wall, so another step printing
//!   them has them masked in its log and outputs, and an agent proposing one is refused.

use crate::support;
use std::time::Duration;

use crate::support::{client, get_json, start_run, step, wait_final, Sandbox};
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Routed};

const KEY: &str = "sk-ant-outbound-wall-7c1d0e";
/// The other step's token: only `prep` is given it.
const NPM: &str = "npm_0utb0undWallT0kenOfPrep42";

fn write(path: &str, content: &str) -> Call {
    ("write_file", json!({"path": path, "content": content}))
}

fn bash(command: &str) -> Call {
    ("bash", json!({"command": command}))
}

fn pr() -> Call {
    (
        "propose_pull_request",
        json!({"title": "Tidy up", "body": "As the issue asked."}),
    )
}

fn comment(body: &str) -> Call {
    ("propose_comment", json!({"body": body}))
}

/// A tool call: the tool's name and its input.
type Call = (&'static str, Value);

/// Each agent: its step id and the tool calls of its turns (one turn per inner list).
fn agents() -> Vec<(&'static str, Vec<Vec<Call>>)> {
    vec![
        (
            "named",
            vec![vec![write(&format!("notes/{NPM}.txt"), "x\n")], vec![pr()]],
        ),
        (
            "handed",
            vec![
                vec![bash("cat src/.npmrc; cp src/.npmrc src/copy.txt")],
                vec![pr()],
            ],
        ),
        (
            "utf16",
            vec![
                vec![bash(
                    "t=$(cut -d= -f2 src/.npmrc); { head -c 8100 /dev/zero | tr '\\0' a; \
                     for ((i=0; i<${#t}; i++)); do printf '%s\\0' \"${t:i:1}\"; done; } > src/data.txt",
                )],
                vec![pr()],
            ],
        ),
        (
            "mention",
            vec![vec![comment("thanks &#x40;admin for the review")]],
        ),
        (
            "image",
            vec![vec![comment(
                "done ![x](&#x000000000068;ttps://attacker.example/p.png)",
            )]],
        ),
        (
            "tidy",
            vec![
                vec![bash("touch src/empty.txt && chmod +x src/run.sh")],
                vec![pr()],
            ],
        ),
    ]
}

fn script() -> Vec<Routed> {
    let agents = agents();
    support::routed_agents(agents.iter().map(|(id, turns)| (*id, turns.as_slice())))
}

fn workflow() -> String {
    let steps: Vec<String> = agents()
        .iter()
        .map(|(id, _)| {
            format!(
                "        Step.llm(\"{id}\", prompt=\"Issue #7 says: case {id} now\", \
                 tools=[\"write_file\", \"bash\"], safe_outputs=so, depends_on=[\"prep\"], \
                 workspace_from=\"prep\"),\n"
            )
        })
        .collect();
    format!(
        "def workflow(ctx):\n    so = SafeOutputs(pull_request=True, comments=1, \
         paths_allow=[\"src/**\"], max_files=3)\n    return Plan(\"outbound-wall\", steps=[\n\
         \x20       Step.bash(\"prep\", 'printf \"//registry.npmjs.org/:_authToken=%s\\\\n\" \"$NPM\" > src/.npmrc', secrets=[\"NPM\"]),\n\
         \x20       Step.bash(\"echoer\", 't=$(cut -d= -f2 src/.npmrc); echo \"found $t\"; echo \"leak=$t\" >> \"$PLUE_OUTPUT\"', depends_on=[\"prep\"], workspace_from=\"prep\"),\n\
         {}    ])\n",
        steps.concat()
    )
}

/// Every spelling of the other step's token a reader could copy.
fn leaked(text: &str) -> Option<&'static str> {
    let utf16: String = NPM.chars().flat_map(|c| [c, '\0']).collect();
    let escaped_utf16: String = NPM.chars().map(|c| format!("{c}\\u0000")).collect();
    let hexed = hex::encode(NPM);
    let found = [
        (NPM, "as it is"),
        (utf16.as_str(), "UTF-16"),
        (escaped_utf16.as_str(), "UTF-16 in JSON"),
        (hexed.as_str(), "hex"),
    ]
    .into_iter()
    .find(|(needle, _)| text.contains(needle))
    .map(|(_, how)| how);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_agent_writes_leaves_no_secret_of_the_run_link_or_mention() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("outbound-wall");
    let ws = sandbox.path("ws");
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/run.sh"), "echo run\n").unwrap();
    let file = ws.join("wall.plue.py");
    std::fs::write(&file, workflow()).unwrap();
    let server = FakeClaude::start_routed(script());
    let (key, npm) = (format!("ANTHROPIC_API_KEY={KEY}"), format!("NPM={NPM}"));
    let extra = ["--heartbeat-ms", "200", "--secret", &key, "--secret", &npm];
    let engine = sandbox
        .serve_local_with_env("2", &extra, &[("ANTHROPIC_BASE_URL", server.url())])
        .await;
    let url = engine.url.as_str();
    let http = client();
    let run_id = start_run(&http, url, &file, &ws).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(240)).await;
    assert_eq!(step(&run, "prep")["status"], "succeeded", "{run}");

    let proposals = get_json(&http, &format!("{url}/api/runs/{run_id}/proposals")).await;
    let of = |id: &str| -> Vec<Value> {
        proposals
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["step_id"] == id)
            .cloned()
            .collect()
    };
    let refused = |id: &str, why: &str| {
        let s = step(&run, id);
        assert_eq!(s["status"], "failed", "{id}: {run}");
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("safe output refused: ") && reason.contains(why),
            "{id}: {reason}"
        );
        let stored = of(id);
        assert!(!stored.is_empty(), "{id}: {proposals}");
        for p in stored {
            assert_eq!(p["state"], "refused", "{id}: {p}");
            assert!(p["reason"].as_str().unwrap().contains(why), "{id}: {p}");
        }
    };
    // Named after the token: refused for its path, which the refusal names masked.
    refused("named", "notes/***.txt");
    refused("named", "paths_allow does not allow");
    // The token prep left: the run's secret, though not the agent's.
    refused("handed", "holds a secret of the run");
    // Its UTF-16 copy past git's 8,000 bytes: binary by its NUL.
    refused("utf16", "binary");
    refused("mention", "mentions @admin");
    refused("image", "attacker.example");
    // A pull request adding an empty file and changing a mode is read and accepted.
    assert_eq!(step(&run, "tidy")["status"], "succeeded", "{run}");
    let tidy = of("tidy");
    assert_eq!(tidy.len(), 1, "{proposals}");
    let diff = tidy[0]["payload"]["diff"].as_str().unwrap();
    assert!(diff.contains("new file mode 100644"), "{diff}");
    assert!(diff.contains("new mode 100755"), "{diff}");

    // Where readers read: no spelling of the token.
    let run_text = run.to_string();
    assert_eq!(leaked(&run_text), None, "{run_text}");
    let listed = proposals.to_string();
    assert_eq!(leaked(&listed), None, "{listed}");
    // The agent read the token (`cat src/.npmrc`): the model saw it, readers do not.
    let saw = server
        .requests()
        .iter()
        .any(|r| r.tool_results().iter().any(|t| t.to_string().contains(NPM)));
    assert!(
        saw,
        "the agent never read the token: the test proves nothing"
    );
    // A bash step handed the workspace prints the token and makes it an output: its log
    // and its outputs are masked with the run's secrets though the step never held it.
    assert_eq!(step(&run, "echoer")["status"], "succeeded", "{run}");
    let echoer = step(&run, "echoer").to_string();
    assert!(echoer.contains("***"), "{echoer}");
    assert_eq!(leaked(&echoer), None, "{echoer}");
    for id in ["echoer", "handed", "utf16"] {
        let lines = support::log_lines(&http, url, run_id, id).await.unwrap();
        let text = serde_json::to_string(&lines).unwrap();
        assert_eq!(leaked(&text), None, "{id}'s log: {text}");
    }
    for id in ["handed", "utf16"] {
        let transcript = get_json(
            &http,
            &format!("{url}/api/runs/{run_id}/steps/{id}/transcript"),
        )
        .await;
        let text = transcript.to_string();
        assert!(text.contains("turns"), "{id}: {text}");
        assert_eq!(leaked(&text), None, "{id}: {text}");
    }
}

const OLD_DEPLOY: &str = "d3ploy-before-rotation-0ld4711";
const NEW_DEPLOY: &str = "d3ploy-after-rotation-n3w0815";
const GONE: &str = "g0ne-mid-run-deleted-t0ken99";

/// The repository's workflow: `hold` reads both secrets into the workspace and runs on a
/// while (the test rotates one and deletes the other meanwhile); `echoer` prints what it
/// was handed in the workspace and makes it an output; `agent` proposes a comment quoting
/// the old value.
const ROTATION: &str = r#"
def workflow(ctx):
    return Plan("rotation", triggers=[Trigger.manual()], steps=[
        Step.bash("hold", 'printf "%s\\n%s\\n" "$DEPLOY_TOKEN" "$GONE_TOKEN" > held.txt; sleep 4',
                  secrets=["DEPLOY_TOKEN", "GONE_TOKEN"]),
        Step.bash("echoer", 'sha256sum held.txt; cat held.txt; echo "leak=$(head -n 1 held.txt)" >> "$PLUE_OUTPUT"',
                  depends_on=["hold"], workspace_from="hold"),
        Step.llm("agent", prompt="Issue #7 says: case agent now", tools=["bash"],
                 safe_outputs=SafeOutputs(comments=1), depends_on=["hold"], workspace_from="hold"),
    ])
"#;

// The attack (the outbound wall, round two): a run's wall was made from the current
// values of its secrets. A maintainer rotates DEPLOY_TOKEN and deletes GONE_TOKEN while a
// step that read them runs; the old values were then unknown to the run's wall, so the
// next step printing them kept them in clear in its log and outputs, and an agent could
// publish one in a comment. Now every value handed to a step of the run stays in its wall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_or_deleted_while_the_run_goes_on_is_still_walled() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("outbound-wall-rotation");
    let origin = sandbox.path("origin");
    support::git_repo(
        &origin,
        &[(".plue/rotation.plue.py", ROTATION), ("README.md", "hi\n")],
    );
    let agent: Vec<Vec<Call>> = vec![
        vec![bash("cat held.txt")],
        vec![comment(&format!(
            "The deploy token is {OLD_DEPLOY}, and {GONE}"
        ))],
    ];
    let server = FakeClaude::start_routed(support::routed_agents([("agent", agent.as_slice())]));
    let key = format!("ANTHROPIC_API_KEY={KEY}");
    let args = [
        "--runners",
        "2",
        "--heartbeat-ms",
        "200",
        "--secret",
        &key,
        "--secret-repos",
        "ANTHROPIC_API_KEY=acme/app",
    ];
    let engine = sandbox
        .serve_with_env(
            "engine",
            support::free_port(),
            &args,
            &[("ANTHROPIC_BASE_URL", server.url())],
        )
        .await;
    let url = engine.url.as_str();
    let http = client();
    support::register_origin(url, &origin, "a-webhook-secret-of-the-rotation").await;
    support::put_repo_secret(url, "acme/app", "DEPLOY_TOKEN", OLD_DEPLOY).await;
    support::put_repo_secret(url, "acme/app", "GONE_TOKEN", GONE).await;
    let run_id = support::dispatch_retrying(&http, url, "rotation", json!({})).await;

    // While `hold` runs (it has both values): rotate one, delete the other.
    support::wait_for(Duration::from_secs(60), "hold running", || async {
        let run = support::run_view(&http, url, run_id).await?;
        (step(&run, "hold")["status"] == "running").then_some(())
    })
    .await;
    support::put_repo_secret(url, "acme/app", "DEPLOY_TOKEN", NEW_DEPLOY).await;
    let deleted = http
        .delete(format!("{url}/api/repos/acme/app/secrets/GONE_TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let run = wait_final(&http, url, run_id, Duration::from_secs(180)).await;
    assert_eq!(step(&run, "hold")["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "echoer")["status"], "succeeded", "{run}");
    let lines = support::log_lines(&http, url, run_id, "echoer")
        .await
        .unwrap();
    let log = serde_json::to_string(&lines).unwrap();
    // It printed the old values (their digest proves it), masked.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
        "{OLD_DEPLOY}\n{GONE}\n"
    )));
    assert!(
        log.contains(&digest),
        "echoer did not read the old values: {log}"
    );
    assert!(log.contains("***"), "{log}");
    // The agent read them too, and its comment quoting them is refused.
    let agent = step(&run, "agent");
    assert_eq!(agent["status"], "failed", "{run}");
    let reason = agent["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("safe output refused: ") && reason.contains("holds a secret of the run"),
        "{reason}"
    );
    let proposals = get_json(&http, &format!("{url}/api/runs/{run_id}/proposals")).await;
    assert!(!proposals.as_array().unwrap().is_empty(), "{proposals}");
    for (what, text) in [
        ("the run", run.to_string()),
        ("echoer's log", log),
        ("the proposals", proposals.to_string()),
    ] {
        for value in [OLD_DEPLOY, GONE] {
            assert!(
                !text.contains(value),
                "{what} holds a value of the run: {text}"
            );
        }
    }
}
