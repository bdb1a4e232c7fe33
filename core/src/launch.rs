//! Launching a run from a workflow file: evaluate it through the evaluator pool with a
//! `ctx`, then hand the plan to the executor. Shared by `plue run` (which evaluates while
//! its engine starts) and `POST /api/runs`.

use std::path::Path;

use anyhow::Context;
use evaluator::modules::Modules;
use evaluator::{Diagnostic, EvalContext, EvalError, EvaluatedPlan, EvaluatorPool};
use plue_store::NewRun;
use plue_types::protocol::WorkspaceSource;

use crate::executor::Executor;

/// Why a launch did not start a run.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The file could not be read.
    #[error("{path}: cannot read the file: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    /// The workflow is invalid; the diagnostics say where.
    #[error("{}", render_problems(.0))]
    Invalid(Vec<Diagnostic>),
    /// The manual inputs do not match the plan's declaration ([`evaluator::inputs`]).
    #[error("{path}: {problems}")]
    Inputs { path: String, problems: String },
    /// The evaluator or the store failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Diagnostics as the evaluator words them, one per line with their detail. Each line is
/// escaped (a diagnostic's `Display` is one line; detail lines are escaped here), so user
/// text can never forge a line or send a terminal escape.
pub(crate) fn render_problems(problems: &[Diagnostic]) -> String {
    let mut text = String::new();
    for problem in problems {
        text.push_str(&problem.to_string());
        if let Some(detail) = &problem.detail {
            text.push('\n');
            text.push_str(&evaluator::text::escape_lines(detail));
        }
        text.push('\n');
    }
    text.trim_end().to_string()
}

/// Evaluates `path` with `ctx` and starts a run whose steps work in `workspace`.
pub async fn launch(
    executor: &Executor,
    evaluator: &EvaluatorPool,
    path: &Path,
    ctx: &EvalContext,
    workspace: &WorkspaceSource,
) -> Result<i64, LaunchError> {
    // The repository's lock file pins its MCP servers' tools (`evaluator::mcp`); modules
    // are not fetched here, so a `use` is refused as before.
    let lock = evaluator::modules::lock::LockFile::beside(path).map_err(|problem| {
        LaunchError::Invalid(vec![evaluator::Diagnostic::whole_file(
            path.display().to_string(),
            problem,
        )])
    })?;
    let modules = Modules {
        lock: lock.as_ref(),
        ..Modules::default()
    };
    let (ctx, evaluated) = evaluate_dispatch(evaluator, path, ctx.clone(), modules).await?;
    start_evaluated(executor, path, &ctx, workspace, &evaluated).await
}

/// [`evaluate_file`], then the manual inputs checked as a dispatch checks them
/// ([`evaluator::inputs::check`]: unknown names, required ones, options) when `ctx` is a
/// manual event or names inputs; a plan without a manual trigger takes no inputs. When the
/// declaration's defaults complete the inputs, the file is evaluated again with them, so
/// `ctx.inputs` shows them too. Returns the `ctx` the run starts with.
pub async fn evaluate_dispatch(
    evaluator: &EvaluatorPool,
    path: &Path,
    mut ctx: EvalContext,
    modules: Modules<'_>,
) -> Result<(EvalContext, EvaluatedPlan), LaunchError> {
    let evaluated = evaluate_file(evaluator, path, &ctx, modules).await?;
    if ctx.event != evaluator::Event::Manual && ctx.inputs.is_empty() {
        return Ok((ctx, evaluated));
    }
    let problem = |problems: String| LaunchError::Inputs {
        path: path.display().to_string(),
        problems,
    };
    let complete = match evaluator::inputs::declared(&evaluated.plan) {
        Some(declared) => evaluator::inputs::check(declared, &ctx.inputs).map_err(problem)?,
        None if ctx.inputs.is_empty() => return Ok((ctx, evaluated)),
        None => {
            return Err(problem(
                "the workflow has no manual trigger, so it takes no --input (add \
                 Trigger.manual(inputs=...) to declare them)"
                    .into(),
            ))
        }
    };
    if complete == ctx.inputs {
        return Ok((ctx, evaluated));
    }
    ctx.inputs = complete;
    let evaluated = evaluate_file(evaluator, path, &ctx, modules).await?;
    Ok((ctx, evaluated))
}

/// The first half of [`launch`]: reads and evaluates `path` with `ctx`. Needs no engine,
/// so `plue run` does it while its store and engine start. `modules`: where the file's
/// `use(...)` modules come from (by default nowhere, and a `use` is refused).
pub async fn evaluate_file(
    evaluator: &EvaluatorPool,
    path: &Path,
    ctx: &EvalContext,
    modules: Modules<'_>,
) -> Result<EvaluatedPlan, LaunchError> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| LaunchError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let started = std::time::Instant::now();
    let evaluated = evaluator.evaluate_with(&shown, &source, ctx, modules).await;
    crate::metrics::record(crate::metrics::evaluation(&evaluated, started));
    match evaluated {
        Ok(evaluated) => Ok(evaluated),
        Err(EvalError::Invalid(problems)) => Err(LaunchError::Invalid(problems)),
        Err(e) => Err(LaunchError::Internal(
            anyhow::Error::new(e).context("evaluating the workflow"),
        )),
    }
}

/// The second half of [`launch`]: starts a run of `evaluated`, the plan of `path` under
/// `ctx`, whose steps work in `workspace`.
pub async fn start_evaluated(
    executor: &Executor,
    path: &Path,
    ctx: &EvalContext,
    workspace: &WorkspaceSource,
    evaluated: &EvaluatedPlan,
) -> Result<i64, LaunchError> {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let context_json = serde_json::to_string(ctx).context("serialising ctx")?;
    let run_id = executor
        .start_run(&NewRun {
            workflow_source: "local",
            workflow_path: &absolute.display().to_string(),
            event: ctx.event.as_str(),
            git_ref: &ctx.git_ref,
            sha: &ctx.sha,
            context_json: &context_json,
            plan: &evaluated.plan,
            plan_json: &evaluated.canonical_json,
            plan_hash: &evaluated.plan_hash,
            workspace,
            rerun_of: None,
            repo: None,
        })
        .await?;
    Ok(run_id)
}
