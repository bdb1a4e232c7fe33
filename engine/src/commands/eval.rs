//! `plue eval FILE`: evaluate one workflow file and print its plan as JSON or Mermaid — the
//! plan `plue run` would run with the same flags (the same `evaluate_dispatch`: declared
//! input defaults filled in, inputs checked).

use std::process::ExitCode;

use anyhow::Context;
use evaluator::mermaid;
use plue_core::launch::{evaluate_dispatch, LaunchError};
use serde::Serialize;

use super::{context, evaluator_pool, EXIT_INVALID};
use crate::cli::{EvalArgs, Format};

/// The printed JSON: the plan with its hash.
#[derive(Serialize)]
struct Printed<'a> {
    name: &'a str,
    plan_hash: &'a str,
    triggers: &'a [evaluator::plan::Trigger],
    env: &'a std::collections::BTreeMap<String, String>,
    steps: &'a [evaluator::plan::Step],
    /// The modules of other repositories used (`use(...)`), each at its commit.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    modules: &'a [evaluator::modules::UsedModule],
}

pub(crate) async fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let pool = evaluator_pool(1).await.context("starting the evaluator")?;
    let local = super::modules::LocalModules::new(&args.modules)?;
    let lock = match super::modules::lock_for(&args.file) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let modules = local.modules(lock.as_ref());
    // Evaluated as `plue run` evaluates (a manual event's inputs checked and completed by
    // their declared defaults), so the plan shown is the plan that runs.
    match evaluate_dispatch(&pool, &args.file, context(&args.event), modules).await {
        Ok((_, evaluated)) => {
            if !evaluated.output.is_empty() {
                eprint!("{}", evaluated.output);
            }
            let plan = &evaluated.plan;
            match args.format {
                Format::Json => {
                    let printed = Printed {
                        name: &plan.name,
                        plan_hash: &evaluated.plan_hash,
                        triggers: &plan.triggers,
                        env: &plan.env,
                        steps: &plan.steps,
                        modules: &plan.modules,
                    };
                    println!("{}", serde_json::to_string_pretty(&printed)?);
                }
                Format::Mermaid => print!("{}", mermaid::render(plan)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(LaunchError::Invalid(problems)) => {
            // Only this file's problems quote their line, with a caret under the column.
            let path = args.file.display().to_string();
            let source_of =
                |named: &str| (named == path).then(|| super::caret::read_source(named))?;
            eprint!("{}", super::caret::render(&problems, true, source_of));
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e @ (LaunchError::Unreadable { .. } | LaunchError::Inputs { .. })) => {
            eprintln!("{e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(LaunchError::Internal(e)) => Err(e),
    }
}
