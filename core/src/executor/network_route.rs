//! Routing by network policy: the labels a step's claims match are its `runner=` labels
//! and the reserved label of its network policy (`runner::network::capability`), so a
//! step is claimed only by a runner that announces it enforces that policy.
//!
//! Invariants:
//! - Only the labels stored with the step runs change: the run's plan, its canonical JSON
//!   and its `plan_hash` are the workflow's, untouched.
//! - The policy is the one the dispatch gives the runner ([`crate::dispatch::network`]:
//!   the step's `network=`, or its kind's default), so routing and enforcement agree.

use std::borrow::Cow;

use evaluator::plan::{Plan, Step};
use runner::network::capability;

/// The reserved label `step`'s policy asks for, if any.
fn asks(step: &Step) -> Option<(&'static str, &'static str)> {
    capability::required(&crate::dispatch::network(step))
}

/// `plan` with each step's runner labels widened by its policy's reserved label; the plan
/// itself when no step asks for one.
pub(super) fn routed(plan: &Plan) -> Cow<'_, Plan> {
    if plan.steps.iter().all(|step| asks(step).is_none()) {
        return Cow::Borrowed(plan);
    }
    let mut plan = plan.clone();
    for step in &mut plan.steps {
        if let Some((key, value)) = asks(step) {
            step.runner.insert(key.to_string(), value.to_string());
        }
    }
    Cow::Owned(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_asks_for_the_label_of_its_policy_and_the_plan_keeps_its_own() {
        use evaluator::network::Network;
        let zone = |mut step: Step| {
            step.runner.insert("zone".into(), "ci".into());
            step
        };
        let mut none = Step::bash("none", "true");
        none.network = Some(Network::None);
        let mut allow = zone(Step::bash("allow", "true"));
        allow.network = Some(Network::Allow(vec!["pypi.org".into()]));
        let plan = Plan::new("p", vec![zone(Step::bash("open", "true")), none, allow]);
        let widened = routed(&plan);
        let labels: Vec<Vec<(&str, &str)>> = widened
            .steps
            .iter()
            .map(|s| {
                s.runner
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            labels,
            [
                vec![("zone", "ci")],
                vec![(capability::NONE, capability::YES)],
                vec![(capability::ALLOW, capability::YES), ("zone", "ci")],
            ]
        );
        assert!(plan.steps[1].runner.is_empty(), "the plan is untouched");

        let only_open = Plan::new("p", plan.steps[..1].to_vec());
        assert!(matches!(routed(&only_open), Cow::Borrowed(_)));
    }
}
