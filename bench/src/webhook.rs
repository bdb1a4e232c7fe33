//! `webhook`: a signed GitHub push delivery → its runs queued (the answer of
//! `POST /webhooks/github`, which returns once the runs are stored), for a repository with
//! five workflow files at a new commit — the mirror's fetch and five evaluations included.
//! Baseline in the same run: a bare `git fetch` of the same commit into a bare repository
//! that already holds the previous ones (what the mirror does, without Plue around it).
//! Then sustained deliveries per second with four deliveries in flight.
//!
//! Each iteration makes a new commit in the origin; the webhook and the baseline fetch
//! alternate which goes first, so neither always finds the origin's files in the cache.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::server::{Backend, Server};
use crate::stats::{ms, percentile};
use crate::workdir::Workdir;
use crate::Env;

const REPO: &str = "bench/hello";
const SECRET: &str = "webhook-secret-of-the-benchmark";
const ITERATIONS: usize = 60;
const SUSTAINED: usize = 40;
const IN_FLIGHT: usize = 4;
const WORKFLOWS: usize = 5;

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An origin with five workflow files (each starting on pushes to main) and some code.
fn make_origin(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join(".plue"))?;
    std::fs::create_dir_all(dir.join("src"))?;
    for i in 0..WORKFLOWS {
        let source = format!(
            "def workflow(ctx):\n    return Plan(name='wf{i}', triggers=[Trigger.on_push(branch='main')],\n        steps=[Step.bash('a', 'echo {i}'), Step.bash('b', 'echo b', depends_on=['a'])])\n"
        );
        std::fs::write(dir.join(format!(".plue/wf{i}.plue.py")), source)?;
    }
    for i in 0..200 {
        std::fs::write(
            dir.join(format!("src/file{i}.txt")),
            format!("{i}\n").repeat(50),
        )?;
    }
    git(dir, &["init", "-q", "-b", "main", "."])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-qm", "init"])?;
    Ok(())
}

/// A new commit on main touching one file; returns (before, after).
fn new_commit(dir: &Path, n: usize) -> Result<(String, String)> {
    let before = git(dir, &["rev-parse", "HEAD"])?;
    std::fs::write(dir.join("src/changing.txt"), format!("{n}\n"))?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-qm", &format!("change {n}")])?;
    Ok((before, git(dir, &["rev-parse", "HEAD"])?))
}

fn push_body(before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "repository": {"full_name": REPO, "default_branch": "main", "name": "hello"},
        "commits": [{"id": after, "added": [], "removed": [], "modified": ["src/changing.txt"]}],
        "head_commit": {"id": after},
    }))
    .expect("a JSON body")
}

async fn deliver(server: &Server, id: String, body: Vec<u8>) -> Result<usize> {
    let signature = plue_forge::signature::sign(&body, SECRET);
    let response = server
        .client()
        .post(format!("{}/webhooks/github", server.url()))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", &id)
        .header("X-Hub-Signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("delivery {id}: {status}: {answer}");
    }
    let runs = answer["runs"].as_array().map_or(0, Vec::len);
    if runs != WORKFLOWS {
        bail!("delivery {id} started {runs} runs, expected {WORKFLOWS}: {answer}");
    }
    Ok(runs)
}

fn timed_fetch(bare: &Path, origin: &Path, sha: &str) -> Result<Duration> {
    let start = Instant::now();
    let origin = origin.to_str().context("UTF-8 path")?;
    git(bare, &["fetch", "-q", "--no-tags", "--", origin, sha])?;
    Ok(start.elapsed())
}

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-webhook")?;
    let origin = work.fresh("origin");
    make_origin(&origin)?;
    let bare = work.fresh("baseline.git");
    std::fs::create_dir_all(&bare)?;
    git(&bare, &["init", "-q", "--bare", "."])?;
    let server = Server::start(env, &work, &Backend::Sqlite, 0).await?;
    server.register_github_repo(REPO, &origin, SECRET).await?;
    // Warm up both paths (the first fetch copies the whole history).
    for n in 0..3 {
        let (before, after) = new_commit(&origin, n)?;
        deliver(&server, format!("warm-{n}"), push_body(&before, &after)).await?;
        timed_fetch(&bare, &origin, &after)?;
    }

    let mut webhook = Vec::with_capacity(ITERATIONS);
    let mut fetch = Vec::with_capacity(ITERATIONS);
    for n in 0..ITERATIONS {
        let (before, after) = new_commit(&origin, 100 + n)?;
        let body = push_body(&before, &after);
        let deliver_once = async {
            let start = Instant::now();
            deliver(&server, format!("d-{n}"), body.clone()).await?;
            Ok::<_, anyhow::Error>(start.elapsed())
        };
        if n % 2 == 0 {
            webhook.push(deliver_once.await?);
            fetch.push(timed_fetch(&bare, &origin, &after)?);
        } else {
            fetch.push(timed_fetch(&bare, &origin, &after)?);
            webhook.push(deliver_once.await?);
        }
    }

    // Sustained: commits made first, then delivered four at a time.
    let mut bodies = Vec::with_capacity(SUSTAINED);
    for n in 0..SUSTAINED {
        let (before, after) = new_commit(&origin, 1000 + n)?;
        bodies.push(push_body(&before, &after));
    }
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut runs = 0;
    for (n, body) in bodies.into_iter().enumerate() {
        if pending.len() >= IN_FLIGHT {
            use futures::StreamExt;
            runs += pending.next().await.context("a delivery")??;
        }
        pending.push(deliver(&server, format!("s-{n}"), body));
    }
    {
        use futures::StreamExt;
        while let Some(done) = pending.next().await {
            runs += done?;
        }
    }
    let sustained = start.elapsed();
    drop(pending);
    server.stop().await;

    let (w50, w99) = (
        percentile(&mut webhook, 0.50),
        percentile(&mut webhook, 0.99),
    );
    let (f50, f99) = (percentile(&mut fetch, 0.50), percentile(&mut fetch, 0.99));
    let over = w99.saturating_sub(f99);
    println!("### Webhook → runs queued ({ITERATIONS} pushes, {WORKFLOWS} workflow files each)\n");
    println!("| | p50 | p99 |");
    println!("|---|---|---|");
    println!("| delivery → {WORKFLOWS} runs queued (fetch + {WORKFLOWS} evaluations + store) | {} | {} |", ms(w50), ms(w99));
    println!(
        "| baseline: bare `git fetch` of the same commit | {} | {} |",
        ms(f50),
        ms(f99)
    );
    println!(
        "\np99 above the bare fetch: **{}** (goal ≤ 100 ms: {}); p50 ratio {:.1}×.\n",
        ms(over),
        if over <= Duration::from_millis(100) {
            "met"
        } else {
            "not met"
        },
        w50.as_secs_f64() / f50.as_secs_f64().max(1e-9)
    );
    println!(
        "Sustained: {SUSTAINED} deliveries ({runs} runs) in {}, {IN_FLIGHT} in flight → **{:.1} deliveries/s**.\n",
        ms(sustained),
        SUSTAINED as f64 / sustained.as_secs_f64()
    );
    Ok(())
}
