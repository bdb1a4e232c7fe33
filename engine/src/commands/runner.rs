//! `plue runner`: the runner agent as a process — until SIGINT/SIGTERM, the engine
//! forgetting it, or (ephemeral) one step.

use std::process::ExitCode;
use std::time::Duration;

use ::runner::agent::{self, AgentConfig};
use ::runner::step_env;
use ::runner::step_user::StepUsers;
use tokio_util::sync::CancellationToken;

use super::interrupted;
use crate::cli::RunnerArgs;

pub(crate) async fn run(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "runner".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .collect();
        format!("{host}-{}", std::process::id())
    });
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join("plue-runner"));
    let config = AgentConfig {
        engine: args.engine,
        registration_token: args.token,
        name,
        labels: args.labels,
        ephemeral: args.ephemeral,
        work_dir,
        give_up_after: Duration::from_secs(args.give_up_after),
        base_env: step_env::Base::of_this_process(args.inherit_env, &args.pass_env),
        step_users: match args.step_users {
            Some((first, last)) if nix::unistd::geteuid().is_root() => {
                StepUsers::range(first, last)?
            }
            Some(_) => anyhow::bail!("--step-users needs a runner that runs as root"),
            None => StepUsers::default_for_this_process(),
        },
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        interrupted().await;
        signal.cancel();
    });
    agent::run(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
