//! `Step.*(..., network=...)` through the real path: a worker process converts the keyword
//! argument, the parent validates each host pattern and reports it where it is written; a
//! plan without `network=` keeps its canonical JSON (and so its `plan_hash`).

mod support;
use support::{assert_step_problem, one_step, plan_of, pool, step_problems};

use evaluator::network::Network;

#[tokio::test]
async fn network_is_a_step_option_of_steps_that_run() {
    let pool = pool().await;
    for (step, expected) in [
        (
            "Step.bash(\"b\", \"true\", network=\"none\")",
            Network::None,
        ),
        (
            "Step.python(\"p\", \"print(1)\", network=\"open\")",
            Network::Open,
        ),
        (
            "Step.llm(\"l\", prompt=\"x\", network=[\"pypi.org\", \"*.github.com:443\"])",
            Network::Allow(vec!["pypi.org".into(), "*.github.com:443".into()]),
        ),
        (
            "Step.bash(\"b\", \"true\", network=[\"localhost:8080\"])",
            Network::Allow(vec!["localhost:8080".into()]),
        ),
    ] {
        let plan = plan_of(&pool, &one_step(step)).await;
        assert_eq!(plan.steps[0].network.as_ref(), Some(&expected), "{step}");
    }
    let plain = plan_of(&pool, &one_step("Step.llm(\"l\", prompt=\"x\")")).await;
    assert_eq!(plain.steps[0].network, None);
    assert!(!plain.canonical_json().contains("network"));
}

#[tokio::test]
async fn a_bad_host_pattern_is_refused_where_it_is_written() {
    assert_eq!(
        step_problems("Step.bash(\"b\", \"true\", network=[\"a.*.com\"])").await,
        ["w.plue.py:2:29: step 'b': invalid host pattern 'a.*.com': '*' may only be the whole first label, as in '*.github.com'"]
    );
    assert_step_problem(
        "Step.bash(\"b\", \"true\", network=\"nope\")",
        "Step.bash(): network must be 'none', 'open' or a list",
    )
    .await;
    // One host is a list of one: a bare word other than none/open is a typo, not a host.
    assert_step_problem(
        "Step.bash(\"b\", \"true\", network=\"pypi.org\")",
        "got 'pypi.org' (for one host write ['pypi.org'])",
    )
    .await;
    assert_step_problem(
        "Step.approval(\"gate\", network=\"none\")",
        "network= goes on a step that runs",
    )
    .await;
}
