//! Deciding a waiting approval step through the API: what `plue approve` and `plue run`'s
//! own y/n question both send, so both take the API's path and its checks.

use serde::Deserialize;

use super::client::ApiClient;

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
