//! Rendering an llm step's inputs costs memory in proportion to its strings, not to their
//! paths: each string's path (`inputs.k.<1 KB key>...[i]`) was formatted at dispatch, 30 KB
//! per string of a 242-byte workflow's plan. Measured with a counting allocator (bytes this
//! thread asked for), so the bound is deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::dispatch::{build, StepResult};
use evaluator::plan::{Action, LlmAction, Plan, Step};
use serde_json::Value;

#[global_allocator]
static COUNTING: testkit::counting::Counting = testkit::counting::Counting;

/// `depth` levels of 1,018-byte keys around `n` copies of `leaf`, as the llm step `l`.
fn bomb(depth: usize, n: usize, leaf: &str) -> Plan {
    let mut value = Value::Array(vec![Value::String(leaf.into()); n]);
    for i in 0..depth {
        let mut map = serde_json::Map::new();
        map.insert(format!("k{i}{}", "A".repeat(1018)), value);
        value = Value::Object(map);
    }
    let llm = LlmAction {
        prompt: Some("hi".into()),
        prompt_file: None,
        inputs: BTreeMap::from([("k".to_string(), value)]),
        model: None,
        max_turns: None,
        tools: vec![],
        safe_outputs: None,
        ..Default::default()
    };
    Plan::new(
        "t",
        vec![
            Step::bash("a", "true"),
            Step::new("l", Action::Llm(llm)).after(&["a"]),
        ],
    )
}

fn results() -> BTreeMap<&'static str, StepResult<'static>> {
    BTreeMap::from([(
        "a",
        StepResult {
            status: "succeeded",
            outputs: Arc::new(BTreeMap::new()),
            feedback: false,
            rounds: Default::default(),
        },
    )])
}

#[test]
fn deep_llm_inputs_render_without_a_path_per_string() {
    // regression (issue 30): 20,000 strings under 30 KB of keys allocated 600 MB here.
    let n = 20_000;
    for leaf in ["", "{{ steps.a.status }}"] {
        let plan = bomb(30, n, leaf);
        let results = results();
        let before = testkit::counting::allocated();
        let dispatch = build(&plan, &plan.steps[1], 1, &results).unwrap();
        let bytes = testkit::counting::allocated() - before;
        drop(dispatch);
        assert!(bytes < 1024 * n as u64, "{leaf:?}: {bytes} bytes allocated");
    }
}

#[test]
fn an_error_deep_in_an_input_names_its_path() {
    let plan = bomb(2, 3, "{{ steps.a.outputs.missing }}");
    let err = build(&plan, &plan.steps[1], 1, &results()).unwrap_err();
    let key = |i: usize| format!("k{i}{}", "A".repeat(1018));
    let expected = format!("inputs.k.{}.{}[0]: ", key(1), key(0));
    assert!(err.starts_with(&expected), "{err}");
}
