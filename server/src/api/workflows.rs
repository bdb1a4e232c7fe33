//! `GET /api/repos/{owner}/{name}/workflows`: every workflow file of the repository's
//! default branch head, evaluated ([`plue_core::registry::workflows`]), with its triggers and,
//! for a workflow with a manual trigger, the inputs a dispatch takes (type, default,
//! options, required) — what the dashboard's dispatch forms are built from, and what a
//! client needs to dispatch any workflow, run or not.
//!
//! Invariants: readers of the repository (or anyone, for one whose reads are public) list
//! it, a caller who may not read it gets the 404 of a missing one; workflow files are
//! evaluated only in the evaluator's sandbox, once per head commit; an evaluation error is
//! the evaluator's message (about the file, never the engine's state), and a head that
//! cannot be read is a sentence (git's output stays in the log).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use evaluator::plan::{InputKind, Plan, Trigger};
use plue_core::registry::workflows::{Listed, Listing};
use serde::Serialize;
use utoipa::ToSchema;

use super::repos::{find_repo, RepoPath};
use super::views::ErrorView;
use super::ApiState;
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// The workflows of a default branch's head.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowsView {
    /// The default branch read (`null`: the repository names none; its `HEAD` was read).
    #[schema(required = true)]
    pub branch: Option<String>,
    /// The head commit the files were read at (`null` when it could never be read).
    #[schema(required = true)]
    pub sha: Option<String>,
    /// Why the head could not be read just now; `workflows` are then the last ones read.
    #[schema(required = true)]
    pub problem: Option<String>,
    /// Every `*.plue.py` file there, by path.
    pub workflows: Vec<WorkflowView>,
}

/// One workflow file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowView {
    /// The file's path in the repository (what a dispatch's `workflow` takes).
    pub path: String,
    /// The plan's name (`null` when the file does not evaluate).
    #[schema(required = true)]
    pub name: Option<String>,
    /// The evaluator's message when the file does not evaluate.
    #[schema(required = true)]
    pub error: Option<String>,
    /// What starts it.
    pub triggers: Vec<TriggerView>,
    /// The manual trigger's inputs, by name (`null`: no manual trigger, it cannot be
    /// dispatched).
    #[schema(required = true)]
    pub inputs: Option<Vec<InputView>>,
}

/// One trigger, summarised.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerView {
    /// `push`, `pull_request`, `schedule`, `manual`, `issue` or `comment`.
    #[schema(example = "push")]
    pub kind: String,
    /// What it matches, in words (`push to main, release/*`).
    pub summary: String,
}

/// One input of a manual trigger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InputView {
    pub name: String,
    /// `string`, `boolean` (`true`/`false`) or `number`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^(string|boolean|number)$", example = "boolean")]
    pub kind: &'static str,
    /// A dispatch must give it (it has no default).
    pub required: bool,
    /// What a dispatch that does not give it gets.
    #[schema(required = true)]
    pub default: Option<String>,
    #[schema(required = true)]
    pub description: Option<String>,
    /// When not empty, the only values it takes.
    pub options: Vec<String>,
}

impl WorkflowsView {
    pub fn new(listing: &Listing) -> WorkflowsView {
        WorkflowsView {
            branch: listing.branch.clone(),
            sha: listing.sha.clone(),
            problem: listing.problem.clone(),
            workflows: listing.workflows.iter().map(WorkflowView::new).collect(),
        }
    }
}

impl WorkflowView {
    pub fn new(listed: &Listed) -> WorkflowView {
        match &listed.evaluated {
            Ok(plan) => WorkflowView {
                path: listed.path.clone(),
                name: Some(plan.name.clone()),
                error: None,
                triggers: plan.triggers.iter().map(TriggerView::new).collect(),
                inputs: manual_inputs(plan),
            },
            Err(message) => WorkflowView {
                path: listed.path.clone(),
                name: None,
                error: Some(message.clone()),
                triggers: Vec::new(),
                inputs: None,
            },
        }
    }
}

/// The inputs of `plan`'s manual trigger, if it has one.
pub fn manual_inputs(plan: &Plan) -> Option<Vec<InputView>> {
    let declared = evaluator::inputs::declared(plan)?;
    Some(
        declared
            .iter()
            .map(|(name, input)| InputView {
                name: name.clone(),
                kind: input.kind.as_str(),
                required: input.required && input.default.is_none(),
                default: input.default.clone(),
                description: input.description.clone(),
                options: input.options.clone(),
            })
            .collect(),
    )
}

impl InputView {
    /// A boolean input without options (a checkbox).
    pub fn is_boolean(&self) -> bool {
        self.kind == InputKind::Boolean.as_str() && self.options.is_empty()
    }
}

impl TriggerView {
    pub fn new(trigger: &Trigger) -> TriggerView {
        TriggerView {
            kind: trigger.kind().to_string(),
            summary: summary(trigger),
        }
    }
}

/// `trigger` in words.
fn summary(trigger: &Trigger) -> String {
    let list = |items: &[String]| items.join(", ");
    let mut parts = Vec::new();
    match trigger {
        Trigger::Push {
            branches,
            tags,
            paths,
            paths_ignore,
        } => {
            if !branches.is_empty() {
                parts.push(format!("push to {}", list(branches)));
            }
            if !tags.is_empty() {
                parts.push(format!("tags {}", list(tags)));
            }
            if parts.is_empty() {
                parts.push("push (no branch or tag)".to_string());
            }
            paths_parts(&mut parts, paths, paths_ignore);
        }
        Trigger::PullRequest {
            branches,
            actions,
            paths,
            paths_ignore,
        } => {
            parts.push(format!("pull request into {}", list(branches)));
            if !actions.is_empty() {
                parts.push(format!("when {}", list(actions)));
            }
            paths_parts(&mut parts, paths, paths_ignore);
        }
        Trigger::Schedule { cron } => parts.push(format!("schedule {cron} (UTC)")),
        Trigger::Manual { inputs } => parts.push(match inputs.len() {
            0 => "by hand".to_string(),
            1 => "by hand, 1 input".to_string(),
            n => format!("by hand, {n} inputs"),
        }),
        Trigger::Issue {
            actions, labels, ..
        } => {
            parts.push(format!("issue {}", list(actions)));
            if !labels.is_empty() {
                parts.push(format!("labelled {}", list(labels)));
            }
        }
        Trigger::Comment { pattern, on, .. } => {
            parts.push(format!("comment matching {pattern} on {}", list(on)))
        }
    }
    parts.join("; ")
}

fn paths_parts(parts: &mut Vec<String>, paths: &[String], ignored: &[String]) {
    if !paths.is_empty() {
        parts.push(format!("paths {}", paths.join(", ")));
    }
    if !ignored.is_empty() {
        parts.push(format!("ignoring {}", ignored.join(", ")));
    }
}

#[utoipa::path(
    get,
    path = "/api/repos/{owner}/{name}/workflows",
    tag = "repos",
    summary = "The workflows of a repository's default branch, with their triggers and dispatch inputs",
    description = "Every `*.plue.py` file at the default branch's head, evaluated as a push \
                   of that head evaluates it: its plan's name and triggers, and for a \
                   workflow with a manual trigger the inputs `POST .../dispatch` takes; a \
                   file that does not evaluate carries the evaluator's message. The head is \
                   read from the forge at most every 15 seconds (at once after a push) and \
                   the files are evaluated once per head commit.",
    params(RepoPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The default branch's workflows", body = WorkflowsView),
        (status = 400, description = "An invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::RepoNotPublic),
        (status = 404, description = "No such repository, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
        (status = 501, description = "This engine has no evaluator", body = ErrorView),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<WorkflowsView>> {
    let repo = find_repo(&state, &caller, &owner, &name, Role::Reader).await?;
    let Some(registry) = &state.registry else {
        return Err(ApiError::Client(
            StatusCode::NOT_IMPLEMENTED,
            "this engine has no evaluator".into(),
        ));
    };
    let listing = registry.default_workflows(&repo).await;
    Ok(Json(WorkflowsView::new(&listing)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use evaluator::plan::ManualInput;

    use super::*;

    fn plan(triggers: Vec<Trigger>) -> Plan {
        Plan {
            triggers,
            ..Plan::new("Deploy", Vec::new())
        }
    }

    fn input(kind: InputKind, default: Option<&str>, options: &[&str]) -> ManualInput {
        ManualInput {
            default: default.map(String::from),
            required: default.is_none(),
            description: None,
            options: options.iter().map(|s| s.to_string()).collect(),
            kind,
        }
    }

    #[test]
    fn a_listing_shows_inputs_triggers_and_errors() {
        let manual = Trigger::Manual {
            inputs: BTreeMap::from([
                (
                    "dry_run".to_string(),
                    input(InputKind::Boolean, Some("true"), &[]),
                ),
                (
                    "target".to_string(),
                    input(InputKind::String, Some("staging"), &["staging", "prod"]),
                ),
                ("count".to_string(), input(InputKind::Number, None, &[])),
            ]),
        };
        let push = Trigger::Push {
            branches: vec!["main".into(), "release/*".into()],
            tags: vec![],
            paths: vec!["src/**".into()],
            paths_ignore: vec![],
        };
        let listing = Listing {
            branch: Some("main".into()),
            sha: Some("a".repeat(40)),
            problem: None,
            workflows: vec![
                Listed {
                    path: ".plue/broken.plue.py".into(),
                    evaluated: Err("broken.plue.py:1:1: NameError".into()),
                },
                Listed {
                    path: ".plue/deploy.plue.py".into(),
                    evaluated: Ok(Arc::new(plan(vec![push, manual]))),
                },
                Listed {
                    path: ".plue/ci.plue.py".into(),
                    evaluated: Ok(Arc::new(plan(vec![Trigger::Schedule {
                        cron: "0 3 * * *".into(),
                    }]))),
                },
            ],
        };
        let view = serde_json::to_value(WorkflowsView::new(&listing)).unwrap();
        let workflows = view["workflows"].as_array().unwrap();
        assert_eq!(workflows.len(), 3);
        assert_eq!(workflows[0]["error"], "broken.plue.py:1:1: NameError");
        assert_eq!(workflows[0]["inputs"], serde_json::Value::Null);
        let deploy = &workflows[1];
        assert_eq!(deploy["name"], "Deploy");
        assert_eq!(
            deploy["triggers"][0]["summary"],
            "push to main, release/*; paths src/**"
        );
        assert_eq!(deploy["triggers"][1]["summary"], "by hand, 3 inputs");
        let inputs = deploy["inputs"].as_array().unwrap();
        let by_name = |name: &str| inputs.iter().find(|i| i["name"] == name).unwrap();
        assert_eq!(by_name("dry_run")["type"], "boolean");
        assert_eq!(by_name("dry_run")["required"], false);
        assert_eq!(by_name("count")["type"], "number");
        assert_eq!(by_name("count")["required"], true);
        assert_eq!(
            by_name("target")["options"],
            serde_json::json!(["staging", "prod"])
        );
        // No manual trigger: listed, not dispatchable.
        assert_eq!(workflows[2]["inputs"], serde_json::Value::Null);
        assert_eq!(
            workflows[2]["triggers"][0]["summary"],
            "schedule 0 3 * * * (UTC)"
        );
    }
}
