//! What a runner pod's status says about it. Pure: a [`Pod`] and its age in, a [`Health`]
//! out.
//!
//! Invariant: every state from which the pod's runner will never take (or finish) a step
//! is [`Health::Finished`] or [`Health::Failed`] with the Kubernetes reason, so the
//! controller deletes and replaces it instead of waiting on it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// A pod's condition as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Health {
    /// Scheduled or waiting to be, pulling, starting, or running.
    Alive,
    /// Its runner exited by itself (`Succeeded`): the ephemeral runner's normal end.
    Finished,
    /// It cannot run or has died: the reason as Kubernetes gives it (`ImagePullBackOff`,
    /// `OOMKilled`, `Evicted`, `Unschedulable`, `NodeLost`, `deleted`, ...).
    Failed(String),
}

/// Container waiting reasons that do not resolve by themselves. `ErrImageNeverPull` is a
/// real kubelet's reason for an image that is not on the node under `imagePullPolicy:
/// Never` (clusters without a registry load their images so).
const STUCK: [&str; 8] = [
    "ErrImagePull",
    "ErrImageNeverPull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Judges `pod`, created `age` ago; a pod not yet running after `start_timeout` (e.g. it
/// stays unschedulable) has failed.
pub(super) fn health(pod: &Pod, age: Duration, start_timeout: Duration) -> Health {
    if pod.metadata.deletion_timestamp.is_some() {
        return Health::Failed("deleted".into());
    }
    let Some(status) = &pod.status else {
        return Health::Alive;
    };
    let containers = status.container_statuses.iter().flatten();
    match status.phase.as_deref() {
        Some("Succeeded") => return Health::Finished,
        Some("Failed") => {
            let terminated = containers
                .clone()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
                .map(terminated_reason)
                .next();
            let reason = status
                .reason
                .clone()
                .or(terminated)
                .unwrap_or_else(|| "Failed".into());
            return Health::Failed(reason);
        }
        _ => {}
    }
    if let Some(reason) = status.reason.as_deref() {
        if matches!(reason, "NodeLost" | "Evicted" | "Shutdown" | "Terminated") {
            return Health::Failed(reason.to_string());
        }
    }
    for container in containers {
        let Some(state) = &container.state else {
            continue;
        };
        if let Some(waiting) = &state.waiting {
            if let Some(reason) = waiting.reason.as_deref().filter(|r| STUCK.contains(r)) {
                return Health::Failed(match waiting.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason.to_string(),
                });
            }
        }
        if let Some(terminated) = &state.terminated {
            // Terminated while the pod is not yet final (the phase follows shortly).
            return Health::Failed(terminated_reason(terminated));
        }
    }
    let running = status.phase.as_deref() == Some("Running");
    if !running && age > start_timeout {
        let unschedulable = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False");
        return Health::Failed(if unschedulable {
            "Unschedulable".into()
        } else {
            format!("not running after {}s", start_timeout.as_secs())
        });
    }
    Health::Alive
}

/// Most of a termination message kept in a reason (its end: the last lines say why).
const MESSAGE_TAIL: usize = 400;

/// `exit code 1: <message>` or `OOMKilled`: the container's reason (`exit code N` for a
/// plain error) and the end of its termination message — the runner's last log lines, as
/// `terminationMessagePolicy: FallbackToLogsOnError` makes the kubelet keep them — on one
/// line.
fn terminated_reason(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    let reason = match t.reason.as_deref() {
        Some("Error") | None => format!("exit code {}", t.exit_code),
        Some(reason) => reason.to_string(),
    };
    let lines: Vec<&str> = t
        .message
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return reason;
    }
    let message = lines.join(" | ");
    let start = message
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| message.len() - i <= MESSAGE_TAIL)
        .unwrap_or(message.len());
    let cut = if start > 0 { "…" } else { "" };
    format!("{reason}: {cut}{}", &message[start..])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn each_failure_kubernetes_reports_is_named() {
        let waiting = |reason: &str| {
            pod(
                json!({"phase": "Pending", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
            )
        };
        assert_eq!(
            health(&waiting("ImagePullBackOff"), Duration::ZERO, T),
            Health::Failed("ImagePullBackOff: m".into())
        );
        assert_eq!(
            health(&waiting("ErrImageNeverPull"), Duration::ZERO, T),
            Health::Failed("ErrImageNeverPull: m".into())
        );
        assert_eq!(
            health(&waiting("CreateContainerConfigError"), Duration::ZERO, T),
            Health::Failed("CreateContainerConfigError: m".into())
        );
        assert_eq!(
            health(&waiting("ContainerCreating"), Duration::ZERO, T),
            Health::Alive
        );
        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(
            health(&oom, Duration::ZERO, T),
            Health::Failed("OOMKilled".into())
        );
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(
            health(&evicted, Duration::ZERO, T),
            Health::Failed("Evicted".into())
        );
        let lost = pod(json!({"phase": "Running", "reason": "NodeLost"}));
        assert_eq!(
            health(&lost, Duration::ZERO, T),
            Health::Failed("NodeLost".into())
        );
        let exited = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        );
        assert_eq!(
            health(&exited, Duration::ZERO, T),
            Health::Failed("exit code 3".into())
        );
        let told = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "starting\nError: the work directory /work cannot be reached\n\n"}}}]}),
        );
        assert_eq!(
            health(&told, Duration::ZERO, T),
            Health::Failed(
                "exit code 1: starting | Error: the work directory /work cannot be reached".into()
            )
        );
        let long = "x".repeat(1000);
        let mut chatty = told.clone();
        chatty
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .message = Some(format!("{long}\nlast line"));
        let Health::Failed(reason) = health(&chatty, Duration::ZERO, T) else {
            panic!("failed")
        };
        assert!(reason.starts_with("exit code 1: …x"), "{reason}");
        assert!(reason.ends_with("x | last line"), "{reason}");
        assert!(reason.len() < 450, "{}", reason.len());
        assert_eq!(
            health(&pod(json!({"phase": "Succeeded"})), Duration::ZERO, T),
            Health::Finished
        );
    }

    #[test]
    fn a_pod_that_does_not_start_in_time_has_failed() {
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
        );
        assert_eq!(health(&pending, Duration::from_secs(5), T), Health::Alive);
        assert_eq!(
            health(&pending, Duration::from_secs(61), T),
            Health::Failed("Unschedulable".into())
        );
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(health(&running, Duration::from_secs(600), T), Health::Alive);
        let mut deleting = running.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(
            health(&deleting, Duration::ZERO, T),
            Health::Failed("deleted".into())
        );
    }
}
