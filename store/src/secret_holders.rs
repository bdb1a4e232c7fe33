//! Which steps of a run only runners allowed secrets may claim: those that hold secrets
//! and those that take, directly or through other steps, the files of one. The store
//! records the answer per step when it creates a run, so a claim never recomputes it.
//!
//! Invariant: the rule follows the hand-offs (`workspace_from`, `needs_artifacts`), not the
//! order of the plan's steps; a run that gets no secrets (a fork's) holds none to protect.

use std::collections::HashMap;

use evaluator::plan::Plan;

/// Which steps of `plan` only runners allowed secrets may claim, indexed like
/// `plan.steps`: those that hold secrets (one they name, an OpenID Connect token, or an
/// `llm` step's API key) when the run may have any, and those that take, directly or
/// through other steps, the workspace or artifacts of one — a step with secrets may write
/// them into its files.
pub fn needs_secrets_runner(plan: &Plan, secrets_allowed: bool) -> Vec<bool> {
    let mut needs: Vec<bool> = plan
        .steps
        .iter()
        .map(|step| {
            secrets_allowed
                && (!step.secrets.is_empty()
                    || !step.id_tokens.is_empty()
                    || step.action.step_kind().talks_to_model())
        })
        .collect();
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| (step.id.as_str(), i))
        .collect();
    // Who takes the files of each step.
    let mut takers: Vec<Vec<usize>> = vec![Vec::new(); plan.steps.len()];
    for (taker, step) in plan.steps.iter().enumerate() {
        let sources = step.workspace_from.iter().chain(&step.needs_artifacts);
        for source in sources.filter_map(|id| index.get(id.as_str())) {
            takers[*source].push(taker);
        }
    }
    let mut work: Vec<usize> = (0..needs.len()).filter(|&i| needs[i]).collect();
    while let Some(holder) = work.pop() {
        for &taker in &takers[holder] {
            if !needs[taker] {
                needs[taker] = true;
                work.push(taker);
            }
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Step;

    use super::*;

    fn step(id: &str, secrets: &[&str], workspace_from: Option<&str>, artifacts: &[&str]) -> Step {
        let mut step = Step::bash(id, "true");
        step.secrets = secrets.iter().map(|s| s.to_string()).collect();
        step.workspace_from = workspace_from.map(str::to_string);
        step.needs_artifacts = artifacts.iter().map(|s| s.to_string()).collect();
        step
    }

    // regression: a step handed the workspace of a step that held DEPLOY_KEY could go to a
    // runner whose token forbids secrets.
    #[test]
    fn what_a_secret_holding_step_leaves_goes_only_to_runners_allowed_secrets() {
        // Out of order on purpose: the rule follows the hand-offs, not the list.
        let plan = Plan::new(
            "p",
            vec![
                step("report", &[], None, &["package"]),
                step("package", &[], Some("deploy"), &[]),
                step("deploy", &["DEPLOY_KEY"], None, &[]),
                step("lint", &[], None, &[]),
                step("docs", &[], Some("lint"), &["lint"]),
            ],
        );
        assert_eq!(
            needs_secrets_runner(&plan, true),
            [true, true, true, false, false]
        );
        // A run that gets no secrets (a fork's) holds none to protect.
        assert_eq!(needs_secrets_runner(&plan, false), [false; 5]);
    }
}
