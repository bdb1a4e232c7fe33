//! Budgets at dispatch and claim: what an `llm` step's dispatch document carries of its
//! limits ([`Limits`], from the plan), and the [`Budget`] its assignment gets when a runner
//! claims it ([`assign`]).
//!
//! The rule that keeps `Plan(budget_usd=)` closed when a run's `llm` steps run in parallel:
//! **each attempt holds, from its claim to its end, the most it may spend of the run's
//! budget**, its runner stops it before it spends more ([`runner::llm::budget`]), and the
//! holds and the spending of a run's attempts never add up past the budget
//! ([`plue_store::Store::reserve_budget`] sets each hold within what the others leave,
//! serialised per run). An attempt that ends returns what it held and did not spend.
//!
//! What an attempt asks to hold is what it can spend, not the run's remainder:
//! - a step with a bound of its own ([`own_bound`]: its `max_cost_usd`, and its
//!   `max_tokens` at the dearest of its model's four prices, whichever is less) asks for
//!   that bound;
//! - a step without one asks for its fair share of what is left: the remainder divided
//!   between it and the run's other `llm` steps that may still want some while it runs —
//!   not ended, holding nothing yet (not started, or claimed a moment ago and not yet
//!   given a hold), and neither its dependencies nor its dependents —, a step among them
//!   with a bound of its own counted for no more than its bound (max-min fair: [`share`]).
//!   Alone, it asks for the whole remainder.
//!
//! The hold is fixed for the attempt's life: a step without `max_cost_usd` running beside
//! others keeps its share even after they end, so give parallel steps `max_cost_usd` (or
//! `max_tokens`) to choose how the budget is split. An attempt claimed when nothing is
//! left fails at once with `budget: ...`. The share is worked out from a reading of the
//! run's steps and holds taken just before the hold is set; a claim racing it can make the
//! split less even, never the total larger, since the store sets the hold within what is
//! left at that moment.
//!
//! Fail closed: a step with a cost limit (its own or its run's) whose model the price
//! table does not know fails at claim, saying so; the model priced is the step's `model=`
//! or the runner's default, and a prompt file choosing another one fails on the runner.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use evaluator::plan::{Action, Plan, Step};
use plue_store::Store;
use plue_types::protocol::{Budget, Price, RunBudget};
use serde::{Deserialize, Serialize};

use super::Prices;

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

/// The dearest of `price`'s four rates (micro-dollars per million tokens): what any token
/// costs at most.
fn dearest(price: &Price) -> u64 {
    price
        .input
        .max(price.output)
        .max(price.cache_write)
        .max(price.cache_read)
}

/// The most a step with `limits` can spend on its own (micro-dollars), whatever the run's
/// budget: the least of its `max_cost_usd` and its `max_tokens` at its model's dearest
/// rate (`price`, `None` when unpriced); `None` when it sets neither (or only tokens of an
/// unpriced model).
pub fn own_bound(limits: &Limits, price: Option<&Price>) -> Option<u64> {
    let by_tokens = limits.max_tokens.zip(price).map(|(tokens, price)| {
        let most = u128::from(tokens) * u128::from(dearest(price));
        u64::try_from(most.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    });
    match (limits.max_cost_micros, by_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The share of `remainder` an attempt without a bound of its own asks for, beside `peers`
/// (the other steps that may still start while it runs, each with its own bound or `None`):
/// the level that divides `remainder` max-min fairly, a peer with a bound getting no more
/// than it. With no peers, the whole remainder.
pub fn share(remainder: u64, peers: &[Option<u64>]) -> u64 {
    let mut bounded: Vec<u64> = peers.iter().flatten().copied().collect();
    bounded.sort_unstable();
    let mut left = remainder;
    // This attempt and every peer not yet given its bound.
    let mut claimants = peers.len() as u64 + 1;
    for bound in bounded {
        if bound.saturating_mul(claimants) > left {
            break;
        }
        left -= bound;
        claimants -= 1;
    }
    left / claimants
}

/// The `llm` steps of `plan` that may run at the same time as step `id`: the others that
/// are neither its transitive dependencies nor its transitive dependents.
fn concurrent_llm_steps<'p>(plan: &'p Plan, id: &str) -> Vec<&'p Step> {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let Some(&me) = index.get(id) else {
        return Vec::new();
    };
    let mut dependents = vec![Vec::new(); plan.steps.len()];
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                dependents[d].push(i);
            }
        }
    }
    let mut related = vec![false; plan.steps.len()];
    related[me] = true;
    // Up the dependencies, then down the dependents.
    let mut queue = vec![me];
    while let Some(i) = queue.pop() {
        for dep in &plan.steps[i].depends_on {
            if let Some(&d) = index.get(dep.as_str()) {
                if !related[d] {
                    related[d] = true;
                    queue.push(d);
                }
            }
        }
    }
    let mut down = vec![false; plan.steps.len()];
    let mut queue = vec![me];
    while let Some(i) = queue.pop() {
        for &d in &dependents[i] {
            if !down[d] {
                down[d] = true;
                queue.push(d);
            }
        }
    }
    plan.steps
        .iter()
        .enumerate()
        .filter(|&(i, step)| !related[i] && !down[i] && matches!(step.action, Action::Llm(_)))
        .map(|(_, step)| step)
        .collect()
}

/// What attempt `attempt_id` of step `step_id` of run `run_id`, with no bound of its own,
/// asks to hold of `budget` (micro-dollars), and how many other steps it left part of the
/// remainder for: see the module doc.
async fn unbounded_wants(
    store: &Store,
    prices: &Prices,
    plan: &Plan,
    (attempt_id, run_id, step_id): (i64, i64, &str),
    budget: u64,
) -> anyhow::Result<(u64, u64)> {
    let concurrent = concurrent_llm_steps(plan, step_id);
    if concurrent.is_empty() {
        return Ok((budget, 0));
    }
    let run = store.budget_claimants(attempt_id, run_id).await?;
    let waiting: HashSet<&str> = run.waiting.iter().map(String::as_str).collect();
    let peers: Vec<Option<u64>> = concurrent
        .into_iter()
        .filter(|step| waiting.contains(step.id.as_str()))
        .map(|step| {
            let limits = Limits::of(plan, step)?;
            match prices.price(&limits.model) {
                Some(price) => own_bound(&limits, Some(&price)),
                // An unpriced step under a budget fails at its claim, holding nothing.
                None => Some(0),
            }
        })
        .collect();
    if peers.is_empty() {
        return Ok((budget, 0));
    }
    let taken = u64::try_from(run.taken_by_others).unwrap_or(0);
    let remainder = budget.saturating_sub(taken);
    Ok((share(remainder, &peers), peers.len() as u64))
}

/// The claimed attempt a budget is assigned to: its id, its run's and its step's.
#[derive(Debug, Clone, Copy)]
pub struct Claimed<'a> {
    pub attempt_id: i64,
    pub run_id: i64,
    pub step_id: &'a str,
}

/// Why a claimed `llm` attempt fails before it starts, for its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetRefused {
    /// The step has a cost limit and the price table does not price its model.
    #[error(
        "budget: the engine's price table has no price for model {model}, and this step \
         has a cost limit (max_cost_usd or the run's budget_usd); add it with \
         --llm-prices FILE"
    )]
    NoPrice { model: String },
    /// The run's `budget_usd` (micro-USD) is spent or held by its other attempts.
    #[error(
        "budget: the run's budget_usd {} is used up ({} USD spent or held by its other \
         llm attempts)",
        plue_types::budget::usd(*budget_micros),
        plue_types::budget::usd(*others_micros)
    )]
    RunBudgetUsedUp {
        budget_micros: u64,
        others_micros: u64,
    },
}

/// The budget of `claimed` with `limits`: `Ok(None)` when it has none, `Ok(Some)` to send,
/// `Err` when it must fail before it starts. `plan` (the run's plan) is awaited
/// only when the step has no bound of its own under a run budget.
pub async fn assign(
    store: &Store,
    prices: &Prices,
    claimed: Claimed<'_>,
    limits: Option<&Limits>,
    plan: impl std::future::Future<Output = anyhow::Result<Arc<Plan>>>,
) -> anyhow::Result<Result<Option<Budget>, BudgetRefused>> {
    let Some(limits) = limits else {
        return Ok(Ok(None));
    };
    let costs = limits.max_cost_micros.is_some() || limits.run_budget_micros.is_some();
    let prices_of_model = match (costs, prices.price(&limits.model)) {
        (false, _) => None,
        (true, Some(price)) => Some(price),
        (true, None) => {
            return Ok(Err(BudgetRefused::NoPrice {
                model: limits.model.clone(),
            }))
        }
    };
    let mut max_cost = limits.max_cost_micros;
    let mut run_budget = None;
    if let Some(budget) = limits.run_budget_micros {
        let (wanted, shared_with) = match own_bound(limits, prices_of_model.as_ref()) {
            Some(bound) => (bound.min(budget), 0),
            None => {
                let plan = plan.await?;
                let who = (claimed.attempt_id, claimed.run_id, claimed.step_id);
                unbounded_wants(store, prices, &plan, who, budget).await?
            }
        };
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let held = store
            .reserve_budget(
                claimed.attempt_id,
                claimed.run_id,
                clamp(wanted),
                clamp(budget),
            )
            .await?;
        let others = u64::try_from(held.others).unwrap_or(0);
        if held.held <= 0 {
            return Ok(Err(BudgetRefused::RunBudgetUsedUp {
                budget_micros: budget,
                others_micros: others,
            }));
        }
        let held = u64::try_from(held.held).unwrap_or(0);
        // The step's own max_cost_usd names the limit only when it is what the step holds.
        if limits.max_cost_micros.is_none_or(|own| held < own) {
            run_budget = Some(RunBudget {
                budget_micros: budget,
                others_micros: others,
                shared_with,
            });
        }
        max_cost = Some(held);
    }
    Ok(Ok(Some(Budget {
        max_tokens: limits.max_tokens,
        max_cost_micros: max_cost,
        prices: prices_of_model,
        run_budget,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> Price {
        Price {
            model: "claude-sonnet-4-5".into(),
            input: 3_000_000,
            output: 15_000_000,
            cache_write: 3_750_000,
            cache_read: 300_000,
        }
    }

    fn limits(max_tokens: Option<u64>, max_cost_micros: Option<u64>) -> Limits {
        Limits {
            max_tokens,
            max_cost_micros,
            run_budget_micros: Some(1_000_000),
            model: "claude-sonnet-4-5".into(),
        }
    }

    #[test]
    fn a_steps_own_bound_is_the_least_of_its_cost_and_its_tokens_at_the_dearest_rate() {
        let price = sonnet();
        assert_eq!(own_bound(&limits(None, None), Some(&price)), None);
        assert_eq!(
            own_bound(&limits(None, Some(30_000)), Some(&price)),
            Some(30_000)
        );
        // 5,000 tokens, all output at $15 / MTok: $0.075.
        assert_eq!(
            own_bound(&limits(Some(5_000), None), Some(&price)),
            Some(75_000)
        );
        assert_eq!(
            own_bound(&limits(Some(5_000), Some(30_000)), Some(&price)),
            Some(30_000)
        );
        assert_eq!(
            own_bound(&limits(Some(1_000), Some(30_000)), Some(&price)),
            Some(15_000)
        );
        // A third of a micro-dollar rounds up; tokens of an unpriced model bound nothing.
        let cheap = Price {
            input: 1,
            output: 1,
            cache_write: 1,
            cache_read: 1,
            ..sonnet()
        };
        assert_eq!(own_bound(&limits(Some(3), None), Some(&cheap)), Some(1));
        assert_eq!(own_bound(&limits(Some(3), None), None), None);
        // No token count can cost more than the bound.
        for tokens in [1u64, 7, 999, 5_000] {
            let bound = own_bound(&limits(Some(tokens), None), Some(&price)).unwrap();
            let usage = plue_types::protocol::Usage {
                cache_creation_input_tokens: tokens,
                ..Default::default()
            };
            assert!(price.cost_micros(&usage) <= bound);
            let usage = plue_types::protocol::Usage {
                output_tokens: tokens,
                ..Default::default()
            };
            assert_eq!(price.cost_micros(&usage), bound);
        }
    }

    #[test]
    fn an_unbounded_step_shares_the_remainder_max_min_fairly() {
        assert_eq!(share(900, &[]), 900);
        assert_eq!(share(900, &[None, None]), 300);
        // A peer bounded below the even split takes its bound, the rest is split.
        assert_eq!(share(1_000, &[Some(300)]), 700);
        assert_eq!(share(1_000, &[Some(100), None]), 450);
        // Peers bounded above the even split count as unbounded ones.
        assert_eq!(share(1_000, &[Some(900)]), 500);
        assert_eq!(share(1_000, &[Some(0), Some(0), Some(600)]), 500);
        assert_eq!(share(0, &[None]), 0);
        assert_eq!(share(10, &[Some(u64::MAX), None]), 3);
        // Whatever the peers, the shares of all never exceed the remainder.
        for peers in [
            vec![None; 7],
            vec![Some(1), Some(2), Some(3), None],
            vec![Some(500); 3],
        ] {
            let mine = share(1_000, &peers);
            let theirs: u64 = peers.iter().map(|p| p.unwrap_or(mine).min(mine)).sum();
            assert!(mine + theirs <= 1_000, "{peers:?}");
        }
    }

    #[test]
    fn concurrent_steps_are_neither_dependencies_nor_dependents() {
        let llm = |id: &str, deps: &[&str]| {
            let mut step = Step::bash(id, "true");
            step.action = Action::Llm(Default::default());
            step.depends_on = deps.iter().map(|d| d.to_string()).collect();
            step
        };
        let mut bash = Step::bash("build", "true");
        bash.depends_on = vec!["a".into()];
        let plan = Plan::new(
            "p",
            vec![
                llm("a", &[]),
                bash,
                llm("b", &["build"]),
                llm("c", &[]),
                llm("d", &["c"]),
                llm("e", &["b", "d"]),
            ],
        );
        let ids = |id: &str| -> Vec<String> {
            concurrent_llm_steps(&plan, id)
                .iter()
                .map(|s| s.id.clone())
                .collect()
        };
        assert_eq!(ids("a"), ["c", "d"]);
        assert_eq!(ids("b"), ["c", "d"]);
        assert_eq!(ids("c"), ["a", "b"]);
        assert!(ids("e").is_empty());
        assert!(ids("nope").is_empty());
    }
}
