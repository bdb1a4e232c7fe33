//! `GET /api/runs/{id}/annotations`: what a run's steps flagged with `::error …`,
//! `::warning …` and `::notice …` log lines (GitHub's workflow-command format; see
//! `plue_core::annotations`). Needs `reader` on the run's repository (the run's 404 for a
//! caller who may not read it).
//!
//! Invariants: an answer holds at most [`MAX_LIMIT`] annotations (`truncated` says more
//! exist), and each attempt's dropped count (annotations past the per-attempt cap of
//! [`plue_core::annotations::PER_ATTEMPT`]); the text is the step's own, returned as data.

use axum::extract::{Path, Query, State};
use axum::Json;
use plue_store::{AnnotationRow, DroppedAnnotations, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::ErrorView;
use super::{parse_run_id, ApiState, RunId};
use crate::access::{Caller, Role};
use crate::http_error::{ApiError, ApiResult};

/// Annotations in an answer unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: i64 = 200;
/// The most annotations in one answer.
pub(crate) const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AnnotationsQuery {
    /// Only this step's annotations.
    #[param(example = "test")]
    step: Option<String>,
    /// At most this many (default 200; below 1 counts as 1, above 1000 as 1000).
    limit: Option<i64>,
}

/// One annotation a step printed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AnnotationView {
    /// The step whose log held the line.
    pub step: String,
    pub attempt: i64,
    /// The log line it came from (`after={attempt}:{seq}` of the step's logs reads from it).
    pub seq: i64,
    /// `error`, `warning` or `notice`.
    #[schema(pattern = "^(error|warning|notice)$")]
    pub level: String,
    #[schema(required = true)]
    pub file: Option<String>,
    #[schema(required = true)]
    pub line: Option<i64>,
    #[schema(required = true)]
    pub end_line: Option<i64>,
    #[schema(required = true)]
    pub col: Option<i64>,
    #[schema(required = true)]
    pub end_column: Option<i64>,
    #[schema(required = true)]
    pub title: Option<String>,
    /// The message, decoded (`%0A` is a newline), without control characters, at most 4,096
    /// characters.
    pub message: String,
}

/// How many annotations an attempt printed past the cap.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DroppedView {
    pub step: String,
    pub attempt: i64,
    pub count: i64,
}

/// A run's annotations.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AnnotationsView {
    pub annotations: Vec<AnnotationView>,
    /// More annotations exist than `limit` let through.
    pub truncated: bool,
    /// Attempts that printed more than 50 annotations: the rest were counted, not kept.
    pub dropped: Vec<DroppedView>,
}

impl From<AnnotationRow> for AnnotationView {
    fn from(row: AnnotationRow) -> AnnotationView {
        AnnotationView {
            step: row.step_id,
            attempt: row.attempt,
            seq: row.seq,
            level: row.level,
            file: row.file,
            line: row.line,
            end_line: row.end_line,
            col: row.col,
            end_column: row.end_col,
            title: row.title,
            message: row.message,
        }
    }
}

impl From<DroppedAnnotations> for DroppedView {
    fn from(row: DroppedAnnotations) -> DroppedView {
        DroppedView {
            step: row.step_id,
            attempt: row.attempt,
            count: row.count,
        }
    }
}

/// Up to `limit` annotations of run `run_id` (of `step` only, when given).
pub(crate) async fn read(
    store: &Store,
    run_id: i64,
    step: Option<&str>,
    limit: i64,
) -> anyhow::Result<AnnotationsView> {
    let mut rows = store.annotations_of_run(run_id, step, limit + 1).await?;
    let truncated = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let dropped = store
        .dropped_annotations(run_id)
        .await?
        .into_iter()
        .filter(|d| step.is_none_or(|s| s == d.step_id))
        .map(DroppedView::from)
        .collect();
    Ok(AnnotationsView {
        annotations: rows.into_iter().map(AnnotationView::from).collect(),
        truncated,
        dropped,
    })
}

#[utoipa::path(
    get,
    path = "/api/runs/{id}/annotations",
    tag = "runs",
    operation_id = "list_annotations",
    summary = "What a run's steps flagged with `::error`, `::warning` and `::notice` lines",
    description = "A step that prints `::error file=F,line=L,col=C,endLine=L2,endColumn=C2,title=T::message` \
                   (or `::warning`, `::notice`; GitHub's workflow-command format, with `%0A`, `%25` \
                   escapes) gets an annotation. At most 50 are kept per attempt; `dropped` counts the rest.",
    params(RunId, AnnotationsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The run's annotations, in plan order of their steps", body = AnnotationsView),
        (status = 400, description = "The id is not a run id, or an unknown or malformed query parameter", body = ErrorView),
        (status = 401, response = super::openapi::RunNotPublic),
        (status = 404, description = "No such run, or one the caller may not read", body = ErrorView),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<AnnotationsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AnnotationsView>> {
    let id = parse_run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let store = state.executor.store();
    caller.visible_run(store, id, Role::Reader).await?;
    Ok(Json(read(store, id, query.step.as_deref(), limit).await?))
}
