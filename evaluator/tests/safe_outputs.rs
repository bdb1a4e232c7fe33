//! `Step.llm(safe_outputs=SafeOutputs(...), approve_outputs=...)` through the real path: a
//! worker process builds the `SafeOutputs` host object, validation bounds it, and a plan
//! without it keeps its canonical JSON (so its `plan_hash`).

mod support;
use support::{assert_step_problem, one_step, plan_of, pool};

#[tokio::test]
async fn a_declaration_reaches_the_plan_with_approve_and_is_absent_when_unset() {
    let pool = pool().await;
    let step = "Step.llm(\"a\", prompt=\"hi\", safe_outputs=SafeOutputs(pull_request=True, \
                comments=1, labels=[\"bug\"], paths_deny=[\"secret/**\"], max_files=3, \
                branch_prefix=\"bots/\", allow_links=[\"docs.rs\"]), approve_outputs=True)";
    let plan = plan_of(&pool, &one_step(step)).await;
    let evaluator::plan::Action::Llm(llm) = &plan.steps[0].action else {
        panic!("not llm");
    };
    let so = llm.safe_outputs.as_ref().expect("safe_outputs");
    assert!(so.pull_request && so.approve);
    assert_eq!((so.comments, so.max_files), (1, 3));
    assert_eq!(so.labels, ["bug"]);
    assert_eq!(so.branch_prefix, "bots/");
    assert!(so.deny().contains(&".plue/**") && so.deny().contains(&"secret/**"));

    let plain = plan_of(&pool, &one_step("Step.llm(\"a\", prompt=\"hi\")")).await;
    assert!(!plain.canonical_json().contains("safe_outputs"));
}

#[tokio::test]
async fn bad_declarations_are_refused_on_their_line() {
    for (step, expected) in [
        (
            "Step.llm(\"a\", prompt=\"x\", safe_outputs=SafeOutputs())",
            "allows nothing",
        ),
        (
            "Step.llm(\"a\", prompt=\"x\", safe_outputs=SafeOutputs(comments=1, branch_prefix=\"x\"))",
            "must end with",
        ),
        (
            "Step.llm(\"a\", prompt=\"x\", safe_outputs=SafeOutputs(pull_request=True, paths_allow=[\"[\"]))",
            "paths_allow glob",
        ),
        (
            "Step.llm(\"a\", prompt=\"x\", approve_outputs=True)",
            "needs safe_outputs",
        ),
        (
            "Step.llm(\"a\", prompt=\"x\", safe_outputs={\"pull_request\": True})",
            "must be a SafeOutputs",
        ),
        (
            "Step.llm(\"a\", prompt=\"x\", safe_outputs=SafeOutputs(pull_requests=True))",
            "pull_requests",
        ),
    ] {
        assert_step_problem(step, expected).await;
    }
}
