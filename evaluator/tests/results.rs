//! `Step.llm(result=..., fail_when=..., system_prompt=...)` through the real path: a worker
//! process converts the arguments, the parent validates them.

mod support;
use support::{diagnostics, error_of, pool};

use evaluator::result::{ResultSpec, Shorthand};
use evaluator::{EvalContext, Event};
use serde_json::json;

fn source(steps: &str) -> String {
    format!("def workflow(ctx):\n    return Plan(\"agents\", steps=[\n{steps}\n    ])\n")
}

#[tokio::test]
async fn results_are_converted_and_absent_from_the_json_when_unset() {
    let pool = pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let steps = "        Step.llm(\"review\", prompt=\"look\", result=\"verdict\", tools=[\"read_file\"],\n            \
                 system_prompt=\"You are a strict reviewer.\"),\n        \
                 Step.llm(\"score\", prompt=\"rate\", result={\"type\": \"object\", \"properties\": {\"score\": {\"type\": \"integer\"}}, \"required\": [\"score\"]},\n            \
                 fail_when={\"score\": [0, 1]}),\n        \
                 Step.llm(\"plain\", prompt=\"hi\"),";
    let plan = pool
        .evaluate("w.plue.py", &source(steps), &ctx)
        .await
        .unwrap()
        .plan;
    let llm = |i: usize| match &plan.steps[i].action {
        evaluator::plan::Action::Llm(llm) => llm.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        llm(0).result,
        Some(ResultSpec::Shorthand(Shorthand::Verdict))
    );
    assert_eq!(
        llm(0).system_prompt.as_deref(),
        Some("You are a strict reviewer.")
    );
    assert_eq!(
        llm(1).result.unwrap().schema(),
        json!({"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]})
    );
    assert_eq!(llm(1).fail_when.unwrap()["score"], vec![json!(0), json!(1)]);
    let plain = serde_json::to_string(&plan.steps[2]).unwrap();
    for field in ["result", "fail_when", "system_prompt"] {
        assert!(!plain.contains(field), "{plain}");
    }
}

#[tokio::test]
async fn bad_results_are_refused_naming_the_step() {
    let found = diagnostics(&source(
        "        Step.llm(\"a\", prompt=\"x\", fail_when={\"verdict\": \"reject\"}),\n        \
         Step.llm(\"b\", prompt=\"x\", result=\"verdict\", fail_when={\"verdikt\": \"reject\"}),\n        \
         Step.llm(\"c\", prompt=\"x\", result={\"type\": \"string\"}),\n        \
         Step.llm(\"d\", prompt=\"x\", system_prompt=\"  \"),",
    ))
    .await;
    let expected = [
        "w.plue.py:3:9: llm step 'a': fail_when needs result=",
        "w.plue.py:4:9: llm step 'b': fail_when: 'verdikt' is not a field of the result (fields: reason, verdict)",
        "w.plue.py:5:9: llm step 'c': result: the finish tool's input is an object",
        "w.plue.py:6:9: llm step 'd': system_prompt must be non-empty",
    ];
    for want in expected {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "{want}\n{found:#?}"
        );
    }
}

#[tokio::test]
async fn a_result_that_is_neither_verdict_nor_a_schema_fails_on_its_line() {
    let bad = "        Step.llm(\"a\", prompt=\"x\", result=\"approve\"),";
    let error = error_of(&source(bad)).await;
    assert!(
        error.contains("result must be \"verdict\" or a JSON Schema dict, got \"approve\""),
        "{error}"
    );
}
