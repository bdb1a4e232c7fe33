//! `Cache(...)` and `caches=` through the real path: a worker process converts them (a bad
//! declaration fails on its line), the plan's caches go to every bash and python step that
//! declares none, and the parent validates a plan's caches again (a plan made without the
//! host types is refused the same way).

mod support;
use support::{assert_step_problem, plan_of, pool, problems_of};

use evaluator::caches::Cache;
use evaluator::plan::{Plan, SourceMap};

#[tokio::test]
async fn steps_declare_caches_and_the_plan_gives_its_own_to_the_others() {
    let pool = pool().await;
    let source = r#"
def workflow(ctx):
    rust = Cache(paths=["target", "~/.cargo/registry"], key=["Cargo.lock"], restore_prefixes=["rust-"], name="rust")
    return Plan("p", caches=[Cache(paths="node_modules", key="package-lock.json")], steps=[
        Step.bash("build", "true", caches=[rust]),
        Step.python("py", "print(1)"),
        Step.bash("plain", "true", caches=[]),
        Step.llm("agent", prompt="x"),
        Step.approval("gate"),
    ])
"#;
    let plan = plan_of(&pool, source).await;
    let build = &plan.steps[0].caches;
    assert_eq!(
        build,
        &[Cache {
            name: "rust".into(),
            paths: vec!["target".into(), "~/.cargo/registry".into()],
            key: vec!["Cargo.lock".into()],
            restore_prefixes: vec!["rust-".into()],
        }]
    );
    let py = &plan.steps[1].caches;
    assert_eq!(py.len(), 1);
    assert!(py[0].name.starts_with("node_modules-"), "{py:?}");
    assert_eq!(py[0].key, ["package-lock.json"]);
    assert!(plan.steps[2].caches.is_empty(), "caches=[] declares none");
    assert!(plan.steps[3].caches.is_empty() && plan.steps[4].caches.is_empty());
    let json = plan.canonical_json();
    assert!(
        json.contains(r#""caches":[{"name":"rust","paths":["target","~/.cargo/registry"],"key":["Cargo.lock"],"restore_prefixes":["rust-"]}]"#),
        "{json}"
    );
    // The default name is the same on every evaluation: the plan's hash is too.
    assert_eq!(plan_of(&pool, source).await.hash(), plan.hash());
    let plain = plan_of(&pool, &support::one_step("Step.bash(\"b\", \"true\")")).await;
    assert!(!plain.canonical_json().contains("caches"));
}

#[tokio::test]
async fn a_bad_declaration_fails_on_its_line() {
    for (cache, expected) in [
        (
            "Cache(paths=[\"/etc\"], key=[\"k\"])",
            "path '/etc' must be relative (to the workspace, or to the home with '~/'), never absolute",
        ),
        ("Cache(paths=[\"../x\"], key=[\"k\"])", "must not hold '..'"),
        ("Cache(paths=[\"\"], key=[\"k\"])", "names nothing"),
        ("Cache(paths=[\"t\"], key=[])", "key= must name at least one workspace file"),
        ("Cache(paths=[\"t\"])", "key= is required"),
        ("Cache(key=[\"k\"])", "paths= is required"),
        ("Cache(paths=[\"t\"], key=[\"/etc/passwd\"])", "key file '/etc/passwd' must be relative"),
        ("Cache(paths=[\"t\"], key=[\"k\"], name=\"Rust!\")", "cache name 'Rust!' must be 1 to 40"),
        (
            "Cache(paths=[\"t\"], key=[\"k\"], restore_prefixes=[\"a%\"])",
            "restore prefix 'a%' must be 1 to 200 of A-Z",
        ),
        ("Cache(paths=[\"t\"], key=[\"k\"], size=3)", "unexpected keyword argument 'size'"),
    ] {
        assert_step_problem(&format!("Step.bash(\"b\", \"true\", caches=[{cache}])"), expected)
            .await;
    }
    let many = (0..9)
        .map(|i| format!("Cache(paths=[\"p{i}\"], key=[\"k\"])"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_step_problem(
        &format!("Step.bash(\"b\", \"true\", caches=[{many}])"),
        "at most 8",
    )
    .await;
    assert_step_problem(
        "Step.bash(\"b\", \"true\", caches=[Cache(paths=[\"a\"], key=[\"k\"], name=\"d\"), Cache(paths=[\"b\"], key=[\"k\"], name=\"d\")])",
        "two caches are named 'd'",
    )
    .await;
    assert_step_problem(
        "Step.llm(\"l\", prompt=\"x\", caches=[Cache(paths=[\"t\"], key=[\"k\"])])",
        "caches= goes on a Step.bash or Step.python",
    )
    .await;
    assert_step_problem(
        "Step.bash(\"b\", \"true\", caches=[\"target\"])",
        "caches[0] must be made with Cache(",
    )
    .await;
    let problems = problems_of(
        "def workflow(ctx):\n    return Plan(\"p\", caches=[Cache(paths=[\"~root/x\"], key=[\"k\"])], steps=[])\n",
        "a plan-wide cache",
    )
    .await;
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("w.plue.py:2:") && p.contains("'~/'")),
        "{problems:?}"
    );
}

#[test]
fn validation_refuses_a_plan_whose_caches_no_worker_checked() {
    let mut step = evaluator::plan::Step::bash("b", "true");
    step.caches = vec![Cache {
        name: "x".into(),
        paths: vec!["/root/.ssh".into()],
        key: vec!["../../etc/shadow".into()],
        restore_prefixes: vec!["%".into()],
    }];
    let mut llm = evaluator::plan::Step::new(
        "agent",
        evaluator::plan::Action::Llm(evaluator::plan::LlmAction {
            prompt: Some("x".into()),
            ..Default::default()
        }),
    );
    llm.caches = step.caches.clone();
    let plan = Plan::new("p", vec![step, llm]);
    let found: Vec<String> = evaluator::validate::validate(
        &plan,
        &SourceMap::default(),
        &evaluator::Limits::default(),
        "w.plue.py",
    )
    .iter()
    .map(|d| d.message.clone())
    .collect();
    assert_eq!(
        found,
        [
            "step 'b': cache 'x': path '/root/.ssh' must be relative (to the workspace, or to the home with '~/'), never absolute",
            "step 'b': cache 'x': key file '../../etc/shadow' must not hold '..'",
            "step 'b': cache 'x': restore prefix '%' must be 1 to 200 of A-Z, a-z, 0-9, '.', '_' or '-'",
            "llm step 'agent' takes no caches= (only bash and python steps have caches)",
        ]
    );
}
