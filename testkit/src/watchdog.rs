//! The watchdog: stops a server and deletes its directory when the process that started it
//! dies, however it dies.
//!
//! A server kept in a `static` is never dropped, and a test process killed with SIGKILL runs
//! no destructor at all, so cleanup cannot live only in `Drop`. The watchdog is a small `sh`
//! process whose stdin is a pipe; this process holds the only write end (std opens pipes
//! close-on-exec, so no other child inherits it). Nobody ever writes, so the watchdog's
//! `read` returns only at end of file — when this process has exited or been killed. It then
//! sends the postmaster SIGQUIT (what `pg_ctl stop -m immediate` sends), waits up to 10 s for
//! `postmaster.pid` to disappear, SIGKILLs it otherwise, and removes the directory.
//!
//! Invariants:
//! - The watchdog runs in its own process group and ignores SIGINT, SIGHUP and SIGTERM, so a
//!   Ctrl-C or a group kill aimed at the test run does not stop it before it has cleaned up.
//! - It reads the postmaster's pid from `postmaster.pid` when it wakes, so it can be armed
//!   before the server exists and covers a death during `initdb` or start-up too.
//! - [`Watchdog::disarm`] kills it *before* an orderly shutdown, so the two never race and
//!   the watchdog never signals a pid that has since been reused.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// `$1`: the data directory; `$2`: the directory to remove.
const SCRIPT: &str = r#"
trap '' INT HUP TERM
while IFS= read -r _; do :; done
pidfile="$1/postmaster.pid"
if [ -r "$pidfile" ]; then
  pid=
  read -r pid < "$pidfile"
  if [ -n "$pid" ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while [ -e "$pidfile" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ -e "$pidfile" ]; then kill -KILL "$pid" 2>/dev/null; fi
  fi
fi
rm -rf "$2"
"#;

/// A running watchdog; dropping it without [`Watchdog::disarm`] lets it clean up.
#[derive(Debug)]
pub(crate) struct Watchdog {
    /// The `sh` process; its stdin is the pipe whose end of file means "clean up now".
    child: Child,
}

impl Watchdog {
    /// Arms a watchdog for the server in `data_dir`, removing `remove` afterwards.
    pub(crate) fn arm(data_dir: &Path, remove: &Path) -> Result<Watchdog> {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("plue-testkit-watchdog")
            .arg(data_dir)
            .arg(remove)
            .stdin(Stdio::piped())
            // Null, not inherited: a watchdog holding the test's stdout or stderr open would
            // keep a harness that reads them to end of file waiting.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the watchdog (`sh`) that cleans up if the test process dies")?;
        Ok(Watchdog { child })
    }

    /// Stops the watchdog without letting it act: for an orderly shutdown by the owner.
    pub(crate) fn disarm(mut self) {
        // SIGKILL, the one signal the script cannot ignore; it is blocked in `read`, so it
        // has done nothing yet.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
