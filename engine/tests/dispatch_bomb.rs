//! Rendering an llm step's inputs costs memory in proportion to its strings, not to their
//! paths: each string's path (`inputs.k.<1 KB key>...[i]`) was formatted at dispatch, 30 KB
//! per string of a 242-byte workflow's plan. Measured with a counting allocator (bytes this
//! thread asked for), so the bound is deterministic.

/// The probe, shared with the evaluator's `template_bomb` test.
#[path = "../../evaluator/tests/support/bomb.rs"]
mod bomb;

use std::collections::BTreeMap;
use std::sync::Arc;

use bomb::bomb;
use plue_core::dispatch::{build, StepResult};

#[global_allocator]
static COUNTING: testkit::counting::Counting = testkit::counting::Counting;

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
    let err = build(&plan, &plan.steps[1], 1, &results())
        .unwrap_err()
        .to_string();
    let key = |i: usize| format!("k{i}{}", "A".repeat(1018));
    let expected = format!("inputs.k.{}.{}[0]: ", key(1), key(0));
    assert!(err.starts_with(&expected), "{err}");
}
