//! `plue logs RUN_ID [STEP] [--follow]`: print a run's stored (already masked) log lines,
//! from a server's API or straight from the embedded database; `--follow` keeps printing
//! until the steps are final (over SSE from a server, one step after another).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use plue_store::Store;
use serde::Deserialize;

use super::client::ApiClient;
use super::run_output::{strip_ansi, use_color, Printer};
use crate::cli::LogsArgs;

pub(crate) async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    match args.source.server.clone() {
        Some(server) => from_server(&args, &server).await,
        None => from_store(&args).await,
    }
}

async fn from_store(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_data_dir(&args.source.data_dir).await?;
    if store.run(args.run_id).await?.is_none() {
        bail!(
            "no run {} in {}",
            args.run_id,
            args.source.data_dir.display()
        );
    }
    let mut steps = store.step_runs(args.run_id).await?;
    if let Some(step) = &args.step {
        steps.retain(|s| &s.step_id == step);
        if steps.is_empty() {
            bail!("run {} has no step '{step}'", args.run_id);
        }
    }
    let ids: Vec<i64> = steps.iter().map(|s| s.id).collect();
    let mut printer = Printer::new(&steps, use_color(), args.step.is_none());
    loop {
        printer.print_lines(&store, &ids).await?;
        if !args.follow {
            break;
        }
        let current = store.step_runs(args.run_id).await?;
        let done = current
            .iter()
            .filter(|s| ids.contains(&s.id))
            .all(|s| s.status.is_final());
        if done {
            printer.print_lines(&store, &ids).await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct RunSteps {
    steps: Vec<StepName>,
}

#[derive(Debug, Deserialize)]
struct StepName {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Line {
    text: String,
}

async fn from_server(args: &LogsArgs, server: &str) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(server, args.source.token.clone())?;
    let run: RunSteps = client.get(&format!("/api/runs/{}", args.run_id)).await?;
    let steps: Vec<String> = match &args.step {
        Some(step) if run.steps.iter().any(|s| &s.id == step) => vec![step.clone()],
        Some(step) => bail!("run {} has no step '{step}'", args.run_id),
        None => run.steps.into_iter().map(|s| s.id).collect(),
    };
    let prefix = args.step.is_none();
    let color = use_color();
    for step in &steps {
        let label = if prefix {
            format!("{step} | ")
        } else {
            String::new()
        };
        let path = format!("/api/runs/{}/steps/{}/logs", args.run_id, step);
        let mut request = client.http().get(client.url(&path));
        if args.follow {
            request = request.header("accept", "text/event-stream");
        }
        // The token given, or the one `plue login` kept.
        let request = client.authorized(request);
        let response = request.send().await.context("fetching logs")?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let hint = super::client::token_hint(client.has_token());
            bail!("fetching logs of '{step}': {hint} ({})", response.status());
        }
        if !response.status().is_success() {
            bail!("fetching logs of '{step}': {}", response.status());
        }
        let mut out = std::io::stdout().lock();
        if args.follow {
            drop(out);
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let event = event.context("reading the log stream")?;
                if event.event == "end" {
                    break;
                }
                let line: Line = serde_json::from_str(&event.data).context("a log event")?;
                print_line(&label, &line.text, color)?;
            }
        } else {
            let body = response.text().await.context("reading logs")?;
            for raw in body.lines() {
                let line: Line = serde_json::from_str(raw).context("a log line")?;
                let text = if color {
                    line.text.as_str().into()
                } else {
                    strip_ansi(&line.text)
                };
                writeln!(out, "{label}{text}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_line(label: &str, text: &str, color: bool) -> anyhow::Result<()> {
    let text = if color { text.into() } else { strip_ansi(text) };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{label}{text}")?;
    out.flush()?;
    Ok(())
}
