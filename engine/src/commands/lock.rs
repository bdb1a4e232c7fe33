//! `plue lock [PATH]`: evaluates every workflow file of the repository holding PATH with
//! each `use(..., ref=...)` resolved afresh through `--modules-from`, and writes the commit
//! each ref points at now to the repository's `.plue/lock.json` (replacing it). Commit
//! the file: evaluations then use exactly those commits, and refuse a ref it lacks. Nothing
//! is written when a workflow is invalid (exit 1).

use std::process::ExitCode;

use anyhow::Context;
use evaluator::modules::lock::{LockEntry, LockFile};
use evaluator::EvalError;

use super::{context, evaluator_pool, EXIT_INVALID};
use crate::cli::LockArgs;

pub(crate) async fn run(args: LockArgs) -> anyhow::Result<ExitCode> {
    let Some(root) = super::modules::repository_root(&args.path) else {
        eprintln!(
            "{}: not inside a git repository (the lock file goes at its root)",
            args.path.display()
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let files = super::check::workflow_files(&root)?;
    let pool = evaluator_pool(1).await.context("starting the evaluator")?;
    let local = super::modules::LocalModules::new(&args.modules)?;
    let ctx = context(&args.event);
    let mut pinned = Vec::new();
    let mut invalid = 0;
    for file in &files {
        let path = file.display().to_string();
        let source = std::fs::read_to_string(file).with_context(|| format!("reading {path}"))?;
        match pool
            .evaluate_with(&path, &source, &ctx, local.resolving())
            .await
        {
            Ok(evaluated) => pinned.extend(evaluated.plan.modules.into_iter().filter_map(|m| {
                Some(LockEntry {
                    git_ref: m.git_ref?,
                    repository: m.repository,
                    path: m.path,
                    commit: m.commit,
                })
            })),
            Err(EvalError::Invalid(problems)) => {
                invalid += 1;
                let source_of = |named: &str| (named == path).then(|| source.clone());
                print!("{}", super::caret::render(&problems, false, source_of));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if invalid > 0 {
        eprintln!("{invalid} workflow file(s) invalid; the lock file is unchanged");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let lock = LockFile::of(pinned);
    let written = root.join(evaluator::modules::LOCK_FILE);
    let dir = written.parent().context("the lock file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&written, lock.to_text())
        .with_context(|| format!("writing {}", written.display()))?;
    for entry in &lock.modules {
        eprintln!(
            "{} {} ref {} -> {}",
            entry.repository, entry.path, entry.git_ref, entry.commit
        );
    }
    eprintln!(
        "wrote {} ({} pinned ref(s), {} workflow file(s))",
        written.display(),
        lock.modules.len(),
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}
