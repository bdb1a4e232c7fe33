//! `plue run --input` is a dispatch: the inputs are checked against the workflow's
//! `Trigger.manual(inputs=...)` exactly as `plue trigger` and the API check them (one
//! implementation, `evaluator::inputs`): unknown names, required inputs, options, and the
//! declared defaults filled in (`ctx.inputs` shows them). `plue eval` evaluates the same
//! way, so the plan it shows is the plan that runs.

use std::process::Output;

use crate::support::{printed, Sandbox};
use serde_json::Value;

const DEPLOY: &str = r#"def workflow(ctx):
    target = ctx.inputs.get("target", "unset")
    version = ctx.inputs.get("version", "unset")
    return Plan(name="deploy", triggers=[Trigger.manual(inputs={
        "target": {"default": "staging", "options": ["staging", "production"]},
        "version": None,
    })], steps=[
        Step.bash("deploy", "echo deploying " + version + " to " + target),
    ])
"#;

fn plue_run(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox
        .plue(&["run", "deploy.plue.py", "--runners", "1"])
        .args(args)
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue run")
}

#[test]
fn plue_run_checks_inputs_as_a_dispatch_does() {
    let sandbox = Sandbox::new("run-inputs");
    sandbox.write("deploy.plue.py", DEPLOY);

    // regression: each of these ran, with the missing input as "unset".
    for (args, expected) in [
        (
            &["--event", "manual"][..],
            "deploy.plue.py: input 'version' is required",
        ),
        (
            &["--input", "target=production"][..],
            "input 'version' is required",
        ),
        (
            &["--input", "version=1.2", "--input", "tpyo=x"][..],
            "unknown input 'tpyo' (declared: target, version)",
        ),
        (
            &["--input", "version=1.2", "--input", "target=moon"][..],
            "input 'target' must be one of staging, production, not 'moon'",
        ),
    ] {
        let output = plue_run(&sandbox, args);
        let text = printed(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(!text.contains("deploying"), "{args:?} ran: {text}");
    }

    // The default fills what was not given, and the file sees it.
    let output = plue_run(&sandbox, &["--input", "version=1.2"]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("deploying 1.2 to staging"), "{text}");
}

#[test]
fn inputs_to_a_workflow_without_a_manual_trigger_are_refused() {
    let sandbox = Sandbox::new("run-inputs-none");
    sandbox.write(
        "deploy.plue.py",
        "def workflow(ctx):\n    return Plan(name='p', triggers=[Trigger.on_push(branches=['main'])], steps=[Step.bash('a', 'true')])\n",
    );
    let output = plue_run(&sandbox, &["--input", "version=1"]);
    let text = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the workflow has no manual trigger, so it takes no --input"),
        "{text}"
    );
    // A push run without inputs is not a dispatch: nothing to check.
    let output = plue_run(&sandbox, &[]);
    assert!(output.status.success(), "{}", printed(&output));
}

/// `plue eval --event manual` shows the plan `plue run` runs: the declared defaults fill
/// the inputs not given (regression: eval showed "deploying 1.2 to unset", another plan
/// with another hash than the run's).
#[test]
fn eval_shows_the_plan_run_stores_with_the_input_defaults() {
    let sandbox = Sandbox::new("eval-inputs");
    sandbox.write("deploy.plue.py", DEPLOY);
    let flags = ["--event", "manual", "--input", "version=1.2"];
    let output = sandbox
        .plue(&["eval", "deploy.plue.py"])
        .args(flags)
        .output()
        .expect("plue eval");
    assert!(output.status.success(), "{}", printed(&output));
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        shown["steps"][0]["command"], "echo deploying 1.2 to staging",
        "{shown:#}"
    );

    let output = plue_run(
        &sandbox,
        &[&flags[..], &["--summary-json", "record.json"]].concat(),
    );
    assert!(output.status.success(), "{}", printed(&output));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.path("record.json")).unwrap())
            .unwrap();
    assert_eq!(shown["plan_hash"], record["plan_hash"], "{record:#}");

    // Inputs are checked as the run checks them.
    let output = sandbox
        .plue(&["eval", "deploy.plue.py", "--event", "manual"])
        .output()
        .expect("plue eval");
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert!(
        printed(&output).contains("deploy.plue.py: input 'version' is required"),
        "{}",
        printed(&output)
    );
}
