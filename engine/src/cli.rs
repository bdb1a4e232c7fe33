//! Command-line syntax: every verb, flag and its help text. No behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "plue",
    version,
    about = "Plue: workflows as Python, run on warm runners",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Evaluate one workflow file and print its plan.
    Eval(EvalArgs),
    /// Evaluate every *.plue.py below a directory and report every problem.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// The workflow file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) event: EventArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Directory to search (default: the current directory).
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) event: EventArgs,
}

/// The `ctx` a workflow is evaluated with.
#[derive(Debug, Args)]
pub(crate) struct EventArgs {
    /// The triggering event.
    #[arg(long, value_enum, default_value_t = EventKind::Push)]
    pub(crate) event: EventKind,
    /// The branch (ctx.branch; ctx.ref is refs/heads/BRANCH).
    #[arg(long, default_value = "main")]
    pub(crate) branch: String,
    /// The commit (ctx.sha).
    #[arg(long)]
    pub(crate) sha: Option<String>,
    /// The repository (ctx.repo), owner/name.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// A changed file (ctx.changed_files); repeatable.
    #[arg(long = "changed-file", value_name = "PATH")]
    pub(crate) changed_files: Vec<String>,
    /// A manual input (ctx.inputs); repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) inputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EventKind {
    Push,
    #[value(name = "pull_request")]
    PullRequest,
    Schedule,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Mermaid,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}
