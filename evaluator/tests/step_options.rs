//! `continue_on_error=` and `Plan(max_parallel=)` through the real path: converted by a
//! worker process, validated by the parent, absent from the canonical JSON when unset.

mod support;
use support::pool;

use evaluator::{EvalContext, EvalError, Event};

fn evaluate_source(plan_options: &str, steps: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"p\"{plan_options}, steps=[\n{steps}\n    ])\n")
}

#[tokio::test]
async fn the_options_are_converted_and_checked() {
    let ctx = EvalContext::local(Event::Push, "main");
    let pool = pool().await;
    let source = evaluate_source(
        ", max_parallel=2",
        "        Step.bash(\"lint\", \"false\", continue_on_error=True),\n        Step.bash(\"b\", \"true\"),",
    );
    let plan = pool
        .evaluate("w.plue.py", &source, &ctx)
        .await
        .unwrap()
        .plan;
    assert_eq!(plan.max_parallel, Some(2));
    assert!(plan.steps[0].continue_on_error);
    let json = serde_json::to_string(&plan.steps[1]).unwrap();
    assert!(!json.contains("continue_on_error"), "{json}");
    let plain = pool
        .evaluate(
            "w.plue.py",
            &evaluate_source("", "        Step.bash(\"b\", \"true\"),"),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    assert!(!plain.canonical_json().contains("max_parallel"));

    let bad = evaluate_source(
        ", max_parallel=0",
        "        Step.bash(\"a\", \"true\"),\n        Step.bash(\"r\", \"false\", depends_on=[\"a\"], loop_to=\"a\", max_loops=1, continue_on_error=True),",
    );
    match pool.evaluate("w.plue.py", &bad, &ctx).await {
        Err(EvalError::Invalid(found)) => {
            let found: Vec<String> = found.iter().map(|d| d.to_string()).collect();
            assert!(
                found
                    .iter()
                    .any(|f| f.contains("max_parallel must be between 1 and 1024")),
                "{found:#?}"
            );
            assert!(
                found.iter().any(|f| f.contains(
                    "step 'r': continue_on_error=True tolerates the failure that loop_to needs"
                )),
                "{found:#?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let wrong = evaluate_source(
        "",
        "        Step.bash(\"a\", \"true\", continue_on_error=\"yes\"),",
    );
    let error = pool
        .evaluate("w.plue.py", &wrong, &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("continue_on_error must be True or False"),
        "{error}"
    );
}
