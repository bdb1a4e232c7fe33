//! `Step.python(..., fresh_interpreter=...)` through the real path: a worker process
//! converts the option; plans that leave it out keep their JSON (and hash).

mod support;
use support::pool;

use evaluator::plan::Action;
use evaluator::{EvalContext, EvalError, Event};

fn source(arguments: &str) -> String {
    format!(
        "def workflow(ctx):\n    return Plan(\"p\", steps=[Step.python(\"a\", \"print(1)\"{arguments})])\n"
    )
}

#[tokio::test]
async fn fresh_interpreter_is_a_typed_opt_out_that_leaves_other_plans_alone() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let fresh = |plan: &evaluator::plan::Plan| match &plan.steps[0].action {
        Action::Python {
            fresh_interpreter, ..
        } => *fresh_interpreter,
        other => panic!("{other:?}"),
    };

    let opted = pool
        .evaluate("w.plue.py", &source(", fresh_interpreter=True"), &ctx)
        .await
        .unwrap();
    assert!(fresh(&opted.plan));
    assert!(opted.canonical_json.contains("\"fresh_interpreter\":true"));

    let default = pool.evaluate("w.plue.py", &source(""), &ctx).await.unwrap();
    let explicit = pool
        .evaluate("w.plue.py", &source(", fresh_interpreter=False"), &ctx)
        .await
        .unwrap();
    assert!(!fresh(&default.plan));
    assert!(!default.canonical_json.contains("fresh_interpreter"));
    assert_eq!(default.plan_hash, explicit.plan_hash);
    assert_ne!(default.plan_hash, opted.plan_hash);

    match pool
        .evaluate("w.plue.py", &source(", fresh_interpreter=\"yes\""), &ctx)
        .await
    {
        Err(EvalError::Invalid(found)) => {
            let text = found[0].to_string();
            assert!(
                text.starts_with("w.plue.py:2:")
                    && text.contains("fresh_interpreter must be True or False"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}
