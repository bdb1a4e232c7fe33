//! Tests of `budget`: exact micro-dollars, turns counted with retries, a stream stopped at
//! the cost limit, and the run's budget and hold named when it is theirs.

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

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

fn meter(max_tokens: Option<u64>, max_cost_micros: Option<u64>, turns: u32) -> Meter {
    let budget = Budget {
        max_tokens,
        max_cost_micros,
        prices: Some(sonnet()),
        run_budget: None,
    };
    Meter::new(Some(&budget), "claude-sonnet-4-5", turns).unwrap()
}

#[test]
fn money_is_exact_integer_micro_dollars_rounded_up() {
    let price = sonnet();
    // 1,000 in × $3/M + 100 out × $15/M = 0.003 + 0.0015
    assert_eq!(price.cost_micros(&usage(1000, 100)), 4500);
    let cached = Usage {
        cache_creation_input_tokens: 1000,
        cache_read_input_tokens: 1000,
        ..Usage::default()
    };
    assert_eq!(price.cost_micros(&cached), 3750 + 300);
    // One input token is 3 micro-dollars; a third of one rounds up to a whole one.
    let cheap = Price {
        input: 1,
        ..sonnet()
    };
    assert_eq!(cheap.cost_micros(&usage(1, 0)), 1);
    assert_eq!(
        price.cost_micros(&usage(u64::MAX, u64::MAX)),
        u64::MAX,
        "saturates"
    );
}

#[test]
fn max_turns_counts_every_request_retries_included() {
    let meter = meter(None, None, 3);
    assert!(meter.before_call(Call::First, 8192).is_ok());
    assert!(meter.before_call(Call::Retry, 8192).is_ok());
    assert!(meter.before_call(Call::Retry, 8192).is_ok());
    let refused = meter.before_call(Call::First, 8192).unwrap_err();
    assert_eq!(
        refused,
        BudgetStop::MaxTurns {
            max: 3,
            calls: 3,
            retries: 2
        }
    );
    assert_eq!(
        refused.to_string(),
        "max_turns (3) reached: 3 requests to the model were made (2 of them retries)"
    );
    assert_eq!(meter.calls(), 3);
}

#[test]
fn a_stream_passing_the_cost_limit_is_stopped_with_the_figures() {
    // $0.05: 10,000 input tokens cost 0.03, leaving 1,333 output tokens (0.019995).
    let meter = meter(None, Some(50_000), 10);
    // 50,000 micro-dollars buy 3,333 output tokens at $15 / MTok.
    assert_eq!(meter.before_call(Call::First, 8192), Ok(3_333));
    meter.check(usage(10_000, 0)).unwrap();
    meter.check(usage(10_000, 1_332)).unwrap();
    // The 1,334th token would pass the limit: stopped at 0.049995.
    let reason = meter.check(usage(10_000, 1_333)).unwrap_err().to_string();
    assert_eq!(
        reason,
        "budget: max_cost_usd 0.05 reached (spent 0.049995 USD, 11,333 tokens in 1 call)"
    );
    meter.settle(usage(10_000, 1_333));
    // The next request: its input alone (the last request's tokens) would pass.
    let refused = meter
        .before_call(Call::First, 8192)
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("budget: max_cost_usd 0.05 reached"),
        "{refused}"
    );
    assert!(
        refused.contains("input alone (about 11,333 tokens)"),
        "{refused}"
    );
    assert_eq!(meter.calls(), 1);
}

#[test]
fn a_request_asks_only_for_the_output_the_limits_leave() {
    let meter = meter(Some(5_000), Some(1_000_000), 10);
    assert_eq!(meter.before_call(Call::First, 8192), Ok(5_000));
    meter.settle(usage(1_000, 500));
    // 5,000 - 1,500 spent - 1,500 estimated input (the last request, sent again).
    assert_eq!(meter.before_call(Call::First, 8192), Ok(2_000));
    meter.settle(usage(1_200, 100));
    let Ok(room) = meter.before_call(Call::First, 8192) else {
        panic!("refused")
    };
    assert_eq!(room, 5_000 - 2_800 - 1_300);
    let cost_only = self::meter(None, Some(30_000), 10);
    cost_only.settle(usage(5_000, 0)); // 0.015 spent
                                       // 0.015 left, 5,000 estimated input is 0.015: no room.
    assert!(cost_only.before_call(Call::First, 8192).is_err());
    let tokens_reason = self::meter(Some(100), None, 10)
        .check(usage(90, 10))
        .unwrap_err()
        .to_string();
    assert_eq!(
        tokens_reason,
        "budget: max_tokens 100 reached (spent 0.00042 USD, 100 tokens in 0 calls)"
    );
}

#[test]
fn a_cost_limit_without_the_called_models_prices_fails_closed() {
    let no_prices = Budget {
        max_cost_micros: Some(1),
        ..Budget::default()
    };
    let e = Meter::new(Some(&no_prices), "claude-opus-4-5", 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs the prices of model claude-opus-4-5"),
        "{e}"
    );
    let other = Budget {
        max_cost_micros: Some(1),
        prices: Some(sonnet()),
        ..Budget::default()
    };
    let e = Meter::new(Some(&other), "claude-opus-4-5", 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("priced for model claude-sonnet-4-5"), "{e}");
    // Tokens alone need no prices.
    let tokens = Budget {
        max_tokens: Some(10),
        ..Budget::default()
    };
    assert!(Meter::new(Some(&tokens), "any", 5).is_ok());
    assert!(Meter::new(None, "any", 5).unwrap().describe().is_none());
}

#[test]
fn a_cost_limit_set_by_the_run_names_the_runs_budget_and_the_hold() {
    let held = |run_budget: RunBudget, max_cost_micros: u64| {
        let budget = Budget {
            max_cost_micros: Some(max_cost_micros),
            prices: Some(sonnet()),
            run_budget: Some(run_budget),
            ..Budget::default()
        };
        Meter::new(Some(&budget), "claude-sonnet-4-5", 10).unwrap()
    };
    // $0.02 of a $0.05 budget, the other $0.03 held by another attempt: 1,333 output
    // tokens at $15 / MTok fit.
    let meter = held(
        RunBudget {
            budget_micros: 50_000,
            others_micros: 30_000,
            shared_with: 0,
        },
        20_000,
    );
    assert_eq!(
        meter.describe().as_deref(),
        Some("0.02 USD of the run's budget_usd 0.05")
    );
    let reason = meter.check(usage(0, 1_333)).unwrap_err().to_string();
    assert_eq!(
        reason,
        "budget: the run's budget_usd 0.05 reached (spent 0.019995 USD, 1,333 tokens in 0 \
             calls); this step held 0.02 USD of it, the run's other llm attempts having spent \
             or held 0.03 USD"
    );
    // A share of the remainder beside two steps that may still start.
    let shared = held(
        RunBudget {
            budget_micros: 300_000,
            others_micros: 0,
            shared_with: 2,
        },
        100_000,
    );
    let reason = shared.check(usage(0, 6_666)).unwrap_err().to_string();
    assert!(
        reason.starts_with("budget: the run's budget_usd 0.30 reached (spent 0.09999 USD"),
        "{reason}"
    );
    assert!(
        reason.ends_with(
            "; this step held 0.10 USD of it, and the rest was kept for 2 other llm steps \
                 that may run at the same time (max_cost_usd on a step sets what it holds)"
        ),
        "{reason}"
    );
    // The whole budget held: nothing to add.
    let whole = held(
        RunBudget {
            budget_micros: 50_000,
            ..RunBudget::default()
        },
        50_000,
    );
    let reason = whole.check(usage(0, 3_333)).unwrap_err().to_string();
    assert_eq!(
        reason,
        "budget: the run's budget_usd 0.05 reached (spent 0.049995 USD, 3,333 tokens in 0 calls)"
    );
    // Unpriced: the run's budget fails closed, named.
    let e = Meter::new(
        Some(&Budget {
            max_cost_micros: Some(1),
            run_budget: Some(RunBudget {
                budget_micros: 500_000,
                ..RunBudget::default()
            }),
            ..Budget::default()
        }),
        "claude-opus-4-5",
        5,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("budget: the run's budget_usd 0.50 needs the prices"),
        "{e}"
    );
}
