//! Acting on what the watch reports about pods, on the leader only: a pod that finished or
//! failed is handed to its class's provider (delete, backoff, Event), and if its runner
//! was still registered, the runner is marked gone and the attempt it held fails at once
//! with `runner lost: pod <name> <reason>` — retried if the step has retries left —
//! instead of waiting for the heartbeat timeout (a claim it never acknowledged goes back
//! to the queue instead, using no retry).
//!
//! Invariants:
//! - Idempotent: the same change seen twice (a re-list, a new leader rescanning) fails no
//!   attempt twice (the store ends an attempt only from `claimed`/`running`) and deletes no
//!   pod twice ([`KubeProvider::pod_ended`]).
//! - A pod is only ever judged by its own runner: the runner is found through the id of
//!   the one-time token in the pod's annotation, never by name.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::cache::PodChange;
use super::health::{health, Health};
use super::pod::CLASS;
use super::provider::{age, token_id_of, KubeProvider};
use crate::engine::Engine;
use crate::store::now_ms;

pub(super) struct Supervisor {
    pub(super) providers: HashMap<String, Arc<KubeProvider>>,
    pub(super) executor: Arc<dyn Engine>,
    pub(super) start_timeout: std::time::Duration,
}

impl Supervisor {
    /// Handles one change (the leader calls this; followers only keep their cache).
    pub(super) async fn handle(&self, change: &PodChange) {
        let pod = &change.pod;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let class = pod.metadata.labels.as_ref().and_then(|l| l.get(CLASS));
        let Some(provider) = class.and_then(|c| self.providers.get(c)) else {
            // A class no longer configured: its pods are strays, removed by the first
            // provider (any provider's API handle deletes in the namespace).
            if !change.gone {
                if let Some(provider) = self.providers.values().next() {
                    provider.pod_ended(
                        &name,
                        Some(pod),
                        &Health::Failed("class no longer configured".into()),
                    );
                }
            }
            return;
        };
        let outcome = if change.gone {
            Health::Failed("deleted".into())
        } else {
            health(pod, age(pod), self.start_timeout)
        };
        // A pod still being deleted after `start_timeout` is on a node that is gone or
        // hangs (a live kubelet finishes within the grace period).
        if !change.gone {
            if let Some(since) = deleting_for(pod) {
                if since > self.start_timeout {
                    // Its node does not answer (it would have removed the pod by now):
                    // remove the object, as the node controller eventually would.
                    provider.force_delete(&name);
                }
            }
        }
        match &outcome {
            Health::Alive => {
                if running_and_ready(pod) {
                    provider.pod_running();
                }
            }
            Health::Finished => {
                self.runner_lost(&name, pod, "exited").await;
                provider.pod_ended(&name, Some(pod), &outcome);
            }
            Health::Failed(reason) => {
                self.runner_lost(&name, pod, reason).await;
                provider.pod_ended(&name, Some(pod), &outcome);
            }
        }
        if change.gone {
            provider.forget(&name);
        }
    }

    /// Marks the pod's runner gone and fails what it was running.
    async fn runner_lost(&self, name: &str, pod: &Pod, reason: &str) {
        let Some(token_id) = token_id_of(pod) else {
            return;
        };
        let store = self.executor.store();
        let minted = match store.minted_runners(&[token_id]).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(pod = %name, "looking up a lost pod's runner: {e:#}");
                return;
            }
        };
        for runner in minted {
            if !matches!(runner.state.as_str(), "idle" | "busy") {
                continue;
            }
            let now = now_ms();
            if let Err(e) = store.runner_gone(runner.runner_id, now).await {
                tracing::warn!(pod = %name, "marking a lost pod's runner gone: {e:#}");
                continue;
            }
            // A claim it never acknowledged: it ran nothing of it, no retry is used.
            let how = format!("runner lost: pod {name} {reason}");
            let returned = self
                .executor
                .return_unacknowledged_of(runner.runner_id, &how)
                .await;
            if let Err(e) = returned {
                tracing::warn!(pod = %name, "returning a lost pod's unacknowledged claim: {e:#}");
            }
            let attempts = match store.active_attempts_of(runner.runner_id).await {
                Ok(attempts) => attempts,
                Err(e) => {
                    tracing::warn!(pod = %name, "a lost pod's attempts: {e:#}");
                    continue;
                }
            };
            for (attempt_id, run_id) in attempts {
                tracing::warn!(pod = %name, attempt_id, "runner lost: {reason}");
                if let Err(e) = self
                    .executor
                    .fail_attempt(
                        attempt_id,
                        run_id,
                        format!("runner lost: pod {name} {reason}"),
                    )
                    .await
                {
                    tracing::warn!(pod = %name, "failing a lost pod's attempt: {e:#}");
                }
            }
        }
    }
}

/// How long ago the pod's deletion began, if it did.
fn deleting_for(pod: &Pod) -> Option<std::time::Duration> {
    let since = pod.metadata.deletion_timestamp.as_ref()?;
    let span = k8s_openapi::jiff::Timestamp::now().duration_since(since.0);
    std::time::Duration::try_from(span).ok()
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}
