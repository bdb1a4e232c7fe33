//! `plue lock [PATH]`: evaluates every workflow file of the repository holding PATH with
//! each `use(..., ref=...)` resolved afresh through `--modules-from`, and writes the commit
//! each ref points at now to the repository's `.plue/lock.json` (replacing it). Commit
//! the file: evaluations then use exactly those commits, and refuse a ref it lacks. Nothing
//! is written when a workflow is invalid (exit 1).
//!
//! It also pins the MCP servers of `llm` steps (`mcp=`): each server is started here, as
//! you, in the repository's root, with your environment less the engine's and runners'
//! credentials and the model's key (a stdio server's `command` runs on your machine), its
//! allowed tools listed, and each tool's digest of name, description and input schema
//! written under `mcp`. A runner refuses a tool whose definition no longer matches. A
//! server name declared twice with different definitions of one tool is an error: name
//! them apart.

use std::process::ExitCode;

use anyhow::Context;
use evaluator::mcp::McpPin;
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
    let mut servers: Vec<plue_types::mcp::McpServer> = Vec::new();
    let mut invalid = 0;
    for file in &files {
        let path = file.display().to_string();
        let source = std::fs::read_to_string(file).with_context(|| format!("reading {path}"))?;
        match pool
            .evaluate_with(&path, &source, &ctx, local.resolving())
            .await
        {
            Ok(evaluated) => {
                for step in &evaluated.plan.steps {
                    if let evaluator::plan::Action::Llm(llm) = &step.action {
                        servers.extend(
                            llm.mcp.iter().map(|(name, server)| {
                                plue_core::dispatch::mcp_server(name, server)
                            }),
                        );
                    }
                }
                pinned.extend(evaluated.plan.modules.into_iter().filter_map(|m| {
                    Some(LockEntry {
                        git_ref: m.git_ref?,
                        repository: m.repository,
                        path: m.path,
                        commit: m.commit,
                    })
                }))
            }
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
    let mcp = match pin_mcp(&servers, &root).await {
        Ok(mcp) => mcp,
        Err(problem) => {
            eprintln!("{problem}; the lock file is unchanged");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let lock = LockFile::of(pinned).with_mcp(mcp);
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
    for pin in &lock.mcp {
        eprintln!("mcp {} tool {} -> {}", pin.server, pin.tool, pin.digest);
    }
    eprintln!(
        "wrote {} ({} pinned ref(s), {} pinned MCP tool(s), {} workflow file(s))",
        written.display(),
        lock.modules.len(),
        lock.mcp.len(),
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The pins of every server of `servers` (each started in `root` with your environment):
/// an error names a server that cannot be listed, or one name pinned two ways.
async fn pin_mcp(
    servers: &[plue_types::mcp::McpServer],
    root: &std::path::Path,
) -> Result<Vec<McpPin>, String> {
    // Your environment without the engine's and runners' credentials or the model's key
    // (as `plue run` gives steps); an HTTP server's bearer secret is read from it under
    // the secret's name.
    let secrets: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let env = runner::step_env::Base::inherited(
        secrets.clone(),
        &[runner::llm::API_KEY_SECRET.to_owned()],
    )
    .vars()
    .clone();
    let room = runner::llm::mcp::Room::unconfined(
        root,
        &env,
        &plue_types::protocol::NetworkPolicy::Open,
        &secrets,
    );
    let mut pins: Vec<McpPin> = Vec::new();
    for server in servers {
        for (tool, digest) in runner::llm::mcp::digests(server, room).await? {
            match pins
                .iter()
                .find(|p| p.server == server.name && p.tool == tool)
            {
                Some(pin) if pin.digest != digest => {
                    return Err(format!(
                        "mcp server '{}' is declared more than once and its tool '{tool}' \
                         differs between them ({} and {digest}): give the servers different names",
                        server.name, pin.digest
                    ))
                }
                Some(_) => {}
                None => pins.push(McpPin {
                    server: server.name.clone(),
                    tool,
                    digest,
                }),
            }
        }
    }
    Ok(pins)
}
