//! `plue approve RUN STEP [--reject] [--comment TEXT]`: decides a waiting approval step on
//! a server, as whoever the token names — or, with `--data-dir`, on the engine of a `plue
//! run` running from that data directory (which published its address and token there,
//! readable by its user only: [`super::approval_prompt`]). `plue run`'s own y/n question
//! decides through [`decide`] too, so both take the API's path and its checks.

use std::process::ExitCode;

use serde::Deserialize;

use super::client::ApiClient;
use crate::cli::ApproveArgs;

/// The API's answer to a decision.
#[derive(Debug, Deserialize)]
pub(crate) struct Decision {
    pub(crate) step_id: String,
    pub(crate) decision: String,
    pub(crate) decided_by: String,
}

/// Approves (or with `reject`, rejects) step `step` of run `run_id` through the API.
pub(crate) async fn decide(
    client: &ApiClient,
    run_id: i64,
    step: &str,
    reject: bool,
    comment: &str,
) -> anyhow::Result<Decision> {
    let verb = if reject { "reject" } else { "approve" };
    let segment: String = step
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!("/api/runs/{run_id}/steps/{segment}/{verb}");
    let body = serde_json::json!({ "comment": comment });
    client.send(reqwest::Method::POST, &path, Some(&body)).await
}

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
