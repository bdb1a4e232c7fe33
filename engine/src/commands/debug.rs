//! `plue debug RUN STEP [--idle-timeout 10m]`: opens a debug session of a failed step on a
//! server (`POST /api/runs/{id}/steps/{step}/debug`), attaches to it
//! (`GET /api/debug/{session}/attach`, Server-Sent Events) and relays the terminal: what
//! is typed goes to `POST /api/debug/{session}/input`, window sizes with it.
//!
//! Promises: on a terminal, stdin is put in raw mode for the session and restored however
//! the command ends (a guard restores it on drop, error and panic included); `Ctrl-]`
//! ends the session and leaves; the process exits 0 when the session ended (its reason on
//! stderr) and 1 when it could not be opened or the server went away.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;

use super::client::ApiClient;
use crate::cli::DebugArgs;

/// `Ctrl-]`: ends the session from the terminal (as telnet's escape).
const ESCAPE: u8 = 0x1d;

#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    status: String,
    idle_timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
struct Status {
    status: String,
}

#[derive(Debug, Deserialize)]
struct End {
    reason: Option<String>,
}

pub(crate) async fn run(args: DebugArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.server.server, args.server.token)?;
    let token = client.token().map(str::to_string);
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        })
        .unwrap_or_else(|| "xterm-256color".into());
    let body = serde_json::json!({"idle_timeout_secs": args.idle_timeout, "term": term});
    let session: Session = client
        .send(
            reqwest::Method::POST,
            &format!("/api/runs/{}/steps/{}/debug", args.run_id, args.step),
            Some(&body),
        )
        .await?;
    eprintln!(
        "debug session {} of run {} step '{}' {}: the step runs again on a runner, then a \
         shell opens in its workspace (Ctrl-] ends it; idle for {}s ends it too)",
        &session.id[..8.min(session.id.len())],
        args.run_id,
        args.step,
        session.status,
        session.idle_timeout_secs
    );
    attach(&client, token, &session.id).await
}

async fn attach(client: &ApiClient, token: Option<String>, id: &str) -> anyhow::Result<ExitCode> {
    let response = client
        .authorized(
            client
                .http()
                .get(client.url(&format!("/api/debug/{id}/attach"))),
        )
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .with_context(|| format!("cannot reach {}", client.url("")))?;
    if !response.status().is_success() {
        let status = response.status();
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| status.to_string());
        bail!("{message} ({status})");
    }
    let mut events = response.bytes_stream().eventsource();
    let mut typing: Option<Typing> = None;
    let mut stdout = std::io::stdout();
    let ended = loop {
        let Some(event) = events.next().await else {
            break None;
        };
        let event = event.context("reading the session's stream")?;
        match event.event.as_str() {
            "output" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(event.data.trim())
                    .context("the session's output is not base64")?;
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            "status" => {
                let status: Status = serde_json::from_str(&event.data).context("a status")?;
                // Attached now: the keyboard may type.
                if typing.is_none() {
                    typing = Some(Typing::start(client, token.clone(), id)?);
                }
                if status.status == "claimed" {
                    note(
                        typing.as_ref(),
                        "a runner took the session: the step runs again",
                    );
                }
                if let (Some(typing), "ready") = (&typing, status.status.as_str()) {
                    typing.send_size().await;
                }
            }
            "end" => {
                let end: End = serde_json::from_str(&event.data).unwrap_or(End { reason: None });
                break Some(end.reason.unwrap_or_else(|| "ended".into()));
            }
            _ => {}
        }
        if typing.as_ref().is_some_and(Typing::escaped) {
            let _ = client
                .send::<serde_json::Value>(
                    reqwest::Method::DELETE,
                    &format!("/api/debug/{id}"),
                    None,
                )
                .await;
        }
    };
    // The terminal back to how it was, before anything else is printed.
    drop(typing);
    match ended {
        Some(reason) => {
            eprintln!("\ndebug session ended: {reason}");
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("the server closed the session's stream"),
    }
}

/// Prints a note on stderr, in raw mode with its own carriage return.
fn note(typing: Option<&Typing>, text: &str) {
    let raw = typing.is_some_and(|t| t._raw.is_some());
    if raw {
        eprint!("\r\n[plue] {text}\r\n");
    } else {
        eprintln!("[plue] {text}");
    }
}

/// The keyboard's side while attached: stdin (raw on a terminal) and window sizes sent to
/// the session. Dropping it stops both and restores the terminal.
struct Typing {
    _raw: Option<RawMode>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    escaped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: reqwest::Client,
    input_url: String,
    token: Option<String>,
}

impl Typing {
    fn start(client: &ApiClient, token: Option<String>, id: &str) -> anyhow::Result<Typing> {
        let raw = RawMode::enter()?;
        let input_url = client.url(&format!("/api/debug/{id}/input"));
        let escaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        let send = Sender {
            http: client.http().clone(),
            url: input_url.clone(),
            token: token.clone(),
        };
        {
            let send = send.clone();
            let escaped = escaped.clone();
            let watch_escape = raw.is_some();
            // stdin is read on a thread of its own (a read blocks); it ends with the
            // process.
            let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            std::thread::Builder::new()
                .name("plue-debug-stdin".into())
                .spawn(move || {
                    let mut stdin = std::io::stdin().lock();
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n @ 1..) = stdin.read(&mut buf) {
                        if keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                })
                .context("starting the keyboard reader")?;
            tasks.push(tokio::spawn(async move {
                while let Some(read) = keys.recv().await {
                    let mut bytes = &read[..];
                    if watch_escape {
                        if let Some(at) = bytes.iter().position(|b| *b == ESCAPE) {
                            bytes = &bytes[..at];
                            escaped.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    if !bytes.is_empty() {
                        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                        send.post(serde_json::json!({ "data": data })).await;
                    }
                    if escaped.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                }
            }));
        }
        if raw.is_some() {
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut changes) = signal(SignalKind::window_change()) else {
                    return;
                };
                while changes.recv().await.is_some() {
                    if let Some((cols, rows)) = window_size() {
                        send.post(serde_json::json!({"cols": cols, "rows": rows}))
                            .await;
                    }
                }
            }));
        }
        Ok(Typing {
            _raw: raw,
            tasks,
            escaped,
            client: client.http().clone(),
            input_url,
            token,
        })
    }

    /// Whether `Ctrl-]` was typed.
    fn escaped(&self) -> bool {
        self.escaped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends the terminal's size (on a terminal).
    async fn send_size(&self) {
        if self._raw.is_none() {
            return;
        }
        if let Some((cols, rows)) = window_size() {
            Sender {
                http: self.client.clone(),
                url: self.input_url.clone(),
                token: self.token.clone(),
            }
            .post(serde_json::json!({"cols": cols, "rows": rows}))
            .await;
        }
    }
}

impl Drop for Typing {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Posts input, retrying a moment while the server is not reading yet.
#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Sender {
    async fn post(&self, body: serde_json::Value) {
        for _ in 0..50 {
            let mut request = self.http.post(&self.url).json(&body);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::CONFLICT => {
                    // The shell is not reading yet (or the attach is still being set up).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => return,
            }
        }
    }
}

/// The terminal's size, when stdout is one.
fn window_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout().as_fd()).ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// stdin in raw mode while it lives; the settings it found are restored on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; `None` otherwise (a pipe is relayed as it is).
    fn enter() -> anyhow::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(stdin.as_fd()) {
            return Ok(None);
        }
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).context("reading the terminal")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .context("putting the terminal in raw mode")?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
