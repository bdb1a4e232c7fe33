//! `Trigger.manual(inputs=...)` types through the real path (a worker process converts,
//! the parent validates): a bool default makes a boolean input, an int or float a number,
//! `type=` says so explicitly; a default that is not a value of its type, or an unknown
//! type, is an error at the file; a string input's JSON is as before (no `type`).

mod support;
use support::pool;

use evaluator::plan::{InputKind, Trigger};
use evaluator::{EvalContext, EvalError, Event};

fn source(inputs: &str) -> String {
    format!(
        "def workflow(ctx):\n    return Plan(\"p\", triggers=[Trigger.manual(inputs={inputs})], \
         steps=[Step.bash(\"a\", \"true\")])\n"
    )
}

#[tokio::test]
async fn input_types_come_from_the_default_or_type() {
    let ctx = EvalContext::local(Event::Manual, "main");
    let pool = pool().await;
    let evaluated = pool
        .evaluate(
            "w.plue.py",
            &source(
                "{\"dry\": True, \"n\": 2, \"ratio\": 0.5, \"name\": \"x\", \"flag\": \
                 {\"type\": \"boolean\", \"required\": True}, \"count\": {\"type\": \"number\", \
                 \"default\": \"3\"}, \"env\": {\"options\": [\"a\", \"b\"], \"default\": \"a\"}}",
            ),
            &ctx,
        )
        .await
        .unwrap();
    let Some(Trigger::Manual { inputs }) = evaluated.plan.triggers.first() else {
        panic!("{:?}", evaluated.plan.triggers)
    };
    let kind = |name: &str| inputs[name].kind;
    assert_eq!(kind("dry"), InputKind::Boolean);
    assert_eq!(inputs["dry"].default.as_deref(), Some("true"));
    assert_eq!(kind("n"), InputKind::Number);
    assert_eq!(kind("ratio"), InputKind::Number);
    assert_eq!(kind("name"), InputKind::String);
    assert_eq!(kind("flag"), InputKind::Boolean);
    assert!(inputs["flag"].required);
    assert_eq!(kind("count"), InputKind::Number);
    assert_eq!(kind("env"), InputKind::String);
    // Text inputs carry no `type` in the plan's JSON: older plans keep their hashes.
    assert!(evaluated.canonical_json.contains("\"type\":\"boolean\""));
    assert!(!evaluated.canonical_json.contains("\"type\":\"string\""));
}

#[tokio::test]
async fn a_default_outside_its_type_or_an_unknown_type_is_refused() {
    let ctx = EvalContext::local(Event::Manual, "main");
    let pool = pool().await;
    match pool
        .evaluate(
            "w.plue.py",
            &source("{\"n\": {\"type\": \"number\", \"default\": \"many\"}}"),
            &ctx,
        )
        .await
    {
        Err(EvalError::Invalid(found)) => {
            let found: Vec<String> = found.iter().map(|d| d.to_string()).collect();
            assert!(
                found
                    .iter()
                    .any(|f| f.contains("manual input 'n': default 'many' is not a number value")),
                "{found:#?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let error = pool
        .evaluate("w.plue.py", &source("{\"n\": {\"type\": \"int\"}}"), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("type must be \"string\", \"boolean\" or \"number\", not \"int\""),
        "{error}"
    );
}
