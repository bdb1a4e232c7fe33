//! Budgets and costs of `llm` steps through the real binaries (`plue run`, `plue serve`
//! and their local runners) against the scripted Messages API (`testkit::claude`): a cost
//! limit passed mid-stream drops the call and fails the step with nothing billed after it;
//! `max_turns` counts retried requests; `Plan(budget_usd=)` holds across two `llm` steps
//! running at once; the cost the API, `--summary-json` and `/metrics` show is the scripted
//! usage × the price, to the micro-dollar; a bad `--llm-prices` file is refused whole.

use std::time::Duration;

use crate::python;
use crate::support;

use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Reply, Routed, Turn};

use crate::support::{client, printed, start_run, step, workflow_source, Sandbox, LLM_KEY};

/// `n` text deltas of one token each (`w0 w1 ...`).
fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i} ")).collect()
}

/// A turn streaming `n` one-token deltas after `input` tokens of input.
fn long_turn(input: u64, n: usize) -> Turn {
    let pieces = words(n);
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    Turn::new().usage(input, n as u64).text_block(&pieces)
}

#[test]
fn a_cost_limit_passed_mid_stream_drops_the_call_and_fails_the_step() {
    // 10,000 input tokens of Sonnet cost $0.03; $0.031 leaves 66 output tokens. The model
    // would stream 2,000 and then call a tool (another request).
    let server = FakeClaude::start(vec![
        long_turn(10_000, 2_000)
            .tool_use("toolu_1", "list_files", &json!({}))
            .reply(),
        Turn::text(&["a second request"]).reply(),
    ]);
    let sandbox = Sandbox::new("llm-budget-cut");
    sandbox.write(
        "w.plue.py",
        &workflow_source(
            "cut",
            &["Step.llm('spend', prompt='Write a lot.', max_cost_usd=0.031)"],
        ),
    );
    let output = sandbox.plue_run_llm_summary(server.url(), "1", &[]);
    let text = printed(&output);
    assert!(!output.status.success(), "{text}");
    let summary = sandbox.summary();
    let spend = step(&summary, "spend");
    assert_eq!(spend["status"], "failed", "{summary:#}");
    assert!(
        text.contains(
            "budget: max_cost_usd 0.031 reached (spent 0.03099 USD, 10,066 tokens in 1 call)"
        ),
        "{text}"
    );
    // Nothing billed beyond the turn that reached the limit.
    assert_eq!(server.requests().len(), 1, "{text}");
    assert_eq!(server.remaining(), 1);
    // Its usage counts what was streamed before the cut, and its cost is that × price.
    assert_eq!(
        spend["usage"],
        json!({"input_tokens": 10_000, "output_tokens": 66,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
        "{summary:#}"
    );
    assert_eq!(spend["cost_usd"], json!(0.03099), "{summary:#}");
    assert_eq!(summary["cost_usd"], json!(0.03099), "{summary:#}");
}

#[test]
fn max_turns_is_exact_when_requests_are_retried() {
    // regression: a retried request was not counted, so this step made 3 requests (a 529,
    // its retry calling a tool, a third turn) under max_turns=2 and succeeded.
    let server = FakeClaude::start(vec![
        Reply::error(529, "overloaded_error", "Overloaded"),
        Turn::new()
            .tool_use("toolu_1", "list_files", &json!({}))
            .reply(),
        Turn::text(&["one request too many"]).reply(),
    ]);
    let sandbox = Sandbox::new("llm-budget-turns");
    sandbox.write(
        "w.plue.py",
        &workflow_source(
            "turns",
            &["Step.llm('agent', prompt='Look around.', max_turns=2)"],
        ),
    );
    let output = sandbox.plue_run_llm(server.url(), &["w.plue.py", "--runners", "1"]);
    let text = printed(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "max_turns (2) reached: 2 requests to the model were made (1 of them retries)"
        ),
        "{text}"
    );
    assert_eq!(server.requests().len(), 2, "{text}");
}

#[test]
fn a_run_budget_is_never_passed_by_two_llm_steps_running_at_once() {
    // Two steps at once, each allowed $0.03, in a run allowed $0.05: each streams until
    // stopped ($0.003 of input, then $0.015 per 1,000 output tokens). Without the run's
    // holds both spend $0.03 (0.06 in all).
    let turn = |when: &str| Routed {
        when: Some(when.into()),
        reply: long_turn(1_000, 4_000).reply(),
    };
    let server = FakeClaude::start_routed(vec![turn("alpha"), turn("beta")]);
    let sandbox = Sandbox::new("llm-budget-run");
    sandbox.write(
        "w.plue.py",
        "def workflow():\n    return Plan(name='budget', triggers=[Trigger.manual()], budget_usd=0.05, steps=[\n\
         \x20       Step.llm('alpha', prompt='alpha: write a lot.', max_cost_usd=0.03),\n\
         \x20       Step.llm('beta', prompt='beta: write a lot.', max_cost_usd=0.03),\n    ])\n",
    );
    let output = sandbox.plue_run_llm_summary(server.url(), "2", &[]);
    let text = printed(&output);
    let summary = sandbox.summary();
    let costs: Vec<f64> = ["alpha", "beta"]
        .iter()
        .map(|id| step(&summary, id)["cost_usd"].as_f64().unwrap_or(0.0))
        .collect();
    let total = summary["cost_usd"].as_f64().unwrap();
    assert!(
        total <= 0.05 + 1e-9,
        "the run spent {total} of its 0.05: {costs:?}\n{text}"
    );
    assert!((total - costs.iter().sum::<f64>()).abs() < 1e-9);
    // Both ran and were stopped by what they were allowed.
    for id in ["alpha", "beta"] {
        assert_eq!(step(&summary, id)["status"], "failed", "{summary:#}");
    }
    assert!(total > 0.045, "{costs:?}\n{text}");
    assert!(text.contains("budget: max_cost_usd 0.03 reached"), "{text}");
    // The other one was stopped by what it held of the run's budget, and says so.
    assert!(
        text.contains("budget: the run's budget_usd 0.05 reached ("),
        "{text}"
    );
    assert!(text.contains("this step held 0.0"), "{text}");
    assert!(
        text.contains("the run's other llm attempts having spent or held 0.0"),
        "{text}"
    );
}

/// A turn of `input` tokens streaming `n` one-token deltas 50 ms apart: a conversation
/// that stays live long enough for every parallel step to be claimed beside it.
fn slow_turn(input: u64, n: usize) -> Turn {
    Turn::new()
        .usage(input, n as u64)
        .paced_text_block(&words(n), Duration::from_millis(50))
}

#[test]
fn parallel_llm_steps_hold_what_they_can_spend_and_all_run_under_a_budget_enough_for_them() {
    // regression: the first step to be claimed held the run's whole remainder, so the
    // others, claimed while it ran, failed at once ("budget_usd 0.30 is used up").
    // Four steps at once under $0.30: two bounded by max_tokens=5,000 (at most $0.075 each
    // at Sonnet's dearest rate, $15 / MTok), two without a limit of their own (a fair
    // share of the rest: at least $0.075). Each uses 1,000 + 40 tokens ($0.0036).
    let steps = ["alpha", "beta", "gamma", "delta"];
    let server = FakeClaude::start_routed(
        steps
            .iter()
            .map(|id| Routed {
                when: Some(format!("{id}:")),
                reply: slow_turn(1_000, 40).reply(),
            })
            .collect(),
    );
    let sandbox = Sandbox::new("llm-budget-shares");
    sandbox.write(
        "w.plue.py",
        "def workflow():\n    return Plan(name='shares', triggers=[Trigger.manual()], budget_usd=0.3, steps=[\n\
         \x20       Step.llm('alpha', prompt='alpha: say a little.', max_tokens=5000),\n\
         \x20       Step.llm('beta', prompt='beta: say a little.', max_tokens=5000),\n\
         \x20       Step.llm('gamma', prompt='gamma: say a little.'),\n\
         \x20       Step.llm('delta', prompt='delta: say a little.'),\n    ])\n",
    );
    let output = sandbox.plue_run_llm_summary(server.url(), "4", &[]);
    let text = printed(&output);
    assert!(output.status.success(), "{text}");
    let summary = sandbox.summary();
    for id in steps {
        assert_eq!(step(&summary, id)["status"], "succeeded", "{summary:#}");
        assert_eq!(step(&summary, id)["cost_usd"], json!(0.0036), "{summary:#}");
    }
    assert_eq!(server.requests().len(), 4, "{text}");
    let total = summary["cost_usd"].as_f64().unwrap();
    assert!((total - 0.0144).abs() < 1e-9, "{total}");
    // What each held: the limited ones their own bound; the others a share of what was
    // left when each was claimed (the split between the two depends on the order of the
    // claims), never the whole remainder, and together no more than that remainder.
    let held = "llm budget: max_tokens 5,000, 0.075 USD of the run's budget_usd 0.30";
    assert_eq!(text.matches(held).count(), 2, "{text}");
    let shares: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split_once("llm budget: ").map(|(_, rest)| rest))
        .filter(|rest| !rest.starts_with("max_tokens"))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(shares.len(), 2, "{text}");
    assert!(
        shares.iter().all(|s| *s > 0.0 && *s < 0.15) && shares.iter().sum::<f64>() <= 0.15 + 1e-9,
        "{shares:?}: {text}"
    );
}

#[test]
fn parallel_llm_steps_spending_all_they_can_never_pass_the_run_budget_together() {
    // The attacker's side: five steps at once under $0.05, each streaming 4,000 output
    // tokens ($0.06) and then calling a tool to go on — two without limits, one with
    // max_cost_usd=0.04, one with max_tokens=3,000 ($0.045 at most), one with a limit
    // larger than the budget. Whatever order they are claimed in, what they spend together
    // stays within the budget. (No input: what a request's input costs is known only once
    // it was sent, and the runner's estimate of it is the previous request's size —
    // `runner::llm::budget` — so a hold can be passed by the input of its last request;
    // this test is about the holds.)
    let steps = ["u1", "u2", "cost", "tokens", "big"];
    let server = FakeClaude::start_routed(
        steps
            .iter()
            .map(|id| Routed {
                when: Some(format!("{id}:")),
                reply: long_turn(0, 4_000)
                    .tool_use("toolu_1", "list_files", &json!({}))
                    .reply(),
            })
            .collect(),
    );
    let sandbox = Sandbox::new("llm-budget-attack");
    sandbox.write(
        "w.plue.py",
        "def workflow():\n    return Plan(name='attack', triggers=[Trigger.manual()], budget_usd=0.05, steps=[\n\
         \x20       Step.llm('u1', prompt='u1: spend all you can.'),\n\
         \x20       Step.llm('u2', prompt='u2: spend all you can.'),\n\
         \x20       Step.llm('cost', prompt='cost: spend all you can.', max_cost_usd=0.04),\n\
         \x20       Step.llm('tokens', prompt='tokens: spend all you can.', max_tokens=3000),\n\
         \x20       Step.llm('big', prompt='big: spend all you can.', max_cost_usd=5),\n    ])\n",
    );
    let output = sandbox.plue_run_llm_summary(server.url(), "5", &[]);
    let text = printed(&output);
    assert!(!output.status.success(), "{text}");
    let summary = sandbox.summary();
    let costs: Vec<f64> = steps
        .iter()
        .map(|id| step(&summary, id)["cost_usd"].as_f64().unwrap_or(0.0))
        .collect();
    let total = summary["cost_usd"].as_f64().unwrap_or(0.0);
    assert!(
        (total - costs.iter().sum::<f64>()).abs() < 1e-9,
        "{costs:?}"
    );
    assert!(
        total <= 0.05 + 1e-9,
        "the run spent {total} of its 0.05: {costs:?}\n{text}"
    );
    // They did try: the holds add up to the budget, and each is spent to within a token.
    assert!(total > 0.049, "{costs:?}\n{text}");
    for id in steps {
        assert_eq!(step(&summary, id)["status"], "failed", "{summary:#}");
    }
    // No request followed the one that reached a limit.
    assert!(server.requests().len() <= steps.len(), "{text}");
    assert!(text.contains("the run's budget_usd 0.05"), "{text}");
}

#[test]
fn a_price_file_prices_a_model_and_a_bad_one_is_refused_with_every_problem() {
    let sandbox = Sandbox::new("llm-budget-prices");
    let bad = sandbox.write(
        "bad.yaml",
        "models:\n  gateway: {input: -1, output: 1}\n  Bad Name: {input: 1, output: 1, cache_write: 1, cache_read: 1}\n",
    );
    let output = sandbox
        .plue(&[
            "serve",
            "--check-config",
            "--llm-prices",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = printed(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for problem in [
        "model gateway: input must be from 0 to 10000, got -1",
        "model gateway: cache_write is missing",
        "model gateway: cache_read is missing",
        "model 'Bad Name': use 1 to 100 characters",
        "invalid price file",
    ] {
        assert!(text.contains(problem), "{problem:?} not in {text}");
    }
    let good = sandbox.write(
        "prices.json",
        r#"{"models": {"gateway": {"input": 2, "output": 8, "cache_write": 2.5, "cache_read": 0.2}}}"#,
    );
    let output = sandbox
        .plue(&[
            "serve",
            "--check-config",
            "--llm-prices",
            good.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", printed(&output));
    assert!(printed(&output).contains("valid: 1 model(s) priced (gateway)"));

    // `plue run` prices a model of the file: 500 × $2 + 20 × $8 per million.
    let server = FakeClaude::start(vec![Turn::text(&["ok"]).usage(500, 20).reply()]);
    sandbox.write(
        "w.plue.py",
        &workflow_source(
            "priced",
            &["Step.llm('ask', prompt='Say ok.', model='gateway-v2')"],
        ),
    );
    let output =
        sandbox.plue_run_llm_summary(server.url(), "1", &["--llm-prices", good.to_str().unwrap()]);
    assert!(output.status.success(), "{}", printed(&output));
    let summary = sandbox.summary();
    assert_eq!(
        step(&summary, "ask")["cost_usd"],
        json!(0.00116),
        "{summary:#}"
    );
}

/// The families of a `/metrics` answer, as the Prometheus client's OpenMetrics parser
/// read them (the parser `tests/metrics.rs` uses).
fn scrape(text: &str) -> Value {
    let parsed = python::run_script("parse_metrics.py", &[], text.as_bytes());
    assert!(
        parsed.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).expect("the parser's JSON")
}

/// The value of sample `name` of `family` with exactly-matching `labels`.
fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families:#}"))
        .iter()
        .filter(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_in_the_api_and_metrics_is_usage_times_price() {
    let _serial = support::serial().await;
    // Haiku 4.5: $1 in, $5 out per million. Two requests: 1,200 + 30, then 1,500 + 12;
    // 2,700 × 1 + 42 × 5 = 2,910 micro-dollars.
    let server = FakeClaude::start(vec![
        Turn::new()
            .tool_use("toolu_1", "list_files", &json!({}))
            .usage(1_200, 30)
            .reply(),
        Turn::text(&["done"]).usage(1_500, 12).reply(),
    ]);
    let sandbox = Sandbox::new("llm-budget-api");
    let workflow = sandbox.write(
        "ws/w.plue.py",
        &workflow_source("costed", &["Step.llm('ask', prompt='Look, then say done.', model='claude-haiku-4-5', max_cost_usd=1)"]),
    );
    let secret = format!("ANTHROPIC_API_KEY={LLM_KEY}");
    let extra = ["--heartbeat-ms", "200", "--secret", &secret];
    let engine = sandbox
        .serve_local_with_env("1", &extra, &[("ANTHROPIC_BASE_URL", server.url())])
        .await;
    let url = engine.url.as_str();
    let http = client();
    let run_id = start_run(&http, url, &workflow, &sandbox.path("ws")).await;
    let run = sandbox
        .wait_succeeded(&http, url, run_id, Duration::from_secs(90))
        .await;

    let ask = &run["steps"][0];
    assert_eq!(ask["cost_usd"], json!(0.00291), "{run:#}");
    assert_eq!(run["cost_usd"], json!(0.00291), "{run:#}");
    assert_eq!(
        ask["attempt_costs"],
        json!([{"attempt": 1, "model": "claude-haiku-4-5", "cost_usd": 0.00291,
                "usage": {"input_tokens": 2_700, "output_tokens": 42,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}]),
        "{run:#}"
    );
    // The request asked for no more output than $1 leaves at $5 per million (200,000),
    // within the per-request ceiling.
    assert_eq!(server.requests()[0].body["max_tokens"], 8192);

    // The dashboard: the run page and the llm step's page show the same figure.
    let cookie = support::dashboard_session(url, support::ADMIN_TOKEN).await;
    let page = |path: String| {
        let cookie = cookie.clone();
        async move { support::dashboard_page(&format!("{url}{path}"), &cookie).await }
    };
    let run_page = page(format!("/runs/{run_id}")).await;
    assert!(
        run_page.contains(r#"<dd id="run-cost">$0.00291</dd>"#),
        "{run_page}"
    );
    assert!(
        run_page.contains(r#"data-cost="ask">$0.00291<"#),
        "{run_page}"
    );
    let step_page = page(format!("/runs/{run_id}/steps/ask")).await;
    assert!(
        step_page.contains(r#"<span id="step-cost">$0.00291</span>"#),
        "{step_page}"
    );
    assert!(step_page.contains("2742 tokens"), "{step_page}");

    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let families = scrape(&text);
    let haiku = [("model", "claude-haiku-4-5")];
    let cost = sample(
        &families,
        "plue_llm_cost_usd",
        "plue_llm_cost_usd_total",
        &haiku,
    );
    assert!((cost - 0.00291).abs() < 1e-12, "{cost}\n{text}");
    for (kind, tokens) in [
        ("input", 2_700.0),
        ("output", 42.0),
        ("cache_write", 0.0),
        ("cache_read", 0.0),
    ] {
        let labels = [("model", "claude-haiku-4-5"), ("kind", kind)];
        assert_eq!(
            sample(
                &families,
                "plue_llm_tokens",
                "plue_llm_tokens_total",
                &labels
            ),
            tokens,
            "{kind}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_on_a_run_budget_never_pass_it() {
    use plue_store::now_ms;
    // Eight attempts of one run claimed at once each ask for $0.03 of a $0.10 budget: on
    // both backends the holds add up to the budget and never more (PostgreSQL serialises
    // them with an advisory lock per run, SQLite by its single writer).
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let steps = (0..8)
            .map(|i| evaluator::plan::Step::bash(format!("s{i}"), "true"))
            .collect();
        let plan = evaluator::plan::Plan {
            budget_usd: Some(0.1),
            ..evaluator::plan::Plan::new("holds", steps)
        };
        let run_id = support::start_plan_run(&executor, "/w/holds.plue.py", &plan, None).await;
        let runner_id = store
            .register_ephemeral_runner("r", "{}", &format!("hash-holds-{}", now_ms()), now_ms())
            .await
            .unwrap();
        let mut attempts = Vec::new();
        while let Some(claimed) = store
            .claim(runner_id, &[String::new()], now_ms())
            .await
            .unwrap()
        {
            attempts.push(claimed.attempt_id);
        }
        assert_eq!(attempts.len(), 8, "{}", store.backend());
        let holds = futures::future::join_all(attempts.iter().map(|&attempt| {
            let store = store.clone();
            async move {
                store
                    .reserve_budget(attempt, run_id, 30_000, 100_000)
                    .await
                    .unwrap()
                    .held
            }
        }))
        .await;
        let total: i64 = holds.iter().sum();
        assert_eq!(total, 100_000, "{holds:?} on {}", store.backend());
        let mut sorted = holds.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 0, 0, 0, 10_000, 30_000, 30_000, 30_000]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claimants_of_a_run_budget_are_the_steps_that_hold_nothing_yet() {
    use plue_store::now_ms;
    // What an attempt without a bound of its own shares the remainder with: the run's
    // steps not started, and those claimed whose hold is not set yet; on both backends.
    for (store, _dir) in support::stores().await {
        let executor = support::executor(&store, 1000);
        let steps = ["s0", "s1", "s2", "s3"]
            .iter()
            .map(|id| evaluator::plan::Step::bash(*id, "true"))
            .collect();
        let plan = evaluator::plan::Plan {
            budget_usd: Some(0.1),
            ..evaluator::plan::Plan::new("claimants", steps)
        };
        let run_id = support::start_plan_run(&executor, "/w/claimants.plue.py", &plan, None).await;
        let runner_id = store
            .register_ephemeral_runner("r", "{}", &format!("hash-claimants-{}", now_ms()), now_ms())
            .await
            .unwrap();
        let mut claimed = Vec::new();
        for _ in 0..2 {
            let c = store
                .claim(runner_id, &[String::new()], now_ms())
                .await
                .unwrap()
                .expect("a queued step");
            claimed.push((c.attempt_id, c.step_id));
        }
        let (first, second) = (&claimed[0], &claimed[1]);
        let unclaimed: Vec<String> = ["s0", "s1", "s2", "s3"]
            .iter()
            .map(|s| s.to_string())
            .filter(|s| *s != first.1 && *s != second.1)
            .collect();
        let read = store.budget_claimants(first.0, run_id).await.unwrap();
        assert_eq!(read.taken_by_others, 0, "{}", store.backend());
        let mut expected = unclaimed.clone();
        expected.push(second.1.clone());
        expected.sort();
        let mut waiting = read.waiting.clone();
        waiting.sort();
        assert_eq!(waiting, expected, "{}", store.backend());
        // Once the second holds $0.03, it is no claimant, and what it holds is taken.
        store
            .reserve_budget(second.0, run_id, 30_000, 100_000)
            .await
            .unwrap();
        let read = store.budget_claimants(first.0, run_id).await.unwrap();
        assert_eq!(read.taken_by_others, 30_000, "{}", store.backend());
        let mut waiting = read.waiting.clone();
        waiting.sort();
        assert_eq!(waiting, unclaimed, "{}", store.backend());
    }
}
