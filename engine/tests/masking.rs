//! End to end: `plue run` on a step that prints its secret exactly where the runner must
//! cut — across the 16 KiB line limit (and the second cut of a 40 KiB line), and around a
//! log batch boundary — then reads back what the store holds. Whatever the cuts, the
//! stored lines of each printed line concatenate to the line with the secret masked.

use std::process::{Command, Output};

use engine::store::Store;
use serde_json::Value;

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
