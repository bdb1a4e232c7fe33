//! `Step.*(..., environment="prod")` through the real path: a worker process converts the
//! keyword argument, the parent validates the name; an approval step refuses it.

mod support;
use support::{assert_step_problem, one_step, plan_of, pool, step_problems};

#[tokio::test]
async fn environment_is_a_step_option_of_steps_that_run() {
    let pool = pool().await;
    for step in [
        "Step.bash(\"deploy\", \"./deploy.sh\", environment=\"prod\")",
        "Step.python(\"deploy\", \"print(1)\", environment=\"prod\")",
        "Step.llm(\"deploy\", prompt=\"ship it\", environment=\"prod\")",
    ] {
        let plan = plan_of(&pool, &one_step(step)).await;
        assert_eq!(plan.steps[0].environment.as_deref(), Some("prod"), "{step}");
    }
    let plain = plan_of(&pool, &one_step("Step.bash(\"b\", \"true\")")).await;
    assert_eq!(plain.steps[0].environment, None);
    assert!(!plain.canonical_json().contains("environment"));
}

#[tokio::test]
async fn a_bad_environment_is_refused_where_it_is_written() {
    assert_eq!(
        step_problems("Step.bash(\"deploy\", \"true\", environment=\"prod env\")").await,
        ["w.plue.py:2:29: step 'deploy': invalid environment name 'prod env': use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"]
    );
    assert_step_problem(
        "Step.approval(\"gate\", environment=\"prod\")",
        "Step.approval(): environment= goes on the step that deploys",
    )
    .await;
    assert_step_problem(
        "Step.bash(\"deploy\", \"true\", environment=3)",
        "Step.bash(): environment",
    )
    .await;
}
