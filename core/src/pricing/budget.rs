//! Budgets at dispatch and claim: what an `llm` step's dispatch document carries of its
//! limits ([`Limits`], from the plan), and the [`Budget`] its assignment gets when a runner
//! claims it ([`assign`]).
//!
//! The rule that keeps `Plan(budget_usd=)` closed when a run's `llm` steps run in parallel:
//! **each attempt holds, from its claim to its end, the most it may spend** — its step's
//! `max_cost_usd`, or all that is left of the run's budget when the step sets none — and
//! its runner stops it before it spends more ([`runner::llm::budget`]). The run's attempts
//! together never hold or spend more than the budget ([`crate::store::Store::reserve_budget`]
//! serialises the holds per run). An attempt claimed when nothing is left fails at once
//! with `budget: ...`; give parallel `llm` steps their own `max_cost_usd` so that they
//! share the budget instead of the first one holding all of it.
//!
//! Fail closed: a step with a cost limit (its own or its run's) whose model the price
//! table does not know fails at claim, saying so; the model priced is the step's `model=`
//! or the runner's default, and a prompt file choosing another one fails on the runner.

use evaluator::plan::{Action, Plan, Step};
use runner::protocol::Budget;
use serde::{Deserialize, Serialize};

use super::Prices;
use crate::store::Store;

/// An `llm` step's limits as its dispatch document stores them (micro-dollars).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The step's `max_cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_micros: Option<u64>,
    /// The run's `Plan(budget_usd=)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_budget_micros: Option<u64>,
    /// The model the engine prices: the step's, or the runner's default.
    pub model: String,
}

impl Limits {
    /// The limits of `step` of `plan`, `None` for a step that is not `llm` or has none.
    pub fn of(plan: &Plan, step: &Step) -> Option<Limits> {
        let Action::Llm(llm) = &step.action else {
            return None;
        };
        let limits = Limits {
            max_tokens: llm.max_tokens,
            max_cost_micros: llm.max_cost_usd.map(micros),
            run_budget_micros: plan.budget_usd.map(micros),
            model: llm
                .model
                .clone()
                .unwrap_or_else(|| runner::llm::settings::DEFAULT_MODEL.to_owned()),
        };
        let any = limits.max_tokens.is_some()
            || limits.max_cost_micros.is_some()
            || limits.run_budget_micros.is_some();
        any.then_some(limits)
    }
}

/// USD (validated: finite, > 0, at most 10,000) as micro-dollars.
pub fn micros(usd: f64) -> u64 {
    (usd * 1_000_000.0).round().clamp(0.0, u64::MAX as f64) as u64
}

/// The budget of attempt `attempt_id` of run `run_id` with `limits`: `Ok(None)` when it
/// has none, `Ok(Some)` to send, `Err(reason)` when it must fail before it starts.
pub async fn assign(
    store: &Store,
    prices: &Prices,
    attempt_id: i64,
    run_id: i64,
    limits: Option<&Limits>,
) -> anyhow::Result<Result<Option<Budget>, String>> {
    let Some(limits) = limits else {
        return Ok(Ok(None));
    };
    let costs = limits.max_cost_micros.is_some() || limits.run_budget_micros.is_some();
    let prices = match (costs, prices.price(&limits.model)) {
        (false, _) => None,
        (true, Some(price)) => Some(price),
        (true, None) => {
            return Ok(Err(format!(
                "budget: the engine's price table has no price for model {}, and this step \
                 has a cost limit (max_cost_usd or the run's budget_usd); add it with \
                 --llm-prices FILE",
                limits.model
            )))
        }
    };
    let mut max_cost = limits.max_cost_micros;
    if let Some(budget) = limits.run_budget_micros {
        let wanted = i64::try_from(max_cost.unwrap_or(budget).min(budget)).unwrap_or(i64::MAX);
        let budget_i = i64::try_from(budget).unwrap_or(i64::MAX);
        let held = store
            .reserve_budget(attempt_id, run_id, wanted, budget_i)
            .await?;
        if held.held <= 0 {
            return Ok(Err(format!(
                "budget: the run's budget_usd {} is used up ({} USD spent or held by its other \
                 llm attempts)",
                runner::llm::budget::usd(budget),
                runner::llm::budget::usd(u64::try_from(held.others).unwrap_or(0))
            )));
        }
        max_cost = Some(u64::try_from(held.held).unwrap_or(0));
    }
    Ok(Ok(Some(Budget {
        max_tokens: limits.max_tokens,
        max_cost_micros: max_cost,
        prices,
    })))
}
