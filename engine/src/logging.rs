//! How `plue` writes its log on stderr: `--log-format text` (the default: `tracing` lines
//! filtered by `PLUE_LOG`, plus plain notices such as "plue engine listening on ...") or
//! `--log-format json` for log collectors. Without `PLUE_LOG` the engine (`plue serve`)
//! logs from `warn` up — what it warns of, such as a repository that cannot be fetched, is
//! in its log without configuration — and the other commands only errors.
//!
//! Invariant: in JSON mode every line on stderr is one JSON object (tracing-subscriber's
//! shape: `timestamp`, `level`, `target`, `fields` with `message` and the event's own
//! fields such as `run_id` and `step`); notices are events of target `plue`, always shown
//! at `info` whatever `PLUE_LOG` says, so what a person would read is never filtered away.
//! `--log-file PATH` appends every one of those lines to PATH as well (one write a line).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// How the engine's own log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Opens `--log-file`'s file for appending, created readable by this user alone (a log
/// names runs, steps and what they printed).
pub(crate) fn open_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Installs the subscriber; call once, before any event. `file`: `--log-file`'s, opened
/// by [`open_file`]; only JSON lines are written to it. `default`: the level shown when
/// `PLUE_LOG` is unset or empty.
pub(crate) fn init(format: LogFormat, file: Option<File>, default: LevelFilter) {
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .with_env_var("PLUE_LOG")
        .from_env_lossy();
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            let filter = filter.add_directive("plue=info".parse().expect("a valid directive"));
            let builder = tracing_subscriber::fmt()
                .json()
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(filter);
            match file {
                // Each line is formatted once and written whole to both (a tee).
                Some(file) => builder
                    .with_writer(std::io::stderr.and(Mutex::new(file)))
                    .init(),
                None => builder.with_writer(std::io::stderr).init(),
            }
        }
    }
}

/// Whether stderr is JSON lines (`--log-format json`): then a command writes events, never
/// text, there.
pub(crate) fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line for the operator: plain on stderr, or an `info` event of target `plue` in JSON.
pub(crate) fn notice(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!(target: "plue", "{message}");
    } else {
        eprintln!("{message}");
    }
}

/// The error that ends the command: `error: ...` on stderr, or an `error` event in JSON.
pub(crate) fn fatal(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::error!(target: "plue", "{message}");
    } else {
        eprintln!("error: {message}");
    }
}
