//! What the executor looks up in a run's plan at every advance and completion, worked out
//! once per run: its review loops, each step's index by id and whether any step names an
//! environment. A 10,000-step plan walked at every step (a step found by id, the loops
//! derived again) made each step of a run cost more the larger its run was.
//!
//! Invariant: a run's plan never changes once stored, so neither do its facts; they are
//! kept with the run's other derived data in [`super::outputs::OutputCache`].

use std::collections::HashMap;

use evaluator::loops::Loops;
use evaluator::plan::{Plan, Step};

pub struct PlanFacts {
    pub loops: Loops,
    /// Step id → index in the plan.
    by_id: HashMap<String, usize>,
    /// Whether a step names an environment (only then are environments read).
    pub names_environment: bool,
}

impl PlanFacts {
    pub fn of(plan: &Plan) -> PlanFacts {
        PlanFacts {
            loops: Loops::of(plan),
            by_id: plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| (step.id.clone(), i))
                .collect(),
            names_environment: plan.steps.iter().any(|s| s.environment.is_some()),
        }
    }

    /// Step `id` of `plan` (the plan these facts are of).
    pub fn step<'p>(&self, plan: &'p Plan, id: &str) -> Option<&'p Step> {
        self.by_id
            .get(id)
            .and_then(|&i| plan.steps.get(i))
            .filter(|step| step.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_found_by_id_and_environments_noticed() {
        let mut plan = Plan::new("p", vec![Step::bash("a", "true"), Step::bash("b", "true")]);
        let facts = PlanFacts::of(&plan);
        assert_eq!(facts.step(&plan, "b").map(|s| s.id.as_str()), Some("b"));
        assert!(facts.step(&plan, "c").is_none());
        assert!(!facts.names_environment);
        plan.steps[0].environment = Some("prod".into());
        assert!(PlanFacts::of(&plan).names_environment);
        // Facts of another plan never hand out a step of the wrong id.
        let other = Plan::new("q", vec![Step::bash("b", "true")]);
        assert!(facts.step(&other, "b").is_none());
    }
}
