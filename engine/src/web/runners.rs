//! `/runners`: the local pool's counts (warm, busy, starting, lost, queued steps) and every
//! runner, newest first, with its state, labels, last heartbeat and the step it runs now.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use serde::Serialize;

use super::error::WebResult;
use super::session::{Chrome, Session};
use super::{encode, render, Web};
use crate::api::views::{PoolView, RunnerView};

/// Most runners listed.
const LIMIT: i64 = 500;

#[derive(Serialize)]
struct RunnersPage {
    chrome: Chrome,
    /// `None` when this engine has no local pool.
    pool: Option<PoolView>,
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

/// `GET /runners`.
pub(super) async fn page(State(web): State<Web>, headers: HeaderMap) -> WebResult<Html<String>> {
    let session = Session::load(&web, &headers, "/runners").await?;
    let store = web.store();
    let mut current: HashMap<i64, (String, String)> = HashMap::new();
    for (runner, run, step) in store.dashboard_busy_runners().await? {
        current.insert(
            runner,
            (
                format!("run {run} · {step}"),
                format!("/runs/{run}/steps/{}", encode(&step)),
            ),
        );
    }
    let runners = store
        .list_runners(false, LIMIT)
        .await?
        .into_iter()
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
    let page = RunnersPage {
        chrome: session.chrome(&web, "/runners"),
        pool: web
            .state
            .pool
            .as_ref()
            .map(|status| PoolView::from(*status.borrow())),
        runners,
    };
    Ok(Html(render::page("runners.html", &page)?))
}
