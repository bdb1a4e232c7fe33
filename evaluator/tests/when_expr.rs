//! `when="<expression>"` through the real path: converted by a worker process (a syntax
//! error is raised at the call, with the workflow's line), checked by the parent's
//! validation (references only to transitive dependencies, did-you-mean on unknown ids),
//! and kept out of the canonical JSON when unset.

mod support;
use support::pool;

use evaluator::{EvalContext, EvalError, Event};

fn source(steps: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"p\", steps=[\n{steps}\n    ])\n")
}

#[tokio::test]
async fn an_expression_is_kept_and_the_names_stay_as_they_were() {
    let ctx = EvalContext::local(Event::Push, "main");
    let pool = pool().await;
    let plan = pool
        .evaluate(
            "w.plue.py",
            &source(concat!(
                "        Step.bash(\"review\", \"true\"),\n",
                "        Step.bash(\"merge\", \"true\", depends_on=[\"review\"], when=\"steps.review.outputs.verdict == 'approve'\"),\n",
                "        Step.bash(\"notify\", \"true\", depends_on=[\"review\"], when=\"failure\"),",
            )),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    assert_eq!(
        plan.steps[1].when_expr.as_deref(),
        Some("steps.review.outputs.verdict == 'approve'")
    );
    assert_eq!(plan.steps[1].when, evaluator::plan::When::Success);
    assert_eq!(plan.steps[2].when, evaluator::plan::When::Failure);
    assert_eq!(plan.steps[2].when_expr, None);
    let json = serde_json::to_string(&plan.steps[2]).unwrap();
    assert!(!json.contains("when_expr"), "{json}");
}

#[tokio::test]
async fn a_syntax_error_names_the_column_and_a_misspelt_name_gets_a_hint() {
    let ctx = EvalContext::local(Event::Push, "main");
    let pool = pool().await;
    let wrong = source(
        "        Step.bash(\"review\", \"true\"),\n        Step.bash(\"m\", \"true\", depends_on=[\"review\"], when=\"steps.review.outputs.verdict = 'approve'\"),",
    );
    let error = pool
        .evaluate("w.plue.py", &wrong, &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("compare with '=='"), "{error}");
    assert!(error.contains("at column 30"), "{error}");
    assert!(
        error.contains("line 4") || error.contains("w.plue.py:4"),
        "the workflow's line: {error}"
    );
    let misspelt = source("        Step.bash(\"m\", \"true\", when=\"sucess\"),");
    let error = pool
        .evaluate("w.plue.py", &misspelt, &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("did you mean 'success'"), "{error}");
}

#[tokio::test]
async fn references_must_be_transitive_dependencies() {
    let ctx = EvalContext::local(Event::Push, "main");
    let pool = pool().await;
    let steps = concat!(
        "        Step.bash(\"review\", \"true\"),\n",
        "        Step.bash(\"test\", \"true\", depends_on=[\"review\"]),\n",
        "        Step.bash(\"ok\", \"true\", depends_on=[\"test\"], when=\"steps.review.outputs.verdict == 'approve' and steps.test.status == 'succeeded'\"),\n",
        "        Step.bash(\"typo\", \"true\", depends_on=[\"test\"], when=\"steps.reveiw.outputs.verdict == 'approve'\"),\n",
        "        Step.bash(\"side\", \"true\", when=\"steps.review.status != 'failed'\"),",
    );
    match pool.evaluate("w.plue.py", &source(steps), &ctx).await {
        Err(EvalError::Invalid(found)) => {
            let found: Vec<String> = found.iter().map(|d| d.to_string()).collect();
            assert_eq!(found.len(), 2, "{found:#?}");
            assert!(
                found.iter().any(|f| f.contains("w.plue.py:6")
                    && f.contains("step 'typo': when: 'steps.reveiw.outputs.verdict' names unknown step 'reveiw'")
                    && f.contains("did you mean 'review'")),
                "{found:#?}"
            );
            assert!(
                found.iter().any(|f| f.contains("w.plue.py:7")
                    && f.contains("step 'side': when: 'steps.review.status' reads step 'review', which is not a dependency; add depends_on=[\"review\"] to step 'side'")),
                "{found:#?}"
            );
        }
        other => panic!("{other:?}"),
    }
}
