//! `plue runs`, `plue cancel`, `plue rerun`: list and act on runs, on a server or (for
//! listing) straight from the embedded database. Listing filters by status (`waiting`: a
//! run held only by approvals or environment reviews), workflow, branch and event, on a
//! server page by page through the API's cursor, locally with the dashboard's query, so
//! both show the statuses the dashboard and the API show.

use std::process::ExitCode;

use plue_store::{RunFilter, Store};
use serde::{Deserialize, Serialize};

use super::client::ApiClient;
use super::format::human_ms;
use super::run_lines::{ApprovalLine, ArtifactLine};
use crate::cli::{RunOnServerArgs, RunsArgs};

#[derive(Debug, Deserialize, Serialize)]
struct RunLine {
    id: i64,
    status: String,
    workflow: String,
    event: String,
    created_at: i64,
    duration_ms: Option<i64>,
    reason: Option<String>,
    /// How many times the run's review loops went back (an older server sends none).
    #[serde(default)]
    loops_taken: i64,
    /// Filled for `--json` only.
    #[serde(default)]
    artifacts: Vec<ArtifactLine>,
    /// Decisions on the run's approval steps: who, when, why. Filled for `--json` only.
    #[serde(default)]
    approvals: Vec<ApprovalLine>,
}

/// Every artifact of run `id`, a page of the API's listing at a time.
pub(crate) async fn all_artifacts(
    client: &ApiClient,
    id: i64,
) -> anyhow::Result<Vec<ArtifactLine>> {
    const PAGE: usize = 1000;
    let mut all: Vec<ArtifactLine> = Vec::new();
    loop {
        let mut path = format!("/api/runs/{id}/artifacts?limit={PAGE}");
        if let Some(last) = all.last() {
            let after: String = format!("{}/{}", last.step, last.name)
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            path.push_str(&format!("&after={after}"));
        }
        let page: Vec<ArtifactLine> = client.get(&path).await?;
        let full = page.len() == PAGE;
        // A server before pages answers every file whatever the cursor: the same last one.
        let same = match (all.last(), page.last()) {
            (Some(a), Some(b)) => a.step == b.step && a.name == b.name,
            _ => false,
        };
        if same {
            return Ok(all);
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// One page of `GET /api/runs`.
#[derive(Debug, Deserialize)]
struct RunsPage {
    runs: Vec<RunLine>,
    next_cursor: Option<String>,
}

/// `k=v&…` of the filters given, percent-encoded (empty without any).
fn filter_query(args: &RunsArgs) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    [
        ("status", &args.status),
        ("workflow", &args.workflow),
        ("branch", &args.branch),
        ("event", &args.event),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("&{k}={}", encode(v))))
    .collect()
}

/// Up to `limit` runs of the server matching the filters, newest first, a page at a
/// time by the server's cursor.
async fn server_runs(client: &ApiClient, args: &RunsArgs) -> anyhow::Result<Vec<RunLine>> {
    let limit = args.limit.clamp(1, 1000);
    let filters = filter_query(args);
    let mut runs: Vec<RunLine> = Vec::new();
    let mut cursor: Option<String> = None;
    while (runs.len() as i64) < limit {
        let mut path = format!("/api/runs?limit={}{filters}", limit - runs.len() as i64);
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: RunsPage = client.get(&path).await?;
        runs.extend(page.runs);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(runs)
}

pub(crate) async fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(crate::cli::RunsCommand::Show(show)) = args.command {
        return super::record::show(show).await;
    }
    let runs: Vec<RunLine> = match &args.source.server {
        Some(server) => {
            let client = ApiClient::new(server, args.source.token.clone())?;
            let mut runs = server_runs(&client, &args).await?;
            if args.json {
                for run in &mut runs {
                    run.artifacts = all_artifacts(&client, run.id).await?;
                    run.approvals = client
                        .get(&format!("/api/runs/{}/approvals", run.id))
                        .await?;
                }
            }
            runs
        }
        None => {
            let store = Store::open_data_dir(&args.source.data_dir).await?;
            // The dashboard's query: statuses as shown (`waiting` included), filtered.
            let filter = RunFilter {
                status: args.status.clone(),
                workflow: args.workflow.clone(),
                branch: args.branch.clone(),
                event: args.event.clone(),
                ..RunFilter::default()
            };
            let rows = store
                .runs_page(&filter, None, args.limit.clamp(1, 1000))
                .await?;
            let mut runs = Vec::with_capacity(rows.len());
            for r in rows {
                let (artifacts, approvals) = if args.json {
                    let artifacts = store.artifacts_of_run(r.id).await?;
                    let approvals = store.approvals_of_run(r.id).await?;
                    (
                        artifacts.into_iter().map(ArtifactLine::from_row).collect(),
                        approvals.into_iter().map(ApprovalLine::from_row).collect(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                runs.push(RunLine {
                    duration_ms: r.duration_ms(),
                    id: r.id,
                    status: r.status.to_string(),
                    workflow: r.workflow_name,
                    event: r.event,
                    created_at: r.created_at,
                    reason: r.reason,
                    artifacts,
                    approvals,
                    loops_taken: r.loops_taken,
                });
            }
            runs
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = runs
        .iter()
        .map(|r| r.workflow.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:>6}  {:<9}  {:<width$}  {:<12}  {:>9}  {:<19}  REASON",
        "RUN", "STATUS", "WORKFLOW", "EVENT", "DURATION", "CREATED (UTC)"
    );
    for run in runs {
        println!(
            "{:>6}  {:<9}  {:<width$}  {:<12}  {:>9}  {:<19}  {}",
            run.id,
            run.status,
            run.workflow,
            run.event,
            run.duration_ms.map(human_ms).unwrap_or_else(|| "-".into()),
            utc(run.created_at),
            run.reason.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cancel(args: RunOnServerArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.server, args.token)?;
    let run: RunLine = client
        .post(&format!("/api/runs/{}/cancel", args.run_id))
        .await?;
    println!("run {} cancel requested (status {})", run.id, run.status);
    Ok(ExitCode::SUCCESS)
}

/// `plue rerun RUN [--failed]`: `--failed` runs only the failed steps and those after
/// them again (`POST /api/runs/{id}/rerun?failed=true`).
pub(crate) async fn rerun(args: RunOnServerArgs, failed: bool) -> anyhow::Result<ExitCode> {
    #[derive(Deserialize)]
    struct Created {
        run_id: i64,
    }
    let client = ApiClient::new(&args.server, args.token)?;
    let query = if failed { "?failed=true" } else { "" };
    let created: Created = client
        .post(&format!("/api/runs/{}/rerun{query}", args.run_id))
        .await?;
    let what = if failed { "the failed steps of " } else { "" };
    println!(
        "run {} started (re-run of {what}{})",
        created.run_id, args.run_id
    );
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a millisecond timestamp.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_790_000_000_000), "2026-09-21 14:13:20");
    }
}
