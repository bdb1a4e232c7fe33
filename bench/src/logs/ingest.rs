//! Raw store ingest: `Store::append_logs` straight into a fresh database, no HTTP and no
//! runner, so the figure is the store's ceiling for the engine's log path.
//!
//! The lines (`1`, `2`, ... like `seq`, stdout, one timestamp) are built before the clock
//! starts; the step runs they belong to are created through `Store::create_run`. With
//! several writers, writer `k` appends batches `k`, `k + writers`, ... to its own step run,
//! as concurrent steps would.
//!
//! For PostgreSQL, the database's own ceiling for this table on this machine is measured
//! too: one server-side `INSERT … SELECT generate_series` (no client, no parameters, timed
//! around `psql`, whose start-up is a few ms of it), into `log_lines` as the store writes
//! it (foreign key checked, `ON CONFLICT DO NOTHING`) and into a copy of the table without
//! the foreign key with a plain `INSERT` — to tell the store's cost from the schema's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use evaluator::plan::{Plan, Step};
use plue_store::{NewRun, Store};
use plue_types::protocol::{LogLine, Stream, WorkspaceSource};
use testkit::TempPostgres;

use super::LINES;
use crate::workdir::Workdir;

/// Lines per `append_logs` call.
const BATCH: usize = 5_000;
/// Concurrent writers tried.
const WRITERS: [usize; 2] = [1, 4];

/// One ingest measurement.
pub(crate) struct Ingested {
    pub(crate) elapsed: Duration,
    /// `count_logs` afterwards, summed over the step runs written.
    pub(crate) stored: i64,
    pub(crate) expected: u64,
}

impl Ingested {
    pub(crate) fn rate(&self) -> f64 {
        self.expected as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) async fn run(
    work: &Workdir,
    postgres: &TempPostgres,
) -> Result<Vec<(String, Ingested)>> {
    let batches: Arc<Vec<Vec<LogLine>>> = Arc::new(lines());
    let mut results = Vec::new();
    for backend in ["SQLite", "PostgreSQL"] {
        for writers in WRITERS {
            let store = match backend {
                "SQLite" => Store::open_data_dir(&work.fresh("ingest-sqlite")).await?,
                _ => Store::connect(&postgres.new_database()?).await?,
            };
            let steps = step_runs(&store, writers).await?;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (k, step_run_id) in steps.iter().copied().enumerate() {
                let (store, batches) = (store.clone(), batches.clone());
                tasks.spawn(async move {
                    for batch in batches.iter().skip(k).step_by(writers) {
                        store.append_logs(step_run_id, 1, batch).await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            let elapsed = started.elapsed();
            let mut stored = 0;
            for step_run_id in &steps {
                stored += store.count_logs(*step_run_id).await?;
            }
            store.close().await;
            if stored != LINES as i64 {
                eprintln!("LOSS: {backend}, {writers} writer(s): {stored} of {LINES} lines stored");
            }
            let label = match writers {
                1 => format!("{backend}: `Store::append_logs`, one writer, batches of {BATCH}"),
                n => format!("{backend}: `Store::append_logs`, {n} writers (steps) at once"),
            };
            results.push((
                label,
                Ingested {
                    elapsed,
                    stored,
                    expected: LINES,
                },
            ));
        }
    }
    results.extend(postgres_ceiling(postgres).await?);
    Ok(results)
}

/// See the module doc. The SQL is built from constants and an id this function created.
async fn postgres_ceiling(postgres: &TempPostgres) -> Result<Vec<(String, Ingested)>> {
    let url = postgres.new_database()?;
    let store = Store::connect(&url).await?;
    let step_run_id = step_runs(&store, 1).await?[0];
    store.close().await;
    let psql = |sql: &str| tokio::task::block_in_place(|| postgres.psql(&url, sql));
    psql("CREATE TABLE log_lines_bare (LIKE log_lines INCLUDING ALL)")?;
    let variants = [
        (
            "PostgreSQL ceiling: one server-side `INSERT … SELECT` into `log_lines` (FK + \
             `ON CONFLICT DO NOTHING`, like the store)",
            "log_lines",
            "ON CONFLICT DO NOTHING",
        ),
        (
            "PostgreSQL ceiling: the same into a copy of `log_lines` without the FK, plain \
             `INSERT`",
            "log_lines_bare",
            "",
        ),
    ];
    let mut results = Vec::new();
    for (label, table, conflict) in variants {
        let sql = format!(
            "INSERT INTO {table} (step_run_id, attempt, seq, stream, text, ts) \
             SELECT {step_run_id}, 1, g, 'stdout', g::text, 0 \
             FROM generate_series(1, {LINES}) g {conflict}"
        );
        let started = Instant::now();
        psql(&sql)?;
        let elapsed = started.elapsed();
        let stored = psql(&format!("SELECT count(*) FROM {table}"))?
            .trim()
            .parse()
            .unwrap_or(0);
        results.push((
            label.to_string(),
            Ingested {
                elapsed,
                stored,
                expected: LINES,
            },
        ));
    }
    Ok(results)
}

/// `LINES` lines in batches of `BATCH`.
fn lines() -> Vec<Vec<LogLine>> {
    let ts_ms = plue_store::now_ms();
    let all: Vec<LogLine> = (1..=LINES)
        .map(|seq| LogLine {
            seq,
            stream: Stream::Stdout,
            text: seq.to_string(),
            ts_ms,
        })
        .collect();
    all.chunks(BATCH).map(<[LogLine]>::to_vec).collect()
}

/// Creates one run with `n` steps and returns their step run ids.
pub(crate) async fn step_runs(store: &Store, n: usize) -> Result<Vec<i64>> {
    let plan = Plan {
        name: "ingest".into(),
        triggers: Vec::new(),
        env: BTreeMap::new(),
        steps: (0..n)
            .map(|i| Step::bash(format!("s{i}"), "true"))
            .collect(),
        concurrency: None,
        budget_usd: None,
        max_parallel: None,
        modules: Vec::new(),
    };
    let plan_json = plan.canonical_json();
    let run_id = store
        .create_run(
            &NewRun {
                workflow_source: "bench",
                workflow_path: "ingest.plue.py",
                event: "manual",
                git_ref: "refs/heads/main",
                sha: "0000000000000000000000000000000000000000",
                context_json: "{}",
                plan: &plan,
                plan_json: &plan_json,
                plan_hash: &plan.hash(),
                workspace: &WorkspaceSource::Empty,
                rerun_of: None,
                repo: None,
            },
            64,
        )
        .await?
        .id;
    Ok(store
        .step_runs(run_id)
        .await?
        .iter()
        .map(|s| s.id)
        .collect())
}
