//! `/runs/{id}/steps/{step}`: a step's log. The page is a shell; `assets/log.js` loads the
//! stored lines from `…/stream` (the API's JSON lines), then follows new ones over SSE
//! (the API's stream, resumed with `Last-Event-ID`), and draws only the lines in view.
//! `…/raw` downloads the text as printed.
//!
//! Invariants: `…/stream` is the API's logs endpoint called in-process as the session's
//! caller (see [`forward`]), so it resumes, ends and refuses exactly as the API does;
//! `…/raw` reads the store in pages, so a log of millions of lines never sits in memory.
//! All three first ask the caller to read the run: a run it may not read is the 404 of a
//! missing one (the sign-in page for the anonymous).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, Method, Uri};
use axum::response::{Html, IntoResponse, Response};
use plue_store::{StepRunRow, Store};
use plue_types::status::StepStatus;
use serde::Serialize;

use super::error::{WebError, WebResult};
use super::forward::{self, ApiCall};
use super::session::{readable_run, Chrome};
use super::{encode, parse_run_id, render, Web};
use crate::api::logs::stored_lines;
use crate::api::views::{RunView, StepView};

#[derive(Serialize)]
struct LogPage {
    chrome: Chrome,
    run: RunView,
    step: StepView,
    /// `…/stream`, `…/raw` of this step.
    stream: String,
    raw: String,
    done: bool,
    /// The run's steps beside the log, and this step's outputs (`log_steps.rs`).
    step_list: super::log_steps::StepList,
    /// An `llm` step's conversation (`log_conversation.rs`); `None` for other steps.
    conversation: Option<super::log_conversation::Conversation>,
    /// An approval step's panel, or a waiting review's (`log_approval.rs`).
    approval: Option<super::run_approval::GateView>,
    /// The step's kind (`bash`, `python`, `llm`, `approval`); `None` without a plan.
    kind: Option<&'static str>,
}

async fn step_of(store: &Store, run_id: i64, step: &str) -> WebResult<StepRunRow> {
    store
        .step_run(run_id, step)
        .await?
        .ok_or_else(|| WebError::not_found(format!("Run {run_id} has no step '{step}'.")))
}

/// `GET /runs/{id}/steps/{step}`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
) -> WebResult<Html<String>> {
    let run_id = parse_run_id(&id)?;
    let base = format!("/runs/{run_id}/steps/{}", encode(&step));
    let (session, run) = readable_run(&web, &headers, run_id, &base).await?;
    let store = web.store();
    let step_row = step_of(store, run_id, &step).await?;
    let done = step_row.status.is_final();
    let step_run_id = step_row.id;
    let step_list = super::log_steps::for_step(store, run_id, run.rerun_of, &step_row).await?;
    let approval = super::log_approval::for_step(&web, &session, &run, &step_row).await?;
    let (attempt, running) = (step_row.attempts, step_row.status == StepStatus::Running);
    let mut step = StepView::new(step_row);
    step.add_costs(step_run_id, &store.dashboard_attempts(run_id).await?);
    let plan = crate::api::run_plan(store, run_id).await?;
    let kind = plan
        .as_ref()
        .and_then(|plan| plan.steps.iter().find(|s| s.id == step.id))
        .map(|s| s.action.kind());
    let conversation =
        super::log_conversation::for_step(&web, plan.as_ref(), run_id, &step, attempt, running)
            .await?;
    let page = LogPage {
        chrome: session.chrome(&base),
        run: RunView::new(run, None),
        step,
        stream: format!("{base}/stream"),
        raw: format!("{base}/raw"),
        done,
        step_list,
        conversation,
        approval,
        kind,
    };
    Ok(Html(render::page("log.html", &page)?))
}

/// `GET /runs/{id}/steps/{step}/stream[?after=A:S]`: the API's log endpoint — JSON lines,
/// or SSE with `Accept: text/event-stream` (and `Last-Event-ID` to resume).
pub(super) async fn stream(
    State(web): State<Web>,
    headers: HeaderMap,
    uri: Uri,
    client: forward::Client,
    Path((id, step)): Path<(String, String)>,
) -> WebResult<Response> {
    let run_id = parse_run_id(&id)?;
    let base = format!("/runs/{run_id}/steps/{}", encode(&step));
    let (session, _) = readable_run(&web, &headers, run_id, &base).await?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let api = format!("/api/runs/{run_id}/steps/{}/logs{query}", encode(&step));
    // `X-Forwarded-For` too: the API counts the follower by the same rule as it would a
    // direct request (believed only from a trusted proxy, which the browser's peer is not
    // unless it is one).
    let pass = [
        header::ACCEPT,
        HeaderName::from_static("last-event-id"),
        HeaderName::from_static("x-forwarded-for"),
    ];
    let call = ApiCall {
        method: Method::GET,
        uri: &api,
        pass: &pass,
        json: None,
    };
    forward::call_ok(&web, &session, call, &headers, client).await
}

/// `GET /runs/{id}/steps/{step}/raw`: every stored line's text, as printed, as a download.
pub(super) async fn raw(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
) -> WebResult<Response> {
    let run_id = parse_run_id(&id)?;
    let base = format!("/runs/{run_id}/steps/{}", encode(&step));
    readable_run(&web, &headers, run_id, &base).await?;
    let store = web.store().clone();
    let step_run_id = step_of(&store, run_id, &step).await?.id;
    let body = stored_lines(
        store,
        step_run_id,
        (0, 0),
        "dashboard: reading logs",
        |line, chunk| chunk.push_str(&line.text),
    );
    let file: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"run-{run_id}-{file}.log\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
