//! Dispatch documents: what a queued step run carries to its runner — the action with
//! `{{ steps.<id>.outputs.<key> }}` rendered, the environment, the names of its secrets
//! and its timeout. Built when the executor queues a step; pure (no IO).
//!
//! Invariants: templates are rendered in strict mode without HTML escaping, so a reference
//! to a missing output is an error naming it rather than an empty string; secret values
//! never enter a dispatch document (only names; values are resolved at claim time).

use std::collections::BTreeMap;

use evaluator::plan::{Action, Plan, Step};
use handlebars::Handlebars;
use runner::protocol::StepAction;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Stored in `step_runs.action` when a step is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub action: StepAction,
    pub env: BTreeMap<String, String>,
    pub secrets: Vec<String>,
    pub timeout_secs: u64,
}

/// What a finished dependency exposes to templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult<'a> {
    pub status: &'a str,
    pub outputs: BTreeMap<String, String>,
}

/// Builds the dispatch document of `step`, rendering its templates against the results of
/// the run's final steps (by step id). The error is the reason the step fails.
pub fn build(
    plan: &Plan,
    step: &Step,
    run_id: i64,
    results: &BTreeMap<&str, StepResult<'_>>,
) -> Result<Dispatch, String> {
    let data = template_data(results);
    let render = |what: &str, text: &str| render(text, &data).map_err(|e| format!("{what}: {e}"));
    let action = match &step.action {
        Action::Bash { command } => StepAction::Bash {
            command: render("command", command)?,
        },
        Action::Python { script } => StepAction::Python {
            script: render("script", script)?,
        },
        Action::Llm(_) => {
            return Err("llm steps are not supported by this engine version yet".into());
        }
    };
    let mut env = BTreeMap::new();
    for (name, value) in plan.env.iter().chain(step.env.iter()) {
        env.insert(name.clone(), render(&format!("env {name}"), value)?);
    }
    env.insert("CI".into(), "true".into());
    env.insert("PLUE".into(), "true".into());
    env.insert("PLUE_RUN_ID".into(), run_id.to_string());
    env.insert("PLUE_STEP_ID".into(), step.id.clone());
    Ok(Dispatch {
        action,
        env,
        secrets: step.secrets.clone(),
        timeout_secs: step.timeout,
    })
}

fn template_data(results: &BTreeMap<&str, StepResult<'_>>) -> Value {
    let steps: Map<String, Value> = results
        .iter()
        .map(|(id, result)| {
            (
                id.to_string(),
                json!({ "status": result.status, "outputs": result.outputs }),
            )
        })
        .collect();
    json!({ "steps": steps })
}

fn render(text: &str, data: &Value) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let mut handlebars = Handlebars::new();
    handlebars.set_strict_mode(true);
    handlebars.register_escape_fn(handlebars::no_escape);
    handlebars
        .render_template(text, data)
        .map_err(|e| describe(&e))
}

/// Handlebars' messages, in the words users of `{{ steps.<id>.outputs.<key> }}` think in.
fn describe(error: &handlebars::RenderError) -> String {
    use handlebars::RenderErrorReason;
    match error.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => {
            format!("'{{{{ {path} }}}}' is not set (no such step, output, or the step has not finished)")
        }
        RenderErrorReason::TemplateError(e) => format!("invalid template: {}", e.reason()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::Action;

    use super::*;

    fn plan_with(command: &str) -> Plan {
        let mut plan = Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::from([("A".into(), "1".into())]),
            steps: vec![Step::new(
                "use",
                Action::Bash {
                    command: command.into(),
                },
            )],
        };
        plan.steps[0]
            .env
            .insert("B".into(), "{{ steps.build-it.outputs.version }}".into());
        plan
    }

    fn results() -> BTreeMap<&'static str, StepResult<'static>> {
        BTreeMap::from([(
            "build-it",
            StepResult {
                status: "succeeded",
                outputs: BTreeMap::from([("version".into(), "1.2.3 <&>".into())]),
            },
        )])
    }

    #[test]
    fn outputs_of_steps_with_dashes_render_unescaped() {
        let plan = plan_with("echo {{ steps.build-it.outputs.version }} $A");
        let dispatch = build(&plan, &plan.steps[0], 7, &results()).unwrap();
        assert_eq!(
            dispatch.action,
            StepAction::Bash {
                command: "echo 1.2.3 <&> $A".into()
            }
        );
        assert_eq!(dispatch.env["B"], "1.2.3 <&>");
        assert_eq!(dispatch.env["A"], "1");
        assert_eq!(dispatch.env["PLUE_RUN_ID"], "7");
    }

    #[test]
    fn a_missing_output_is_an_error_naming_it() {
        let plan = plan_with("echo {{ steps.build-it.outputs.nope }}");
        let err = build(&plan, &plan.steps[0], 1, &results()).unwrap_err();
        assert!(err.contains("steps.build-it.outputs.nope"), "{err}");
        assert!(err.starts_with("command: "), "{err}");
    }

    #[test]
    fn text_without_templates_is_untouched() {
        let plan = plan_with("echo '{ not a template }' && jq '.a'");
        let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
        assert_eq!(
            dispatch.action,
            StepAction::Bash {
                command: "echo '{ not a template }' && jq '.a'".into()
            }
        );
    }

    #[test]
    fn a_broken_template_is_an_error() {
        let plan = plan_with("echo {{ steps.build-it.outputs.version");
        let err = build(&plan, &plan.steps[0], 1, &results()).unwrap_err();
        assert!(err.contains("invalid template"), "{err}");
    }
}
