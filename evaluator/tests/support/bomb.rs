//! The memory probe shared by the evaluator's template checks (`template_bomb`) and the
//! engine's dispatch (`engine/tests/dispatch_bomb.rs`, which includes this file by path):
//! an llm step whose inputs nest 1 KB keys around many strings.

use std::collections::BTreeMap;

use evaluator::plan::{Action, LlmAction, Plan, Step};
use serde_json::Value;

/// `depth` levels of 1,018-byte keys around `n` copies of `leaf`, as the inputs of the llm
/// step `l` (after the bash step `a`).
pub(crate) fn bomb(depth: usize, n: usize, leaf: &str) -> Plan {
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
        max_tokens: None,
        max_cost_usd: None,
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
