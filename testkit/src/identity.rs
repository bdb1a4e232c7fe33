//! Which user the server programs run as.
//!
//! `initdb`, `postgres` and `pg_ctl` refuse to run as root. When this process's effective
//! uid is 0 they run as the `postgres` system user (Debian's `postgresql` package creates
//! it); otherwise they run as the current user.
//!
//! The switch uses std's safe `CommandExt::uid`/`gid` rather than `runuser`/`setpriv`:
//! the child changes identity between fork and exec, so the pid we hold *is* the postmaster
//! (`runuser` would stay in between as a parent that a SIGKILL leaves behind an orphaned
//! server), and std drops root's supplementary groups on the way (`setgroups(0)`).
//!
//! Invariant: every command built by [`Identity::command`] runs as the chosen user with its
//! working directory set, so no program tries to `chdir` back into root's directories.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The system user that runs the server when we are root.
const SERVER_USER: &str = "postgres";

/// The user the server programs run as.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// Not root: run as ourselves.
    Current,
    /// Root: run as this unprivileged user.
    User { name: String, uid: u32, gid: u32 },
}

impl Identity {
    /// Picks the identity for this process, or explains why there is none.
    pub(crate) fn detect() -> Result<Identity> {
        if effective_uid()? != 0 {
            return Ok(Identity::Current);
        }
        let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
        let Some((uid, gid)) = lookup(&passwd, SERVER_USER) else {
            bail!(
                "running as root, and PostgreSQL refuses to run as root, but there is no \
                 `{SERVER_USER}` user to run it as: `apt-get install postgresql` creates one, \
                 or run the tests as a non-root user"
            );
        };
        if uid == 0 {
            bail!("the `{SERVER_USER}` user in /etc/passwd has uid 0; PostgreSQL refuses root");
        }
        Ok(Identity::User {
            name: SERVER_USER.to_owned(),
            uid,
            gid,
        })
    }

    /// A command for `program` that runs as this identity in `cwd`.
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(cwd);
        if let Identity::User { uid, gid, .. } = self {
            command.uid(*uid).gid(*gid);
        }
        command
    }

    /// Gives `path` to this identity so the server can write there.
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        if let Identity::User { name, uid, gid } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .with_context(|| format!("giving {} to user {name}", path.display()))?;
        }
        Ok(())
    }

    /// For error messages: `" (as user postgres)"` or nothing.
    pub(crate) fn describe(&self) -> String {
        match self {
            Identity::Current => String::new(),
            Identity::User { name, .. } => format!(" (as user {name})"),
        }
    }
}

/// The effective uid, from `/proc/self/status` (Linux), else from `id -u`.
fn effective_uid() -> Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\treal\teffective\tsaved\tfilesystem"
        let effective = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok());
        if let Some(uid) = effective {
            return Ok(uid);
        }
    }
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u` to learn the effective uid")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("`id -u` printed {text:?}, not a uid"))
}

/// `(uid, gid)` of `user` in a passwd file (`name:password:uid:gid:...`).
fn lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn lookup_reads_uid_and_gid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(lookup(passwd, "postgres"), Some((101, 104)));
        assert_eq!(lookup(passwd, "postgre"), None);
        assert_eq!(lookup("postgres:x:oops:1::", "postgres"), None);
    }
}
