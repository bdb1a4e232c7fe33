//! A debug session (`plue debug RUN STEP`, protocol in [`wire::debug`]): the failed step
//! run again exactly as its attempts ran, then an interactive `bash` in its workspace on a
//! pseudo-terminal, its bytes relayed through the engine to the session's creator.
//!
//! Invariants:
//! - The shell is confined like the step: the attempt's step user (held until the shell's
//!   processes are gone and the directory removed), a session and cgroup of its own
//!   (`containment::spawn_on_terminal`: private `/proc`, mounts, IPC and places,
//!   `no_new_privs`, the seccomp filter), the step's network namespace (kept from the step
//!   to the shell's end), and the step's environment — secrets included, exactly those the
//!   step had — built by `step_env` like every step process's.
//! - Everything the terminal shows goes through the step's [`Masker`] first, as log lines
//!   do (a secret split across reads is held back until it can be told apart).
//! - The session ends when the shell exits, when the engine says it ended (idle, detached,
//!   ended by its creator: heard on the input poll, which runs from the session's start,
//!   so a step still running again is stopped too), after the idle timeout without a byte either way (the runner's
//!   own clock, for an engine it cannot reach), or when the runner stops; then the shell's
//!   processes are killed, the network namespace and proxy go, and the directory is
//!   removed before the end is reported. Nothing is uploaded: a debug run leaves no
//!   hand-off, artifact, log line or completion.
//!
//! Why one file past ~600 lines: a debug session is one sequence on one sandbox: run the
//! step again, keep it, start the shell on a PTY, relay, end and clean up; its order is the
//! invariant.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    claim_and_lay_out, finish_sandbox, remove_dir, run_process, spec_for, user_of, AttemptDir,
    Engine, SendError,
};
use crate::containment::{self, Program};
use crate::mask::Masker;
use crate::{network, program_path, step_env};
use plue_types::protocol::debug::{self as wire_debug, DebugAssignment, InputEvent};
use plue_types::protocol::{self as wire, Outcome, Stream};

/// How long an input poll is held by the engine.
const INPUT_WAIT: Duration = Duration::from_secs(20);
/// Output is sent after this long without more, or once a request's worth is waiting.
const OUTPUT_QUIET: Duration = Duration::from_millis(15);

/// Runs `debug` to its end; errors only when the engine cannot be reached at all.
pub(super) async fn execute(
    engine: &Engine,
    config: &super::AgentConfig,
    debug: DebugAssignment,
    python: &mut Option<PathBuf>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let DebugAssignment {
        session,
        idle_timeout_secs,
        term,
        assignment,
    } = debug;
    let idle = Duration::from_secs(idle_timeout_secs.max(1));
    let short = session.get(..8).unwrap_or("session").to_owned();
    let dir = config
        .work_dir
        .join(format!("debug-{short}-{}", std::process::id()));
    let masker = Arc::new(Masker::new(assignment.secrets.values()));
    // The session ended on the engine's side (or the engine refused the stream).
    let ended = CancellationToken::new();
    let activity = Arc::new(Activity::default());
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(256);
    let sender = tokio::spawn(send_output(
        engine.clone(),
        session.clone(),
        out_rx,
        ended.clone(),
        activity.clone(),
    ));
    let (events_tx, events_rx) = mpsc::channel::<InputEvent>(256);
    let poller = tokio::spawn(relay_input(
        engine.clone(),
        session.clone(),
        events_tx,
        ended.clone(),
        activity.clone(),
    ));
    let say = |text: String| {
        let out_tx = out_tx.clone();
        async move {
            let _ = out_tx
                .send(format!("\r\n[plue] {text}\r\n").into_bytes())
                .await;
        }
    };
    say(format!(
        "running step '{}' again as attempt {} ran it...",
        assignment.step_id, assignment.attempt
    ))
    .await;

    // The step's lines, masked, become terminal lines.
    let (lines_tx, mut lines_rx) = mpsc::channel::<(Stream, String)>(1024);
    let printer = {
        let out_tx = out_tx.clone();
        let masker = masker.clone();
        tokio::spawn(async move {
            while let Some((_, line)) = lines_rx.recv().await {
                let mut text = masker.mask(&line).into_owned();
                text.push_str("\r\n");
                if out_tx.send(text.into_bytes()).await.is_err() {
                    break;
                }
            }
        })
    };

    let (claim, laid_out) = claim_and_lay_out(config.step_users, &dir, &assignment, None).await?;
    let user = user_of(&claim);
    let (mut step_network, prepared, _caches) = finish_sandbox(
        engine,
        config,
        &assignment,
        &dir,
        &claim,
        laid_out,
        &lines_tx,
    )
    .await;

    let reason = match prepared {
        Err(e) => format!("the step could not be set up: {e}"),
        Ok(()) => {
            let cancel = stop.child_token();
            let ran = match spec_for(
                &assignment,
                &dir,
                &config.base_env,
                user,
                step_network.as_ref(),
                python,
            )
            .await
            {
                Err(e) => (
                    Outcome::Failed,
                    None,
                    Some(format!("{e:#}")),
                    Default::default(),
                ),
                Ok(spec) => {
                    let output_file = AttemptDir::new(&dir).output_file;
                    tokio::select! {
                        ran = run_process(spec, &assignment, &output_file, &lines_tx, &cancel) => ran,
                        () = ended.cancelled() => {
                            cancel.cancel();
                            (Outcome::Cancelled, None, Some("the session ended".into()), Default::default())
                        }
                    }
                }
            };
            let (outcome, _, why, _) = ran;
            let verdict = match outcome {
                Outcome::Succeeded => "succeeded this time".to_owned(),
                Outcome::Failed => format!("failed again: {}", why.unwrap_or_default()),
                Outcome::Cancelled => "was stopped".to_owned(),
            };
            say(format!("step '{}' {verdict}", assignment.step_id)).await;
            if ended.is_cancelled() || stop.is_cancelled() {
                "the session ended before the shell started".to_owned()
            } else {
                say(format!(
                    "a shell in its workspace, as its user and in its sandbox; `exit` ends \
                     the session (and it ends after {}s idle)",
                    idle.as_secs()
                ))
                .await;
                let shell = Shell {
                    engine,
                    session: &session,
                    assignment: &assignment,
                    dir: &dir,
                    base_env: &config.base_env,
                    user,
                    network: step_network.as_ref(),
                    term: &term,
                    masker: &masker,
                    out_tx: &out_tx,
                    activity: &activity,
                    idle,
                };
                match shell.run(events_rx, &ended, stop).await {
                    Ok(reason) => reason,
                    Err(e) => format!("the shell could not start: {e:#}"),
                }
            }
        }
    };
    poller.abort();
    let _ = poller.await;
    say(format!("debug session over: {reason}")).await;
    drop(lines_tx);
    let _ = printer.await;
    drop(out_tx);
    // What the terminal still holds goes out before the end is reported.
    let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    if let Some(confined) = step_network.take() {
        confined.finish().await;
    }
    let dir_to_remove = dir.clone();
    tokio::task::spawn_blocking(move || {
        remove_dir(&dir_to_remove, "debug session");
        drop(claim);
    })
    .await
    .context("the debug directory's removal failed")?;
    if !ended.is_cancelled() {
        let quick = CancellationToken::new();
        let report = engine
            .send::<_, wire::Ack>(
                &wire_debug::end_path(&session),
                &wire_debug::DebugEnd { reason },
                None,
                &quick,
            )
            .await;
        if let Err(e) = report {
            tracing::warn!(session = %short, "could not report the debug session's end: {e:#}");
        }
    }
    Ok(())
}

/// When a byte last moved either way (ms since the Unix epoch).
#[derive(Default)]
struct Activity(AtomicI64);

impl Activity {
    fn touch(&self) {
        self.0
            .store(super::now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(u64::try_from(super::now_ms() - last).unwrap_or(0))
    }
}

/// The shell of a session, and what it is relayed through.
struct Shell<'a> {
    engine: &'a Engine,
    session: &'a str,
    assignment: &'a wire::Assignment,
    dir: &'a Path,
    base_env: &'a step_env::Base,
    user: Option<crate::step_user::StepUser>,
    network: Option<&'a network::StepNetwork>,
    term: &'a str,
    masker: &'a Masker,
    out_tx: &'a mpsc::Sender<Vec<u8>>,
    activity: &'a Activity,
    idle: Duration,
}

impl Shell<'_> {
    /// Starts the shell, relays it until the session ends, kills what is left; why it
    /// ended.
    async fn run(
        &self,
        events: mpsc::Receiver<InputEvent>,
        ended: &CancellationToken,
        stop: &CancellationToken,
    ) -> anyhow::Result<String> {
        if super::kinds::runs(&self.assignment.action) == super::kinds::Runs::Conversation {
            anyhow::bail!("an llm step has no shell");
        }
        let files = AttemptDir::new(self.dir);
        let mut env = step_env::build(
            self.base_env,
            files.paths(),
            &self.assignment.env,
            &self.assignment.secrets,
        );
        if let Some(network) = self.network {
            network.set_env(&mut env);
        }
        env.insert("TERM".into(), self.term.to_owned());
        let bash = env
            .get("PATH")
            .and_then(|path| program_path::resolve("bash", path, self.user.is_some()))
            .unwrap_or_else(|| PathBuf::from("bash"));
        let args: Vec<String> = vec!["--noprofile".into(), "--norc".into(), "-i".into()];
        let (leader, follower) = open_pty(self.user)?;
        let program = Program {
            path: &bash,
            args: &args,
            env: &env,
            cwd: &files.workspace,
            network: self.network.and_then(network::StepNetwork::namespace),
        };
        let (mut child, contained) =
            containment::spawn_on_terminal(program, self.user, follower.as_fd())
                .context("starting bash on the terminal")?;
        drop(follower);
        let leader = Arc::new(leader);
        self.activity.touch();

        // The terminal's bytes, read on a thread of their own (a read blocks), masked.
        let (read_tx, mut read_rx) = mpsc::channel::<Vec<u8>>(64);
        let reading = {
            let mut file = std::fs::File::from(leader.try_clone().context("the terminal")?);
            std::thread::Builder::new()
                .name("plue-debug-read".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    // EIO once every process holding the terminal is gone.
                    while let Ok(n @ 1..) = file.read(&mut buf) {
                        if read_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                })
                .context("starting the terminal reader")?
        };
        let forward = {
            let out_tx = self.out_tx.clone();
            let masker = self.masker.clone();
            tokio::spawn(async move {
                let mut text = Utf8Pieces::default();
                let mut pending = String::new();
                loop {
                    let piece = tokio::select! {
                        piece = read_rx.recv() => piece,
                        // A quiet terminal shows what masking held back.
                        () = tokio::time::sleep(Duration::from_millis(200)), if !pending.is_empty() => {
                            let rest = masker.finish_pieces(&mut pending);
                            if out_tx.send(rest.into_bytes()).await.is_err() { break; }
                            continue;
                        }
                    };
                    let Some(bytes) = piece else { break };
                    let shown = masker.push_piece(&mut pending, &text.push(&bytes));
                    if !shown.is_empty() && out_tx.send(shown.into_bytes()).await.is_err() {
                        break;
                    }
                }
                let rest = masker.finish_pieces(&mut pending);
                let _ = out_tx.send(rest.into_bytes()).await;
            })
        };
        // What the person types, written on a thread of its own (a write may block).
        let (write_tx, mut write_rx) = mpsc::channel::<Vec<u8>>(64);
        let writing = {
            let mut file = std::fs::File::from(leader.try_clone().context("the terminal")?);
            std::thread::Builder::new()
                .name("plue-debug-write".into())
                .spawn(move || {
                    while let Some(bytes) = write_rx.blocking_recv() {
                        if file.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                })
                .context("starting the terminal writer")?
        };
        let input = tokio::spawn(apply_input(events, write_tx, leader.clone()));
        let quick = CancellationToken::new();
        let _ = self
            .engine
            .send::<_, wire::Ack>(
                &wire_debug::ready_path(self.session),
                &wire::Ack {},
                None,
                &quick,
            )
            .await;

        let reason = loop {
            tokio::select! {
                exit = child.wait() => break match exit {
                    Ok(crate::launch::Exit::Code(code)) => format!("the shell exited with code {code}"),
                    Ok(crate::launch::Exit::Signal(signal)) => format!("the shell was killed by signal {signal}"),
                    Err(e) => format!("the shell could not be waited for: {e}"),
                },
                () = ended.cancelled() => break "the session ended".to_owned(),
                () = stop.cancelled() => break "the runner is stopping".to_owned(),
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if self.activity.idle_for() >= self.idle {
                        break format!("idle for {}s", self.idle.as_secs());
                    }
                }
            }
        };
        contained.kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        contained.finish().await;
        input.abort();
        let _ = input.await;
        // The reader sees EIO now that nothing holds the terminal; the writer its channel
        // closed.
        let _ = tokio::time::timeout(Duration::from_secs(2), forward).await;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = writing.join();
            let _ = reading.join();
        })
        .await;
        Ok(reason)
    }
}

/// A pseudo-terminal: its leader (the runner's side) and its follower (the shell's),
/// handed to the step's user so the shell owns its terminal as a login's would.
fn open_pty(user: Option<crate::step_user::StepUser>) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let leader = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .context("opening a pseudo-terminal")?;
    grantpt(&leader).context("granting the pseudo-terminal")?;
    unlockpt(&leader).context("unlocking the pseudo-terminal")?;
    let name = ptsname(&leader, Vec::new()).context("naming the pseudo-terminal")?;
    let follower: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(Path::new(std::ffi::OsStr::from_bytes(name.to_bytes())))
        .context("opening the pseudo-terminal's follower")?
        .into();
    if let Some(user) = user {
        nix::unistd::fchown(
            &follower,
            Some(nix::unistd::Uid::from_raw(user.uid)),
            Some(nix::unistd::Gid::from_raw(user.gid)),
        )
        .context("handing the terminal to the step's user")?;
    }
    set_size(&leader, 80, 24);
    Ok((leader, follower))
}

fn set_size(leader: &OwnedFd, cols: u16, rows: u16) {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    if let Err(err) = rustix::termios::tcsetwinsize(leader, size) {
        tracing::debug!(%err, "setting the terminal's size");
    }
}

/// Text of a byte stream cut anywhere: a character split across pieces waits for its
/// rest; bytes that are no UTF-8 become U+FFFD, as the log's lines do.
#[derive(Default)]
struct Utf8Pieces {
    carry: Vec<u8>,
}

impl Utf8Pieces {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.carry) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.carry.clear();
                    return text;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.carry[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            self.carry.drain(..good);
                            return text;
                        }
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.carry.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
}

/// Sends the terminal's output in order, a request at a time, coalescing what waits;
/// marks `ended` when the engine says the session is over or refuses the stream.
async fn send_output(
    engine: Engine,
    session: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    ended: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut seq = 0u64;
    while let Some(first) = rx.recv().await {
        let mut chunk = first;
        // Whatever else is ready (or comes within a moment) goes along.
        let deadline = tokio::time::Instant::now() + OUTPUT_QUIET;
        while chunk.len() < wire_debug::MAX_OUTPUT_BYTES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => chunk.extend_from_slice(&more),
                _ => break,
            }
        }
        for piece in chunk.chunks(wire_debug::MAX_OUTPUT_BYTES) {
            if piece.is_empty() || ended.is_cancelled() {
                continue;
            }
            activity.touch();
            seq += 1;
            match engine.post_output(&session, seq, piece).await {
                Ok(ack) if ack.end => ended.cancel(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("debug output refused: {e:#}");
                    ended.cancel();
                }
            }
        }
    }
}

/// Long-polls the engine for input and window sizes from the session's start, handing
/// them on in order (to the shell, once it runs); marks `ended` when the engine says the
/// session is over — also while the step still runs again.
async fn relay_input(
    engine: Engine,
    session: String,
    events: mpsc::Sender<InputEvent>,
    ended: CancellationToken,
    activity: Arc<Activity>,
) {
    let mut after = 0u64;
    let path = wire_debug::input_path(&session);
    loop {
        let poll = wire_debug::InputPoll {
            after,
            wait_ms: INPUT_WAIT.as_millis() as u64,
        };
        let batch: anyhow::Result<wire_debug::InputBatch> = tokio::select! {
            () = ended.cancelled() => return,
            batch = engine.send(&path, &poll, Some(INPUT_WAIT), &ended) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("debug input: {e:#}");
                ended.cancel();
                return;
            }
        };
        for event in batch.events {
            if event.seq() <= after {
                continue;
            }
            after = event.seq();
            activity.touch();
            tokio::select! {
                sent = events.send(event) => if sent.is_err() { return },
                () = ended.cancelled() => return,
            }
        }
        if batch.end {
            ended.cancel();
            return;
        }
    }
}

/// Applies input events to the terminal: keystrokes to its writer, sizes to the leader.
async fn apply_input(
    mut events: mpsc::Receiver<InputEvent>,
    write_tx: mpsc::Sender<Vec<u8>>,
    leader: Arc<OwnedFd>,
) {
    while let Some(event) = events.recv().await {
        match event {
            InputEvent::Data { hex, .. } => match decode_hex(&hex) {
                Some(bytes) => {
                    if write_tx.send(bytes).await.is_err() {
                        return;
                    }
                }
                None => tracing::warn!("debug input that is not hex was dropped"),
            },
            InputEvent::Resize { cols, rows, .. } => set_size(&leader, cols, rows),
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Engine {
    /// Posts one output chunk (`seq`), retried like every request until the engine
    /// answers or has been unreachable for `give_up_after`.
    async fn post_output(
        &self,
        session: &str,
        seq: u64,
        bytes: &[u8],
    ) -> anyhow::Result<wire_debug::OutputAck> {
        let path = wire_debug::output_path(session, seq);
        let first_failure = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let sent = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(self.token.as_str())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec())
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    return response.json().await.context("reading the output's answer");
                }
                Ok(response) if response.status().is_server_error() => SendError::Unavailable(
                    format!("{path}: {}", super::answer_error(response).await),
                ),
                Ok(response) => anyhow::bail!("{path}: {}", super::answer_error(response).await),
                Err(e) => SendError::Unavailable(format!("{path}: {e}")),
            };
            if first_failure.elapsed() > self.give_up_after {
                anyhow::bail!("{failure}");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_is_kept_whole() {
        let mut text = Utf8Pieces::default();
        let bytes = "é✓".as_bytes();
        assert_eq!(text.push(&bytes[..1]), "");
        assert_eq!(text.push(&bytes[1..3]), "é");
        assert_eq!(text.push(&bytes[3..]), "✓");
        assert_eq!(text.push(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn hex_input_decodes_or_is_refused() {
        assert_eq!(decode_hex("6c730a"), Some(b"ls\n".to_vec()));
        assert_eq!(decode_hex("6c7"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    // The shell's terminal: a pty opened, sized, written and read through, without a step.
    #[test]
    fn a_pseudo_terminal_opens_and_carries_bytes_both_ways() {
        let (leader, follower) = open_pty(None).unwrap();
        set_size(&leader, 100, 40);
        let size = rustix::termios::tcgetwinsize(&follower).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 40));
        let mut to_shell = std::fs::File::from(leader.try_clone().unwrap());
        to_shell.write_all(b"hi\n").unwrap();
        let mut from_terminal = std::fs::File::from(follower);
        let mut buf = [0u8; 16];
        let n = from_terminal.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
    }
}
