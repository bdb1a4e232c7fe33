//! `Step.*(..., environment="prod")` through the real path: a worker process converts the
//! keyword argument, the parent validates the name; an approval step refuses it.

mod support;
use support::pool;

use evaluator::{EvalContext, EvalError, Event};

fn source(step: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"p\", steps=[{step}])\n")
}

async fn problems(step: &str) -> Vec<String> {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool()
        .await
        .evaluate("w.plue.py", &source(step), &ctx)
        .await
    {
        Ok(_) => panic!("{step} evaluated"),
        Err(EvalError::Invalid(found)) => found.iter().map(|d| d.to_string()).collect(),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

#[tokio::test]
async fn environment_is_a_step_option_of_steps_that_run() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    for step in [
        "Step.bash(\"deploy\", \"./deploy.sh\", environment=\"prod\")",
        "Step.python(\"deploy\", \"print(1)\", environment=\"prod\")",
        "Step.llm(\"deploy\", prompt=\"ship it\", environment=\"prod\")",
    ] {
        let plan = pool
            .evaluate("w.plue.py", &source(step), &ctx)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"))
            .plan;
        assert_eq!(plan.steps[0].environment.as_deref(), Some("prod"), "{step}");
    }
    let plain = pool
        .evaluate("w.plue.py", &source("Step.bash(\"b\", \"true\")"), &ctx)
        .await
        .unwrap()
        .plan;
    assert_eq!(plain.steps[0].environment, None);
    assert!(!plain.canonical_json().contains("environment"));
}

#[tokio::test]
async fn a_bad_environment_is_refused_where_it_is_written() {
    assert_eq!(
        problems("Step.bash(\"deploy\", \"true\", environment=\"prod env\")").await,
        ["w.plue.py:2:29: step 'deploy': invalid environment name 'prod env': use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"]
    );
    let found = problems("Step.approval(\"gate\", environment=\"prod\")").await;
    assert!(
        found
            .iter()
            .any(|l| l.contains("Step.approval(): environment= goes on the step that deploys")),
        "{found:?}"
    );
    let found = problems("Step.bash(\"deploy\", \"true\", environment=3)").await;
    assert!(
        found.iter().any(|l| l.contains("Step.bash(): environment")),
        "{found:?}"
    );
}
