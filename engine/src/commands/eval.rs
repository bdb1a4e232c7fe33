//! `plue eval FILE`: evaluate one workflow file and print its plan as JSON or Mermaid.

use std::process::ExitCode;

use anyhow::Context;
use evaluator::{mermaid, EvalError};
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
}

pub(crate) async fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.display().to_string();
    let source = match std::fs::read_to_string(&args.file) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("{path}: cannot read the file: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let pool = evaluator_pool(1).await.context("starting the evaluator")?;
    match pool.evaluate(&path, &source, &context(&args.event)).await {
        Ok(evaluated) => {
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
                    };
                    println!("{}", serde_json::to_string_pretty(&printed)?);
                }
                Format::Mermaid => print!("{}", mermaid::render(plan)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(EvalError::Invalid(problems)) => {
            // The problems of this file quote the source it was evaluated from.
            let source_of = |named: &str| (named == path).then(|| source.clone());
            eprint!("{}", super::caret::render(&problems, true, source_of));
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}
