//! `Step.*(..., loop_to=..., max_loops=...)` through the real path: a worker process
//! converts the keyword arguments, the parent validates the loop.

mod support;
use support::pool;

use evaluator::{EvalContext, EvalError, Event};

fn source(review: &str) -> String {
    format!(
        "def workflow(ctx):\n    build = Step.bash(\"build\", \"echo {{{{ steps.review.outputs.feedback }}}}\")\n    return Plan(\"p\", steps=[build, {review}])\n"
    )
}

#[tokio::test]
async fn loop_to_takes_a_step_or_its_id_and_is_validated() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    for target in ["\"build\"", "build"] {
        let review = format!(
            "Step.python(\"review\", \"raise SystemExit(1)\", depends_on=[build], loop_to={target}, max_loops=2)"
        );
        let plan = pool
            .evaluate("w.plue.py", &source(&review), &ctx)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .plan;
        assert_eq!(plan.steps[1].loop_to.as_deref(), Some("build"));
        assert_eq!(plan.steps[1].max_loops, Some(2));
    }
    let problems = |review: &'static str| {
        let pool = &pool;
        let ctx = &ctx;
        async move {
            match pool.evaluate("w.plue.py", &source(review), ctx).await {
                Ok(_) => panic!("{review} evaluated"),
                Err(EvalError::Invalid(found)) => {
                    found.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                }
                Err(e) => e.to_string().lines().map(str::to_owned).collect(),
            }
        }
    };
    assert_eq!(
        problems("Step.bash(\"review\", \"false\", depends_on=[build], max_loops=2)").await,
        [
            "w.plue.py:2:13: step 'build': command: '{{ steps.review.outputs.feedback }}' reads step 'review', which is not a dependency; add depends_on=[\"review\"] to step 'build'",
            "w.plue.py:3:36: step 'review': max_loops= needs loop_to= (the ancestor to go back to when the step fails)"
        ]
    );
    let found = problems(
        "Step.bash(\"review\", \"false\", depends_on=[build], loop_to=\"build\", max_loops=-1)",
    )
    .await;
    assert!(
        found[0].contains("max_loops must be a non-negative whole number"),
        "{found:?}"
    );
}
