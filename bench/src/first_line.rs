//! `plue-bench first-line`: what a user waits on after a push — a real commit pushed with
//! `git push` to a bare repository that `plue serve` mirrors, the signed GitHub push
//! webhook delivered, and the time until the first step's first log line is taken by the
//! runner's log sender (its `ts` in the store), and until it reaches an SSE follower of
//! the step's log.
//!
//! Two pools, each with its runners warm before every push (the benchmark waits until the
//! pool shows them idle): the local pool (`plue serve --runners 2`, one step per runner
//! process, the default) and the Kubernetes pool against `testkit::kube` — a local API
//! server whose simulated kubelet runs each pod's runner container as a process on this
//! machine (`min_warm: 1`). The simulated pool measures the engine's and the runner's
//! path to the first line on a warm pod; no image pull, scheduler or container runtime.
//!
//! Clocks: every timestamp is this machine's wall clock (the bench, the engine and the
//! runners share it); store timestamps have 1 ms resolution. The follower opens its stream
//! as soon as the delivery's answer names the run (the way a dashboard opened on the push
//! does); a line stored before that is sent from the store, so "at the follower" counts
//! whichever comes last.
//!
//! Invariant: each push's run must succeed with the expected line, or the benchmark fails
//! (a figure for a run that printed nothing is no figure).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use testkit::kube::{FakeKube, KubeletConfig};

use crate::server::{Backend, Server};
use crate::stats::{from_ms, ms, percentile, whole_ms};
use crate::webhook::git;
use crate::workdir::Workdir;
use crate::Env;

const SECRET: &str = "webhook-secret-of-the-first-line-benchmark";
const LINE: &str = "first-line";
/// Pushes measured per pool (after [`WARMUP`] unmeasured ones).
const PUSHES: usize = 40;
const WARMUP: usize = 3;
const NAMESPACE: &str = "ci";
/// The image the simulated kubelet maps to the `plue` binary under test.
const IMAGE: &str = "registry.example/plue:bench";

/// Which pool serves the step.
#[derive(Clone, Copy)]
enum Pool {
    Local,
    Kubernetes,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Local => "local pool (2 warm runner processes)",
            Pool::Kubernetes => "Kubernetes pool, simulated (1 warm pod, testkit::kube)",
        }
    }

    /// The goal for delivery → first line at the follower, p99.
    fn goal(self) -> Duration {
        match self {
            Pool::Local => Duration::from_millis(75),
            Pool::Kubernetes => Duration::from_millis(100),
        }
    }

    /// The step's `runner=` argument.
    fn runner_labels(self) -> &'static str {
        match self {
            Pool::Local => "",
            Pool::Kubernetes => ", runner={'size': 'small'}",
        }
    }

    fn warm(self) -> usize {
        match self {
            Pool::Local => 2,
            Pool::Kubernetes => 1,
        }
    }
}

/// One push's figures.
struct Sample {
    push: Duration,
    /// Delivery sent → its answer (the mirror fetched, the workflow evaluated, the run
    /// stored and its step queued).
    answered: Duration,
    /// The step queued (`ready_at`) → the runner took the line (both store timestamps).
    ready_to_taken: Duration,
    /// Delivery sent → the runner's log sender took the line (store `ts`).
    to_taken: Duration,
    /// The runner took the line → the step's end stored (`finished_at`): a step that
    /// prints one line and exits sends it with its completion.
    taken_to_finished: Duration,
    /// Delivery sent → the line event arrived at the follower.
    to_follower: Duration,
    /// `git push` started → the line at the follower.
    push_to_follower: Duration,
}

pub(crate) async fn run(env: &Env) -> Result<()> {
    let mut results = Vec::new();
    for pool in [Pool::Local, Pool::Kubernetes] {
        let samples = measure(env, pool)
            .await
            .with_context(|| format!("first-line on the {}", pool.name()))?;
        results.push((pool, samples));
    }
    println!("## first-line: push → webhook → first log line ({PUSHES} pushes per pool)\n");
    println!(
        "A commit pushed with `git push` to a bare repository `plue serve` mirrors, then the \
         signed push webhook; one workflow, one step `echo {LINE}`; runners warm before each \
         push. Store timestamps have 1 ms resolution.\n"
    );
    println!("| pool | measure | p50 | p99 | max |\n|---|---|---|---|---|");
    for (pool, samples) in &results {
        type Pick = fn(&Sample) -> Duration;
        type Format = fn(Duration) -> String;
        let rows: [(&str, Pick, Format); 7] = [
            ("baseline: `git push` itself", |s| s.push, ms),
            (
                "delivery → answered (mirror fetched, evaluated, run stored, step queued)",
                |s| s.answered,
                ms,
            ),
            (
                "step queued → first line taken by the runner (claim, workspace, spawn, `echo`)",
                |s| s.ready_to_taken,
                whole_ms,
            ),
            (
                "delivery → first line taken by the runner (store `ts`)",
                |s| s.to_taken,
                whole_ms,
            ),
            (
                "first line taken → the step's end stored (the line rides the completion)",
                |s| s.taken_to_finished,
                whole_ms,
            ),
            (
                "delivery → first line at an SSE follower",
                |s| s.to_follower,
                ms,
            ),
            (
                "`git push` started → first line at the follower",
                |s| s.push_to_follower,
                ms,
            ),
        ];
        for (label, pick, format) in rows {
            let mut values: Vec<Duration> = samples.iter().map(pick).collect();
            let p50 = percentile(&mut values, 0.50);
            let p99 = percentile(&mut values, 0.99);
            let max = values[values.len() - 1];
            println!(
                "| {} | {label} | {} | {} | {} |",
                pool.name(),
                format(p50),
                format(p99),
                format(max)
            );
        }
    }
    for (pool, samples) in &results {
        let mut values: Vec<Duration> = samples.iter().map(|s| s.to_follower).collect();
        let p99 = percentile(&mut values, 0.99);
        println!(
            "\n{}: delivery → follower p99 {} (goal ≤ {}: {}).",
            pool.name(),
            ms(p99),
            whole_ms(pool.goal()),
            if p99 <= pool.goal() { "met" } else { "not met" }
        );
    }
    println!();
    Ok(())
}

async fn measure(env: &Env, pool: Pool) -> Result<Vec<Sample>> {
    let work = Workdir::new("plue-bench-first-line-")?;
    let repo = match pool {
        Pool::Local => "bench/first-line-local",
        Pool::Kubernetes => "bench/first-line-kube",
    };
    let bare = work.fresh("origin.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "-q", "--bare", "-b", "main", "."])?;
    let clone = work.fresh("clone");
    make_clone(&clone, &bare, pool)?;

    // The fake cluster of the Kubernetes pool outlives the server.
    let (cluster, server) = match pool {
        Pool::Local => {
            let server = Server::start(env, &work, &Backend::Sqlite, pool.warm()).await?;
            (None, server)
        }
        Pool::Kubernetes => {
            let (cluster, server) = kubernetes_server(env, &work).await?;
            (Some(cluster), server)
        }
    };
    server.register_github_repo(repo, &bare, SECRET).await?;

    let mut samples = Vec::with_capacity(PUSHES);
    for n in 0..WARMUP + PUSHES {
        server.wait_warm(pool.warm()).await?;
        let sample = push_once(&server, repo, &clone, n).await?;
        if n >= WARMUP {
            samples.push(sample);
        }
    }
    server.stop().await;
    drop(cluster);
    Ok(samples)
}

/// A clone of `bare` with the one workflow file, pushed once.
fn make_clone(clone: &Path, bare: &Path, pool: Pool) -> Result<()> {
    std::fs::create_dir_all(clone.join(".plue"))?;
    let source = format!(
        "def workflow(ctx):\n    return Plan(name='first-line', triggers=[Trigger.on_push(branch='main')],\n        \
         steps=[Step.bash('hello', 'echo {LINE}'{labels})])\n",
        labels = pool.runner_labels()
    );
    std::fs::write(clone.join(".plue/first.plue.py"), source)?;
    std::fs::write(clone.join("README"), "pushed by plue-bench first-line\n")?;
    git(clone, &["init", "-q", "-b", "main", "."])?;
    git(clone, &["add", "-A"])?;
    git(clone, &["commit", "-qm", "init"])?;
    let bare = bare.to_str().context("UTF-8 path")?;
    git(clone, &["remote", "add", "origin", bare])?;
    git(clone, &["push", "-q", "origin", "main"])?;
    Ok(())
}

/// `plue serve --pool kubernetes` against a fresh fake API server whose kubelet runs the
/// `plue` binary as the runner container.
async fn kubernetes_server(env: &Env, work: &Workdir) -> Result<(FakeKube, Server)> {
    let mut kube = FakeKube::start()?;
    let kubeconfig = work.fresh("kubeconfig");
    kube.kubeconfig(&kubeconfig, NAMESPACE)?;
    kube.attach_kubelet(KubeletConfig {
        images: HashMap::from([(IMAGE.to_string(), env.plue.clone())]),
        base_env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ],
    })?;
    // The pool configuration names the engine's URL, so the port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = format!(
        "kubernetes:\n  namespace: {NAMESPACE}\n  engine_url: http://{listen}\n  start_timeout: 20s\n\
         classes:\n  - name: small\n    labels: {{size: small}}\n    min_warm: 1\n    max_runners: 2\n    idle_timeout: 600s\n\
         \x20   template:\n      spec:\n        containers: [{{name: runner, image: \"{IMAGE}\"}}]\n"
    );
    let config_file = work.fresh("pool.yaml");
    std::fs::write(&config_file, config)?;
    let config_file = config_file.to_str().context("UTF-8 path")?.to_string();
    let kubeconfig_text = kubeconfig.to_str().context("UTF-8 path")?.to_string();
    let server = Server::start_with(
        env,
        work,
        &Backend::Sqlite,
        0,
        &[
            "--listen",
            &listen,
            "--pool",
            "kubernetes",
            "--pool-config",
            &config_file,
        ],
        &[("KUBECONFIG", &kubeconfig_text)],
    )
    .await?;
    Ok((kube, server))
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One measured push: commit, `git push`, delivery, follower, run checked.
async fn push_once(server: &Server, repo: &str, clone: &Path, n: usize) -> Result<Sample> {
    let before = git(clone, &["rev-parse", "HEAD"])?;
    std::fs::write(clone.join("changing.txt"), format!("{n}\n"))?;
    git(clone, &["add", "-A"])?;
    git(clone, &["commit", "-qm", &format!("change {n}")])?;
    let after = git(clone, &["rev-parse", "HEAD"])?;

    let pushed_at = Instant::now();
    git(clone, &["push", "-q", "origin", "main"])?;
    let push = pushed_at.elapsed();

    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "repository": {"full_name": repo, "default_branch": "main", "name": repo},
        "commits": [{"id": after, "added": [], "removed": [], "modified": ["changing.txt"]}],
        "head_commit": {"id": after},
    }))?;
    let signature = plue_forge::signature::sign(&body, SECRET);
    let delivered_ms = epoch_ms();
    let delivered_at = Instant::now();
    let response = server
        .client()
        .post(format!("{}/webhooks/github", server.url()))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", format!("first-line-{n}"))
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let answered = delivered_at.elapsed();
    if !status.is_success() {
        bail!("delivery {n}: {status}: {answer}");
    }
    let Some(&[run_id]) = answer["runs"]
        .as_array()
        .map(|runs| runs.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
        .as_deref()
    else {
        bail!("delivery {n} should start exactly one run: {answer}");
    };

    let mut at_follower = None;
    server
        .follow_lines(run_id, "hello", |line| {
            if at_follower.is_none() {
                at_follower = Some(delivered_at.elapsed());
                if line["text"] != LINE {
                    bail!("the first line is {line}, not {LINE:?}");
                }
            }
            Ok(())
        })
        .await?;
    let to_follower = at_follower.context("the follower got no line")?;
    let push_to_follower = delivered_at.duration_since(pushed_at) + to_follower;
    server.wait_run(run_id).await?;

    let store = server.store();
    let step = store
        .step_runs(run_id)
        .await?
        .into_iter()
        .find(|s| s.step_id == "hello")
        .context("the run has no step 'hello'")?;
    let first = store.read_logs(step.id, (0, 0), 1).await?;
    let first = first.first().context("the step stored no line")?;
    let ready = step.ready_at.context("the step has no ready_at")?;
    let finished = step.finished_at.context("the step has no finished_at")?;
    Ok(Sample {
        push,
        answered,
        ready_to_taken: from_ms(first.ts - ready),
        to_taken: from_ms(first.ts - delivered_ms),
        taken_to_finished: from_ms(finished - first.ts),
        to_follower,
        push_to_follower,
    })
}
