//! Test support for Plue: a throw-away PostgreSQL server for tests and benchmarks, and
//! ([`claude`]) a scripted stand-in for the Claude Messages API, and ([`kube`]) a local
//! Kubernetes API server with a simulated kubelet, and ([`forge`]) a fake GitHub/Gitea with a
//! git remote over HTTP, and ([`api_description`]) the forges' published API descriptions
//! that the fake forge's exchanges are checked against, and ([`counting`]) a global
//! allocator counting the bytes each thread asks for, and ([`hostile_tar`]) tar archives as
//! an attacker writes them, and ([`oauth`]) a fake GitHub or Gitea OAuth2 server for sign-in.
//!
//! - [`TempPostgres`] owns one server: a data directory under a temporary directory, a
//!   `postgres` child process on a free 127.0.0.1 port, and a watchdog. Dropping it stops
//!   the server (`pg_ctl stop -m immediate`) and deletes the directory.
//! - [`TempPostgres::new_database`] hands out a fresh database per call, so tests sharing a
//!   server never see each other's rows.
//! - [`postgres_for_tests`] and [`shared_postgres`] turn "PostgreSQL is not installed" into a
//!   skip (with the reason on stderr) unless `PLUE_REQUIRE_POSTGRES=1`, which CI sets.
//!
//! Invariants:
//! - A server never outlives the process that started it: `Drop` stops it, and the
//!   watchdog (module `watchdog`) stops it and removes its directory when the process exits without dropping
//!   it (a `static`, a panic that aborts, SIGKILL).
//! - The server is tuned for speed, not durability (`fsync=off`, `full_page_writes=off`,
//!   `synchronous_commit=off`): it holds test data only.
//! - As root, the server programs run as the `postgres` system user (module `identity`).
//!
//! Errors are `anyhow` with context rather than a `thiserror` enum: callers are tests and
//! benchmarks that only print them, and every error ends in a human reading it.

pub mod api_description;
mod binaries;
pub mod claude;
pub mod counting;
pub mod forge;
pub mod hostile_tar;
mod identity;
pub mod kube;
pub mod oauth;
pub mod redirect_trap;
mod server_thread;
mod watchdog;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::binaries::Binaries;
use crate::identity::Identity;
use crate::watchdog::Watchdog;

/// `PLUE_REQUIRE_POSTGRES=1` turns "cannot start PostgreSQL" from a skip into an error.
pub const REQUIRE_ENV: &str = "PLUE_REQUIRE_POSTGRES";

/// The superuser `initdb` creates; it authenticates with `trust`.
const USER: &str = "plue";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports to try when another process takes the one we picked first.
const PORT_ATTEMPTS: usize = 5;

/// A PostgreSQL server in a temporary directory, stopped (`pg_ctl stop -m immediate`) and
/// deleted on drop.
#[derive(Debug)]
pub struct TempPostgres {
    /// `Some` until drop; owns the directory holding `data/`, the log and the Unix socket.
    dir: Option<tempfile::TempDir>,
    /// The path of `dir`, still known while dropping.
    dir_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    binaries: Binaries,
    identity: Identity,
    /// The postmaster itself (not a wrapper), so its pid is the server's; `None` before it
    /// is started and between start attempts.
    postmaster: Option<Child>,
    /// `Some` until drop; see module `watchdog`.
    watchdog: Option<Watchdog>,
    /// The `N` of the next `plue_N` database.
    next_database: AtomicU32,
}

impl TempPostgres {
    /// Starts a server or explains why it cannot.
    pub fn start() -> Result<TempPostgres> {
        Self::start_with(&[])
    }

    /// Starts a server with `settings` (`name=value`, as `postgres -c` takes them) after
    /// the usual ones, e.g. `shared_preload_libraries=pg_stat_statements` for a benchmark
    /// that reads where the server's time went.
    pub fn start_with(settings: &[&str]) -> Result<TempPostgres> {
        let binaries = binaries::find()?;
        let identity = Identity::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("plue-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        let dir_path = dir.path().to_owned();
        identity.chown(&dir_path)?;
        let data_dir = dir_path.join("data");
        // Armed before anything runs, so a death during initdb or start-up is covered too.
        let watchdog = Watchdog::arm(&data_dir, &dir_path)?;
        // Built before the server runs so that every early return below goes through `Drop`,
        // which stops whatever has started and removes the directory.
        let mut server = TempPostgres {
            dir: Some(dir),
            log_path: dir_path.join("postgres.log"),
            dir_path,
            data_dir,
            port: 0,
            binaries,
            identity,
            postmaster: None,
            watchdog: Some(watchdog),
            next_database: AtomicU32::new(1),
        };
        initdb(
            &server.binaries,
            &server.identity,
            &server.dir_path,
            &server.data_dir,
        )?;
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            let log = File::create(&server.log_path)
                .with_context(|| format!("creating {}", server.log_path.display()))?;
            server.postmaster = Some(spawn_postmaster(
                &server.binaries,
                &server.identity,
                &server.dir_path,
                server.port,
                settings,
                log,
            )?);
            match server.wait_until_ready() {
                Ok(()) => return Ok(server),
                // Another process bound the port between our probe and the postmaster's
                // bind. The postmaster has exited (and been reaped), so the data directory
                // is free to reuse.
                Err(Startup::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    server.postmaster = None;
                    attempt += 1;
                }
                Err(Startup::PortTaken(error)) => {
                    return Err(error.context(format!(
                        "each of {PORT_ATTEMPTS} free ports was taken before PostgreSQL bound it"
                    )))
                }
                Err(Startup::Failed(error)) => return Err(error),
            }
        }
    }

    /// `postgres://plue@127.0.0.1:PORT/plue_N` — a fresh database each call (`CREATE
    /// DATABASE plue_N` via `psql`), so tests sharing a server don't see each other's data.
    pub fn new_database(&self) -> Result<String> {
        let n = self.next_database.fetch_add(1, Ordering::Relaxed);
        let name = format!("plue_{n}");
        self.psql(&self.url("postgres"), &format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.url(&name))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the data directory, the log and the Unix socket;
    /// it is gone once the server is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Runs `sql` with `psql` against `url` (stopping at the first error) and returns what
    /// it printed: unaligned, tuples only, so `select 1` gives `"1\n"`.
    pub fn psql(&self, url: &str, sql: &str) -> Result<String> {
        let output = Command::new(&self.binaries.psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.binaries.psql.display()))?;
        if !output.status.success() {
            bail!(
                "psql -d {url} -c {sql:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).context("psql printed something that is not UTF-8")
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Polls until `select 1` succeeds, the postmaster exits, or [`START_TIMEOUT`] passes.
    fn wait_until_ready(&mut self) -> std::result::Result<(), Startup> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url("postgres");
        loop {
            let exited = match self.postmaster.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status),
                Some(Err(error)) => {
                    return Err(Startup::Failed(
                        anyhow!(error).context("waiting for the postmaster"),
                    ))
                }
                None => return Err(Startup::Failed(anyhow!("no postmaster to wait for"))),
            };
            if let Some(status) = exited {
                let log = self.log_tail();
                let error = anyhow!(
                    "postgres{} exited during start-up ({status}); server log {}:\n{log}",
                    self.identity.describe(),
                    self.log_path.display()
                );
                return Err(if log.contains("Address already in use") {
                    Startup::PortTaken(error)
                } else {
                    Startup::Failed(error)
                });
            }
            let attempt = match self.psql(&url, "select 1") {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(Startup::Failed(anyhow!(
                    "PostgreSQL on port {} did not accept connections within {} s \
                     (last attempt: {attempt:#}); server log {}:\n{}",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log_path.display(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server log, for error messages.
    fn log_tail(&self) -> String {
        tail(&self.log_path, 30)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        if let Some(mut postmaster) = self.postmaster.take() {
            if let Ok(None) = postmaster.try_wait() {
                let stop = self
                    .identity
                    .command(&self.binaries.pg_ctl, &self.dir_path)
                    .arg("stop")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", "immediate", "-w", "-t", "10"])
                    .stdin(Stdio::null())
                    .output();
                match stop {
                    Ok(output) if output.status.success() => {}
                    other => {
                        eprintln!(
                            "testkit: pg_ctl stop -m immediate on port {} failed ({}); killing \
                             the postmaster",
                            self.port,
                            describe_output(&other)
                        );
                        let _ = postmaster.kill();
                    }
                }
            }
            let _ = postmaster.wait();
        }
        if let Some(dir) = self.dir.take() {
            if let Err(error) = dir.close() {
                eprintln!("testkit: removing {}: {error}", self.dir_path.display());
            }
        }
    }
}

/// Why a start attempt failed.
enum Startup {
    /// The port was taken by the time the postmaster bound it: retry on another.
    PortTaken(anyhow::Error),
    /// Anything else: give up.
    Failed(anyhow::Error),
}

/// For tests: `Ok(Some(server))` when it started; `Ok(None)` (after printing why to stderr)
/// when it could not and `PLUE_REQUIRE_POSTGRES` is not `"1"`; `Err` when it could not and
/// `PLUE_REQUIRE_POSTGRES=1`.
pub fn postgres_for_tests() -> Result<Option<TempPostgres>> {
    match TempPostgres::start() {
        Ok(server) => Ok(Some(server)),
        Err(error) => skip_or_fail(error).map(|()| None),
    }
}

/// A process-wide shared server for test binaries that start many databases, with the
/// Option semantics of [`postgres_for_tests`]. It is started by the first call, lives until
/// the process exits and is then stopped and deleted by its watchdog; a failed start is
/// remembered, not retried.
pub fn shared_postgres() -> Result<Option<&'static TempPostgres>> {
    static SHARED: OnceLock<std::result::Result<TempPostgres, String>> = OnceLock::new();
    match SHARED.get_or_init(|| TempPostgres::start().map_err(|error| format!("{error:#}"))) {
        Ok(server) => Ok(Some(server)),
        Err(error) => skip_or_fail(anyhow!("{error}")).map(|()| None),
    }
}

/// `Err` when PostgreSQL is required, else prints why the test skips and returns `Ok`.
fn skip_or_fail(error: anyhow::Error) -> Result<()> {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        return Err(error.context(format!("{REQUIRE_ENV}=1 but PostgreSQL did not start")));
    }
    eprintln!(
        "testkit: skipping, PostgreSQL did not start ({REQUIRE_ENV}=1 makes this an error): \
         {error:#}"
    );
    Ok(())
}

/// Creates the cluster: superuser `plue`, trust authentication, UTF-8, C locale, no fsync.
fn initdb(binaries: &Binaries, identity: &Identity, cwd: &Path, data_dir: &Path) -> Result<()> {
    let output = identity
        .command(&binaries.initdb, cwd)
        .arg("-D")
        .arg(data_dir)
        .args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8"])
        .args(["--locale=C"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => Ok(()),
        other => bail!(
            "{} -D {}{} failed ({}){}",
            binaries.initdb.display(),
            data_dir.display(),
            identity.describe(),
            describe_output(&other),
            match identity {
                Identity::User { name, .. } => format!(
                    "; user {name} must be able to reach {} (is TMPDIR somewhere only root can \
                     enter?)",
                    cwd.display()
                ),
                Identity::Current => String::new(),
            }
        ),
    }
}

/// Starts the postmaster directly (no `pg_ctl start`, whose daemonised server we could not
/// wait for or kill), writing its log to `log`.
fn spawn_postmaster(
    binaries: &Binaries,
    identity: &Identity,
    dir: &Path,
    port: u16,
    settings: &[&str],
    log: File,
) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_err = log.try_clone().context("duplicating the log file handle")?;
    let mut command = identity.command(&binaries.postgres, dir);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()));
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "full_page_writes=off",
        "synchronous_commit=off",
        "max_connections=200",
        "shared_buffers=128MB",
    ]
    .iter()
    .chain(settings)
    {
        command.arg("-c").arg(setting);
    }
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a terminal's Ctrl-C reaches the test process, whose exit
        // wakes the watchdog, instead of racing it with the postmaster's own fast shutdown.
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "starting {}{}",
                binaries.postgres.display(),
                identity.describe()
            )
        })
}

/// A port on 127.0.0.1 that was free a moment ago (the caller retries if that changes).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to pick a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the picked port")?
        .port())
}

/// The last `lines` lines of a (small) file, or why it could not be read.
fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// A command's exit status and trimmed output, or why it did not run.
fn describe_output(output: &std::io::Result<Output>) -> String {
    match output {
        Ok(output) => {
            let mut text = output.status.to_string();
            for stream in [&output.stdout, &output.stderr] {
                let stream = String::from_utf8_lossy(stream);
                if !stream.trim().is_empty() {
                    text.push_str(": ");
                    text.push_str(stream.trim());
                }
            }
            text
        }
        Err(error) => format!("did not run: {error}"),
    }
}
