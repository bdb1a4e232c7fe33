//! A stdio MCP server's process: started in the step's room (`containment::spawn_server`:
//! the step's user, session, cgroup, namespaces, places, network namespace, seccomp), its
//! stdin and stdout handed to the MCP client, its stderr forwarded to the step's log (masked,
//! cut, at most [`MAX_STDERR_LINES`] lines; the rest is read and dropped so the server never
//! blocks on it), and everything it started killed by [`ServerProcess::stop`] (or its drop).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use plue_types::protocol::Stream;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc::Sender;

use super::Room;
use crate::containment::{self, Contained, Program};
use crate::launch::Launched;
use crate::mask::Masker;

/// The most stderr lines of one server the log gets.
const MAX_STDERR_LINES: usize = 200;
/// The longest stderr line the log gets (cut beyond).
const MAX_STDERR_LINE: usize = 2048;

/// A running server and what contains it.
pub(super) struct ServerProcess {
    launched: Launched,
    contained: Contained,
    stderr: tokio::task::JoinHandle<()>,
}

impl ServerProcess {
    /// Starts `command` (with `env` over the room's environment) in `room`; answers the
    /// process and its stdout (to read) and stdin (to write).
    pub(super) fn start(
        name: &str,
        command: &[String],
        env: &BTreeMap<String, String>,
        room: Room<'_>,
        masker: &Arc<Masker>,
        lines: &Sender<(Stream, String)>,
    ) -> std::io::Result<(ServerProcess, pipe::Receiver, pipe::Sender)> {
        let Some((program, args)) = command.split_first() else {
            return Err(std::io::Error::other("an empty command"));
        };
        let mut whole_env = room.env.clone();
        whole_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let program = Program {
            path: Path::new(program),
            args,
            env: &whole_env,
            cwd: room.cwd,
            network: room.network,
        };
        let (mut launched, contained) = containment::spawn_server(program, room.user)?;
        let taken = (
            launched.stdin.take(),
            launched.stdout.take(),
            launched.stderr.take(),
        );
        let (Some(stdin), Some(stdout), Some(stderr)) = taken else {
            return Err(std::io::Error::other("the server's pipes are missing"));
        };
        let write = pipe::Sender::from_owned_fd(stdin)?;
        let read = pipe::Receiver::from_owned_fd(stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr)?;
        let stderr = tokio::spawn(forward_stderr(
            name.to_owned(),
            stderr,
            masker.clone(),
            lines.clone(),
        ));
        Ok((
            ServerProcess {
                launched,
                contained,
                stderr,
            },
            read,
            write,
        ))
    }

    /// Kills the server and everything it started, and reaps them.
    pub(super) async fn stop(mut self) {
        self.contained.kill();
        let _ = self.launched.wait().await;
        self.contained.finish().await;
        self.stderr.abort();
    }
}

/// Sends the server's stderr lines to the step's log as `mcp <name>: <line>`.
async fn forward_stderr(
    name: String,
    mut stderr: pipe::Receiver,
    masker: Arc<Masker>,
    lines: Sender<(Stream, String)>,
) {
    let mut sent = 0usize;
    let mut line: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &buffer[..read] {
            if byte != b'\n' {
                if line.len() < MAX_STDERR_LINE {
                    line.push(byte);
                }
                continue;
            }
            if sent < MAX_STDERR_LINES {
                let text = String::from_utf8_lossy(&line).replace('\0', "");
                let shown = format!("mcp {name}: {}", masker.mask(&text));
                let _ = lines.send((Stream::Stderr, shown)).await;
            } else if sent == MAX_STDERR_LINES {
                let note = format!("mcp {name}: more stderr lines are not logged");
                let _ = lines.send((Stream::System, note)).await;
            }
            sent = sent.saturating_add(1);
            line.clear();
        }
    }
}
