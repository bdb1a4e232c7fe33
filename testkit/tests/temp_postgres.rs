//! End-to-end tests of `testkit` against a real PostgreSQL.
//!
//! They skip (printing why) when PostgreSQL cannot start, unless `PLUE_REQUIRE_POSTGRES=1`.
//! The watchdog tests run this test binary again as a helper process (selected by
//! `HELPER_ENV`) that starts the shared server and then exits or is killed, and check from
//! outside that the server and its directory went with it.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{postgres_for_tests, shared_postgres};

/// Set in the helper process: `exit` or `hang`.
const HELPER_ENV: &str = "PLUE_TESTKIT_HELPER";

#[test]
fn databases_are_separate_and_drop_cleans_up() -> Result<()> {
    let Some(server) = postgres_for_tests()? else {
        return Ok(());
    };
    let first = server.new_database()?;
    let second = server.new_database()?;
    assert_ne!(first, second);
    for url in [&first, &second] {
        assert!(
            url.starts_with(&format!(
                "postgres://plue@127.0.0.1:{}/plue_",
                server.port()
            )),
            "{url}"
        );
        assert_eq!(server.psql(url, "select 1")?, "1\n");
    }
    // A table made in one database is absent from the other.
    server.psql(
        &first,
        "create table only_here (x int); insert into only_here values (7)",
    )?;
    assert_eq!(server.psql(&first, "select x from only_here")?, "7\n");
    let error = server
        .psql(&second, "select x from only_here")
        .expect_err("the table must not exist in the second database");
    assert!(format!("{error:#}").contains("does not exist"), "{error:#}");

    let dir = server.dir().to_owned();
    let port = server.port();
    assert!(dir.join("data").join("PG_VERSION").is_file());
    drop(server);
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    assert!(
        port_is_free(port),
        "port {port} is still taken after the drop"
    );
    Ok(())
}

#[test]
fn shared_server_is_one_server() -> Result<()> {
    let Some(server) = shared_postgres()? else {
        return Ok(());
    };
    let again = shared_postgres()?.context("the second call must see the same server")?;
    assert!(std::ptr::eq(server, again));
    let url = server.new_database()?;
    assert_eq!(server.psql(&url, "select 1")?, "1\n");
    Ok(())
}

#[test]
fn shared_server_goes_away_when_the_process_exits() -> Result<()> {
    watched_helper("exit")
}

// regression guard: a test process killed by SIGKILL runs no destructor; only the watchdog
// keeps its server from leaking.
#[test]
fn shared_server_goes_away_when_the_process_is_killed() -> Result<()> {
    watched_helper("hang")
}

/// Not a test of its own: the body of the helper process, idle unless `HELPER_ENV` is set.
#[test]
fn helper_hold_shared_server() -> Result<()> {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return Ok(());
    };
    let server = shared_postgres()?.context("the parent only runs the helper when it can")?;
    let url = server.new_database()?;
    server.psql(&url, "select 1")?;
    println!("READY {} {}", server.port(), server.dir().display());
    if mode == "hang" {
        // Blocks until the parent kills us, or until its end of the pipe closes because the
        // parent itself died: a helper never lingers.
        std::io::stdin().read_line(&mut String::new())?;
    }
    Ok(())
}

/// Runs the helper in `mode`, waits until it reports its server, lets it exit (`exit`) or
/// SIGKILLs it (`hang`), then checks that the server's directory and port are freed.
fn watched_helper(mode: &str) -> Result<()> {
    // Only run when PostgreSQL can start here; the skip reason is printed by the probe.
    if shared_postgres()?.is_none() {
        return Ok(());
    }
    let mut helper = Command::new(std::env::current_exe()?)
        .args(["--exact", "helper_hold_shared_server", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(HELPER_ENV, mode)
        .env("PLUE_REQUIRE_POSTGRES", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running this test binary as the helper")?;
    // Read on a thread so that a helper that never reports cannot hang this test.
    let stdout = helper.stdout.take().context("helper stdout")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end, so the helper never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test helper_hold_shared_server ... " before the test's output,
            // on the same line.
            if let Some((_, rest)) = line.split_once("READY ") {
                let _ = sender.send(rest.to_owned());
            }
        }
    });
    let report = receiver.recv_timeout(Duration::from_secs(60));
    let Ok(report) = report else {
        let _ = helper.kill();
        let status = helper.wait()?;
        bail!("the helper ended ({status}) without reporting a server within 60 s");
    };
    let (port, dir) = report.split_once(' ').context("READY PORT DIR")?;
    let (port, dir) = (port.parse::<u16>()?, PathBuf::from(dir));
    assert!(dir.join("data").is_dir(), "{}", dir.display());
    if mode == "hang" {
        helper.kill()?;
    }
    let status = helper.wait()?;
    if mode == "exit" {
        assert!(status.success(), "helper: {status}");
    }
    wait_for_cleanup(&dir, port)
}

fn wait_for_cleanup(dir: &Path, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !dir.exists() && port_is_free(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "20 s after the helper ended: directory {} exists: {}, port {port} free: {}",
        dir.display(),
        dir.exists(),
        port_is_free(port)
    )
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
