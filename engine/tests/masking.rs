//! End to end: `plue run` on a step that prints its secret exactly where the runner must
//! cut — across the 16 KiB line limit (and the second cut of a 40 KiB line), and around a
//! log batch boundary — then reads back what the store holds. Whatever the cuts, the
//! stored lines of each printed line concatenate to the line with the secret masked.
//!
//! And `plue serve`, its runners and the scripted Claude, on steps that spell their own
//! secret as the outbound wall knows it (reversed, hex, base64) in pieces: a bash step's
//! `printf`s with pauses between, on one line and over two and three lines (stdout and
//! stderr), and a model's paced deltas, a line break between two of them. Neither the
//! stored log (the API) nor the live log (SSE, followed from the start) shows a whole
//! spelling, read with its line breaks or without them.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support;

use plue_store::Store;
use serde_json::Value;
use testkit::claude::{FakeClaude, Turn};

const SECRET: &str = "dpl-4f7a1c9e2b-SPLIT-ME";
const LIMIT: usize = plue_types::protocol::MAX_LINE_BYTES;

/// `plue run` (one runner, no colours, no inherited data directory) of `workflow`, written
/// as `w.plue.py` in a fresh directory, with `$DEPLOY_TOKEN` = `secret` passed as the secret
/// `DEPLOY_TOKEN`, and `extra` arguments: the directory, the output, its stdout and stderr.
fn run_leaking(
    workflow: &str,
    secret: &str,
    extra: &[&str],
) -> (tempfile::TempDir, Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.plue.py"), workflow).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_plue"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .env("DEPLOY_TOKEN", secret)
        .args(["run", "w.plue.py", "--runners", "1"])
        .args(["--secret", "DEPLOY_TOKEN"])
        .args(extra)
        .output()
        .expect("plue runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (dir, output, stdout, stderr)
}

/// Bash that prints a 40 KiB line of `x`s with `$DEPLOY_TOKEN` starting at each offset.
fn long_lines(offsets: &[usize]) -> String {
    offsets
        .iter()
        .map(|offset| {
            let after = 40 * 1024 - offset;
            format!(
                "head -c {offset} /dev/zero | tr '\\0' x; printf %s \"$DEPLOY_TOKEN\"; \
                 head -c {after} /dev/zero | tr '\\0' y; echo; "
            )
        })
        .collect()
}

// The attacker's view: the secret is printed in clear, split by the runner's own cuts;
// before, each piece was masked alone and the store held both halves in clear.
#[test]
fn a_secret_split_by_the_line_cut_is_stored_masked() {
    let len = SECRET.len();
    let offsets: Vec<usize> = (LIMIT - len + 1..LIMIT)
        .step_by(3)
        .chain([LIMIT - 1, 2 * LIMIT - len / 2])
        .collect();
    // MAX_BATCH_LINES lines make a full batch; the secret sits on the lines around its end.
    let full = plue_types::protocol::MAX_BATCH_LINES;
    let batch = format!(
        "for i in $(seq 1 {}); do if [ $i -ge {} ]; then echo \"$i $DEPLOY_TOKEN\"; \
         else echo $i; fi; done; ",
        full + 3,
        full - 2
    );
    let command = long_lines(&offsets) + &batch;
    let workflow = format!(
        "def workflow():\n    return Plan(name='t', triggers=[Trigger.manual()], steps=[\n        \
         Step.bash('leak', {command:?}, secrets=['DEPLOY_TOKEN']),\n    ])\n"
    );
    let (dir, output, stdout, stderr) =
        run_leaking(&workflow, SECRET, &["--summary-json", "summary.json"]);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    let run_id = summary["run_id"].as_i64().unwrap();
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open_data_dir(&dir.path().join(".plue"))
            .await
            .unwrap();
        let steps = store.step_runs(run_id).await.unwrap();
        let leak = steps.iter().find(|s| s.step_id == "leak").unwrap();
        let mut lines = Vec::new();
        let mut cursor = (0, 0);
        loop {
            let page = store.read_logs(leak.id, cursor, 5000).await.unwrap();
            let Some(last) = page.last() else { break };
            cursor = (last.attempt, last.seq);
            lines.extend(page.into_iter().filter(|l| l.stream == "stdout"));
        }
        store.close().await;
        lines
    });
    assert!(stored.iter().all(|l| l.text.len() <= LIMIT));
    // The pieces joined back: each long line is x…***y…, nothing of the secret in clear.
    let joined: String = stored.iter().map(|l| l.text.as_str()).collect();
    assert!(
        !joined.contains(SECRET),
        "the stored pieces hold the secret"
    );
    for offset in &offsets {
        let masked = "x".repeat(*offset) + "***" + &"y".repeat(40 * 1024 - offset);
        assert!(
            joined.contains(&masked),
            "the line at offset {offset} changed"
        );
    }
    let around_the_end: Vec<String> = [full - 1, full + 1]
        .iter()
        .map(|i| format!("{i} ***"))
        .collect();
    for line in &around_the_end {
        assert!(
            stored.iter().any(|l| &l.text == line),
            "{line} is stored masked"
        );
    }
    // What `plue run` printed, joined back the same way.
    let joined_stdout: String = stdout
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .map(|(_, t)| t)
        .collect();
    assert!(
        !joined_stdout.contains(SECRET),
        "the printed pieces hold the secret"
    );
}

// The attacker's view: a step writes its secret as an output's *name*, where the masker
// (which masks values) never looked: before, the name was stored and served in clear and
// a later step got it, upper-cased, in a variable name. Now the step fails, no output is
// kept, and the secret is nowhere in the data directory or on the terminal.
#[test]
fn a_secret_written_as_an_output_key_fails_the_step_and_is_stored_nowhere() {
    const KEY_SECRET: &str = "dpl-4f7a1c9e2b-KEY-NAME";
    let workflow = "def workflow():\n    return Plan(name='t', triggers=[Trigger.manual()], steps=[\n        \
         Step.bash('leak', 'echo \"${DEPLOY_TOKEN}=1\" >> \"$PLUE_OUTPUT\"', secrets=['DEPLOY_TOKEN']),\n        \
         Step.bash('after', 'env | grep PLUE_OUTPUT_ || true', depends_on=['leak']),\n    ])\n";
    let (dir, output, stdout, stderr) = run_leaking(workflow, KEY_SECRET, &[]);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("contains a secret") || stderr.contains("contains a secret"),
        "{stdout}{stderr}"
    );
    // The name as stored, and as a later step's variable name would hold it.
    let forms = [
        KEY_SECRET.to_owned(),
        KEY_SECRET.to_uppercase().replace('-', "_"),
    ];
    for form in &forms {
        assert!(!stdout.contains(form.as_str()) && !stderr.contains(form.as_str()));
    }
    for entry in walkdir::WalkDir::new(dir.path().join(".plue")) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{} holds {form}",
                entry.path().display()
            );
        }
    }
}

/// The step's own secret the pieces spell.
const PIECES_SECRET: &str = "dpl-9c2e5a7f1b-IN-PIECES";

/// The spellings the pieces print: the outbound wall's reversed, hex and base64 (the first
/// of its three alignments, all of the secret's own characters).
fn spelt() -> Vec<(&'static str, String)> {
    let wall = plue_outbound::spellings::of(PIECES_SECRET);
    ["reversed", "hex", "base64"]
        .into_iter()
        .map(|how| {
            let (_, spelling) = wall
                .iter()
                .find(|(s, _)| s.to_string() == how)
                .expect("a spelling");
            (how, spelling.clone())
        })
        .collect()
}

/// Prints each spelling of `$DEPLOY_TOKEN` in pieces with pauses between: on one line,
/// over two lines, over three, and over stdout then stderr.
const PIECES_SH: &str = r#"t="$DEPLOY_TOKEN"
pieces() {
  s="$1"; h=$(( ${#s} / 2 )); third=$(( ${#s} / 3 ))
  printf 'one line: %s' "${s:0:h}"; sleep 0.2; printf '%s .\n' "${s:h}"
  printf 'two lines: %s\n' "${s:0:h}"; sleep 0.2; printf '%s .\n' "${s:h}"
  printf 'three lines: %s\n' "${s:0:third}"; sleep 0.2
  printf '%s\n' "${s:third:third}"; sleep 0.2; printf '%s .\n' "${s:2*third}"
  printf 'two streams: %s\n' "${s:0:h}"; sleep 0.2; printf '%s .\n' "${s:h}" >&2
}
pieces "$(printf '%s' "$t" | rev)"
pieces "$(printf '%s' "$t" | od -An -tx1 | tr -d ' \n')"
pieces "$(printf '%s' "$t" | base64 -w0 | tr -d '=')"
"#;

/// The model's deltas: each spelling cut in two, a pause before each delta, a line break
/// between the two halves of the hex one.
fn model_pieces() -> Vec<String> {
    let spelt = spelt();
    let half = |s: &str| s.split_at(s.len() / 2).0.to_owned();
    let rest = |s: &str| s.split_at(s.len() / 2).1.to_owned();
    let (rev, hex, b64) = (&spelt[0].1, &spelt[1].1, &spelt[2].1);
    vec![
        format!("Reversed: {}", half(rev)),
        format!("{}. Hex: {}\n", rest(rev), half(hex)),
        format!("{}. Base64: {}", rest(hex), half(b64)),
        format!("{}. Done.", rest(b64)),
    ]
}

/// The texts of a live log: the `line` events of an SSE body.
fn sse_texts(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|line| line["text"].as_str().map(str::to_owned))
        .collect()
}

/// Which spelling of [`PIECES_SECRET`] (or the secret itself) `texts` show, read joined
/// with their line breaks, without them, and with the breaks inside them dropped.
fn shown_spelling(texts: &[String]) -> Option<String> {
    let joined = [
        texts.join("\n"),
        texts.concat(),
        texts.concat().replace(['\n', '\r'], ""),
    ];
    let mut needles = spelt();
    needles.push(("as it is", PIECES_SECRET.to_owned()));
    needles.into_iter().find_map(|(how, spelling)| {
        let spelling = spelling.to_ascii_lowercase();
        joined
            .iter()
            .any(|j| j.to_ascii_lowercase().contains(&spelling))
            .then(|| how.to_owned())
    })
}

// The attacker's view: the step's own secret, reversed, in hex or in base64, printed (or
// streamed by the model) in two or three pieces. Before, each line was masked alone, so
// the pieces were stored and shown live in clear while the same spelling on one line was
// masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_spelt_in_pieces_is_masked_in_the_stored_and_the_live_log() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("masking-pieces");
    let ws = sandbox.path("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("pieces.sh"), PIECES_SH).unwrap();
    let file = ws.join("pieces.plue.py");
    std::fs::write(
        &file,
        "def workflow(ctx):\n    return Plan(\"pieces\", steps=[\n        \
         Step.bash(\"leak\", \"bash pieces.sh\", secrets=[\"DEPLOY_TOKEN\"]),\n        \
         Step.llm(\"agent\", prompt=\"Spell the token.\", tools=[], secrets=[\"DEPLOY_TOKEN\"]),\n    \
         ])\n",
    )
    .unwrap();
    let server = FakeClaude::start(vec![Turn::new()
        .paced_text_block(&model_pieces(), Duration::from_millis(200))
        .reply()]);
    let key = format!("ANTHROPIC_API_KEY={}", support::LLM_KEY);
    let token = format!("DEPLOY_TOKEN={PIECES_SECRET}");
    let extra = [
        "--heartbeat-ms",
        "200",
        "--secret",
        &key,
        "--secret",
        &token,
    ];
    let engine = sandbox
        .serve_local_with_env("2", &extra, &[("ANTHROPIC_BASE_URL", server.url())])
        .await;
    let url = engine.url.clone();
    let http = support::client();
    let run_id = support::start_run(&http, &url, &file, &ws).await;
    // Followed live from the start: each stream ends once its step is final.
    let follow = |step: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let response = http
                .get(format!("{url}/api/runs/{run_id}/steps/{step}/logs"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(240), response.text())
                .await
                .expect("the live log ends")
                .unwrap()
        })
    };
    let live = [("leak", follow("leak")), ("agent", follow("agent"))];
    let run = support::wait_final(&http, &url, run_id, Duration::from_secs(240)).await;
    for (step, stream) in live {
        assert_eq!(support::step(&run, step)["status"], "succeeded", "{run}");
        let body = stream.await.unwrap();
        let live = sse_texts(&body);
        let stored: Vec<String> = support::log_lines(&http, &url, run_id, step)
            .await
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !stored.is_empty() && live.len() == stored.len(),
            "{step}: {live:?} {stored:?}"
        );
        assert_eq!(shown_spelling(&stored), None, "{step} stored: {stored:?}");
        assert_eq!(shown_spelling(&live), None, "{step} live: {live:?}");
    }
    // The pieces were printed, and masked where they stood.
    let stored: Vec<String> = support::log_lines(&http, &url, run_id, "leak")
        .await
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    for line in [
        "one line: *** .",
        "two lines: ***",
        "three lines: ***",
        "two streams: ***",
    ] {
        assert_eq!(
            stored.iter().filter(|l| *l == line).count(),
            3,
            "{line}: {stored:?}"
        );
    }
    assert_eq!(
        stored.iter().filter(|l| *l == "*** .").count(),
        9,
        "{stored:?}"
    );
    let tokens: String = support::log_lines(&http, &url, run_id, "agent")
        .await
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == "token")
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(tokens.starts_with("Reversed: ***"), "{tokens}");
    assert!(tokens.ends_with("***. Done."), "{tokens}");
}
