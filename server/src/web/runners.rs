//! `/runners`: the local pool's counts (warm, busy, starting, lost, queued steps), each
//! Kubernetes runner class's counts with its failures and latest failure reason, the
//! runners marked suspect and the claims returned unacknowledged (as `GET /api/pool` lists
//! them), and the runners, newest first, with their state, host, labels, last heartbeat and
//! the step each runs now. Runners that are gone (deregistered) are listed only with
//! `?all=1`.
//!
//! Invariant: the page is installation-wide, for signed-in users only (the anonymous get
//! the sign-in page); the step a runner runs, or a claim returned, is named only when the
//! caller may read its run.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use plue_types::status::RunnerState;
use serde::{Deserialize, Serialize};

use super::error::WebResult;
use super::session::{Chrome, Session};
use super::{encode, render, Web};
use crate::api::views::{ClassView, PoolView, RunnerView, UnacknowledgedClaimView};

/// Most runners listed.
const LIMIT: i64 = 500;

#[derive(Debug, Deserialize)]
pub(super) struct RunnersQuery {
    #[serde(default)]
    all: Option<String>,
}

#[derive(Serialize)]
struct RunnersPage {
    chrome: Chrome,
    /// Gone runners are listed too.
    all: bool,
    /// How many gone runners are not listed.
    hidden: usize,
    /// `None` when this engine has no local pool.
    pool: Option<PoolView>,
    /// Live runners that must prove alive before they claim again.
    suspect: Vec<RunnerView>,
    /// Claims returned to the queue because their runners never acknowledged them.
    unacknowledged: Vec<UnacknowledgedClaimView>,
    runners: Vec<RunnerEntry>,
}

#[derive(Serialize)]
struct RunnerEntry {
    runner: RunnerView,
    /// `k=v` labels, sorted.
    labels: Vec<String>,
    /// The step it runs: its label and page.
    current: Option<(String, String)>,
}

/// The pools as `GET /api/pool` shows them: the local pool's counts and the Kubernetes
/// pool's classes (warm, busy, starting, failures and the latest failure's reason), or
/// `None` when this engine starts no runner itself.
fn pool_view(web: &Web) -> Option<PoolView> {
    let classes: Vec<ClassView> = web
        .state
        .pool_classes
        .as_ref()
        .map(|c| c.borrow().iter().map(ClassView::from).collect())
        .unwrap_or_default();
    match &web.state.pool {
        Some(pool) => Some(PoolView {
            classes,
            ..PoolView::from(*pool.borrow())
        }),
        None if web.state.pool_classes.is_some() => Some(PoolView {
            classes,
            ..PoolView::default()
        }),
        None => None,
    }
}

/// `GET /runners`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<RunnersQuery>,
) -> WebResult<Html<String>> {
    let all = query.all.is_some_and(|v| v == "1");
    let session = Session::load(&web, &headers).await?;
    session.require_signed_in("/runners")?;
    let store = web.store();
    let readable = session.caller.readable(store).await?;
    let mut current: HashMap<i64, (String, String)> = HashMap::new();
    for (runner, run, step) in store.dashboard_busy_runners().await? {
        let repo_id = match store.run(run).await? {
            Some(row) => row.repo_id,
            None => continue,
        };
        if !readable.allows(repo_id) {
            continue;
        }
        current.insert(
            runner,
            (
                format!("run {run} · {step}"),
                format!("/runs/{run}/steps/{}", encode(&step)),
            ),
        );
    }
    let rows = store.list_runners(LIMIT).await?;
    let total = rows.len();
    let runners: Vec<RunnerEntry> = rows
        .into_iter()
        .filter(|row| all || row.state != RunnerState::Gone)
        .map(|row| {
            let runner = RunnerView::new(row);
            let labels = runner
                .labels
                .as_object()
                .map(|map| {
                    map.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            RunnerEntry {
                current: current.remove(&runner.id),
                labels,
                runner,
            }
        })
        .collect();
    // Read once for the page, whether or not this engine runs a pool.
    let claims = PoolView::default().with_claims(store, &readable).await?;
    let page = RunnersPage {
        chrome: session.chrome("/runners"),
        all,
        hidden: total - runners.len(),
        pool: pool_view(&web),
        suspect: claims.suspect_runners,
        unacknowledged: claims.unacknowledged_claims,
        runners,
    };
    Ok(Html(render::page("runners.html", &page)?))
}
