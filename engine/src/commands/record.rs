//! `plue runs show RUN [--json]`: one run's record ([`plue_server::api::record`]) from the
//! embedded database or a server (`GET /api/runs/{id}/record`): the same document either
//! way, printed as JSON or as a short text for people.

use std::process::ExitCode;

use anyhow::Context;
use plue_store::Store;
use serde_json::Value;

use super::client::ApiClient;
use super::format::human_ms;
use crate::cli::{RunShowArgs, SourceArgs};

/// The record of run `run_id` as JSON, from `source`.
pub(crate) async fn fetch(source: &SourceArgs, run_id: i64) -> anyhow::Result<Value> {
    match &source.server {
        Some(server) => {
            let client = ApiClient::new(server, source.token.clone())?;
            client.get(&format!("/api/runs/{run_id}/record")).await
        }
        None => {
            let store = Store::open_data_dir(&source.data_dir).await?;
            let record = plue_server::api::record::build(&store, run_id).await;
            store.close().await;
            let record = record?
                .with_context(|| format!("no run {run_id} in {}", source.data_dir.display()))?;
            Ok(serde_json::to_value(record)?)
        }
    }
}

pub(crate) async fn show(args: RunShowArgs) -> anyhow::Result<ExitCode> {
    let record = fetch(&args.source, args.run_id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", text(&record));
    }
    Ok(ExitCode::SUCCESS)
}

/// The record for people: the run, its inputs, then one line per attempt.
fn text(record: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut out = format!(
        "run {} {} ({} of {}, {} {}, plan {})\n",
        s(&record["id"]),
        s(&record["status"]),
        s(&record["event"]),
        s(&record["workflow"]),
        s(&record["ref"]),
        s(&record["sha"]),
        s(&record["plan_hash"]),
    );
    if let Some(reason) = record["reason"].as_str() {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    if let Some(inputs) = record["inputs"].as_object().filter(|i| !i.is_empty()) {
        out.push_str(&format!("  inputs: {}\n", Value::Object(inputs.clone())));
    }
    if let Some(cost) = record["cost_usd"].as_f64() {
        out.push_str(&format!("  cost: ${cost:.4}\n"));
    }
    out.push_str(
        "\nSTEP / ATTEMPT          ROUND  STATUS      RUNNER        TOOK      EXIT  REASON\n",
    );
    for a in record["attempt_records"].as_array().into_iter().flatten() {
        let took = match (a["started_at"].as_i64(), a["finished_at"].as_i64()) {
            (Some(start), Some(end)) => human_ms(end - start),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<22}  {:>5}  {:<10}  {:<12}  {:>7}  {:>4}  {}\n",
            format!("{} #{}", s(&a["step"]), s(&a["attempt"])),
            s(&a["iteration"]),
            s(&a["status"]),
            s(&a["runner"]),
            took,
            s(&a["exit_code"]),
            a["reason"].as_str().unwrap_or(""),
        ));
    }
    for (title, key) in [
        ("artifacts", "artifacts"),
        ("approvals", "approvals"),
        ("proposals", "proposals"),
    ] {
        let n = record[key].as_array().map_or(0, Vec::len);
        if n > 0 {
            out.push_str(&format!("{n} {title} (--json for the details)\n"));
        }
    }
    out
}
