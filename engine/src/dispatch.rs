//! Dispatch documents: what a queued step run carries to its runner — the action with
//! `{{ steps.<id>.outputs.<key> }}` rendered, the environment, the names of its secrets
//! and its timeout. Built when the executor queues a step; pure (no IO).
//!
//! Invariants: templates are rendered in strict mode without HTML escaping, so a reference
//! to a missing output is an error naming it rather than an empty string; secret values
//! never enter a dispatch document (only names; values are resolved at claim time).
//!
//! `llm` steps: `{{ steps.* }}` is rendered in the inline `prompt` and in every string of
//! `inputs` (nested ones too); the prompt file itself is resolved and rendered by the
//! runner, which has the checkout. `model`, `max_turns` and `tools` pass through as the
//! step set them — the runner applies the prompt's frontmatter and the defaults. Every
//! `llm` step needs the secret [`LLM_KEY_SECRET`], so it is added to the step's secrets
//! when the step did not name it.

use std::collections::BTreeMap;

use evaluator::plan::{Action, Plan, Step};
use handlebars::Handlebars;
use runner::protocol::StepAction;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The secret every `llm` step gets (its API key), named or not.
pub const LLM_KEY_SECRET: &str = "ANTHROPIC_API_KEY";

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
        Action::Llm(llm) => {
            let prompt = match &llm.prompt {
                Some(prompt) => Some(render("prompt", prompt)?),
                None => None,
            };
            let mut inputs = Map::new();
            for (name, value) in &llm.inputs {
                let what = format!("inputs.{name}");
                inputs.insert(name.clone(), render_strings(&what, value, &data)?);
            }
            StepAction::Llm {
                prompt,
                prompt_file: llm.prompt_file.clone(),
                inputs,
                model: llm.model.clone(),
                max_turns: llm.max_turns,
                tools: llm.tools.clone(),
            }
        }
    };
    let mut secrets = step.secrets.clone();
    if matches!(step.action, Action::Llm(_)) && !secrets.iter().any(|s| s == LLM_KEY_SECRET) {
        secrets.push(LLM_KEY_SECRET.to_owned());
    }
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
        secrets,
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

/// `value` with every string in it (keys excepted) rendered; `what` names it in errors.
fn render_strings(what: &str, value: &Value, data: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => {
            Value::String(render(text, data).map_err(|e| format!("{what}: {e}"))?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| render_strings(&format!("{what}[{i}]"), item, data))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| {
                    render_strings(&format!("{what}.{key}"), item, data).map(|v| (key.clone(), v))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
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
    use evaluator::plan::{Action, LlmAction};

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

    fn llm_plan(prompt: Option<&str>, secrets: &[&str]) -> Plan {
        let action = LlmAction {
            prompt: prompt.map(str::to_owned),
            prompt_file: prompt.is_none().then(|| "prompts/review.md".to_owned()),
            inputs: BTreeMap::from([
                (
                    "version".into(),
                    json!("v{{ steps.build-it.outputs.version }}"),
                ),
                (
                    "nested".into(),
                    json!({"list": ["{{ steps.build-it.status }}", 3, true], "plain": "{ x }"}),
                ),
            ]),
            model: Some("claude-haiku-4-5".into()),
            max_turns: None,
            tools: vec!["read_file".into(), "grep".into()],
        };
        let mut step = Step::new("review", Action::Llm(action));
        step.secrets = secrets.iter().map(|s| s.to_string()).collect();
        Plan {
            name: "p".into(),
            triggers: vec![],
            env: BTreeMap::new(),
            steps: vec![step],
        }
    }

    #[test]
    fn llm_steps_render_prompt_and_inputs_and_pass_the_rest_through() {
        let plan = llm_plan(Some("Review {{ steps.build-it.outputs.version }}"), &[]);
        let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
        let StepAction::Llm {
            prompt,
            prompt_file,
            inputs,
            model,
            max_turns,
            tools,
        } = dispatch.action
        else {
            panic!("not an llm action: {:?}", dispatch.action);
        };
        assert_eq!(prompt.as_deref(), Some("Review 1.2.3 <&>"));
        assert_eq!(prompt_file, None);
        assert_eq!(inputs["version"], json!("v1.2.3 <&>"));
        assert_eq!(
            inputs["nested"],
            json!({"list": ["succeeded", 3, true], "plain": "{ x }"})
        );
        assert_eq!(model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(max_turns, None);
        assert_eq!(tools, ["read_file", "grep"]);
    }

    #[test]
    fn llm_steps_get_the_api_key_secret_once() {
        let plan = llm_plan(None, &["OTHER"]);
        let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
        assert_eq!(dispatch.secrets, ["OTHER", LLM_KEY_SECRET]);
        let StepAction::Llm { prompt_file, .. } = &dispatch.action else {
            panic!("not an llm action");
        };
        assert_eq!(prompt_file.as_deref(), Some("prompts/review.md"));
        let plan = llm_plan(None, &[LLM_KEY_SECRET]);
        let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
        assert_eq!(dispatch.secrets, [LLM_KEY_SECRET]);
        // Other kinds of steps do not get it.
        let plan = plan_with("true");
        let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
        assert!(dispatch.secrets.is_empty());
    }

    #[test]
    fn a_missing_output_in_llm_inputs_names_where_it_is() {
        let mut plan = llm_plan(None, &[]);
        let Action::Llm(llm) = &mut plan.steps[0].action else {
            unreachable!()
        };
        llm.inputs.insert(
            "files".into(),
            json!(["a", "{{ steps.build-it.outputs.nope }}"]),
        );
        let err = build(&plan, &plan.steps[0], 1, &results()).unwrap_err();
        assert!(err.starts_with("inputs.files[1]: "), "{err}");
        assert!(err.contains("steps.build-it.outputs.nope"), "{err}");
    }
}
