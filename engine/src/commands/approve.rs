//! `plue approve RUN STEP [--reject] [--comment TEXT]`: decides a waiting approval step on
//! a server, as whoever the token names.

use std::process::ExitCode;

use serde::Deserialize;

use super::client::ApiClient;
use crate::cli::ApproveArgs;

#[derive(Debug, Deserialize)]
struct Decision {
    step_id: String,
    decision: String,
    decided_by: String,
}

pub(crate) async fn run(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.server.server, args.server.token)?;
    let verb = if args.reject { "reject" } else { "approve" };
    let path = format!("/api/runs/{}/steps/{}/{verb}", args.run_id, args.step);
    let body = serde_json::json!({ "comment": args.comment.unwrap_or_default() });
    let decision: Decision = client
        .send(reqwest::Method::POST, &path, Some(&body))
        .await?;
    println!(
        "run {} step '{}' {} by {}",
        args.run_id, decision.step_id, decision.decision, decision.decided_by
    );
    Ok(ExitCode::SUCCESS)
}
