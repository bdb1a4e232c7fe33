//! `Plan(concurrency=..., cancel_in_progress=...)` through the real path: a worker process
//! converts the arguments, the parent validates the group template.

mod support;
use support::pool;

use evaluator::plan::Concurrency;
use evaluator::{EvalContext, EvalError, EvaluatorPool, Event};

fn source(arguments: &str) -> String {
    format!(
        "def workflow(ctx):\n    return Plan(\"deploy\", steps=[Step.bash(\"a\", \"true\")]{arguments})\n"
    )
}

/// The evaluation's problems, one string each.
async fn problems(pool: &EvaluatorPool, arguments: &str) -> Vec<String> {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool.evaluate("w.plue.py", &source(arguments), &ctx).await {
        Ok(evaluated) => panic!("evaluated: {:?}", evaluated.plan.concurrency),
        Err(EvalError::Invalid(found)) => found.iter().map(|d| d.to_string()).collect(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn concurrency_is_parsed_typed_and_validated() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");

    let plan = pool
        .evaluate(
            "w.plue.py",
            &source(", concurrency=\"deploy-{branch}\", cancel_in_progress=True"),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    assert_eq!(
        plan.concurrency,
        Some(Concurrency {
            group: "deploy-{branch}".into(),
            cancel_in_progress: true,
        }),
        "the template stays a template: the plan is the same for every branch"
    );
    let plain = pool
        .evaluate("w.plue.py", &source(", concurrency=\"deploy\""), &ctx)
        .await
        .unwrap();
    assert_eq!(
        plain.plan.concurrency.map(|c| c.cancel_in_progress),
        Some(false)
    );
    let none = pool
        .evaluate("w.plue.py", &source(", concurrency=None"), &ctx)
        .await
        .unwrap();
    assert_eq!(none.plan.concurrency, None);
    assert!(!none.canonical_json.contains("concurrency"));

    let found = problems(&pool, ", concurrency=\"deploy-{brnch}\"").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("w.plue.py:2:12: concurrency group 'deploy-{brnch}': unknown placeholder '{brnch}' (did you mean 'branch'?)"),
        "{found:?}"
    );

    let found = problems(&pool, ", cancel_in_progress=True").await;
    assert!(
        found[0].starts_with("w.plue.py:2:")
            && found[0].contains("cancel_in_progress needs concurrency="),
        "{found:?}"
    );

    let found = problems(&pool, ", concurrency=\"g\", cancel_in_progress=\"yes\"").await;
    assert!(
        found[0].contains("cancel_in_progress must be True or False"),
        "{found:?}"
    );
    let found = problems(&pool, ", concurrency=\"g\", cancel_in_progress=1").await;
    assert!(
        found[0].contains("cancel_in_progress must be True or False"),
        "{found:?}"
    );
    let found = problems(&pool, ", concurrency=[\"g\"]").await;
    assert!(
        found[0].contains("Plan(): concurrency must be a str, got list"),
        "{found:?}"
    );
    let found = problems(&pool, ", concurrency=\"deploy-{branch\"").await;
    assert!(found[0].contains("unclosed '{'"), "{found:?}");
}
