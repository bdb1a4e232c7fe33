//! End-to-end tests of review loops through the real `plue run` binary: a `build` step
//! appends a line to a counter file outside the workspaces, a `review` step fails until
//! enough builds happened and sends its failure back to `build` (`loop_to`, `max_loops`),
//! with its `feedback` output visible to the next build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

struct Ran {
    output: Output,
    summary: Value,
    counter: String,
    /// `plue runs --json` afterwards, on the same data directory.
    runs: Value,
    _dir: tempfile::TempDir,
}

impl Ran {
    fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    fn step(&self, id: &str) -> &Value {
        self.summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id} in {}", self.summary))
    }
}

/// A file steps can append to whatever user a root runner runs them as, outside every
/// workspace copy.
fn shared_file(dir: &Path) -> PathBuf {
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = shared.join("counter");
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    file
}

/// Runs the workflow whose steps `steps(counter)` writes, with `plue run`.
fn run(steps: impl Fn(&str) -> String) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let counter = shared_file(dir.path());
    let work = dir.path().join("repo");
    std::fs::create_dir(&work).unwrap();
    let source = format!(
        "def workflow():\n    return Plan(name='loops', triggers=[Trigger.manual()], steps=[\n{}\n    ])\n",
        steps(counter.to_str().unwrap())
    );
    std::fs::write(work.join("w.plue.py"), source).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_plue"))
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .current_dir(&work)
        // The runner's work directory beside the counter: a root runner's step sees only
        // the entry of /tmp that holds its work directory (its /tmp is its own).
        .env("TMPDIR", dir.path())
        .args(["run", "w.plue.py", "--runners", "2"])
        .args(["--summary-json", "summary.json"])
        .output()
        .expect("plue runs");
    let summary = std::fs::read_to_string(work.join("summary.json"))
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    let listed = Command::new(env!("CARGO_BIN_EXE_plue"))
        .env_remove("PLUE_DATA_DIR")
        .env_remove("PLUE_SERVER")
        .current_dir(&work)
        .args(["runs", "--json"])
        .output()
        .expect("plue runs --json");
    assert!(listed.status.success(), "{listed:?}");
    Ran {
        output,
        summary,
        runs: serde_json::from_slice(&listed.stdout).expect("JSON"),
        counter: std::fs::read_to_string(&counter).unwrap(),
        _dir: dir,
    }
}

/// `build` appends its iteration and the feedback it got; `review` counts the builds and
/// passes from the `passes_at`-th on (never for 0), always leaving feedback.
fn pipeline(counter: &str, passes_at: u32, max_loops: u32) -> String {
    format!(
        r#"
        Step.bash("setup", "echo setup >> {counter}"),
        Step.bash("build", 'echo "build $PLUE_ITERATION [{{{{ steps.review.outputs.feedback }}}}]" >> {counter}', depends_on=["setup"]),
        Step.bash("test", "true", depends_on=["build"]),
        Step.bash("review", 'n=$(grep -c ^build {counter}); echo "feedback=only $n builds" >> "$PLUE_OUTPUT"; [ {passes_at} -gt 0 ] && [ "$n" -ge {passes_at} ]', depends_on=["test"], loop_to="build", max_loops={max_loops}),
        Step.bash("deploy", "echo deploy >> {counter}", depends_on=["review"]),
        Step.bash("notify", "echo notify >> {counter}", depends_on=["review"], when="failure"),
"#
    )
}

#[test]
fn a_review_loop_runs_the_builder_again_with_the_reviews_feedback_until_it_passes() {
    let ran = run(|counter| pipeline(counter, 3, 2));
    assert!(ran.output.status.success(), "{}", ran.text());
    assert_eq!(ran.summary["status"], "succeeded", "{}", ran.summary);
    assert_eq!(
        ran.counter,
        "setup\nbuild 1 []\nbuild 2 [only 1 builds]\nbuild 3 [only 2 builds]\ndeploy\n",
        "setup ran once, build three times seeing the last review's feedback, the \
         failure handler never: {}",
        ran.text()
    );
    for id in ["build", "test", "review"] {
        assert_eq!(ran.step(id)["iteration"], 3, "{}", ran.summary);
        assert_eq!(ran.step(id)["status"], "succeeded");
        assert_eq!(ran.step(id)["attempts"], 3, "one attempt per iteration");
    }
    assert_eq!(ran.step("setup")["iteration"], 1);
    assert_eq!(ran.step("notify")["status"], "skipped");
    assert_eq!(ran.runs[0]["loops_taken"], 2, "{}", ran.runs);
    assert_eq!(ran.runs[0]["status"], "succeeded");
    let text = ran.text();
    assert!(
        text.contains("build  | ↺ iteration 3") && text.contains("review | ↺ iteration 3"),
        "{text}"
    );
    assert!(
        text.contains("ITERATION"),
        "the summary table shows iterations: {text}"
    );
}

#[test]
fn a_review_that_never_passes_fails_the_run_after_max_loops() {
    let ran = run(|counter| pipeline(counter, 0, 2));
    assert!(!ran.output.status.success(), "{}", ran.text());
    assert_eq!(ran.summary["status"], "failed", "{}", ran.summary);
    assert_eq!(
        ran.summary["reason"], "review failed after 2 loops back to build",
        "{}",
        ran.summary
    );
    assert_eq!(
        ran.counter,
        "setup\nbuild 1 []\nbuild 2 [only 1 builds]\nbuild 3 [only 2 builds]\nnotify\n",
        "build ran exactly three times; the failure handler once, after the last loop: {}",
        ran.text()
    );
    assert_eq!(ran.step("review")["iteration"], 3);
    assert_eq!(ran.step("review")["status"], "failed");
    assert_eq!(ran.step("deploy")["status"], "skipped");
    assert_eq!(ran.runs[0]["loops_taken"], 2, "{}", ran.runs);
    assert_eq!(
        ran.runs[0]["reason"],
        "review failed after 2 loops back to build"
    );
    assert!(
        ran.text().contains("failed in")
            && ran
                .text()
                .contains(": review failed after 2 loops back to build"),
        "{}",
        ran.text()
    );
}
