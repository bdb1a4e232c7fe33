//! `use(...)`: modules of other repositories, fetched by the parent through a
//! `ModuleFetcher` (here an in-memory one) and evaluated in the workflow's sandbox.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;

use evaluator::modules::lock::{LockEntry, LockFile};
use evaluator::modules::{ModuleFetcher, Modules, UsedModule};
use evaluator::{EvalContext, EvalError, EvaluatedPlan, Event};
use futures::future::BoxFuture;

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

const RUST: &str = r#"
def cargo_test(features: list[str] = [], release: bool = False, token: str | None = None):
    flags = " ".join(["--features=" + f for f in features])
    if release:
        flags = flags + " --release"
    secrets = [token] if token else []
    cache = Cache(paths=["target"], key=["Cargo.lock"])
    return Step.bash("cargo-test", "cargo test " + flags, secrets=secrets, caches=[cache])

def _helper():
    return 1
"#;

/// Files by (repository, path, commit); refs by (repository, ref).
#[derive(Default)]
struct Memory {
    files: BTreeMap<(String, String, String), String>,
    refs: BTreeMap<(String, String), String>,
    fetched: Mutex<Vec<String>>,
}

impl Memory {
    fn with(mut self, repository: &str, path: &str, commit: &str, source: &str) -> Self {
        self.files.insert(
            (repository.into(), path.into(), commit.into()),
            source.into(),
        );
        self
    }
}

impl ModuleFetcher for Memory {
    fn fetch<'a>(
        &'a self,
        repository: &'a str,
        path: &'a str,
        commit: &'a str,
        _max_bytes: usize,
    ) -> BoxFuture<'a, Result<String, String>> {
        self.fetched
            .lock()
            .unwrap()
            .push(format!("{repository}/{path}@{commit}"));
        let found = self
            .files
            .get(&(repository.into(), path.into(), commit.into()))
            .cloned()
            .ok_or_else(|| format!("{path} is not at {commit}"));
        Box::pin(async move { found })
    }

    fn resolve<'a>(
        &'a self,
        repository: &'a str,
        git_ref: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        let found = self
            .refs
            .get(&(repository.into(), git_ref.into()))
            .cloned()
            .ok_or_else(|| format!("no ref {git_ref}"));
        Box::pin(async move { found })
    }
}

fn workflow(uses: &str, call: &str) -> String {
    format!("steps = {uses}\n\ndef workflow(ctx):\n    return Plan(\"p\", steps=[{call}])\n")
}

async fn evaluate(
    source: &str,
    fetcher: &Memory,
    lock: Option<&LockFile>,
) -> Result<EvaluatedPlan, EvalError> {
    let pool = support::pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let modules = Modules {
        lock,
        fetcher: Some(fetcher),
        resolve_refs: false,
    };
    pool.evaluate_with("w.plue.py", source, &ctx, modules).await
}

fn refused(outcome: Result<EvaluatedPlan, EvalError>) -> String {
    match outcome {
        Err(EvalError::Invalid(problems)) => problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(plan) => panic!("accepted: {}", plan.canonical_json),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn a_module_pinned_by_commit_builds_steps_and_is_in_the_plan_and_its_hash() {
    let fetcher = Memory::default().with("acme/steps", "rust.plue.py", C1, RUST);
    let source = workflow(
        &format!("use(\"acme/steps\", \"rust.plue.py\", commit=\"{C1}\")"),
        "steps.cargo_test(features=[\"x\"], release=True)",
    );
    let evaluated = evaluate(&source, &fetcher, None).await.unwrap();
    let step = &evaluated.plan.steps[0];
    assert_eq!(step.id, "cargo-test");
    assert_eq!(step.caches.len(), 1, "a module builds cached steps too");
    assert!(evaluated
        .canonical_json
        .contains("cargo test --features=x --release"));
    assert_eq!(
        evaluated.plan.modules,
        vec![UsedModule {
            repository: "acme/steps".into(),
            path: "rust.plue.py".into(),
            git_ref: None,
            commit: C1.into(),
        }]
    );
    assert!(
        evaluated.canonical_json.contains(C1),
        "the commit is hashed"
    );
    assert_eq!(fetcher.fetched.lock().unwrap().len(), 1);
    // The same module at another commit is another plan.
    let fetcher = Memory::default().with("acme/steps", "rust.plue.py", C2, RUST);
    let other = evaluate(&source.replace(C1, C2), &fetcher, None)
        .await
        .unwrap();
    assert_ne!(other.plan_hash, evaluated.plan_hash);
}

#[tokio::test]
async fn a_ref_uses_the_locked_commit_and_an_unlocked_or_unpinned_use_is_refused() {
    let fetcher = Memory::default().with("acme/steps", "rust.plue.py", C2, RUST);
    let lock = LockFile::of(vec![LockEntry {
        repository: "acme/steps".into(),
        path: "rust.plue.py".into(),
        git_ref: "v1".into(),
        commit: C2.into(),
    }]);
    let by_ref = workflow(
        "use(\"acme/steps\", \"rust.plue.py\", ref=\"v1\")",
        "steps.cargo_test()",
    );
    let evaluated = evaluate(&by_ref, &fetcher, Some(&lock)).await.unwrap();
    assert_eq!(evaluated.plan.modules[0].commit, C2);
    assert_eq!(evaluated.plan.modules[0].git_ref.as_deref(), Some("v1"));

    let unlocked = refused(evaluate(&by_ref.replace("v1", "v2"), &fetcher, Some(&lock)).await);
    assert!(
        unlocked.contains(
            "use(\"acme/steps\", \"rust.plue.py\", ref=\"v2\"): not in .plue/lock.json — run 'plue lock' to pin it"
        ),
        "{unlocked}"
    );
    assert!(unlocked.starts_with("w.plue.py:1:"), "{unlocked}");
    let unpinned = workflow(
        "use(\"acme/steps\", \"rust.plue.py\")",
        "steps.cargo_test()",
    );
    let message = refused(evaluate(&unpinned, &fetcher, Some(&lock)).await);
    assert!(message.contains("unpinned"), "{message}");
    let short = workflow(
        "use(\"acme/steps\", \"rust.plue.py\", commit=\"main\")",
        "steps.cargo_test()",
    );
    let message = refused(evaluate(&short, &fetcher, Some(&lock)).await);
    assert!(message.contains("not a full commit"), "{message}");
    assert!(
        fetcher.fetched.lock().unwrap().len() == 1,
        "only the locked commit was fetched"
    );
}

#[tokio::test]
async fn parameters_are_typed_and_named() {
    let fetcher = Memory::default().with("acme/steps", "rust.plue.py", C1, RUST);
    let uses = format!("use(\"acme/steps\", \"rust.plue.py\", commit=\"{C1}\")");
    let wrong_type = refused(
        evaluate(
            &workflow(&uses, "steps.cargo_test(features=\"x\")"),
            &fetcher,
            None,
        )
        .await,
    );
    assert!(
        wrong_type.contains("acme/steps/rust.plue.py@111111111111: cargo_test(): parameter 'features' must be list[str], got str"),
        "{wrong_type}"
    );
    assert!(wrong_type.starts_with("w.plue.py:4:"), "{wrong_type}");
    let unknown = refused(
        evaluate(
            &workflow(&uses, "steps.cargo_test(featurs=[])"),
            &fetcher,
            None,
        )
        .await,
    );
    assert!(
        unknown.contains("cargo_test() has no parameter 'featurs'"),
        "{unknown}"
    );
    let missing = refused(evaluate(&workflow(&uses, "steps.cargo_tset()"), &fetcher, None).await);
    assert!(
        missing.contains("has no function 'cargo_tset' (did you mean 'cargo_test'?)"),
        "{missing}"
    );
    let private = refused(evaluate(&workflow(&uses, "steps._helper()"), &fetcher, None).await);
    assert!(private.contains("'_helper' is not allowed"), "{private}");
}

/// Arguments bind as Python binds them (the worker reads a function's parameters from its
/// code object, not through `inspect`): positional, keyword-only and positional-only
/// parameters, defaults, and each binding mistake named as `inspect` names it.
#[tokio::test]
async fn arguments_bind_as_python_binds_them() {
    let module = "def build(name: str, /, level: int, *, fast: bool = False, note: str | None = None):\n    return Step.bash(name, \"echo \" + str(level) + (\" fast\" if fast else \"\"))\n";
    let fetcher = Memory::default().with("acme/steps", "b.plue.py", C1, module);
    let uses = format!("use(\"acme/steps\", \"b.plue.py\", commit=\"{C1}\")");
    let bound = evaluate(
        &workflow(&uses, "steps.build(\"b\", 2, fast=True)"),
        &fetcher,
        None,
    )
    .await;
    let plan = bound.expect("a call that binds evaluates");
    assert_eq!(plan.plan.steps[0].id, "b");
    for (call, wanted) in [
        (
            "steps.build(\"b\", 2, True)",
            "build(): too many positional arguments",
        ),
        (
            "steps.build(\"b\")",
            "build(): missing a required argument: 'level'",
        ),
        (
            "steps.build(\"b\", 2, level=3)",
            "build(): multiple values for argument 'level'",
        ),
        (
            "steps.build(name=\"b\", level=2)",
            "build(): 'name' parameter is positional only, but was passed as a keyword",
        ),
        (
            "steps.build(\"b\", \"2\")",
            "build(): parameter 'level' must be int, got str",
        ),
        (
            "steps.build(\"b\", 2, fast=1)",
            "build(): parameter 'fast' must be bool, got int",
        ),
    ] {
        let message = refused(evaluate(&workflow(&uses, call), &fetcher, None).await);
        assert!(message.contains(wanted), "{call}: {message}");
    }
    let varargs = "def build(*names: str):\n    return []\n";
    let fetcher = Memory::default().with("acme/steps", "b.plue.py", C1, varargs);
    let message = refused(evaluate(&workflow(&uses, "steps.build(\"b\")"), &fetcher, None).await);
    assert!(
        message.contains("build(): *args and **kwargs are not allowed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_module_names_only_the_secrets_its_caller_passes() {
    let module = "def deploy(target: str):\n    return Step.bash(\"deploy\", \"./deploy \" + target, secrets=[\"NPM_TOKEN\"])\n";
    let fetcher = Memory::default()
        .with("acme/steps", "deploy.plue.py", C1, module)
        .with("acme/steps", "rust.plue.py", C1, RUST);
    let uses = format!("use(\"acme/steps\", \"deploy.plue.py\", commit=\"{C1}\")");
    let message =
        refused(evaluate(&workflow(&uses, "steps.deploy(\"prod\")"), &fetcher, None).await);
    assert!(
        message.contains(
            "deploy() built step 'deploy' naming secret 'NPM_TOKEN', which the caller did not pass"
        ),
        "{message}"
    );
    // Passed in, it is the caller's choice.
    let rust = format!("use(\"acme/steps\", \"rust.plue.py\", commit=\"{C1}\")");
    let evaluated = evaluate(
        &workflow(&rust, "steps.cargo_test(token=\"CARGO_TOKEN\")"),
        &fetcher,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        evaluated.plan.steps[0].secrets,
        vec!["CARGO_TOKEN".to_string()]
    );
    // The module sees no ctx and no secret value: only what it is passed.
    let peeking = "def peek(x: str):\n    return Step.bash(\"p\", \"echo \" + str(ctx))\n";
    let fetcher = Memory::default().with("acme/steps", "peek.plue.py", C1, peeking);
    let uses = format!("use(\"acme/steps\", \"peek.plue.py\", commit=\"{C1}\")");
    let message = refused(evaluate(&workflow(&uses, "steps.peek(\"a\")"), &fetcher, None).await);
    assert!(
        message.contains("NameError: name 'ctx' is not defined"),
        "{message}"
    );
    assert!(
        message.contains("peek.plue.py@111111111111 line 2"),
        "{message}"
    );
}

// A token is signed for the calling repository's run: a module's step holding one would
// carry that repository's identity wherever the module's code sends it.
#[tokio::test]
async fn a_module_step_declares_no_id_tokens() {
    let module = "def deploy(target: str, audience: str):\n    return Step.bash(\"deploy\", \"./deploy \" + target, id_tokens={\"AWS_ID_TOKEN\": audience})\n";
    let fetcher = Memory::default().with("acme/steps", "deploy.plue.py", C1, module);
    let uses = format!("use(\"acme/steps\", \"deploy.plue.py\", commit=\"{C1}\")");
    // Refused even when the caller passes the audience: the identity is the caller's.
    let message = refused(
        evaluate(
            &workflow(&uses, "steps.deploy(\"prod\", \"sts.amazonaws.com\")"),
            &fetcher,
            None,
        )
        .await,
    );
    assert!(
        message.contains(
            "deploy() built step 'deploy' declaring id_tokens ('AWS_ID_TOKEN'); a used module's \
             step may not: its token would carry the calling repository's identity, so only the \
             calling workflow declares id_tokens"
        ),
        "{message}"
    );
    // The calling workflow's own step may.
    let own =
        "Step.bash(\"deploy\", \"./deploy\", id_tokens={\"AWS_ID_TOKEN\": \"sts.amazonaws.com\"})";
    let evaluated = evaluate(&workflow(&uses, own), &fetcher, None)
        .await
        .unwrap();
    assert_eq!(evaluated.plan.steps[0].id_tokens.len(), 1);
}

#[tokio::test]
async fn a_module_is_held_by_the_sandbox_and_uses_nothing_itself() {
    let cases = [
        ("import socket\ndef f(x: str):\n    return Step.bash(\"a\", x)\n", "import of 'socket' is not allowed"),
        ("def f(x: str):\n    return Step.bash(\"a\", open(\"/etc/passwd\").read())\n", "forbidden name 'open'"),
        (
            "def f(x: str):\n    return Step.bash(\"a\", x.__class__.__name__)\n",
            "access to attribute '__",
        ),
        (
            &format!("other = use(\"acme/steps\", \"rust.plue.py\", commit=\"{C1}\")\ndef f(x: str):\n    return Step.bash(\"a\", x)\n"),
            "a used module may not use another module",
        ),
        ("def f(x):\n    return Step.bash(\"a\", x)\n", "parameter 'x' has no type"),
        ("def f(x: str):\n    return {\"a\": x}\n", "must return a Step or a list of Steps, got dict"),
    ];
    for (module, expected) in cases {
        let fetcher = Memory::default()
            .with("acme/evil", "m.plue.py", C1, module)
            .with("acme/steps", "rust.plue.py", C1, RUST);
        let uses = format!("use(\"acme/evil\", \"m.plue.py\", commit=\"{C1}\")");
        let message = refused(
            evaluate(
                &workflow(&uses, "m.f(\"a\")".replace("m.", "steps.").as_str()),
                &fetcher,
                None,
            )
            .await,
        );
        assert!(message.contains(expected), "{module}: {message}");
        assert_eq!(
            fetcher.fetched.lock().unwrap().len(),
            1,
            "{module}: nothing else fetched"
        );
    }
}

#[tokio::test]
async fn without_a_fetcher_a_use_is_refused() {
    let pool = support::pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let source = workflow(
        &format!("use(\"acme/steps\", \"rust.plue.py\", commit=\"{C1}\")"),
        "steps.cargo_test()",
    );
    let message = refused(pool.evaluate("w.plue.py", &source, &ctx).await);
    assert!(message.contains("cannot fetch modules"), "{message}");
}

#[tokio::test]
async fn plue_lock_mode_resolves_refs_once() {
    let mut fetcher = Memory::default().with("acme/steps", "rust.plue.py", C2, RUST);
    fetcher
        .refs
        .insert(("acme/steps".into(), "v1".into()), C2.into());
    let pool = support::pool().await;
    let ctx = EvalContext::local(Event::Push, "main");
    let source = workflow(
        "use(\"acme/steps\", \"rust.plue.py\", ref=\"v1\")",
        "steps.cargo_test()",
    );
    let modules = Modules {
        lock: None,
        fetcher: Some(&fetcher),
        resolve_refs: true,
    };
    let evaluated = pool
        .evaluate_with("w.plue.py", &source, &ctx, modules)
        .await
        .unwrap();
    assert_eq!(evaluated.plan.modules[0].git_ref.as_deref(), Some("v1"));
    assert_eq!(evaluated.plan.modules[0].commit, C2);
}
