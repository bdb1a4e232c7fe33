//! End to end through `plue run`: the smaller step and plan options of issue 33 —
//! `continue_on_error=True` (a tolerated failure: dependents run, failure handlers do not,
//! the run succeeds), `Plan(max_parallel=N)` (no more than N steps at once, whatever
//! `--runners` allows) and `system_prompt=` (the agent's system prompt in the request).

use std::process::Output;

use crate::support::{printed, Sandbox};
use serde_json::Value;
use testkit::claude::{FakeClaude, Turn};

fn plue_run(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox
        .plue(&["run", "w.plue.py", "--summary-json", "summary.json"])
        .args(args)
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue run")
}

fn status_of(summary: &Value, id: &str) -> String {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_step_that_may_fail_lets_the_run_go_on_and_succeed() {
    let sandbox = Sandbox::new("continue-on-error");
    sandbox.write(
        "w.plue.py",
        r#"def workflow():
    return Plan(name="tolerant", triggers=[Trigger.manual()], steps=[
        Step.bash("lint", "echo style problems; exit 3", continue_on_error=True),
        Step.bash("build", "echo built", depends_on=["lint"]),
        Step.bash("alarm", "echo alarm", depends_on=["lint"], when="failure"),
    ])
"#,
    );
    let output = plue_run(&sandbox, &["--runners", "1"]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    let summary = sandbox.summary();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(
        status_of(&summary, "lint"),
        "failed",
        "the failure is shown"
    );
    assert_eq!(status_of(&summary, "build"), "succeeded");
    assert_eq!(status_of(&summary, "alarm"), "skipped");
}

#[test]
fn plan_max_parallel_bounds_the_steps_running_at_once() {
    let sandbox = Sandbox::new("max-parallel");
    let log = sandbox.shared("order.log");
    let step = |id: &str| {
        format!(
            "Step.bash('{id}', 'echo start >> {log}; sleep 0.4; echo end >> {log}')",
            log = log.display()
        )
    };
    sandbox.write(
        "w.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='one-at-a-time', triggers=[Trigger.manual()], max_parallel=1, steps=[\n        {},\n        {},\n        {},\n    ])\n",
            step("a"),
            step("b"),
            step("c")
        ),
    );
    let output = plue_run(&sandbox, &["--runners", "3"]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["start", "end", "start", "end", "start", "end"],
        "the steps overlapped"
    );
}

#[test]
fn an_llm_steps_system_prompt_is_the_requests() {
    let server = FakeClaude::start(vec![Turn::text(&["ok"]).reply()]);
    let sandbox = Sandbox::new("system-prompt");
    sandbox.write(
        "w.plue.py",
        r#"def workflow():
    return Plan(name="system", triggers=[Trigger.manual()], steps=[
        Step.llm("ask", prompt="Hello.", tools=[], system_prompt="You answer in one word."),
    ])
"#,
    );
    let output = sandbox.plue_run_llm(server.url(), &["w.plue.py", "--runners", "1"]);
    assert!(output.status.success(), "{}", printed(&output));
    assert_eq!(
        server.requests()[0].body["system"],
        "You answer in one word."
    );
}

/// `when="steps.review.outputs.verdict == 'approve'"`: the run of `review` decides.
fn run_with_verdict(verdict: &str) -> Value {
    let sandbox = Sandbox::new(&format!("when-{verdict}"));
    sandbox.write(
        "w.plue.py",
        &format!(
            r#"def workflow():
    return Plan(name="gated", triggers=[Trigger.manual()], steps=[
        Step.bash("review", "echo verdict={verdict} >> $PLUE_OUTPUT"),
        Step.bash("test", "true", depends_on=["review"]),
        Step.bash("merge", "echo merged", depends_on=["test"],
                  when="steps.review.outputs.verdict == 'approve' and not (steps.review.outputs.missing != '')"),
        Step.bash("after", "true", depends_on=["merge"]),
    ])
"#
        ),
    );
    let output = plue_run(&sandbox, &["--runners", "1"]);
    assert!(output.status.success(), "{}", printed(&output));
    sandbox.summary()
}

#[test]
fn a_when_expression_on_an_output_runs_or_skips_the_step() {
    let approved = run_with_verdict("approve");
    assert_eq!(approved["status"], "succeeded", "{approved}");
    assert_eq!(status_of(&approved, "merge"), "succeeded", "{approved}");
    assert_eq!(status_of(&approved, "after"), "succeeded", "{approved}");

    let rejected = run_with_verdict("reject");
    assert_eq!(rejected["status"], "succeeded", "{rejected}");
    assert_eq!(status_of(&rejected, "merge"), "skipped", "{rejected}");
    assert_eq!(status_of(&rejected, "after"), "skipped", "{rejected}");
    let merge = rejected["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "merge")
        .unwrap()
        .to_string();
    assert!(
        merge.contains("when=\\\"steps.review.outputs.verdict == 'approve'"),
        "the reason names the expression: {merge}"
    );
}
