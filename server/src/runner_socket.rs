//! The runner protocol on a Unix socket: how an engine's own local runners (`plue run`'s)
//! reach it without TCP. Remote runners and `plue serve` keep HTTP over TCP; the socket
//! carries the same HTTP requests, to the same router, with the same runner tokens.
//!
//! Invariants:
//! - The socket lives alone in a directory made fresh for it (`create`, so a planted one is
//!   never adopted) with mode 0700, and is itself 0600: only the engine's user can connect
//!   (steps run as other users, or as that user in their own room: a user that can reach
//!   it could already read the engine's data directory).
//! - The path fits a socket address (`sun_path`: 107 bytes); a parent that makes it longer,
//!   or where it cannot be bound, is passed over for the next one offered.
//! - Dropping the socket removes its directory (the engine's serving task holds it, so it
//!   goes when serving ends or the task is dropped).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::UnixListener;

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_PATH: usize = 107;

/// The socket's file name inside its directory.
const FILE: &str = "runners.sock";

/// A bound, private Unix socket for the runner protocol (see the module's doc).
pub struct RunnerSocket {
    listener: UnixListener,
    path: PathBuf,
    dir: RemoveDir,
}

impl RunnerSocket {
    /// Binds a socket in a fresh private directory below the first of `parents` where its
    /// path fits a socket address and it can be bound. Needs a Tokio runtime.
    pub fn bind(parents: &[&Path]) -> anyhow::Result<RunnerSocket> {
        let mut failures = Vec::new();
        for parent in parents {
            // `plue-runners-` + 12 hex digits + `/` + FILE.
            if parent.as_os_str().len() + 1 + 25 + 1 + FILE.len() > MAX_PATH {
                failures.push(format!(
                    "{}: too long for a socket's path",
                    parent.display()
                ));
                continue;
            }
            match bind_in(parent) {
                Ok(socket) => return Ok(socket),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        anyhow::bail!("no runner socket could be made: {}", failures.join("; "))
    }

    /// Where runners connect.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listener, and what removes the socket's directory when dropped (after serving).
    pub(crate) fn into_parts(self) -> (UnixListener, RemoveDir) {
        (self.listener, self.dir)
    }
}

/// Binds the socket in a fresh private directory below `parent`.
fn bind_in(parent: &Path) -> anyhow::Result<RunnerSocket> {
    let dir = fresh_dir(parent)?;
    let path = dir.0.join(FILE);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding the runner socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(RunnerSocket {
        listener,
        path,
        dir,
    })
}

/// A directory removed (with what it holds) when dropped.
pub(crate) struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("could not remove {}: {e}", self.0.display());
            }
        }
    }
}

/// A new directory below `parent` that only this user may enter.
fn fresh_dir(parent: &Path) -> anyhow::Result<RemoveDir> {
    let mut last_error = None;
    for _ in 0..8 {
        let suffix = &plue_vault::tokens::new_token()?[..12];
        let dir = parent.join(format!("plue-runners-{suffix}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may have taken bits off 0700, never added any; set it exactly.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("setting the mode of {}", dir.display()))?;
                return Ok(RemoveDir(dir));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempts")))
    .with_context(|| {
        format!(
            "creating the runner socket's directory in {}",
            parent.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_socket_is_private_in_a_private_directory_removed_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let socket = RunnerSocket::bind(&[parent.path()]).unwrap();
        let path = socket.path().to_path_buf();
        let dir = path.parent().unwrap().to_path_buf();
        assert_eq!(dir.parent().unwrap(), parent.path());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        // It accepts connections.
        let (listener, guard) = socket.into_parts();
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        accepted.unwrap();
        connected.unwrap();
        drop(listener);
        drop(guard);
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }

    #[tokio::test]
    async fn a_parent_too_long_for_a_socket_address_is_passed_over() {
        let long = tempfile::tempdir().unwrap();
        let deep = long.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let short = tempfile::tempdir().unwrap();
        let socket = RunnerSocket::bind(&[deep.as_path(), short.path()]).unwrap();
        assert!(socket.path().starts_with(short.path()));
        assert!(socket.path().as_os_str().len() <= MAX_PATH);
        let err = RunnerSocket::bind(&[deep.as_path()]).err().unwrap();
        assert!(format!("{err:#}").contains("too long"), "{err:#}");
    }
}
