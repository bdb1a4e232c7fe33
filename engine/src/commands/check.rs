//! `plue check [PATH]`: evaluate the workflow file PATH, or every `*.plue.py` below the
//! directory PATH, through the warm pool and print every problem as `path:line:col: message`
//! with the line it points at and a caret under the column ([`caret`](super::caret)), in
//! path order. Exit 1 if any file is invalid, or if PATH does not exist. Modules a file
//! `use`s are fetched (`--modules-from`) and checked with it, refs through the lock file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use evaluator::EvalError;
use tokio::task::JoinSet;

use super::{checked, context, evaluator_pool, EXIT_INVALID};
use crate::cli::CheckArgs;

/// Directories never searched: VCS metadata and build output.
const SKIPPED_DIRS: [&str; 4] = [".git", "target", "node_modules", ".plue-cache"];

pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let files = match std::fs::metadata(&args.path) {
        // One file is checked whatever its name: the caller named it.
        Ok(meta) if !meta.is_dir() => vec![args.path.clone()],
        Ok(_) => workflow_files(&args.path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{}: no such file or directory", args.path.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => {
            eprintln!("{}: {e}", args.path.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if files.is_empty() {
        eprintln!("no *.plue.py files found below {}", args.path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(files.len());
    let pool = evaluator_pool(workers)
        .await
        .context("starting the evaluator")?;
    let ctx = context(&args.event);
    let local = std::sync::Arc::new(super::modules::LocalModules::new(&args.modules)?);
    let mut tasks = JoinSet::new();
    for (index, file) in files.iter().enumerate() {
        let (pool, ctx, file) = (pool.clone(), ctx.clone(), file.clone());
        let local = local.clone();
        tasks.spawn(async move {
            let path = file.display().to_string();
            let (outcome, source) = match tokio::fs::read_to_string(&file).await {
                Ok(source) => {
                    // Used modules are fetched and checked too, refs through the lock file.
                    let outcome = match super::modules::lock_for(&file) {
                        Ok(lock) => pool
                            .evaluate_with(&path, &source, &ctx, local.modules(lock.as_ref()))
                            .await
                            .map(|_| ()),
                        Err(e) => Err(EvalError::Invalid(vec![evaluator::Diagnostic::whole_file(
                            &path,
                            format!("{e:#}"),
                        )])),
                    };
                    // The source is kept only for the excerpts of an invalid file.
                    let source = outcome.is_err().then_some(source);
                    (outcome, source)
                }
                Err(e) => (
                    Err(EvalError::Invalid(vec![evaluator::Diagnostic::whole_file(
                        &path,
                        format!("cannot read the file: {e}"),
                    )])),
                    None,
                ),
            };
            (index, outcome, source.map(|source| (path, source)))
        });
    }
    // A file's outcome and, when invalid, its path and source (for the excerpts).
    type Outcome = (Result<(), EvalError>, Option<(String, String)>);
    let mut outcomes: Vec<Option<Outcome>> = (0..files.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome, source) = joined.context("an evaluation task failed")?;
        outcomes[index] = Some((outcome, source));
    }
    let mut invalid = 0;
    for (outcome, source) in outcomes.into_iter().flatten() {
        match outcome {
            Ok(()) => {}
            Err(EvalError::Invalid(problems)) => {
                invalid += 1;
                // Problems of this file quote the source it was evaluated from.
                let source_of = |path: &str| {
                    source
                        .as_ref()
                        .filter(|(evaluated, _)| evaluated == path)
                        .map(|(_, text)| text.clone())
                };
                print!("{}", super::caret::render(&problems, false, source_of));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(checked("workflow file", files.len(), invalid))
}

/// Every `*.plue.py` below `dir`, sorted; hidden directories such as `.plue/` included.
pub(crate) fn workflow_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir()
                && e.depth() > 0
                && SKIPPED_DIRS.iter().any(|s| e.file_name() == *s))
        });
    for entry in walker {
        let entry = entry.with_context(|| format!("searching {}", dir.display()))?;
        if entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(".plue.py")
        {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}
