//! `plue eval --format mermaid`: the DAG as a Mermaid `flowchart`.
//!
//! Node ids are generated (`s0`, `s1`, ...) because step ids may contain `-` or collide with
//! Mermaid keywords such as `end`; the step id is the node's quoted label.

use crate::plan::{Plan, When};

/// Renders the plan's DAG, one node per step and one edge per dependency.
pub fn render(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    let node_of = |id: &str| {
        plan.steps
            .iter()
            .position(|s| s.id == id)
            .map(|i| format!("s{i}"))
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let label = format!("{} ({})", step.id, step.action.kind()).replace('"', "#quot;");
        out.push_str(&format!("    s{i}[\"{label}\"]\n"));
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            let Some(from) = node_of(dep) else { continue };
            match step.when {
                When::Success => out.push_str(&format!("    {from} --> s{i}\n")),
                When::Failure => out.push_str(&format!("    {from} -. on failure .-> s{i}\n")),
                When::Always => out.push_str(&format!("    {from} -. always .-> s{i}\n")),
            }
        }
    }
    // Review loops: a thick edge back from the source to its target.
    for (i, step) in plan.steps.iter().enumerate() {
        if let (Some(target), Some(max)) = (&step.loop_to, step.max_loops) {
            let Some(to) = node_of(target) else { continue };
            out.push_str(&format!(
                "    s{i} == \"on failure, at most {max}x\" ==> {to}\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::Step;

    #[test]
    fn draws_nodes_and_edges() {
        let step = |id: &str, deps: &[&str], when| Step::bash(id, "true").after(deps).on(when);
        let plan = Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![
                step("test", &[], When::Success),
                step("end", &["test"], When::Success),
                step("notify-fail", &["test"], When::Failure),
            ],
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        };
        assert_eq!(
            render(&plan),
            "flowchart TD\n    s0[\"test (bash)\"]\n    s1[\"end (bash)\"]\n    s2[\"notify-fail (bash)\"]\n    s0 --> s1\n    s0 -. on failure .-> s2\n"
        );
        let mut looping = plan.clone();
        looping.steps[1].loop_to = Some("test".into());
        looping.steps[1].max_loops = Some(2);
        assert!(render(&looping).ends_with("    s1 == \"on failure, at most 2x\" ==> s0\n"));
    }
}
