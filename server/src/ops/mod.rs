//! `/metrics`, `/healthz` and `/readyz`, and the middleware that counts every request.
//!
//! `/healthz` answers while the process serves HTTP at all (liveness: restart only a hung
//! engine). `/readyz` answers 200 only when the engine should get traffic: the store was
//! opened (so its migrations ran) and answers now, and the engine is not draining (a
//! SIGTERM was received). `/metrics` refreshes the store-backed gauges, then encodes every
//! family in the OpenMetrics text format, which Prometheus scrapes natively.
//!
//! Invariants: the endpoints are open (no token) and show counts only, never names of
//! runs, repositories or secrets (what `plue_core::metrics` records); two scrapes never
//! refresh the gauges at once (each would clear the other's).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use runner::network::capability;
use tokio_util::sync::CancellationToken;

use plue_core::metrics::{self, record, Event};
use plue_store::{now_ms, Store};

mod track_http;

pub use track_http::track_http;

/// What the operational endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    /// Cancelled when the engine starts draining.
    pub draining: CancellationToken,
    /// Reads the pools' runner counts at each scrape (`None`: this engine runs no pool).
    /// Built by `crate::pool_gauges`: the metrics know no pool types.
    pub pools: Option<PoolReader>,
}

/// Reads what the pool gauges show, at the moment of a scrape.
pub type PoolReader = std::sync::Arc<dyn Fn() -> PoolGauges + Send + Sync>;

/// The pools' runner counts, in the metrics' own terms.
#[derive(Debug, Clone, Default)]
pub struct PoolGauges {
    /// The local pool's counts, when this engine runs one.
    pub local: Option<RunnerCounts>,
    /// The Kubernetes pool's classes, in the order claims try them.
    pub classes: Vec<ClassGauges>,
}

/// One pool class's runners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerCounts {
    pub warm: usize,
    pub busy: usize,
    pub starting: usize,
    /// New runners wait: several in a row ended before registering.
    pub backing_off: bool,
}

/// A Kubernetes pool class: its name, the labels its runners announce, and its counts
/// where this engine leads the pool (`None` on a follower: the leader's scrape reports them).
#[derive(Debug, Clone, Default)]
pub struct ClassGauges {
    pub class: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub counts: Option<RunnerCounts>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
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

async fn scrape(State(state): State<OpsState>) -> Response {
    // One refresh at a time: two concurrent scrapes would clear each other's gauges.
    static REFRESH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _held = REFRESH.lock().await;
    if let Err(e) = refresh(&state).await {
        // The counters are still worth serving; the stale gauges say so by their absence.
        tracing::warn!("metrics: reading gauges from the store: {e:#}");
    }
    match metrics::encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => {
            tracing::error!("metrics: encoding: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The pool class that serves steps needing `needed` (canonical `k=v,k2=v2`): the first
/// Kubernetes class offering all of them (its labels include the reserved network labels of
/// what it enforces), else `local` when a local pool runs for steps that ask for no label
/// but a network policy's (which its runners may or may not enforce: a step they cannot
/// fails at once), else `none` (only runners started by hand can take them).
fn class_for<'a>(needed: &str, classes: &'a [ClassGauges], local: bool) -> &'a str {
    let pairs: Vec<(&str, &str)> = needed
        .split(',')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let serves = |class: &ClassGauges| {
        pairs
            .iter()
            .all(|(k, v)| class.labels.get(*k).map(String::as_str) == Some(*v))
    };
    match classes.iter().find(|class| serves(class)) {
        Some(class) => &class.class,
        None if local && pairs.iter().all(|(k, _)| capability::is_reserved(k)) => "local",
        None => "none",
    }
}

fn pool_runners(class: &str, status: RunnerCounts) {
    record(Event::BackingOff {
        class,
        on: status.backing_off,
    });
    for (state, count) in [
        ("warm", status.warm),
        ("busy", status.busy),
        ("starting", status.starting),
    ] {
        record(Event::PoolRunners {
            class,
            state,
            count: count as i64,
        });
    }
}

/// Sets the gauges that mirror shared state: steps waiting and live runners per labels
/// from the store, the local pool's counts, and whether this engine drains.
async fn refresh(state: &OpsState) -> anyhow::Result<()> {
    record(Event::Draining(state.draining.is_cancelled()));
    let pools = state.pools.as_ref().map(|read| read()).unwrap_or_default();
    if let Some(local) = pools.local {
        pool_runners("local", local);
    }
    for class in &pools.classes {
        // A follower's classes have no counts: the leader's scrape reports them.
        if let Some(counts) = class.counts {
            pool_runners(&class.class, counts);
        }
    }
    let queued = state.store.queued_by_labels(now_ms()).await?;
    let runners = state.store.live_runners_by_state().await?;
    metrics::replace_queued_steps(queued.iter().map(|(needed, count)| {
        let class = class_for(needed, &pools.classes, pools.local.is_some());
        (needed.as_str(), class, *count)
    }));
    metrics::replace_runners(
        runners
            .iter()
            .map(|(state, labels, count)| (state.as_str(), labels.as_str(), *count)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn kubernetes_classes_are_reported_by_the_leader_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let class = |name: &str, counts| ClassGauges {
            class: name.into(),
            labels: BTreeMap::new(),
            counts,
        };
        let counts = RunnerCounts {
            warm: 2,
            busy: 3,
            starting: 1,
            backing_off: false,
        };
        let gauges = PoolGauges {
            local: None,
            classes: vec![
                class("metrics-led", Some(counts)),
                class("metrics-followed", None),
            ],
        };
        let app = router(OpsState {
            store,
            draining: CancellationToken::new(),
            pools: Some(std::sync::Arc::new(move || gauges.clone())),
        });
        let request = axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        for line in [
            "plue_pool_runners{class=\"metrics-led\",state=\"warm\"} 2",
            "plue_pool_runners{class=\"metrics-led\",state=\"busy\"} 3",
            "plue_pool_runners{class=\"metrics-led\",state=\"starting\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(!text.contains("metrics-followed"), "{text}");
    }

    #[test]
    fn queued_steps_are_put_in_the_class_that_serves_them() {
        let class = |name: &str, labels: &[(&str, &str)]| ClassGauges {
            class: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            counts: None,
        };
        let classes = [
            class("small", &[("size", "small")]),
            class("gpu", &[("gpu", "yes"), ("size", "small")]),
        ];
        assert_eq!(class_for("size=small", &classes, false), "small");
        assert_eq!(class_for("gpu=yes", &classes, false), "gpu");
        assert_eq!(class_for("gpu=yes,size=small", &classes, true), "gpu");
        assert_eq!(class_for("gpu=no", &classes, true), "none");
        assert_eq!(class_for("", &[], true), "local");
        assert_eq!(class_for("plue.network/none=yes", &[], true), "local");
        assert_eq!(class_for("plue.network/none=yes,zone=x", &[], true), "none");
        assert_eq!(class_for("", &[], false), "none");
        // Any class serves an unlabelled step; the first one is where it goes.
        assert_eq!(class_for("", &classes, true), "small");
    }
}
