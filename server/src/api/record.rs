//! The run record: everything the store knows about one run in one JSON document — what
//! `plue run --summary-json` writes, `plue runs show RUN --json` prints and
//! `GET /api/runs/{id}/record` answers. It is made of the API's own views ([`RunView`],
//! [`ArtifactView`], [`ApprovalView`], [`ProposalView`]) plus the parts no other view
//! shows (inputs, every attempt, every round's outputs), so there is one shape, described
//! by `ToSchema`; [`json_schema`] turns it into the JSON Schema published as
//! `docs/src/reference/run-record.schema.json` (kept current by `plue __docs`).
//!
//! Invariants: a record is built only from stored rows (never from a live process), so
//! the same run gives the same record wherever it is read; secrets never reach it (outputs
//! and reasons are stored masked).

use std::collections::HashMap;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::Json;
use plue_store::Store;
use plue_types::status::AttemptStatus;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::proposals::ProposalView;
use super::views::{ApprovalView, ArtifactView, ErrorView, RunView};
use super::{visible_run_in_path, ApiState, RunId};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// One run, complete.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunRecord {
    /// The run's id (the same as `id`; the name `plue run --summary-json` always had).
    pub run_id: i64,
    /// The run as `GET /api/runs/{id}` shows it, with its steps, loops and costs.
    #[serde(flatten)]
    pub run: RunView,
    /// The inputs the run was started with (a manual trigger's, after defaults); `{}`
    /// for other events.
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// Tokens the run's `llm` steps used together (absent without any).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub usage: Option<serde_json::Value>,
    /// Every attempt of every step, by step (plan order) and number.
    pub attempt_records: Vec<AttemptRecord>,
    /// The outputs of every round of every step (one round outside review loops).
    pub rounds: Vec<RoundRecord>,
    /// The files the run's steps kept (`artifacts=`), every attempt's.
    pub artifacts: Vec<ArtifactView>,
    /// Decisions on the run's approval steps: who decided, when, why.
    pub approvals: Vec<ApprovalView>,
    /// What the run's agents proposed (`safe_outputs=`), with who decided.
    pub proposals: Vec<ProposalView>,
}

/// One attempt of a step.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptRecord {
    pub step: String,
    pub attempt: i64,
    /// The review-loop round it ran in (1 outside loops).
    pub iteration: i64,
    #[schema(value_type = String)]
    pub status: AttemptStatus,
    /// The runner that took it (`null`: it never started).
    #[schema(required = true)]
    pub runner: Option<String>,
    #[schema(required = true)]
    pub started_at: Option<i64>,
    #[schema(required = true)]
    pub finished_at: Option<i64>,
    #[schema(required = true)]
    pub exit_code: Option<i64>,
    #[schema(required = true)]
    pub reason: Option<String>,
    /// An `llm` attempt's model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// An `llm` attempt's tokens (`input_tokens`, `output_tokens`,
    /// `cache_creation_input_tokens`, `cache_read_input_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub usage: Option<serde_json::Value>,
    /// An `llm` attempt's cost in USD (absent: not an llm attempt, or its model unpriced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// The outputs a step stored in one round of its review loop.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoundRecord {
    pub step: String,
    pub round: i64,
    #[schema(value_type = BTreeMap<String, String>)]
    pub outputs: serde_json::Value,
}

/// The record of run `run_id`, `None` when there is no such run. Reads only; whoever
/// calls it has checked the caller may read the run.
pub async fn build(store: &Store, run_id: i64) -> anyhow::Result<Option<RunRecord>> {
    let Some(run) = store.run(run_id).await? else {
        return Ok(None);
    };
    let steps = store.step_runs(run_id).await?;
    let documents = store.run_documents(run_id).await?;
    let plan = documents
        .as_ref()
        .and_then(|docs| serde_json::from_str::<evaluator::plan::Plan>(&docs.plan).ok());
    let inputs = documents
        .as_ref()
        .and_then(|docs| serde_json::from_str::<serde_json::Value>(&docs.context).ok())
        .and_then(|context| context.get("inputs").cloned())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    let names: HashMap<i64, String> = steps.iter().map(|s| (s.id, s.step_id.clone())).collect();
    let step_run_ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
    let attempt_rows = store.dashboard_attempts(run_id).await?;
    let times: Vec<_> = attempt_rows
        .iter()
        .map(|a| (a.step_run_id, a.number, a.started_at, a.finished_at))
        .collect();
    let view = RunView::new(run, Some(steps))
        .with_loops(plan.as_ref())
        .with_attempts(&step_run_ids, &times)
        .with_costs(&step_run_ids, &attempt_rows);
    let usage = view
        .steps
        .iter()
        .flatten()
        .filter_map(|s| s.usage.as_ref())
        .filter_map(|u| serde_json::from_value::<plue_types::protocol::Usage>(u.clone()).ok())
        .reduce(|a, b| a + b)
        .map(|u| serde_json::to_value(u).expect("usage is JSON"));
    let order: HashMap<i64, usize> = step_run_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut attempt_rows = attempt_rows;
    attempt_rows.sort_by_key(|a| (order.get(&a.step_run_id).copied(), a.number));
    let attempt_records = attempt_rows
        .into_iter()
        .map(|a| AttemptRecord {
            step: names.get(&a.step_run_id).cloned().unwrap_or_default(),
            attempt: a.number,
            iteration: a.iteration,
            status: a.status,
            runner: a.runner,
            started_at: a.started_at,
            finished_at: a.finished_at,
            exit_code: a.exit_code,
            reason: a.reason,
            model: a.model,
            usage: a
                .usage
                .as_deref()
                .and_then(|u| serde_json::from_str(u).ok()),
            cost_usd: a
                .cost_usd_micros
                .map(|m| plue_core::pricing::usd(u64::try_from(m).unwrap_or(0))),
        })
        .collect();
    let mut round_rows = store.rounds_of_run(run_id).await?;
    round_rows.sort_by_key(|r| (order.get(&r.step_run_id).copied(), r.iteration));
    let rounds = round_rows
        .into_iter()
        .map(|r| RoundRecord {
            step: names.get(&r.step_run_id).cloned().unwrap_or_default(),
            round: r.iteration,
            outputs: serde_json::from_str(&r.outputs).unwrap_or_else(|_| serde_json::json!({})),
        })
        .collect();
    let artifacts = store
        .artifacts_of_run(run_id)
        .await?
        .into_iter()
        .map(|row| ArtifactView::new(run_id, row))
        .collect();
    let approvals = store
        .approvals_of_run(run_id)
        .await?
        .into_iter()
        .map(ApprovalView::from)
        .collect();
    let proposals = super::proposals::views(store, store.list_for_run(run_id).await?)
        .await
        .context("the run's proposals")?;
    Ok(Some(RunRecord {
        run_id,
        run: view,
        inputs,
        usage,
        attempt_records,
        rounds,
        artifacts,
        approvals,
        proposals,
    }))
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/record",
    tag = "runs",
    operation_id = "run_record",
    summary = "The run's complete record: inputs, every attempt and round, artifacts, approvals, proposals (docs/src/reference/generated/run-record.schema.json)",
    params(RunId),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The run record", body = RunRecord),
        (status = 400, description = "The id is not a run id", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn get_record(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunRecord>> {
    let store = state.executor.store();
    let (id, _) = visible_run_in_path(store, &caller, &id, Role::Reader).await?;
    let record = build(store, id).await?;
    record
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

/// The record's schemas, collected by utoipa from the types themselves.
#[derive(OpenApi)]
#[openapi(components(schemas(RunRecord)))]
struct RecordSchemas;

/// The JSON Schema (draft 2020-12) of [`RunRecord`]: utoipa's OpenAPI 3.1 component
/// schemas (which are JSON Schema) under `$defs`, the record at the root.
pub fn json_schema() -> serde_json::Value {
    let components = RecordSchemas::openapi()
        .components
        .expect("the record's schemas are registered");
    let defs = serde_json::to_string(&components.schemas).expect("schemas are JSON");
    let defs: serde_json::Value =
        serde_json::from_str(&defs.replace("#/components/schemas/", "#/$defs/"))
            .expect("schemas are JSON");
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://plue.dev/schemas/run-record.schema.json",
        "$comment": "Generated by `plue __docs` from server/src/api/record.rs. Do not edit: change the \
                     types and run cargo run -p engine --bin plue -- __docs docs/src/reference/generated",
        "title": "Plue run record",
        "description": "One run, complete: `plue run --summary-json`, `plue runs show RUN --json`, \
                        `GET /api/runs/{id}/record`.",
        "$ref": "#/$defs/RunRecord",
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_part_of_the_record() {
        let schema = json_schema();
        let defs = schema["$defs"].as_object().unwrap();
        for name in [
            "RunRecord",
            "RunView",
            "StepView",
            "AttemptRecord",
            "RoundRecord",
            "ArtifactView",
            "ApprovalView",
            "ProposalView",
        ] {
            assert!(defs.contains_key(name), "{name} missing: {:?}", defs.keys());
        }
        assert!(!schema.to_string().contains("#/components/"), "{schema}");
        jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    }
}
