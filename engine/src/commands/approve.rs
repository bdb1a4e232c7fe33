//! `plue approve RUN STEP [--reject] [--comment TEXT]`: decides a waiting approval step on
//! a server, as whoever the token names — or, with `--data-dir`, on the engine of a `plue
//! run` running from that data directory (which published its loopback address there,
//! readable by its user only; no token: [`super::approval_prompt`]). `plue run`'s own y/n question
//! decides through [`super::decision::decide`] too, so both take the API's path and its checks.

use std::process::ExitCode;

use super::client::ApiClient;
use super::decision::decide;
use crate::cli::ApproveArgs;

pub(crate) async fn run(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let client = match &args.data_dir {
        Some(dir) => super::approval_prompt::local_client(dir, args.run_id)?,
        None => ApiClient::new(&args.server.server, args.server.token)?,
    };
    let decision = decide(
        &client,
        args.run_id,
        &args.step,
        args.reject,
        args.comment.as_deref().unwrap_or_default(),
    )
    .await?;
    println!(
        "run {} step '{}' {} by {}",
        args.run_id, decision.step_id, decision.decision, decision.decided_by
    );
    Ok(ExitCode::SUCCESS)
}
