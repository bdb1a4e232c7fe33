//! The sandbox through its real path: the warm pool driving real worker processes.
//!
//! - every file of the attack corpus (`tests/attacks/`, see its README) fails with the
//!   message of its category, within the time bound, with no file written and no
//!   environment read, and the pool still serves a valid file afterwards;
//! - layer (b) on its own: a worker in probe mode runs *unrestricted* Python after lock-down,
//!   and every forbidden operation must fail;
//! - a `print` can never pass for a result; a timed-out worker is replaced.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evaluator::{EvalContext, EvalError, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

const CANARY: &str = "canary-7f1c2e9a-do-not-leak";
const PWNED: &str = "/tmp/plue-attack-pwned";

fn worker() -> WorkerCommand {
    WorkerCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_plue-eval-worker")),
        args: vec![],
    }
}

async fn pool(workers: usize) -> EvaluatorPool {
    EvaluatorPool::start(PoolConfig {
        workers,
        command: worker(),
        limits: Limits::default(),
    })
    .await
    .expect("pool starts")
}

fn ctx() -> EvalContext {
    EvalContext::local(Event::Push, "main")
}

const VALID: &str = r#"
def workflow(ctx):
    return Plan(name="ok", triggers=[Trigger.on_push(branch="main")],
                steps=[Step.bash("a", "true"), Step.bash("b", "true", depends_on=["a"])])
"#;

/// The `# expect:` category of an attack file.
fn category(source: &str) -> &str {
    source
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .map(str::trim)
        .expect("every attack declares '# expect:'")
}

fn message_fits(category: &str, message: &str) -> bool {
    match category {
        "forbidden" => message.contains("not allowed") || message.contains("forbidden name"),
        "import" => {
            message.contains("import")
                && (message.contains("not allowed") || message.contains("cannot import"))
        }
        "timeout" => message.contains("timed out after 2s"),
        "memory" => message.contains("memory limit of 256 MiB"),
        "recursion" => message.contains("recursion depth") || message.contains("nested too deeply"),
        "limit" => message.contains("limit") || message.contains("nested more than"),
        "error" => {
            message.contains("Error")
                || message.contains("must return a Plan")
                || message.contains("not allowed")
        }
        "unclean" => {
            message.contains("control character")
                || message.contains("NUL")
                || message.contains("bidirectional")
                || message.contains("invalid runner label")
        }
        "reserved" => message.contains("never from a workflow"),
        "capped" => message.ends_with("more problems"),
        other => panic!("unknown category {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_fails_cleanly_in_time_and_leaves_no_trace() {
    // The parent has a secret in its environment; no attack may see it.
    std::env::set_var("PLUE_ATTACK_CANARY", CANARY);
    let _ = std::fs::remove_file(PWNED);
    let pool = pool(2).await;
    let files = support::attack_files("");
    assert!(files.len() >= 40, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let expected = category(&source);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let started = Instant::now();
        let outcome = pool.evaluate(&name, &source, &ctx()).await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(plan) => failures.push(format!(
                "{name}: evaluated to a plan: {}",
                plan.canonical_json
            )),
            Err(EvalError::Unavailable(e)) => {
                failures.push(format!("{name}: pool unavailable: {e}"))
            }
            Err(EvalError::Invalid(problems)) => {
                let text = problems
                    .iter()
                    .map(|p| format!("{p}\n{}", p.detail.clone().unwrap_or_default()))
                    .collect::<String>();
                if !problems.iter().any(|p| message_fits(expected, &p.message)) {
                    failures.push(format!(
                        "{name}: expected a '{expected}' failure, got: {text}"
                    ));
                }
                if !problems.iter().all(|p| p.path == name) {
                    failures.push(format!("{name}: diagnostics must name the file: {text}"));
                }
                if text.contains(CANARY) {
                    failures.push(format!("{name}: leaked the environment"));
                }
                if text.contains("internal evaluator error") {
                    failures.push(format!("{name}: an internal error: {text}"));
                }
                if text.contains("/python3") || text.contains("/lib/python") {
                    failures.push(format!("{name}: a host path reached the message: {text}"));
                }
                if problems.len() > evaluator::validate::MAX_DIAGNOSTICS {
                    failures.push(format!("{name}: {} diagnostics", problems.len()));
                }
                for problem in &problems {
                    let line = problem.to_string();
                    if line
                        .chars()
                        .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))
                    {
                        failures.push(format!("{name}: a message is not one clean line: {line:?}"));
                    }
                    let detail = problem.detail.clone().unwrap_or_default();
                    if detail.chars().any(|c| c.is_control() && c != '\n') {
                        failures.push(format!("{name}: a detail is not clean: {detail:?}"));
                    }
                }
            }
        }
        // 2 s bound, plus the kill and scheduling on a loaded 2-core machine.
        if elapsed > Duration::from_millis(2600) {
            failures.push(format!("{name}: took {elapsed:?}"));
        }
        if Path::new(PWNED).exists() {
            failures.push(format!("{name}: wrote {PWNED}"));
            let _ = std::fs::remove_file(PWNED);
        }
        // The pool still serves.
        let after = pool.evaluate("valid.plue.py", VALID, &ctx()).await;
        if let Err(e) = after {
            failures.push(format!("{name}: the pool stopped serving: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks misbehaved:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    let stats = pool.stats();
    assert!(stats.timeouts >= 6, "timeouts counted: {stats:?}");
    assert_eq!(
        (stats.workers_started, stats.workers_killed),
        (2, 0),
        "every attack costs only its own child, never a zygote: {stats:?}"
    );
}

#[tokio::test]
async fn a_timeout_stops_near_two_seconds_and_the_zygote_keeps_serving() {
    let pool = pool(1).await;
    let started = Instant::now();
    let outcome = pool
        .evaluate(
            "loop.plue.py",
            "def workflow():\n    while True:\n        pass\n",
            &ctx(),
        )
        .await;
    let elapsed = started.elapsed();
    let Err(EvalError::Invalid(problems)) = outcome else {
        panic!("a loop must fail")
    };
    assert!(
        problems[0].message.contains("timed out after 2s"),
        "{}",
        problems[0]
    );
    assert!(
        elapsed >= Duration::from_millis(1950) && elapsed <= Duration::from_millis(2400),
        "stopped after {elapsed:?}"
    );
    let plan = pool
        .evaluate("valid.plue.py", VALID, &ctx())
        .await
        .expect("the same zygote serves");
    assert_eq!(plan.plan.steps.len(), 2);
    let stats = pool.stats();
    assert!(
        stats.workers_started == 1 && stats.workers_killed == 0 && stats.timeouts == 1,
        "the zygote killed its child, not itself: {stats:?}"
    );
}

// regression: a print() in a workflow must never be read as a result frame.
#[tokio::test]
async fn printed_bytes_that_look_like_a_frame_are_not_a_result() {
    let pool = pool(1).await;
    let fake = r#"{"type":"plan","plan":{"name":"spoofed","triggers":[],"env":{},"steps":[]},"source_map":{"plan":{"line":1,"col":1},"triggers":[],"steps":[]},"output":"","retire":false}"#;
    let source = format!(
        "FAKE = {fake:?}\ndef workflow():\n    print(chr(0) + chr(0) + chr(0) + chr(len(FAKE)) + FAKE, end='')\n    print(FAKE)\n    return Plan(name='real', steps=[Step.bash('a', 'true')])\n"
    );
    let plan = pool
        .evaluate("spoof.plue.py", &source, &ctx())
        .await
        .expect("evaluates");
    assert_eq!(plan.plan.name, "real");
    assert!(
        plan.output.contains("spoofed"),
        "the print is captured as output, not as a result"
    );
    assert!(
        !plan.output.chars().any(|c| c.is_control() && c != '\n'),
        "printed control characters are escaped: {:?}",
        plan.output
    );
    // And the next evaluation is not confused by anything left over.
    assert_eq!(
        pool.evaluate("valid.plue.py", VALID, &ctx())
            .await
            .unwrap()
            .plan
            .name,
        "ok"
    );
}

#[tokio::test]
async fn a_file_over_the_source_bound_is_refused_before_any_worker_sees_it() {
    let pool = pool(1).await;
    let source = format!(
        "# {}\ndef workflow():\n    return Plan(name='x')\n",
        "x".repeat(300 * 1024)
    );
    let Err(EvalError::Invalid(problems)) = pool.evaluate("big.plue.py", &source, &ctx()).await
    else {
        panic!("must fail")
    };
    assert!(
        problems[0]
            .to_string()
            .starts_with("big.plue.py: the file is"),
        "{}",
        problems[0]
    );
    assert!(problems[0].message.ends_with("the limit is 256 KiB"));
}

#[tokio::test]
async fn state_does_not_leak_between_evaluations_in_one_worker() {
    let pool = pool(1).await;
    let first = "import json\nCACHE = []\ndef workflow():\n    CACHE.append(1)\n    return Plan(name=str(len(CACHE)))\n";
    for _ in 0..3 {
        assert_eq!(
            pool.evaluate("a.plue.py", first, &ctx())
                .await
                .unwrap()
                .plan
                .name,
            "1"
        );
    }
    assert_eq!(
        pool.stats().workers_started,
        1,
        "the same warm worker served all three"
    );
}

#[test]
fn layer_b_alone_stops_what_unrestricted_python_tries() {
    let _ = std::fs::remove_file("/tmp/plue-probe-pwned");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plue-eval-worker"))
        .arg("--probe-lockdown")
        .env("PLUE_ATTACK_CANARY", CANARY)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the worker runs");
    assert!(
        output.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let frame = &output.stdout[4..];
    let report: String = serde_json::from_slice(frame).expect("a frame with the report");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["environment"],
        serde_json::json!([]),
        "the environment is empty"
    );
    assert_eq!(report["cwd"], "/");
    for check in [
        "socket",
        "connect",
        "write_file",
        "append_file",
        "mkdir",
        "fork",
        "exec",
        "kill_parent",
        "load_extension_module",
        "big_allocation",
        "read_file",
    ] {
        let result = report[check].as_str().unwrap_or("missing");
        assert!(result.starts_with("blocked"), "{check}: {result}");
    }
    assert!(!Path::new("/tmp/plue-probe-pwned").exists());
}

/// `--help` answers with what the worker is, and starts nothing (no interpreter, no lock-down).
#[test]
fn the_worker_answers_help_without_starting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_plue-eval-worker"))
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the worker runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("usage: plue-eval-worker"), "{stdout}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
