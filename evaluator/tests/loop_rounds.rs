//! `loop_workspace=` and `{{ steps.<id>.rounds }}` through the real path: a worker process
//! converts the arguments, the parent validates them against the plan's review loops.

mod support;
use support::{diagnostics, error_of, pool};

use evaluator::loops::{LoopWorkspace, Loops};
use evaluator::{EvalContext, Event};

fn source(steps: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"agents\", steps=[\n{steps}\n    ])\n")
}

#[tokio::test]
async fn loop_workspaces_and_rounds_are_converted_and_checked() {
    let ctx = EvalContext::local(Event::Push, "main");
    let steps = "        Step.bash(\"pm\", \"true\"),\n        \
                 Step.llm(\"code\", prompt=\"fix; reviews: {{ steps.review.rounds }}; mine: {{ steps.code.rounds }}\", depends_on=[\"pm\"], workspace_from=\"pm\"),\n        \
                 Step.llm(\"test\", prompt=\"test\", depends_on=[\"code\"], workspace_from=\"code\", loop_workspace=\"fresh\"),\n        \
                 Step.llm(\"review\", prompt=\"review\", result=\"verdict\", depends_on=[\"code\", \"test\"], workspace_from=\"code\",\n            \
                 loop_to=\"code\", max_loops=2),";
    let plan = pool()
        .await
        .evaluate("w.plue.py", &source(steps), &ctx)
        .await
        .unwrap()
        .plan;
    assert_eq!(plan.steps[2].loop_workspace, Some(LoopWorkspace::Fresh));
    let loops = Loops::of(&plan);
    // The coder resumes its own work (its workspace_from is outside the loop); the tester is
    // fresh; the reviewer starts from the coder's newer workspace, not its own.
    let resumes: Vec<bool> = (0..4)
        .map(|i| loops.resumes_own_workspace(&plan, i))
        .collect();
    assert_eq!(resumes, [false, true, false, false]);
    assert!(
        !serde_json::to_string(&plan.steps[1])
            .unwrap()
            .contains("loop_workspace"),
        "absent from the canonical JSON when unset"
    );
}

#[tokio::test]
async fn rounds_are_only_for_the_loops_own_prompts_and_loop_workspace_only_in_loops() {
    let found = diagnostics(&source(
        "        Step.llm(\"code\", prompt=\"x\"),\n        \
         Step.bash(\"check\", \"echo {{ steps.review.rounds }}\", depends_on=[\"code\"]),\n        \
         Step.llm(\"review\", prompt=\"x\", result=\"verdict\", depends_on=[\"check\"], loop_to=\"code\", max_loops=1),\n        \
         Step.llm(\"after\", prompt=\"{{ steps.review.rounds }}\", depends_on=[\"review\"]),\n        \
         Step.bash(\"lonely\", \"true\", loop_workspace=\"previous\"),",
    ))
    .await;
    let expected = [
        "w.plue.py:4:9: ",
        "'{{ steps.review.rounds }}' is JSON text for llm prompts and inputs",
        "w.plue.py:6:9: ",
        "reads the rounds of step 'review', which is not in this step's review loop",
        "w.plue.py:7:9: step 'lonely': loop_workspace= applies to the steps of a review loop",
    ];
    for want in expected {
        assert!(found.iter().any(|f| f.contains(want)), "{want}\n{found:#?}");
    }
    let bad = "        Step.bash(\"a\", \"true\", loop_workspace=\"last\"),";
    let error = error_of(&source(bad)).await;
    assert!(
        error.contains("loop_workspace must be 'previous' or 'fresh', got 'last'"),
        "{error}"
    );
}
