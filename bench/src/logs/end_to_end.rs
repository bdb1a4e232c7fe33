//! End-to-end ingest: one step running `seq 1 1000000`, its output going through the
//! runner (pipe → lines → masked batches over HTTP) into the engine's store.
//!
//! Measured from the store: the step's `started_at` (its runner's start report arrived) to
//! the run's `finished_at` (the completion report, which the runner sends only after every
//! line was acknowledged). `plue run` also prints every line (to /dev/null here) from the
//! same process; `plue serve` prints nothing.

use std::process::Stdio;

use anyhow::{bail, Context, Result};
use plue_store::{RunRow, Store};
use testkit::TempPostgres;

use super::ingest::Ingested;
use super::LINES;
use crate::server::{Backend, Server};
use crate::stats::{from_ms, tail};
use crate::workdir::{self, Workdir};
use crate::Env;

pub(crate) async fn run(
    env: &Env,
    work: &Workdir,
    postgres: &TempPostgres,
) -> Result<Vec<(String, Ingested)>> {
    let file = work.write_workflow(
        "seq",
        &workdir::single("bash", "seq", &format!("seq 1 {LINES}")),
    )?;
    let mut results = Vec::new();

    let data_dir = work.fresh("e2e-run");
    let output = tokio::process::Command::new(&env.plue)
        .arg("run")
        .arg(&file)
        .args(["--runners", "1", "--data-dir"])
        .arg(&data_dir)
        .env("NO_COLOR", "1")
        .current_dir(work.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await?;
    if !output.status.success() {
        bail!("plue run of seq failed:\n{}", tail(&output.stderr));
    }
    let store = Store::open_data_dir(&data_dir).await?;
    let run = store.list_runs(1).await?.pop().context("no run stored")?;
    results.push((
        "SQLite, end to end: `plue run` of `seq 1 1000000` (prints the lines too)".to_string(),
        measure(&store, &run).await?,
    ));
    store.close().await;

    let url = postgres.new_database()?;
    for backend in [Backend::Sqlite, Backend::Postgres(url)] {
        let server = Server::start(env, work, &backend, 1).await?;
        let run_id = server.start_run(&file, &work.workspace()).await?;
        let run = server.wait_run(run_id).await?;
        results.push((
            format!(
                "{}, end to end: `plue serve`, a step running `seq 1 1000000`",
                backend.name()
            ),
            measure(server.store(), &run).await?,
        ));
        server.stop().await;
    }
    Ok(results)
}

/// Step start → run end, and the stored count, of the run's only step.
async fn measure(store: &Store, run: &RunRow) -> Result<Ingested> {
    let step = store
        .step_runs(run.id)
        .await?
        .pop()
        .context("a run without steps")?;
    let stored = store.count_logs(step.id).await?;
    if stored != LINES as i64 {
        eprintln!("LOSS: run {}: {stored} of {LINES} lines stored", run.id);
    }
    let started = step.started_at.context("step never started")?;
    let finished = run.finished_at.context("run not finished")?;
    Ok(Ingested {
        elapsed: from_ms(finished - started),
        stored,
        expected: LINES,
    })
}
