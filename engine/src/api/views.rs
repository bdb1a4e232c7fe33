//! The JSON shapes of `/api/...` responses. Only this module derives `Serialize` for what
//! the public API returns, so the wire format is decided in one place.

use serde::Serialize;

use crate::pool::PoolStatus;
use crate::store::{RunRow, RunnerRow, StepRunRow, StoredLine};

#[derive(Debug, Serialize)]
pub struct RunView {
    pub id: i64,
    pub workflow: String,
    pub workflow_path: String,
    pub event: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub plan_hash: String,
    pub status: String,
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub rerun_of: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

impl RunView {
    pub fn new(run: RunRow, steps: Option<Vec<StepRunRow>>) -> RunView {
        RunView {
            duration_ms: run.duration_ms(),
            id: run.id,
            workflow: run.workflow_name,
            workflow_path: run.workflow_path,
            event: run.event,
            git_ref: run.git_ref,
            sha: run.sha,
            plan_hash: run.plan_hash,
            status: run.status,
            reason: run.reason,
            cancel_requested: run.cancel_requested,
            rerun_of: run.rerun_of,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            steps: steps.map(|steps| steps.into_iter().map(StepView::new).collect()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub id: String,
    pub status: String,
    pub attempts: i64,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub outputs: serde_json::Value,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

impl StepView {
    pub fn new(step: StepRunRow) -> StepView {
        StepView {
            duration_ms: step.duration_ms(),
            outputs: serde_json::from_str(&step.outputs).unwrap_or_default(),
            id: step.step_id,
            status: step.status,
            attempts: step.attempts,
            exit_code: step.exit_code,
            reason: step.reason,
            started_at: step.started_at,
            finished_at: step.finished_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LineView<'a> {
    pub attempt: i64,
    pub seq: i64,
    pub stream: &'a str,
    pub text: &'a str,
    pub ts: i64,
}

impl<'a> LineView<'a> {
    pub fn new(line: &'a StoredLine) -> LineView<'a> {
        LineView {
            attempt: line.attempt,
            seq: line.seq,
            stream: &line.stream,
            text: &line.text,
            ts: line.ts,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunnerView {
    pub id: i64,
    pub name: String,
    pub labels: serde_json::Value,
    pub ephemeral: bool,
    pub state: String,
    pub registered_at: i64,
    pub last_heartbeat: i64,
}

impl RunnerView {
    pub fn new(row: RunnerRow) -> RunnerView {
        RunnerView {
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            id: row.id,
            name: row.name,
            ephemeral: row.ephemeral,
            state: row.state,
            registered_at: row.registered_at,
            last_heartbeat: row.last_heartbeat,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub warm: usize,
    pub busy: usize,
    pub starting: usize,
    pub lost: usize,
    pub min_warm: usize,
    pub max_runners: usize,
    pub queued: i64,
}

impl From<PoolStatus> for PoolView {
    fn from(s: PoolStatus) -> PoolView {
        PoolView {
            warm: s.warm,
            busy: s.busy,
            starting: s.starting,
            lost: s.lost,
            min_warm: s.min_warm,
            max_runners: s.max_runners,
            queued: s.queued,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Created {
    pub run_id: i64,
}
