//! `GET /api/runs`: the runs a caller may read, newest first, filtered by repository,
//! workflow, branch, event and status (`waiting` included), a page at a time by an opaque
//! cursor.
//!
//! Invariants: every parameter the handler refuses is refused by the OpenAPI document too
//! (its pattern, enum or bounds are declared), so a request valid by the document is never
//! a 400. The cursor is opaque to clients ([`Cursor`]: the keyset position, `r<id>`; every
//! cursor the pattern allows is one the server reads), and
//! a page walks the primary key downwards, never an `OFFSET`, so a page costs the same deep
//! down as on top and a run created meanwhile never shifts a page. The repositories the
//! caller may read filter in the query itself, so `limit` counts readable runs.

use axum::extract::{Query, State};
use axum::Json;
use plue_store::RunFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{ErrorView, RunStatus, RunsPageView};
use super::{repos, ApiState};
use crate::access::{Caller, Readable};
use crate::http_error::{ApiError, ApiResult};

/// How many runs a page holds when the caller names no `limit`, and at most.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;

/// A run's trigger.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunEvent {
    Push,
    PullRequest,
    Schedule,
    Manual,
    Issue,
    Comment,
}

impl RunEvent {
    fn as_str(self) -> &'static str {
        match self {
            RunEvent::Push => "push",
            RunEvent::PullRequest => "pull_request",
            RunEvent::Schedule => "schedule",
            RunEvent::Manual => "manual",
            RunEvent::Issue => "issue",
            RunEvent::Comment => "comment",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// At most this many runs, newest first (default 50; below 1 counts as 1, above 1000
    /// as 1000).
    limit: Option<i64>,
    /// Only runs of this repository (`owner/name`).
    #[param(
        pattern = r"^[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}$",
        example = "octo/hello"
    )]
    repo: Option<String>,
    /// Only runs of the workflow of this name (as its plan declares it).
    #[param(min_length = 1, max_length = 512, example = "ci")]
    workflow: Option<String>,
    /// Only runs of this branch (`main` also matches `refs/heads/main`) or full ref.
    #[param(min_length = 1, max_length = 512, example = "main")]
    branch: Option<String>,
    /// Only runs started by this event.
    #[param(inline)]
    event: Option<RunEvent>,
    /// Only runs in this status as listed: `waiting` is a run held only by approvals or
    /// environment reviews, which `running` does not match.
    #[param(inline)]
    status: Option<RunStatus>,
    /// The page after the one that answered this `next_cursor` (absent: the newest).
    #[param(pattern = r"^r[1-9][0-9]{0,17}$", example = "r123")]
    cursor: Option<String>,
}

/// Where a page of runs starts: below the run id `before`. Sent as `r<id>` (clients treat
/// it as opaque and the encoding may change); any id is one the caller could have paged to,
/// so a cursor the server did not give reads as well as one it gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) before: i64,
}

impl Cursor {
    pub(crate) fn encode(self) -> String {
        format!("r{}", self.before)
    }

    /// The cursor `text` stands for; a clear 400 for one off the document's pattern.
    pub(crate) fn decode(text: &str) -> ApiResult<Cursor> {
        let refused = || {
            ApiError::bad_request(format!(
                "cursor '{text}' is not a page's cursor: pass a page's next_cursor as it is"
            ))
        };
        // The document's pattern, `^r[1-9][0-9]{0,17}$`: at most 18 digits always fit.
        let before = text
            .strip_prefix('r')
            .filter(|id| {
                (1..=18).contains(&id.len())
                    && !id.starts_with('0')
                    && id.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or_else(refused)?;
        Ok(Cursor { before })
    }
}

/// A text filter as given; an empty value filters nothing, a value past 512 bytes is a
/// 400 (the document says so too).
fn text_filter(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.len() > 512 => Err(ApiError::bad_request(format!(
            "{name} is at most 512 bytes"
        ))),
        Some(v) if v.is_empty() => Err(ApiError::bad_request(format!(
            "{name} is empty: leave it out to list every {name}"
        ))),
        other => Ok(other),
    }
}

#[utoipa::path(
    get,
    path = "/api/runs",
    tag = "runs",
    summary = "Recent runs, newest first, filtered, a page at a time",
    params(RunsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of runs (without their steps) and the cursor of the next one", body = RunsPageView),
        (status = 400, description = "An unknown or malformed query parameter or an invalid repository name", body = ErrorView),
        (status = 401, response = super::openapi::InvalidToken),
        (status = 500, response = super::openapi::EngineFailed),
    )
)]
pub(super) async fn list_runs(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RunsPageView>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    if let Some(repo) = &query.repo {
        repos::check_repo_name(repo)?;
    }
    let before = match &query.cursor {
        Some(text) => Some(Cursor::decode(text)?.before),
        None => None,
    };
    let filter = RunFilter {
        repository: query.repo,
        workflow: text_filter("workflow", query.workflow)?,
        branch: text_filter("branch", query.branch)?,
        event: query.event.map(|e| e.as_str().to_owned()),
        status: query.status.map(|s| s.as_str().to_owned()),
        before,
    };
    let store = state.executor.store();
    // Only the caller's readable repositories, in the query itself: `limit` counts
    // readable runs (the anonymous read public repositories only, and no local run).
    let runs = match caller.readable(store).await? {
        Readable::All => store.runs_page(&filter, None, limit).await?,
        Readable::Repos(ids) => {
            let ids: Vec<i64> = ids.into_iter().collect();
            store.runs_page(&filter, Some(&ids), limit).await?
        }
    };
    let next_cursor = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| Cursor { before: r.id }.encode()))
        .flatten();
    Ok(Json(RunsPageView {
        runs: runs
            .into_iter()
            .map(|r| super::views::RunView::new(r, None))
            .collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn a_cursor_reads_back_and_one_off_the_pattern_is_refused() {
        let cursor = Cursor { before: 123 };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert_eq!(
            Cursor::decode("r999999999999999999").unwrap().before,
            999999999999999999
        );
        for forged in [
            "",
            "abc",
            "r",
            "r0",
            "r012",
            "r-1",
            "r+1",
            "r1 ",
            "r:12",
            "cjoxMjM",
            "r1000000000000000000",
            &"A".repeat(80),
        ] {
            assert!(Cursor::decode(forged).is_err(), "{forged}");
        }
    }
}
