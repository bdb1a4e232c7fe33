//! `workspace_from=`, `artifacts=` and `needs_artifacts=` through the real path: a worker
//! process converts the arguments, the parent validates them against `depends_on`.

mod support;
use support::pool;

use evaluator::{EvalContext, EvalError, Event};

fn source(steps: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"agents\", steps=[\n{steps}\n    ])\n")
}

#[tokio::test]
async fn hand_off_options_are_converted_and_checked() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let steps = "        Step.bash(\"build\", \"make\", artifacts=[\"dist/**\", \"report.json\"]),\n        \
                 Step.llm(\"review\", prompt=\"look\", depends_on=[\"build\"], workspace_from=\"build\"),\n        \
                 Step.python(\"ship\", \"pass\", depends_on=\"build\", needs_artifacts=[\"build\"], artifacts=\"out.txt\"),";
    let plan = pool
        .evaluate("w.plue.py", &source(steps), &ctx)
        .await
        .unwrap()
        .plan;
    assert_eq!(plan.steps[0].artifacts, ["dist/**", "report.json"]);
    assert_eq!(plan.steps[1].workspace_from.as_deref(), Some("build"));
    assert_eq!(plan.steps[2].needs_artifacts, ["build"]);
    assert_eq!(plan.steps[2].artifacts, ["out.txt"]);

    let plain = pool
        .evaluate(
            "w.plue.py",
            &source("        Step.bash(\"a\", \"true\"),"),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    assert!(
        !plain.canonical_json().contains("artifacts"),
        "a plan without hand-off keeps its canonical JSON, so its plan_hash"
    );

    let bad = "        Step.bash(\"build\", \"make\"),\n        \
               Step.bash(\"review\", \"true\", workspace_from=\"build\"),";
    match pool.evaluate("w.plue.py", &source(bad), &ctx).await {
        Err(EvalError::Invalid(found)) => {
            let found: Vec<String> = found.iter().map(|d| d.to_string()).collect();
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].starts_with("w.plue.py:4:")
                    && found[0].ends_with("step 'review': workspace_from 'build' is not one of its dependencies; add depends_on=[\"build\"]"),
                "{found:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    let approval = "        Step.approval(\"gate\", artifacts=[\"x\"]),";
    match pool.evaluate("w.plue.py", &source(approval), &ctx).await {
        Err(e) => assert!(
            e.to_string()
                .contains("Step.approval() got an unexpected keyword argument 'artifacts'"),
            "{e}"
        ),
        Ok(_) => panic!("an approval step has no workspace"),
    }
}
