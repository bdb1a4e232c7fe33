//! `plue`: the command line of the Plue workflow engine.
//!
//! `main` only dispatches: the hidden `__eval-worker` subcommand turns this process into a
//! sandboxed evaluator worker before anything else runs (no clap, no tokio, no tracing);
//! every other invocation is parsed by [`cli`] and run by a module under [`commands`].
//! Every `plue` process but an evaluator worker is undumpable (see `main`).
//! Exit codes: 0 success, 1 invalid workflow or failed operation, 2 usage error.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// The subcommand that runs an evaluator worker (see `evaluator::worker`).
pub(crate) const EVAL_WORKER_SUBCOMMAND: &str = "__eval-worker";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(EVAL_WORKER_SUBCOMMAND) {
        return evaluator::worker::main(&args[2..]);
    }
    let cli = cli::Cli::parse();
    if cli.command.ends_on_closed_pipe() {
        restore_default_sigpipe();
    }
    // Undumpable: steps (children of runner children) running as this user cannot read
    // /proc/<plue>/environ, mem or fd, where the admin token, secret key and secrets live.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("error: cannot make the process undumpable: {e}");
        return ExitCode::from(1);
    }
    let log_file = match &cli.log_file {
        None => None,
        Some(_) if cli.log_format != logging::LogFormat::Json => {
            use clap::CommandFactory;
            cli::Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--log-file needs --log-format json: the file holds JSON lines",
                )
                .exit()
        }
        Some(path) => match logging::open_file(path) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!("error: --log-file {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
    };
    // The engine's warnings (a repository that cannot be fetched, a lost runner) are for
    // its operator; a command run by hand keeps its stderr for its own output.
    let default_level = match cli.command {
        cli::Command::Serve(_) | cli::Command::EgressProxy(_) => {
            tracing_subscriber::filter::LevelFilter::WARN
        }
        _ => tracing_subscriber::filter::LevelFilter::ERROR,
    };
    logging::init(cli.log_format, log_file, default_level);
    // What must happen while the process has one thread (a mount namespace of its own).
    if let cli::Command::Runner(args) = &cli.command {
        commands::runner::before_threads(args);
    }
    let mut builder = if cli.command.runs_on_one_thread() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(workers) = cli.command.worker_threads(cores) {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            logging::fatal(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

/// Rust ignores `SIGPIPE`, so `println!` to a closed pipe panics. A command that only
/// prints (`plue eval FILE | head`) ends quietly instead, as any Unix filter does; the
/// engine, the runner and `plue run` keep ignoring it and handle the closed pipe
/// themselves.
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: called before any thread is started; it only resets one signal's
    // disposition to the default, installing no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
