//! `plue-bench`: Plue's benchmarks, each against a baseline measured in the same run.
//!
//! One module per benchmark, each printing a Markdown section for `bench/README.md`:
//! - [`eval`] — warm evaluation latency through the whole sandbox path, against spawning
//!   `python3` to evaluate the same file.
//! - [`check`] — `plue check` of 200 workflow files against one `python3` per file.
//! - [`steps`] — per-step overhead of `plue run` on a 200-step chain and a 500-step
//!   fan-out/fan-in of `true`, against the same commands spawned by a shell loop.
//! - [`claim`] — claim latency (step ready → runner starts it) with warm runners on SQLite
//!   and PostgreSQL, against a bare process spawn and a bare `SELECT 1`.
//! - [`webhook`] — signed push delivery → runs queued for a repository with five workflow
//!   files at a new commit, and sustained deliveries/s, against a bare `git fetch`.
//! - [`logs`] — log ingest lines/s (raw store, end to end) and live-tail latency over SSE,
//!   against writing the same lines to a file and reading a pipe directly.
//! - [`llm`] — token latency of an `llm` step (delta written by a local Claude server →
//!   token line received over SSE), against reading the same stream directly.
//! - [`first_line`] — a real `git push`, the signed webhook, and the first step's first log
//!   line stored and at an SSE follower, on the local pool and the simulated Kubernetes
//!   pool's warm pod; baseline: the `git push` itself.
//! - [`replicas`] — runs × no-op steps through one and two `plue serve` replicas on one
//!   PostgreSQL, with protocol-only runners: steps/s, claim latency, commits and CPU
//!   (engines, PostgreSQL: [`cpu`]) per step.
//! - [`scale`] — per-step cost of `plue run` at 100 and 10,000 steps (chain and fan-out),
//!   and the engine's peak memory.
//! - [`floor`] — a bash step through the runner's own process path and nothing else (the
//!   isolation every step gets), against a bare spawn; also the peers' "floor" column.
//!
//! Shared pieces: [`stats`] (percentiles, formatting), [`server`] (a `plue serve` child
//! process and the HTTP calls the benchmarks make), [`workdir`] (throw-away directories and
//! generated workflow files).
//!
//! Build with `cargo build --release -p engine -p bench`; the `plue` binary is found next to
//! this one.

mod bash_step;
mod check;
mod claim;
mod cpu;
mod eval;
mod first_line;
mod floor;
mod llm;
mod logs;
mod replicas;
mod scale;
mod server;
mod stats;
mod steps;
mod webhook;
mod workdir;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What every benchmark needs to know about the installation under test.
pub(crate) struct Env {
    /// The workspace root (for `examples/` and `bench/`).
    pub(crate) root: PathBuf,
    /// The release `plue` binary.
    pub(crate) plue: PathBuf,
}

const USAGE: &str =
    "eval, check, steps, scale, claim, logs, webhook, first-line, replicas, llm, floor or all";

/// What `plue-bench --help` prints.
const HELP: &str = "plue-bench: Plue's benchmarks, each against a baseline measured in the same run

Usage: plue-bench [BENCHMARK] [OPTIONS]

BENCHMARK is one of eval, check, steps, scale, claim, logs, webhook, first-line, replicas,
llm, floor or all (the default). Each prints a Markdown section for bench/README.md; build
them first with `cargo build --release -p engine -p bench`. bench/README.md says what each
measures, its baseline and its options.";

fn main() -> std::process::ExitCode {
    // An error is one line (with its causes), never a backtrace.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plue-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).cloned().unwrap_or_else(|| "all".into());
    // Usage is answered, never an error with a backtrace.
    if matches!(which.as_str(), "-h" | "--help" | "help")
        || args.iter().skip(2).any(|a| a == "-h" || a == "--help")
    {
        println!("{HELP}");
        return Ok(());
    }
    if which == "floor" {
        // On one thread, as a runner runs its steps; no `plue` binary needed.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(floor::run(&args[2..]));
    }
    if ![
        "eval",
        "check",
        "steps",
        "scale",
        "claim",
        "logs",
        "webhook",
        "first-line",
        "replicas",
        "llm",
        "all",
    ]
    .contains(&which.as_str())
    {
        eprintln!("plue-bench: unknown benchmark '{which}': {USAGE} (see plue-bench --help)");
        std::process::exit(2);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let plue = std::env::current_exe()?.with_file_name("plue");
    if !plue.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p engine -p bench` first",
            plue.display()
        );
    }
    let env = Env { root, plue };
    // Figures from a busy machine read differently: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "_{cores} cores; load average at start: {}_\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match which.as_str() {
        "eval" => runtime.block_on(eval::run(&env)),
        "check" => check::run(&env),
        "steps" => runtime.block_on(steps::run(&env)),
        "scale" => runtime.block_on(scale::run(&env)),
        "claim" => runtime.block_on(claim::run(&env)),
        "logs" => runtime.block_on(logs::run(&env)),
        "webhook" => runtime.block_on(webhook::run(&env)),
        "first-line" => runtime.block_on(first_line::run(&env)),
        "replicas" => runtime.block_on(replicas::run(&env, &args[2..])),
        "llm" => runtime.block_on(llm::run(&env)),
        "all" => {
            runtime.block_on(eval::run(&env))?;
            check::run(&env)?;
            runtime.block_on(steps::run(&env))?;
            runtime.block_on(claim::run(&env))?;
            runtime.block_on(logs::run(&env))?;
            runtime.block_on(webhook::run(&env))?;
            runtime.block_on(llm::run(&env))
        }
        other => bail!("unknown benchmark '{other}': {USAGE}"),
    }
}
