//! `plue-bench replicas [RUNS] [STEPS] [RUNNERS]`: throughput of `plue serve` on
//! PostgreSQL with one and with two engine replicas on the same database, under a burst of
//! `RUNS` concurrent runs (default 200), each a chain of `STEPS` no-op steps (default 20).
//!
//! The runners are **protocol-only**: [`ProtocolRunner`] is a small client of the runner
//! protocol inside this benchmark that registers with the shared token, long-polls, and
//! completes each assignment at once (succeeded, no log line, no process), asking for its
//! next attempt in the same request (`claim_next`), as a real runner that keeps working
//! does. So the figures are the engine's and the database's: claims, completions, advances
//! and run bookkeeping, never a process spawn. `RUNNERS` (default 64) are split evenly
//! over the replicas, each polling its own replica.
//!
//! Why one file past ~600 lines: the burst, the cross-replica wake probe and the protocol
//! runner are one benchmark's set-up, measurement and report, read top to bottom.
//!
//! Figures, from the database (store timestamps, 1 ms resolution) and this client:
//! - steps/s: steps completed ÷ (first claim → last step finished);
//! - ready → claimed p50/p99: `attempts.claimed_at − step_runs.ready_at`, the engine's
//!   claim latency including any wait for a free runner;
//! - the runner's completion-and-next-claim request, round trip p50/p99;
//! - PostgreSQL commits per step: `pg_stat_database.xact_commit` of the run's database
//!   over the burst, minus what the idle installation (runners polling, timers) commits
//!   in the same time, ÷ steps. Statistics are flushed by idle backends within 10 s, so
//!   each reading waits 11 s.
//! - CPU per step, engines and PostgreSQL apart ([`crate::cpu`]: the `plue serve`
//!   processes, and the postmaster with every backend), from the burst's start to its last
//!   step, idle polling included; and steps per PostgreSQL CPU-second. The idle
//!   installation's CPU per second is shown beside it, not subtracted.
//!
//! With `PLUE_BENCH_STATEMENTS=1`, PostgreSQL loads `pg_stat_statements` and stderr gets
//! each statement's calls, execution and planning time per step over the burst, and its
//! shared buffers and rows per call (a claim that found nothing returns none), and who
//! claimed the steps ([`CLAIMED_BY`]: a completion or a poll, each with its ready →
//! claimed mean, p50 and p90, and how many were claimed in the transaction that queued
//! them). With
//! `PLUE_BENCH_PG_SETTINGS=name=value,…` the server starts with those settings too.
//!
//! PostgreSQL is `testkit`'s throw-away server (`fsync=off`, `synchronous_commit=off`):
//! commit latency here is a memory write, so disk-bound installations are slower.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plue_types::protocol::{self as wire, Assignment};
use serde_json::Value;
use sqlx::Connection;
use testkit::TempPostgres;
use tokio_util::sync::CancellationToken;

use crate::server::{Backend, Server};
use crate::stats::{from_ms, ms, percentile, whole_ms};
use crate::workdir::{self, Workdir};
use crate::Env;

const RUNNER_TOKEN: &str = "runner-token-of-the-replicas-benchmark";
/// How long idle backends may keep their statistics before flushing them (PostgreSQL's
/// `PGSTAT_IDLE_INTERVAL`, 10 s), plus a margin.
const STATS_FLUSH: Duration = Duration::from_secs(11);
/// Per table: name, rows inserted, updated, updated HOT (no index entry written), deleted,
/// index scans (one line each).
const TABLE_WRITES: &str =
    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, COALESCE(idx_scan, 0) \
     FROM pg_stat_user_tables ORDER BY relname";
/// Set to `1` to load `pg_stat_statements` and print, on stderr, where PostgreSQL's
/// execution time went, statement by statement (the extension costs a little CPU itself).
const STATEMENTS: &str = "PLUE_BENCH_STATEMENTS";
/// Extra PostgreSQL settings, comma separated `name=value` (see [`run`]).
const PG_SETTINGS: &str = "PLUE_BENCH_PG_SETTINGS";
/// Every statement's calls, total execution time (ms), total planning time (ms), shared
/// buffers it touched (hit or read) and text, most time first.
const TOP_STATEMENTS: &str = "SELECT calls, total_exec_time, total_plan_time, \
     shared_blks_hit + shared_blks_read, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 140) \
     FROM pg_stat_statements \
     WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     ORDER BY total_exec_time DESC";
/// How the burst's steps were claimed: by a completion (a busy runner's claim, acknowledged
/// as it is made) or by a poll (acknowledged later); how many, ready → claimed mean, p50 and
/// p90 (ms), and how many at the instant they were ready (in the transaction that queued
/// them).
const CLAIMED_BY: &str = "SELECT CASE WHEN a.acked_at = a.claimed_at THEN 'completion' \
     ELSE 'poll' END AS how, count(*), round(avg(a.claimed_at - s.ready_at), 1), \
     percentile_cont(0.5) WITHIN GROUP (ORDER BY a.claimed_at - s.ready_at), \
     percentile_cont(0.9) WITHIN GROUP (ORDER BY a.claimed_at - s.ready_at), \
     count(*) FILTER (WHERE a.claimed_at = s.ready_at) \
     FROM attempts a JOIN step_runs s ON s.id = a.step_run_id GROUP BY 1 ORDER BY 1";
/// At most this many `POST /api/runs` in flight while the burst is created.
const CREATING: usize = 8;

struct Config {
    runs: usize,
    steps: usize,
    runners: usize,
}

struct Measured {
    replicas: usize,
    steps: usize,
    window: Duration,
    wall: Duration,
    claim: Vec<Duration>,
    round_trips: Vec<Duration>,
    commits: f64,
    idle_commits: f64,
    /// CPU of the engines and of PostgreSQL over the burst.
    engine_cpu: Duration,
    postgres_cpu: Duration,
    /// CPU per second of the idle installation (engines, PostgreSQL).
    idle_cpu: (f64, f64),
    /// The engines' connections (open, of those opened since the watch connected) when the
    /// burst started and when it ended ([`engine_connections`]).
    connections: ((i64, i64), (i64, i64)),
    /// With two engines: ready → claimed of one-step runs queued on one engine while every
    /// runner polls the other, one run at a time ([`wake_probe`]).
    wake: Vec<Duration>,
}

/// CPU time used so far by the engines and by the PostgreSQL server.
fn cpu_now(engines: &[u32], postmaster: u32) -> Result<(Duration, Duration)> {
    let mut engine = Duration::ZERO;
    for &pid in engines {
        engine += crate::cpu::tree(pid)?;
    }
    Ok((engine, crate::cpu::tree(postmaster)?))
}

pub(crate) async fn run(env: &Env, args: &[String]) -> Result<()> {
    let number = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse().with_context(|| {
                format!("'{a}' is not a number (replicas [RUNS] [STEPS] [RUNNERS])")
            })
        })
    };
    let config = Config {
        runs: number(0, 200)?,
        steps: number(1, 20)?,
        runners: number(2, 64)?,
    };
    let statements = std::env::var_os(STATEMENTS).is_some_and(|v| v == "1");
    // Settings the server starts with beyond testkit's: `PLUE_BENCH_PG_SETTINGS`, comma
    // separated `name=value`, for comparing a server setting in the same harness.
    let mut settings: Vec<String> = std::env::var(PG_SETTINGS)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if let Some(bad) = settings.iter().find(|s| !s.contains('=')) {
        bail!("{PG_SETTINGS}: {bad:?} is not name=value");
    }
    if statements {
        settings.push("shared_preload_libraries=pg_stat_statements".into());
        settings.push("pg_stat_statements.track_planning=on".into());
    }
    let postgres = tokio::task::spawn_blocking(move || {
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        TempPostgres::start_with(&settings)
    })
    .await??;
    let postgres = Arc::new(postgres);
    let mut results = Vec::new();
    for replicas in [1, 2] {
        results.push(
            measure(env, &postgres, &config, replicas, statements)
                .await
                .with_context(|| format!("replicas: {replicas} engine(s)"))?,
        );
    }
    drop(tokio::task::spawn_blocking(move || drop(postgres)).await);

    println!(
        "## replicas: {} runs × {} no-op steps through `plue serve` on PostgreSQL\n",
        config.runs, config.steps
    );
    println!(
        "{} **protocol-only runners** (a runner-protocol client inside `plue-bench` that \
         completes each step at once and takes its next one in the same request), split over \
         the replicas; each run a chain, all created at once. PostgreSQL from `testkit` \
         (`fsync=off`, `synchronous_commit=off`).\n",
        config.runners
    );
    println!(
        "| engines | steps/s | ready → claimed p50 / p99 | completion + next claim round trip p50 / p99 | PostgreSQL commits per step (idle subtracted) | CPU per step: engines / PostgreSQL | steps per PostgreSQL CPU-second | idle CPU per second: engines / PostgreSQL | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in &mut results {
        let rate = m.steps as f64 / m.window.as_secs_f64().max(1e-9);
        let (c50, c99) = (
            percentile(&mut m.claim, 0.5),
            percentile(&mut m.claim, 0.99),
        );
        let (r50, r99) = (
            percentile(&mut m.round_trips, 0.5),
            percentile(&mut m.round_trips, 0.99),
        );
        let per_step = |cpu: Duration| cpu / m.steps.max(1) as u32;
        println!(
            "| {} | {rate:.0} | {} / {} | {} / {} | {:.1} ({:.1} raw) | {} / {} | {:.0} | {:.0} ms / {:.0} ms | {} |",
            m.replicas,
            whole_ms(c50),
            whole_ms(c99),
            ms(r50),
            ms(r99),
            (m.commits - m.idle_commits) / m.steps as f64,
            m.commits / m.steps as f64,
            ms(per_step(m.engine_cpu)),
            ms(per_step(m.postgres_cpu)),
            m.steps as f64 / m.postgres_cpu.as_secs_f64().max(1e-9),
            m.idle_cpu.0 * 1000.0,
            m.idle_cpu.1 * 1000.0,
            ms(m.wall),
        );
    }
    for m in &results {
        let ((open_before, _), (open_after, opened)) = m.connections;
        println!(
            "\n{} engine(s): {open_before} connections to PostgreSQL when the burst started, \
             {open_after} when it ended, {opened} of them opened during it (each a backend \
             started, its CPU counted above).",
            m.replicas
        );
    }
    if let [one, two] = &results[..] {
        let rate = |m: &Measured| m.steps as f64 / m.window.as_secs_f64().max(1e-9);
        let ratio = rate(two) / rate(one);
        let claim99 = percentile(&mut two.claim.clone(), 0.99);
        let mut wake = two.wake.clone();
        let (w50, w99) = (percentile(&mut wake, 0.5), percentile(&mut wake, 0.99));
        println!(
            "\nTwo engines / one: **{ratio:.2}×** steps/s (goal ≥ 1.6×: {}); claim p99 with two \
             engines under the burst {} (it includes waiting for a free runner).\n\n\
             Cross-replica wake alone ({} one-step runs queued one at a time on engine A, \
             {WAKE_RUNNERS} idle runners long-polling engine B): ready → claimed p50 {} / \
             p99 {} (goal p99 ≤ 20 ms: {}).\n",
            if ratio >= 1.6 { "met" } else { "not met" },
            whole_ms(claim99),
            wake.len(),
            whole_ms(w50),
            whole_ms(w99),
            if w99 <= Duration::from_millis(20) {
                "met"
            } else {
                "not met"
            }
        );
    }
    Ok(())
}

async fn measure(
    env: &Env,
    postgres: &Arc<TempPostgres>,
    config: &Config,
    replicas: usize,
    statements: bool,
) -> Result<Measured> {
    let work = Workdir::new("plue-bench-replicas-")?;
    let url = {
        let postgres = postgres.clone();
        tokio::task::spawn_blocking(move || postgres.new_database()).await??
    };
    let psql = |sql: &'static str| {
        let (postgres, url) = (postgres.clone(), url.clone());
        async move {
            tokio::task::spawn_blocking(move || postgres.psql(&url, sql))
                .await?
                .with_context(|| format!("psql: {sql}"))
        }
    };
    let mut servers = Vec::new();
    // One after the other: the first applies the migrations.
    for _ in 0..replicas {
        servers.push(
            Server::start_with(
                env,
                &work,
                &Backend::Postgres(url.clone()),
                0,
                &["--runner-token", RUNNER_TOKEN],
                &[],
            )
            .await?,
        );
    }
    let engines: Vec<u32> = servers.iter().map(Server::pid).collect();
    let postmaster = crate::cpu::postmaster(&postgres.dir().join("data"))?;
    let stop = CancellationToken::new();
    let round_trips = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..config.runners {
        let runner = ProtocolRunner {
            engine: servers[i % replicas].url().to_string(),
            name: format!("bench-protocol-{i}"),
            client: reqwest::Client::new(),
            session: String::new(),
            stop: stop.clone(),
            round_trips: round_trips.clone(),
        };
        tasks.push(tokio::spawn(runner.work()));
    }
    let workflow = work.write_workflow("burst", &workdir::chain(config.steps, "true"))?;

    // The idle installation's own commits (runners polling, heartbeats, timers).
    tokio::time::sleep(STATS_FLUSH).await;
    let idle_from = commits(
        &psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await?,
    )?;
    if statements {
        psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
        psql("SELECT pg_stat_statements_reset()").await?;
    }
    let idle_started = Instant::now();
    let idle_cpu_from = cpu_now(&engines, postmaster)?;
    tokio::time::sleep(STATS_FLUSH).await;
    let idle_cpu_to = cpu_now(&engines, postmaster)?;
    if statements {
        let seconds = idle_started.elapsed().as_secs_f64();
        eprintln!(
            "{replicas} engine(s), idle: PostgreSQL's statements per second (calls, µs per \
             call executing, µs executing and µs planning per second, shared buffers and rows per call):"
        );
        print_statements(&psql(TOP_STATEMENTS).await?, seconds)?;
    }
    let before = commits(
        &psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await?,
    )?;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let idle_rate = (before - idle_from) / idle_seconds;
    let idle_cpu = (
        (idle_cpu_to.0 - idle_cpu_from.0).as_secs_f64() / idle_seconds,
        (idle_cpu_to.1 - idle_cpu_from.1).as_secs_f64() / idle_seconds,
    );

    if statements {
        psql("SELECT pg_stat_statements_reset()").await?;
    }
    let tables_before = psql(TABLE_WRITES).await?;
    // One connection watches the burst: a `psql` each poll would start a backend each time
    // (≈ 4.5 ms of PostgreSQL's CPU, measured), charged to the steps.
    let mut watch = sqlx::PgConnection::connect(&url)
        .await
        .context("connecting the burst's watch")?;
    let connections_before = engine_connections(&mut watch).await?;
    let burst_started = Instant::now();
    let cpu_before = cpu_now(&engines, postmaster)?;
    {
        use futures::StreamExt;
        let servers = &servers;
        let workflow = &workflow;
        let workspace = work.workspace();
        let workspace = &workspace;
        let created: Vec<Result<i64>> = futures::stream::iter(0..config.runs)
            .map(|n| async move { servers[n % replicas].start_run(workflow, workspace).await })
            .buffer_unordered(CREATING)
            .collect()
            .await;
        for run in created {
            run?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE finished_at IS NULL")
            .fetch_one(&mut watch)
            .await
            .context("counting the burst's open runs")?;
        if open == 0 {
            break;
        }
        for task in &tasks {
            if task.is_finished() {
                bail!("a protocol runner stopped while runs were open");
            }
        }
        if Instant::now() > deadline {
            bail!("{open} runs still open after 900 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = burst_started.elapsed();
    let cpu_after = cpu_now(&engines, postmaster)?;
    let connections_after = engine_connections(&mut watch).await?;
    // Read at once: the idle installation keeps executing statements.
    let top_statements = if statements {
        psql(TOP_STATEMENTS).await?
    } else {
        String::new()
    };
    let failed = psql("SELECT count(*) FROM runs WHERE status <> 'succeeded'").await?;
    if failed.trim() != "0" {
        bail!("{} runs did not succeed", failed.trim());
    }
    tokio::time::sleep(STATS_FLUSH).await;
    let after = commits(
        &psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .await?,
    )?;
    let burst = burst_started.elapsed();
    // Where the writes went, per table (on stderr: the README takes stdout).
    let tables_after = psql(TABLE_WRITES).await?;
    eprintln!(
        "{replicas} engine(s), writes per table over the burst \
         (inserted, updated, of those HOT, deleted; index scans):"
    );
    for (before, after) in tables_before.lines().zip(tables_after.lines()) {
        let (b, a): (Vec<&str>, Vec<&str>) =
            (before.split('|').collect(), after.split('|').collect());
        let delta = |i: usize| -> i64 {
            a[i].parse::<i64>().unwrap_or(0) - b[i].parse::<i64>().unwrap_or(0)
        };
        eprintln!(
            "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>9}",
            a[0],
            delta(1),
            delta(2),
            delta(3),
            delta(4),
            delta(5)
        );
    }
    if statements {
        eprintln!(
            "{replicas} engine(s), PostgreSQL's execution time by statement over the burst \
             (calls per step, µs per call executing, µs executing and µs planning per step, \
             shared buffers and rows per call):"
        );
        print_statements(&top_statements, (config.runs * config.steps) as f64)?;
        eprintln!(
            "{replicas} engine(s), who claimed the steps (a busy runner's claim is acknowledged \
             as it is made, a poll's later): steps, ready → claimed mean / p50 / p90 ms, of them \
             claimed at the instant they were ready:\n{}",
            psql(CLAIMED_BY).await?
        );
    }
    stop.cancel();
    for task in tasks {
        task.await??;
    }

    let window = psql(
        "SELECT min(a.claimed_at) || ' ' || max(s.finished_at) || ' ' || count(*) \
         FROM attempts a JOIN step_runs s ON s.id = a.step_run_id",
    )
    .await?;
    let parts: Vec<i64> = window
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("the burst's window: {window:?}"))?;
    let [first_claim, last_finish, attempts] = parts[..] else {
        bail!("the burst's window: {window:?}");
    };
    let expected = (config.runs * config.steps) as i64;
    if attempts != expected {
        bail!("{attempts} attempts for {expected} steps: a step was retried or lost");
    }
    let claim = psql(
        "SELECT a.claimed_at - s.ready_at FROM attempts a JOIN step_runs s ON s.id = a.step_run_id",
    )
    .await?
    .lines()
    .map(|l| l.trim().parse::<i64>().map(from_ms))
    .collect::<Result<Vec<_>, _>>()?;
    let wake = if let [queued_on, polled] = &servers[..] {
        wake_probe(postgres, &url, &work, queued_on, polled).await?
    } else {
        Vec::new()
    };
    for server in servers {
        server.stop().await;
    }
    let round_trips = std::mem::take(&mut *round_trips.lock().expect("round trips"));
    Ok(Measured {
        replicas,
        steps: config.runs * config.steps,
        window: from_ms(last_finish - first_claim),
        wall,
        claim,
        round_trips,
        commits: after - before,
        idle_commits: idle_rate * burst.as_secs_f64(),
        engine_cpu: cpu_after.0.saturating_sub(cpu_before.0),
        postgres_cpu: cpu_after.1.saturating_sub(cpu_before.1),
        idle_cpu,
        connections: (connections_before, connections_after),
        wake,
    })
}

/// The engines' open connections to the burst's database (all but `watch`'s own and the
/// benchmark's, [`crate::server::BENCH_APPLICATION`]), and how
/// many of them are younger than `watch`: each new one started a backend, whose start-up
/// is PostgreSQL CPU charged to the burst.
async fn engine_connections(watch: &mut sqlx::PgConnection) -> Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE backend_start > \
             (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())) \
         FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend' AND application_name <> $1",
    )
    .bind(crate::server::BENCH_APPLICATION)
    .fetch_one(watch)
    .await
    .context("counting the engines' connections")
}

/// Prints [`TOP_STATEMENTS`]' answer on stderr, each statement's calls and time per
/// `unit` (steps, or seconds), and the total.
fn print_statements(answer: &str, unit: f64) -> Result<()> {
    let (mut executing, mut planning) = (0.0, 0.0);
    for line in answer.lines() {
        let parts: Vec<&str> = line.splitn(6, '|').collect();
        let [calls, exec_ms, plan_ms, buffers, rows, query] = parts[..] else {
            continue;
        };
        let (calls, exec_ms, plan_ms, buffers, rows): (f64, f64, f64, f64, f64) = (
            calls.parse()?,
            exec_ms.parse()?,
            plan_ms.parse()?,
            buffers.parse()?,
            rows.parse()?,
        );
        executing += exec_ms;
        planning += plan_ms;
        eprintln!(
            "  {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6.2}  {query}",
            calls / unit,
            exec_ms * 1000.0 / calls.max(1.0),
            exec_ms * 1000.0 / unit,
            plan_ms * 1000.0 / unit,
            buffers / calls.max(1.0),
            rows / calls.max(1.0)
        );
    }
    eprintln!(
        "  all statements: executing {:.1} µs, planning {:.1} µs",
        executing * 1000.0 / unit,
        planning * 1000.0 / unit
    );
    Ok(())
}

/// One-step runs the wake probe queues, one after the other.
const WAKE_RUNS: usize = 60;
/// Runners of the wake probe, all polling the engine the runs are not queued on.
const WAKE_RUNNERS: usize = 4;

/// The cross-replica wake alone: with every runner idle and long-polling `polled`,
/// [`WAKE_RUNS`] one-step runs are started through `queued_on`, each after the last
/// finished, so no step ever waits for a free runner. Each step's ready → claimed is then
/// the time for `queued_on`'s notification to reach `polled` and `polled` to answer a
/// waiting poll with the claim (store timestamps, 1 ms resolution).
async fn wake_probe(
    postgres: &Arc<TempPostgres>,
    url: &str,
    work: &Workdir,
    queued_on: &Server,
    polled: &Server,
) -> Result<Vec<Duration>> {
    let psql = |sql: String| {
        let (postgres, url) = (postgres.clone(), url.to_string());
        async move {
            tokio::task::spawn_blocking(move || postgres.psql(&url, &sql))
                .await?
                .with_context(|| "psql in the wake probe".to_string())
        }
    };
    let stop = CancellationToken::new();
    let round_trips = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..WAKE_RUNNERS)
        .map(|i| {
            tokio::spawn(
                ProtocolRunner {
                    engine: polled.url().to_string(),
                    name: format!("bench-wake-{i}"),
                    client: reqwest::Client::new(),
                    session: String::new(),
                    stop: stop.clone(),
                    round_trips: round_trips.clone(),
                }
                .work(),
            )
        })
        .collect();
    // Registered and waiting in a long poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let workflow = work.write_workflow("wake", &workdir::chain(1, "true"))?;
    let workspace = work.workspace();
    let mut runs = Vec::new();
    for _ in 0..WAKE_RUNS {
        let run = queued_on.start_run(&workflow, &workspace).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let open = psql(format!(
                "SELECT count(*) FROM runs WHERE id = {run} AND finished_at IS NULL"
            ))
            .await?;
            if open.trim() == "0" {
                break;
            }
            if Instant::now() > deadline {
                bail!("wake probe: run {run} still open after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        runs.push(run.to_string());
    }
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    let claimed_by_polled = psql(format!(
        "SELECT count(*) FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
         JOIN runners r ON r.id = a.runner_id \
         WHERE s.run_id IN ({}) AND r.name LIKE 'bench-wake-%'",
        runs.join(",")
    ))
    .await?;
    if claimed_by_polled.trim() != WAKE_RUNS.to_string() {
        bail!(
            "wake probe: {} of {WAKE_RUNS} steps claimed by the probe's runners",
            claimed_by_polled.trim()
        );
    }
    psql(format!(
        "SELECT a.claimed_at - s.ready_at FROM attempts a JOIN step_runs s ON s.id = a.step_run_id \
         WHERE s.run_id IN ({})",
        runs.join(",")
    ))
    .await?
    .lines()
    .map(|l| {
        l.trim()
            .parse::<i64>()
            .map(from_ms)
            .context("ready → claimed")
    })
    .collect()
}

fn commits(text: &str) -> Result<f64> {
    text.trim()
        .parse()
        .with_context(|| format!("xact_commit: {text:?}"))
}

/// A runner that speaks the protocol and runs nothing: every assignment succeeds at once.
struct ProtocolRunner {
    engine: String,
    name: String,
    client: reqwest::Client,
    session: String,
    /// Cancelled when the benchmark is done: a waiting poll is abandoned (the engines stop
    /// right after).
    stop: CancellationToken,
    /// Round trips of completions that asked for the next attempt.
    round_trips: Arc<Mutex<Vec<Duration>>>,
}

impl ProtocolRunner {
    async fn work(mut self) -> Result<()> {
        let request = wire::RegisterRequest {
            name: self.name.clone(),
            labels: Default::default(),
            ephemeral: false,
            accept_forks: None,
            host: None,
        };
        let registered: wire::RegisterResponse = serde_json::from_value(
            self.post(
                wire::REGISTER,
                RUNNER_TOKEN,
                serde_json::to_value(&request)?,
            )
            .await?,
        )?;
        self.session = registered.session_token;
        let heartbeat = Duration::from_millis(registered.heartbeat_interval_ms.max(100));
        // Heartbeats beside the polls, as the real runner sends them: a poll the engine
        // holds is no proof of life, so a runner waiting in one would be declared lost.
        let beats = {
            let (client, engine, session, stop) = (
                self.client.clone(),
                self.engine.clone(),
                self.session.clone(),
                self.stop.clone(),
            );
            tokio::spawn(async move {
                let mut every = tokio::time::interval(heartbeat);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let _ = client
                        .post(format!("{engine}{}", wire::HEARTBEAT))
                        .bearer_auth(&session)
                        .json(&Value::Null)
                        .send()
                        .await;
                }
            })
        };
        // The real runner's long poll, so the idle installation costs what real runners cost.
        let poll = serde_json::to_value(&wire::PollRequest {
            wait_ms: runner::agent::POLL_WAIT.as_millis() as u64,
        })?;
        while !self.stop.is_cancelled() {
            let polled = tokio::select! {
                _ = self.stop.cancelled() => break,
                polled = self.post(wire::POLL, &self.session, poll.clone()) => polled?,
            };
            let polled: wire::PollResponse = serde_json::from_value(polled)?;
            // A poll's assignment counts once accepted, as the real runner accepts it.
            if let Some(assignment) = &polled.assignment {
                let accepted = wire::accepted_path(assignment.attempt_id);
                self.post(&accepted, &self.session, Value::Null).await?;
            }
            let mut next = polled.assignment;
            while let Some(assignment) = next {
                next = self.complete(&assignment).await?;
            }
        }
        beats.abort();
        self.post(wire::DEREGISTER, &self.session, Value::Null)
            .await?;
        Ok(())
    }

    /// Completes `assignment` as succeeded, asking for the next attempt.
    async fn complete(&self, assignment: &Assignment) -> Result<Option<Assignment>> {
        let completion = wire::Completion {
            outcome: wire::Outcome::Succeeded,
            exit_code: Some(0),
            reason: None,
            outputs: Default::default(),
            lines: 0,
            usage: None,
            proposals: Vec::new(),
            model: None,
            claim_next: true,
            started_ms_ago: Some(0),
            network_refused: 0,
            logs: None,
        };
        let body = serde_json::to_value(&completion)?;
        let started = Instant::now();
        let answer = self
            .post(
                &wire::complete_path(assignment.attempt_id),
                &self.session,
                body,
            )
            .await?;
        self.round_trips
            .lock()
            .expect("round trips")
            .push(started.elapsed());
        let answer: wire::CompleteResponse = serde_json::from_value(answer)?;
        Ok(answer.next)
    }

    /// POSTs `body` and returns the JSON answer (`serde_json::from_value` gives it its
    /// protocol type at the call).
    async fn post(&self, path: &str, token: &str, body: serde_json::Value) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.engine))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{} {path}", self.name))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{} {path}: {status}: {text}", self.name);
        }
        serde_json::from_str(&text).with_context(|| format!("{} {path}: {text}", self.name))
    }
}
