//! `plue runner-token create|list|revoke`: scoped registration tokens on a server, through
//! its admin API (`/api/runner-tokens`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::ApiClient;
use crate::cli::RunnerTokenCommand;

#[derive(Debug, Deserialize)]
struct Created {
    id: i64,
    token: String,
}

#[derive(Debug, Deserialize)]
struct Listed {
    id: i64,
    name: String,
    labels: BTreeMap<String, String>,
    secrets: bool,
    #[serde(default)]
    accept_forks: bool,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Revoked {
    runners_stopped: usize,
}

pub(crate) async fn run(command: RunnerTokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunnerTokenCommand::Create(args) => {
            let labels = plue_pool::scope::format_labels(&args.labels);
            let name = args.name.unwrap_or_else(|| match labels.as_str() {
                "" => "runners without labels".to_string(),
                labels => format!("runners with {labels}"),
            });
            let body = json!({
                "name": name,
                "labels": args.labels,
                "secrets": !args.no_secrets,
                "accept_forks": args.accept_forks,
            });
            let created: Created = ApiClient::new(&args.server.server, args.server.token)?
                .send(Method::POST, "/api/runner-tokens", Some(&body))
                .await?;
            eprintln!(
                "runner token {} ({name}); start runners with `plue runner --token-file FILE`",
                created.id
            );
            println!("{}", created.token);
        }
        RunnerTokenCommand::List(args) => {
            let tokens: Vec<Listed> = ApiClient::new(&args.server.server, args.server.token)?
                .get("/api/runner-tokens")
                .await?;
            for token in tokens {
                let labels = plue_pool::scope::format_labels(&token.labels);
                let state = match (token.revoked_at, token.used_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(_)) => "used",
                    (None, None) => "unused",
                };
                let forks = if token.accept_forks {
                    "forks"
                } else {
                    "no-forks"
                };
                println!(
                    "{}\t{}\t{}\t{forks}\t{}\t{state}",
                    token.id,
                    if labels.is_empty() { "-" } else { &labels },
                    if token.secrets {
                        "secrets"
                    } else {
                        "no-secrets"
                    },
                    token.name,
                );
            }
        }
        RunnerTokenCommand::Revoke(args) => {
            let revoked: Revoked = ApiClient::new(&args.server.server, args.server.token)?
                .send(
                    Method::DELETE,
                    &format!("/api/runner-tokens/{}", args.id),
                    None,
                )
                .await?;
            println!(
                "revoked runner token {} ({} runner(s) stopped)",
                args.id, revoked.runners_stopped
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
