//! Counts of shared state for the metrics gauges, read at scrape time.
//!
//! Both queries only touch rows the partial indexes `step_runs_claim` and `runners_live`
//! cover, so a scrape stays cheap with a long history.

use std::collections::BTreeMap;

use anyhow::Context;

use super::runs::canonical_labels;
use super::Store;
use crate::tx::Statement;

impl Store {
    /// Steps ready to claim at `now`, per canonical runner labels (`""`: any runner).
    pub async fn queued_by_labels(&self, now: i64) -> anyhow::Result<Vec<(String, i64)>> {
        self.rows(
            Statement::new(
                "SELECT labels, COUNT(*) AS n FROM step_runs \
                 WHERE status = 'queued' AND ready_at <= $1 GROUP BY labels",
            )
            .bind(now),
        )
        .await
    }

    /// Live runners (idle or busy) as `(state, labels, count)`, labels in the canonical
    /// `k=v,k2=v2` form steps need them in.
    pub async fn live_runners_by_state(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows: Vec<(String, String, i64)> = self
            .rows(Statement::new(
                "SELECT state, labels, COUNT(*) AS n FROM runners \
                 WHERE state IN ('idle', 'busy') GROUP BY state, labels",
            ))
            .await?;
        rows.into_iter()
            .map(|(state, json, n)| {
                let labels: BTreeMap<String, String> = serde_json::from_str(&json)
                    .with_context(|| format!("stored runner labels {json:?}"))?;
                Ok((state, canonical_labels(labels.iter()), n))
            })
            .collect()
    }
}
