//! A `plue serve` child process for the benchmarks that need the engine as a server, and
//! the few HTTP calls they make to it.
//!
//! The server listens on `127.0.0.1:0` and the address is read from its log (the line
//! `plue engine listening on http://...`), so parallel or leftover servers never collide.
//! The benchmark also holds its own [`Store`] on the same database to read timestamps the
//! API does not show (`ready_at`, log line `ts`).
//!
//! Invariant: a [`Server`] never outlives the benchmark: drop sends SIGTERM (the engine
//! stops its runners and exits) and SIGKILLs it if it is still there after 15 s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use plue_store::{PostgresConnections, RunRow, Store};
use plue_types::status::RunState;

use crate::workdir::Workdir;
use crate::Env;

/// Where a server keeps its state.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// The embedded SQLite database in the server's `--data-dir`.
    Sqlite,
    /// `--database-url` (a fresh database per server).
    Postgres(String),
}

impl Backend {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

pub(crate) struct Server {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    url: String,
    store: Store,
    client: reqwest::Client,
    log: PathBuf,
}

/// The admin token benchmark servers start with; [`Server::client`] sends it.
pub(crate) const ADMIN_TOKEN: &str = "admin-token-of-the-benchmarks";

/// The `application_name` of the benchmark's own connections to a server's PostgreSQL, so
/// counts of the engine's connections can leave them out.
pub(crate) const BENCH_APPLICATION: &str = "plue-bench";

/// An HTTP client sending [`ADMIN_TOKEN`].
fn authorized_client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// How long any single wait (start-up, warm pool, a run) may take before the benchmark
/// gives up instead of hanging.
const PATIENCE: Duration = Duration::from_secs(600);

impl Server {
    /// Starts `plue serve --runners {runners}` on `backend` and waits until that many
    /// runners are warm.
    pub(crate) async fn start(
        env: &Env,
        work: &Workdir,
        backend: &Backend,
        runners: usize,
    ) -> Result<Server> {
        Server::start_with(env, work, backend, runners, &[], &[]).await
    }

    /// [`Server::start`] with extra `plue serve` arguments (e.g. `--secret NAME=VALUE`) and
    /// environment variables (e.g. `ANTHROPIC_BASE_URL`, the engine's configuration).
    pub(crate) async fn start_with(
        env: &Env,
        work: &Workdir,
        backend: &Backend,
        runners: usize,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<Server> {
        let data_dir = work.fresh("serve-data");
        let log = work.fresh("serve.log");
        let mut command = Command::new(&env.plue);
        command.arg("serve");
        // A caller that must know the address before the start (a pool configuration
        // naming the engine's URL) passes its own `--listen`.
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(["--runners", &runners.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--local-workflows")
            .arg(work.path())
            .args(extra)
            .envs(vars.iter().copied())
            .env("NO_COLOR", "1")
            .env_remove("DATABASE_URL")
            .env("PLUE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PLUE_SECRET_KEY", "secret-key-of-the-benchmarks")
            .current_dir(work.workspace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if let Backend::Postgres(url) = backend {
            command.arg("--database-url").arg(url);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} serve", env.plue.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            if let Some(status) = child.try_wait()? {
                bail!("plue serve exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("plue serve did not listen within 60 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let store = match backend {
            Backend::Sqlite => Store::open_data_dir(&data_dir).await,
            // The benchmark's own look at the engine's database: two connections, named so
            // a count of the engine's connections leaves them out (`BENCH_APPLICATION`).
            Backend::Postgres(url) => {
                let url = format!(
                    "{url}{}application_name={BENCH_APPLICATION}",
                    if url.contains('?') { '&' } else { '?' }
                );
                let connections = PostgresConnections::new(PostgresConnections::MIN)?;
                Store::connect_with(&url, connections).await
            }
        };
        let server = Server {
            child,
            url,
            store: store?,
            client: authorized_client()?,
            log,
        };
        if runners > 0 {
            server.wait_warm(runners).await?;
        }
        Ok(server)
    }

    /// The `plue serve` process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// A client that sends the admin token.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits until the local pool has `runners` idle runners and nothing queued.
    pub(crate) async fn wait_warm(&self, runners: usize) -> Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let pool: serde_json::Value = self
                .client
                .get(format!("{}/api/pool", self.url))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let warm = pool["warm"].as_u64().unwrap_or(0) as usize;
            if warm >= runners && pool["queued"].as_i64() == Some(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the pool never had {runners} warm runners: {pool}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Registers the GitHub repository `name` cloned from the local path `clone_url`, its
    /// deliveries signed with `webhook_secret` (no forge API: statuses go nowhere).
    pub(crate) async fn register_github_repo(
        &self,
        name: &str,
        clone_url: &Path,
        webhook_secret: &str,
    ) -> Result<()> {
        let created = self
            .client()
            .post(format!("{}/api/repos", self.url()))
            .json(&serde_json::json!({
                "name": name,
                "clone_url": clone_url.to_str().context("UTF-8 path")?,
                "forge": "github",
                "webhook_secret": webhook_secret,
                "api_url": "http://127.0.0.1:9",
                "default_branch": "main",
            }))
            .send()
            .await?;
        if !created.status().is_success() {
            bail!("registering the repository: {}", created.text().await?);
        }
        Ok(())
    }

    /// Follows `step`'s log stream (SSE) to its `end` event, calling `on_line` with each
    /// stored line (JSON) as soon as its `line` event arrives.
    pub(crate) async fn follow_lines(
        &self,
        run_id: i64,
        step: &str,
        mut on_line: impl FnMut(serde_json::Value) -> Result<()>,
    ) -> Result<()> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let response = self
            .client
            .get(format!("{}/api/runs/{run_id}/steps/{step}/logs", self.url))
            .header("accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()?;
        let mut events = response.bytes_stream().eventsource();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let next = tokio::time::timeout_at(deadline, events.next())
                .await
                .context("the log stream did not end within 120 s")?;
            let Some(event) = next else {
                bail!("the log stream closed without an `end` event");
            };
            let event = event.map_err(|e| anyhow::anyhow!("reading the log stream: {e}"))?;
            match event.event.as_str() {
                "end" => return Ok(()),
                "line" => on_line(serde_json::from_str(&event.data)?)?,
                _ => {}
            }
        }
    }

    /// `POST /api/runs` for `workflow`, each step working on a copy of `workspace`.
    pub(crate) async fn start_run(&self, workflow: &Path, workspace: &Path) -> Result<i64> {
        let body = serde_json::json!({
            "workflow": workflow,
            "workspace": workspace,
        });
        let response = self
            .client
            .post(format!("{}/api/runs", self.url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("POST /api/runs: {status}: {text}");
        }
        let created: serde_json::Value = serde_json::from_str(&text)?;
        created["run_id"]
            .as_i64()
            .with_context(|| format!("POST /api/runs answered {text}"))
    }

    /// Waits until the run is final (polling the store every 50 ms); fails unless it
    /// succeeded.
    pub(crate) async fn wait_run(&self, run_id: i64) -> Result<RunRow> {
        wait_run(&self.store, run_id, &self.log).await
    }

    /// Stops the server (see the module invariant) after closing the benchmark's store.
    pub(crate) async fn stop(self) {
        self.store.close().await;
    }
}

/// Waits until `run_id` in `store` is final; fails unless it succeeded. `log` is named in
/// errors.
pub(crate) async fn wait_run(store: &Store, run_id: i64, log: &Path) -> Result<RunRow> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let run = store.run(run_id).await?.context("the run disappeared")?;
        if run.finished_at.is_some() {
            if run.status != RunState::Succeeded {
                bail!(
                    "run {run_id} {}: {} (see {})",
                    run.status,
                    run.reason.unwrap_or_default(),
                    log.display()
                );
            }
            return Ok(run);
        }
        if Instant::now() > deadline {
            bail!("run {run_id} did not finish within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("plue serve did not stop within 15 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
