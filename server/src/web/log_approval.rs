//! A gate's step page: an approval step shows the approval panel of
//! [`super::run_approval`] (its question, who may decide, the deadline, the decisions
//! taken, and Approve/Reject for those the API would accept) in place of a log it never
//! has; a step waiting for its environment's review shows the same panel above its log.
//!
//! Invariant: the step page checked that the caller may read the run before this runs;
//! what the panel offers is decided by the API's own check, as on the run page.

use plue_store::{RunRow, StepRunRow};

use super::error::WebResult;
use super::run_approval::{self, GateView};
use super::session::Session;
use super::Web;

/// The panel of `step` of `run`, when it is an approval step or waits for a review.
pub(super) async fn for_step(
    web: &Web,
    session: &Session,
    run: &RunRow,
    step: &StepRunRow,
) -> WebResult<Option<GateView>> {
    if run.plan_hash.is_empty() {
        return Ok(None);
    }
    let plan = crate::api::run_plan(web.store(), run.id).await?;
    run_approval::gate(web, session, run, step, plan.as_ref(), "step").await
}
