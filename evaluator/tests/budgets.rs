//! `Step.llm(max_tokens=, max_cost_usd=)` and `Plan(budget_usd=)` through the real path: a
//! worker process converts the keyword arguments, validation bounds them, and a plan
//! without them keeps its canonical JSON (so its `plan_hash`).

mod support;
use support::{pool, problems_of};

use evaluator::{EvalContext, Event};

fn source(plan_options: &str, step: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"p\", steps=[{step}]{plan_options})\n")
}

async fn problems(plan_options: &str, step: &str) -> Vec<String> {
    problems_of(
        &source(plan_options, step),
        &format!("{step} {plan_options}"),
    )
    .await
}

#[tokio::test]
async fn limits_reach_the_plan_and_are_absent_when_unset() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let step = "Step.llm(\"a\", prompt=\"hi\", max_tokens=5000, max_cost_usd=0.5)";
    let plan = pool
        .evaluate("w.plue.py", &source(", budget_usd=2", step), &ctx)
        .await
        .unwrap()
        .plan;
    assert_eq!(plan.budget_usd, Some(2.0));
    let evaluator::plan::Action::Llm(llm) = &plan.steps[0].action else {
        panic!("not llm");
    };
    assert_eq!(llm.max_tokens, Some(5000));
    assert_eq!(llm.max_cost_usd, Some(0.5));
    let json = plan.canonical_json();
    assert!(json.contains("\"budget_usd\":2.0"), "{json}");
    assert!(json.contains("\"max_cost_usd\":0.5"), "{json}");

    let plain = pool
        .evaluate(
            "w.plue.py",
            &source("", "Step.llm(\"a\", prompt=\"hi\")"),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    let json = plain.canonical_json();
    for absent in ["budget_usd", "max_tokens", "max_cost_usd"] {
        assert!(!json.contains(absent), "{absent} in {json}");
    }
}

#[tokio::test]
async fn bad_limits_are_refused_with_their_value() {
    for (plan, step, expected) in [
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=0)",
            "max_cost_usd must be above 0",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=-1.5)",
            "got -1.5",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=float(\"nan\"))",
            "got nan",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=float(\"inf\"))",
            "at most 10000",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=10001)",
            "got 10001",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=\"1\")",
            "must be a number of US dollars, got str",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_cost_usd=True)",
            "got bool",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_tokens=-1)",
            "max_tokens must be a non-negative",
        ),
        (
            "",
            "Step.llm(\"a\", prompt=\"hi\", max_tokens=0)",
            "max_tokens must be at least 1",
        ),
        (
            ", budget_usd=0",
            "Step.llm(\"a\", prompt=\"hi\")",
            "budget_usd must be above 0",
        ),
        (
            ", budget_usd=1e9",
            "Step.llm(\"a\", prompt=\"hi\")",
            "at most 10000",
        ),
    ] {
        let found = problems(plan, step).await;
        assert!(
            found.iter().any(|l| l.contains(expected)),
            "{step} {plan}: {found:?}"
        );
    }
}

#[test]
fn a_plan_from_json_is_bounded_too() {
    use evaluator::limits::Limits;
    use evaluator::plan::{Action, LlmAction, Plan, SourceMap, Step};
    let mut plan: Plan =
        serde_json::from_str(r#"{"name":"p","triggers":[],"env":{},"steps":[],"budget_usd":-1.0}"#)
            .unwrap();
    plan.steps.push(Step::new(
        "a",
        Action::Llm(LlmAction {
            prompt: Some("hi".into()),
            max_cost_usd: Some(f64::MAX),
            ..Default::default()
        }),
    ));
    let map = SourceMap {
        steps: vec![Default::default()],
        ..Default::default()
    };
    let found: Vec<String> = evaluator::validate::validate(&plan, &map, &Limits::default(), "w")
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        found
            .iter()
            .any(|l| l.contains("budget_usd must be above 0")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|l| l.contains("max_cost_usd must be above 0")),
        "{found:?}"
    );
}
