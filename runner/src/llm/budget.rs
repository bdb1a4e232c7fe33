//! The budget of one `llm` attempt: `max_turns`, `max_tokens` and the cost limit (the
//! step's `max_cost_usd`, or what the attempt holds of the run's `budget_usd`, chosen by
//! the engine: `core/src/pricing/budget.rs`), counted by a [`Meter`] as the stream arrives.
//!
//! Invariants:
//! - `max_turns` is the number of requests to the Messages API, retries included: the
//!   request after the `max_turns`-th is refused, whatever became of the earlier ones.
//! - Every request's usage counts, a cut or failed one's too: what was streamed
//!   (`message_start`'s input and cache counts, and for output the larger of what the
//!   API reported and the content deltas received — each delta carries at least one
//!   token). A finished message counts exactly what the API reported.
//! - Before a request: it is refused when what was spent plus the estimate of its input
//!   (every token of the previous request, which the next one sends again; none for the
//!   first) would leave no room
//!   for a single output token, and its `max_tokens` is lowered to the output the limits
//!   leave, so the API itself stops there.
//! - While a request streams, as soon as one more output token would pass a limit, the
//!   stream is dropped and the step fails with the limit and the figures (what was
//!   counted is then within the limit): no request follows, so nothing is billed beyond
//!   the turn that reached the limit. What the API bills for that turn is bounded by the
//!   request's `max_tokens` and by how far the previous request's size underestimated its
//!   input; a request whose input alone passes a limit is dropped at `message_start`.
//! - A cost limit without prices, or with prices for a model other than the one the step
//!   calls, fails the step before its first request (fail closed: an unknown price never
//!   reads as free).
//! - A step stopped by its cost limit names the budget that set it, with its amount: the
//!   step's `max_cost_usd`, or the run's `budget_usd` and what the attempt held of it.
//! - Money is integer micro-dollars ([`Price::cost_micros`]); nothing here is a float but
//!   the text of a message.

use std::sync::Mutex;

use plue_types::budget::{thousands, tokens, usd};
use plue_types::protocol::{Budget, Price, RunBudget, Usage};

/// Why a budget cannot be enforced, or why a request may not be made or go on: the step's
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetStop {
    /// A cost limit (`limit`, as messages name it) without the prices of the model.
    #[error(
        "budget: {limit} needs the prices of model {model}, and the engine sent \
         none; the step was not started"
    )]
    NoPrices { limit: String, model: String },
    /// A cost limit priced for another model than the step calls.
    #[error(
        "budget: {limit} is priced for model {priced}, but the step calls {model} (its \
         prompt file chose it?); set model= on the step so the engine prices \
         the model it calls"
    )]
    OtherModel {
        limit: String,
        priced: String,
        model: String,
    },
    /// `max_turns` requests were made, retries included.
    #[error(
        "max_turns ({max}) reached: {calls} requests to the model were made ({retries} of them retries)"
    )]
    MaxTurns { max: u32, calls: u32, retries: u32 },
    /// A token or cost limit is reached: the sentence naming the limit and what was spent.
    #[error("{0}")]
    Reached(String),
}

/// Whether a request is the first of its turn or a repeat of it (which also counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    First,
    Retry,
}

/// How the limits of one attempt are counted; shared by the turns of a conversation.
#[derive(Debug)]
pub struct Meter {
    max_turns: u32,
    max_tokens: Option<u64>,
    max_cost_micros: Option<u64>,
    /// Present whenever `max_cost_micros` is (checked in [`Meter::new`]).
    price: Option<Price>,
    /// Set when the cost limit is the attempt's hold on the run's `budget_usd`.
    run_budget: Option<RunBudget>,
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    spent: Usage,
    calls: u32,
    retries: u32,
    /// Every token of the last request (its input side and its output, which the next
    /// request sends back): the estimate of the next one's input, which carries the same
    /// conversation and more.
    last_input: u64,
}

impl Meter {
    /// The meter of an attempt calling `model` with at most `max_turns` requests, or why
    /// its budget cannot be enforced.
    pub fn new(budget: Option<&Budget>, model: &str, max_turns: u32) -> Result<Meter, BudgetStop> {
        let budget = budget.cloned().unwrap_or_default();
        if let Some(limit) = budget.max_cost_micros {
            match &budget.prices {
                None => {
                    return Err(BudgetStop::NoPrices {
                        limit: cost_limit(limit, budget.run_budget.as_ref()),
                        model: model.to_owned(),
                    })
                }
                Some(price) if price.model != model => {
                    return Err(BudgetStop::OtherModel {
                        limit: cost_limit(limit, budget.run_budget.as_ref()),
                        priced: price.model.clone(),
                        model: model.to_owned(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(Meter {
            max_turns: max_turns.max(1),
            max_tokens: budget.max_tokens,
            max_cost_micros: budget.max_cost_micros,
            price: budget.prices,
            run_budget: budget.run_budget,
            state: Mutex::new(State::default()),
        })
    }

    /// Counts one more request and returns the `max_tokens` it may ask for (at most
    /// `ceiling`), or why it may not be made.
    pub fn before_call(&self, call: Call, ceiling: u32) -> Result<u32, BudgetStop> {
        let mut state = self.lock();
        if state.calls >= self.max_turns {
            return Err(BudgetStop::MaxTurns {
                max: self.max_turns,
                calls: state.calls,
                retries: state.retries,
            });
        }
        let estimate = Usage {
            input_tokens: state.last_input,
            ..Usage::default()
        };
        let room = self.output_room(state.spent + estimate, u64::from(ceiling));
        if room == 0 {
            let spent = state.spent;
            let calls = state.calls;
            drop(state);
            return Err(BudgetStop::Reached(self.reached(
                spent,
                spent + estimate + output(1),
                calls,
                &format!(
                    "; the next request's input alone (about {} tokens) would pass it",
                    thousands(estimate.input_tokens)
                ),
            )));
        }
        state.calls += 1;
        state.retries += u32::from(call == Call::Retry);
        Ok(u32::try_from(room).unwrap_or(ceiling).max(1))
    }

    /// Whether the request streaming now, having used `so_far`, may go on: `Err` with the
    /// step's reason as soon as one more output token would pass a limit, so what is
    /// counted stops at the limit (the request's `max_tokens` tells the API the same).
    pub fn check(&self, so_far: Usage) -> Result<(), BudgetStop> {
        let state = *self.lock();
        let total = state.spent + so_far;
        let next = total + output(1);
        if self.passes(next) {
            return Err(BudgetStop::Reached(self.reached(
                total,
                next,
                state.calls,
                "",
            )));
        }
        Ok(())
    }

    /// Adds what a request used (finished, failed or cut) to what was spent.
    pub fn settle(&self, usage: Usage) {
        let mut state = self.lock();
        state.spent = state.spent + usage;
        let sent_again = tokens(&usage);
        if sent_again > 0 {
            state.last_input = sent_again;
        }
    }

    /// The reason of a step whose reply the API cut at the `asked` output tokens the budget
    /// left (`stop_reason: max_tokens` on a lowered request).
    pub fn cut_short(&self, asked: u32) -> String {
        let state = *self.lock();
        self.reached(
            state.spent,
            state.spent + output(1),
            state.calls,
            &format!(
                "; the model's reply was cut at the {} output tokens the budget left",
                thousands(u64::from(asked))
            ),
        )
    }

    /// Tokens used so far, every request counted.
    pub fn spent(&self) -> Usage {
        self.lock().spent
    }

    /// Requests made so far, retries included.
    pub fn calls(&self) -> u32 {
        self.lock().calls
    }

    /// `llm: ..., budget: ...` for the attempt's first log line, `None` without limits.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(tokens) = self.max_tokens {
            parts.push(format!("max_tokens {}", thousands(tokens)));
        }
        if let Some(limit) = self.max_cost_micros {
            parts.push(match &self.run_budget {
                None => format!("max_cost_usd {}", usd(limit)),
                Some(run) => format!(
                    "{} USD of the run's budget_usd {}",
                    usd(limit),
                    usd(run.budget_micros)
                ),
            });
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    fn passes(&self, total: Usage) -> bool {
        self.max_tokens.is_some_and(|max| tokens(&total) > max) || self.cost_passes(&total)
    }

    fn cost_passes(&self, total: &Usage) -> bool {
        match (self.max_cost_micros, &self.price) {
            (Some(max), Some(price)) => price.cost_micros(total) > max,
            _ => false,
        }
    }

    /// How many output tokens (at most `ceiling`) fit on top of `total` under every limit.
    fn output_room(&self, total: Usage, ceiling: u64) -> u64 {
        let mut room = ceiling;
        if let Some(max) = self.max_tokens {
            room = room.min(max.saturating_sub(tokens(&total)));
        }
        if let (Some(max), Some(price)) = (self.max_cost_micros, &self.price) {
            let left = u128::from(max.saturating_sub(price.cost_micros(&total)));
            let fits = if price.output == 0 {
                u128::from(u64::MAX)
            } else {
                // Output tokens whose cost, rounded up, stays within what is left.
                left * 1_000_000 / u128::from(price.output)
            };
            room = room.min(u64::try_from(fits).unwrap_or(u64::MAX));
            // The sum is rounded up as a whole: one more check on the exact figure.
            while room > 0 && self.cost_passes(&(total + output(room))) {
                room -= 1;
            }
        }
        room
    }

    /// The reason of a step stopped at a limit, `spent` being what it used and `probe`
    /// what passes the limit (which names it: the step's `max_tokens` or `max_cost_usd`,
    /// or the run's `budget_usd` with what the attempt held of it).
    fn reached(&self, spent: Usage, probe: Usage, calls: u32, detail: &str) -> String {
        let mut held = String::new();
        let limit = match (self.max_cost_micros, &self.price) {
            (Some(max), Some(price))
                if price.cost_micros(&probe) > max || self.max_tokens.is_none() =>
            {
                if let Some(run) = &self.run_budget {
                    held = held_of_run(max, run);
                }
                cost_limit(max, self.run_budget.as_ref())
            }
            _ => match self.max_tokens {
                Some(max) => format!("max_tokens {}", thousands(max)),
                None => "max_cost_usd".into(),
            },
        };
        let cost = self
            .price
            .as_ref()
            .map(|price| format!("spent {} USD, ", usd(price.cost_micros(&spent))))
            .unwrap_or_else(|| "spent ".into());
        format!(
            "budget: {limit} reached ({cost}{} tokens in {calls} call{}){held}{detail}",
            thousands(tokens(&spent)),
            if calls == 1 { "" } else { "s" }
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere leaves plain numbers: still good to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cost limit of `max` micro-dollars as the step's messages name it: the step's
/// `max_cost_usd`, or the run's `budget_usd` (with its amount) when `run` set it.
fn cost_limit(max: u64, run: Option<&RunBudget>) -> String {
    match run {
        None => format!("max_cost_usd {}", usd(max)),
        Some(run) => format!("the run's budget_usd {}", usd(run.budget_micros)),
    }
}

/// What an attempt held of its run's budget (`max`), and why not all of it:
/// `; this step held 0.02 USD of it, ...` (empty when it held the whole budget).
fn held_of_run(max: u64, run: &RunBudget) -> String {
    if max >= run.budget_micros && run.others_micros == 0 && run.shared_with == 0 {
        return String::new();
    }
    let mut text = format!("; this step held {} USD of it", usd(max));
    if run.others_micros > 0 {
        text.push_str(&format!(
            ", the run's other llm attempts having spent or held {} USD",
            usd(run.others_micros)
        ));
    }
    if run.shared_with > 0 {
        text.push_str(&format!(
            ", and the rest was kept for {} other llm step{} that may run at the same time \
             (max_cost_usd on a step sets what it holds)",
            run.shared_with,
            if run.shared_with == 1 { "" } else { "s" }
        ));
    }
    text
}

fn output(tokens: u64) -> Usage {
    Usage {
        output_tokens: tokens,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests;
