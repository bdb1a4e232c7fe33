//! The step page's sidebar (`templates/log_steps.html`): the run's steps beside the log,
//! each with its status (icon and word), name and duration, linking to its own page, the
//! current one marked; and the current step's outputs.
//!
//! Invariants: the list reads the steps' states without their outputs (one query, no
//! output text), and shows at most [`WINDOW`] steps on each side of the current one
//! (a 1,000-step run's page stays small; the run page lists them all); output values are
//! cut as on the run page (`run_failure::output_values`) and escaped by the template.

use plue_store::{StepRunRow, Store};
use plue_types::status::StepStatus;
use serde::Serialize;

use super::encode;
use super::run_failure::{output_values, OutputValue};

/// Steps listed on each side of the current one.
pub(super) const WINDOW: usize = 100;

/// The sidebar of a step's page.
#[derive(Debug, Serialize)]
pub(super) struct StepList {
    pub steps: Vec<StepLink>,
    /// Steps left out before and after the window.
    pub hidden_before: usize,
    pub hidden_after: usize,
    /// The current step's outputs.
    pub outputs: Vec<OutputValue>,
    /// The same step's page in the run this one re-ran, when the step was carried over
    /// from it (it has no log of its own here).
    pub carried_from: Option<CarriedFrom>,
}

#[derive(Debug, Serialize)]
pub(super) struct CarriedFrom {
    pub run_id: i64,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub(super) struct StepLink {
    pub id: String,
    pub status: StepStatus,
    pub duration_ms: Option<i64>,
    pub url: String,
    /// The step whose page this is.
    pub current: bool,
}

/// The sidebar for `current` (with its outputs) in run `run_id`.
/// `rerun_of`: the run this one re-ran, if any.
pub(super) async fn for_step(
    store: &Store,
    run_id: i64,
    rerun_of: Option<i64>,
    current: &StepRunRow,
) -> anyhow::Result<StepList> {
    let states = store.step_states(run_id).await?;
    let at = states.iter().position(|s| s.id == current.id).unwrap_or(0);
    let from = at.saturating_sub(WINDOW);
    let to = (at + WINDOW + 1).min(states.len());
    let steps = states[from..to]
        .iter()
        .map(|s| StepLink {
            url: format!("/runs/{run_id}/steps/{}", encode(&s.step_id)),
            current: s.id == current.id,
            duration_ms: s.duration_ms(),
            status: s.status,
            id: s.step_id.clone(),
        })
        .collect();
    let outputs =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&current.outputs)
            .map(|map| output_values(&map))
            .unwrap_or_default();
    // A carried step ran no attempt here, and says where it comes from.
    let carried_from = rerun_of
        .filter(|from| {
            current.attempts == 0
                && current.reason.as_deref() == Some(&format!("carried over from run #{from}"))
        })
        .map(|from| CarriedFrom {
            run_id: from,
            url: format!("/runs/{from}/steps/{}", encode(&current.step_id)),
        });
    Ok(StepList {
        carried_from,
        steps,
        hidden_before: from,
        hidden_after: states.len() - to,
        outputs,
    })
}
