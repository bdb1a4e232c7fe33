//! What the evaluator's integration tests share: a pool of one real worker process, and
//! evaluating a workflow source through it for a push to `main`, as `w.plue.py`.

#![allow(dead_code)] // each test binary uses part of it

pub(crate) mod bomb;

use std::path::{Path, PathBuf};

use evaluator::plan::{Action, Plan};
use evaluator::template::Template;
use evaluator::{EvalContext, EvalError, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

/// A pool of one worker running the built `plue-eval-worker`, with the default limits.
pub(crate) async fn pool() -> EvaluatorPool {
    EvaluatorPool::start(PoolConfig {
        workers: 1,
        command: WorkerCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_plue-eval-worker")),
            args: vec![],
        },
        limits: Limits::default(),
    })
    .await
    .expect("pool starts")
}

/// A workflow whose plan `p` has the one step `step`, written on line 2.
pub(crate) fn one_step(step: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"p\", steps=[{step}])\n")
}

/// The plan `source` evaluates to, or a panic naming `source` and the error.
pub(crate) async fn plan_of(pool: &EvaluatorPool, source: &str) -> Plan {
    let ctx = EvalContext::local(Event::Push, "main");
    pool.evaluate("w.plue.py", source, &ctx)
        .await
        .unwrap_or_else(|e| panic!("{source}: {e}"))
        .plan
}

/// What evaluating `source` reports, one problem a line: its diagnostics when it is
/// invalid, the lines of any other error; a panic naming `what` when it evaluates.
pub(crate) async fn problems_of(source: &str, what: &str) -> Vec<String> {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool().await.evaluate("w.plue.py", source, &ctx).await {
        Ok(_) => panic!("{what} evaluated"),
        Err(EvalError::Invalid(found)) => found.iter().map(|d| d.to_string()).collect(),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

/// [`problems_of`] the workflow of the one step `step` ([`one_step`]).
pub(crate) async fn step_problems(step: &str) -> Vec<String> {
    problems_of(&one_step(step), step).await
}

/// Asserts that one of the [`step_problems`] of `step` contains `expected`.
pub(crate) async fn assert_step_problem(step: &str, expected: &str) {
    let found = step_problems(step).await;
    assert!(
        found.iter().any(|p| p.contains(expected)),
        "{step}: {found:?}"
    );
}

/// The diagnostics of `source`, which must be invalid (anything else panics).
pub(crate) async fn diagnostics(source: &str) -> Vec<String> {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool().await.evaluate("w.plue.py", source, &ctx).await {
        Err(EvalError::Invalid(found)) => found.iter().map(|d| d.to_string()).collect(),
        other => panic!("{other:?}"),
    }
}

/// The error evaluating `source` reports, as a user reads it (a panic when it evaluates).
pub(crate) async fn error_of(source: &str) -> String {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool().await.evaluate("w.plue.py", source, &ctx).await {
        Ok(evaluated) => panic!("evaluated: {:?}", evaluated.plan),
        Err(e) => e.to_string(),
    }
}

/// What `plan` pasted into the command of its bash step 1 and the prompt of its llm step 2,
/// each parsed as a template and asserted to hold no reference (pasted text stays text):
/// their literal texts.
pub(crate) fn pasted_texts(plan: &Plan) -> (String, String) {
    let Action::Bash { command } = &plan.steps[1].action else {
        panic!("{:?}", plan.steps[1]);
    };
    let template = Template::parse(command).unwrap();
    assert_eq!(template.references().count(), 0, "{command}");
    let Action::Llm(llm) = &plan.steps[2].action else {
        panic!("{:?}", plan.steps[2]);
    };
    let prompt = llm.prompt.as_deref().unwrap();
    let parsed = Template::parse(prompt).unwrap();
    assert_eq!(parsed.references().count(), 0, "{prompt}");
    (template.literal_text().0, parsed.literal_text().0)
}

/// The `.plue.py` files of the attack corpus folder `tests/attacks/<dir>` (`""`: its top),
/// sorted by name.
pub(crate) fn attack_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/attacks")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".plue.py"))
        .collect();
    files.sort();
    files
}
