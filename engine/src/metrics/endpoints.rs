//! `/metrics`, `/healthz` and `/readyz`.
//!
//! `/healthz` answers while the process serves HTTP at all (liveness: restart only a hung
//! engine). `/readyz` answers 200 only when the engine should get traffic: the store was
//! opened (so its migrations ran) and answers now, and the engine is not draining (a
//! SIGTERM was received). `/metrics` refreshes the store-backed gauges, then encodes every
//! family in the OpenMetrics text format, which Prometheus scrapes natively.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::families::FAMILIES;
use super::{labels, record, Event};
use crate::pool::PoolStatus;
use crate::store::{now_ms, Store};

/// What the operational endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    /// Cancelled when the engine starts draining.
    pub draining: CancellationToken,
    /// The local pool's status, when this engine runs one.
    pub pool: Option<watch::Receiver<PoolStatus>>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !state.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    // One refresh at a time: two concurrent scrapes would clear each other's gauges.
    static REFRESH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _held = REFRESH.lock().await;
    if let Err(e) = refresh(&state).await {
        // The counters are still worth serving; the stale gauges say so by their absence.
        tracing::warn!("metrics: reading gauges from the store: {e:#}");
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &FAMILIES.registry) {
        tracing::error!("metrics: encoding: {e}");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
}

/// Sets the gauges that mirror shared state: steps waiting and live runners per labels
/// from the store, the local pool's counts, and whether this engine drains.
async fn refresh(state: &OpsState) -> anyhow::Result<()> {
    let f = &*FAMILIES;
    f.draining.set(i64::from(state.draining.is_cancelled()));
    if let Some(pool) = &state.pool {
        let status = *pool.borrow();
        for (pool_state, count) in [
            ("warm", status.warm),
            ("busy", status.busy),
            ("starting", status.starting),
        ] {
            record(Event::PoolRunners {
                class: "local",
                state: pool_state,
                count: count as i64,
            });
        }
    }
    let queued = state.store.queued_by_labels(now_ms()).await?;
    let runners = state.store.live_runners_by_state().await?;
    f.queued_steps.clear();
    for (class, count) in queued {
        f.queued_steps
            .get_or_create(&labels([("labels", &class)]))
            .set(count);
    }
    f.runners.clear();
    for (runner_state, class, count) in runners {
        f.runners
            .get_or_create(&labels([("state", &runner_state), ("labels", &class)]))
            .set(count);
    }
    Ok(())
}
