//! `plue repo`, `plue secret` and `plue trigger`: client verbs for the
//! repository endpoints of a server's API.

use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api_paths::{repo_path, secret_value};
use super::client::ApiClient;
use crate::cli::{RepoCommand, SecretCommand, ServerArgs, TriggerArgs};

#[derive(Debug, Deserialize)]
struct Repo {
    name: String,
    clone_url: String,
    forge: String,
    default_branch: Option<String>,
}

fn client(server: &ServerArgs) -> anyhow::Result<ApiClient> {
    ApiClient::new(&server.server, server.token.clone())
}

pub(crate) async fn repo(command: RepoCommand) -> anyhow::Result<ExitCode> {
    match command {
        RepoCommand::Add(args) => {
            let body = json!({
                "name": args.name,
                "clone_url": args.clone_url,
                "forge": args.forge,
                "webhook_secret": args.webhook_secret,
                "api_url": args.api_url,
                "api_token": args.api_token,
                "default_branch": args.default_branch,
            });
            let repo: Repo = client(&args.server)?
                .send(Method::POST, "/api/repos", Some(&body))
                .await?;
            println!(
                "registered {} ({}, {}); point its webhook at {}/webhooks/{}",
                repo.name,
                repo.forge,
                repo.clone_url,
                args.server.server.trim_end_matches('/'),
                repo.forge
            );
        }
        RepoCommand::List(args) => {
            let repos: Vec<Repo> = client(&args.server)?.get("/api/repos").await?;
            for repo in repos {
                println!(
                    "{}\t{}\t{}\t{}",
                    repo.name,
                    repo.forge,
                    repo.default_branch.as_deref().unwrap_or("-"),
                    repo.clone_url
                );
            }
        }
        RepoCommand::SetPublic(args) => return super::people::set_public(args).await,
        RepoCommand::Remove(args) => {
            let _: Repo = client(&args.server)?
                .send(Method::DELETE, &repo_path(&args.name)?, None)
                .await?;
            println!("removed {}", args.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn secret(command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set(args) => {
            let value = secret_value(args.value)?;
            let path = format!("{}/secrets/{}", repo_path(&args.repo)?, args.name);
            let _: serde_json::Value = client(&args.server)?
                .send(Method::PUT, &path, Some(&json!({ "value": value })))
                .await?;
            println!("set {} on {}", args.name, args.repo);
        }
        SecretCommand::Remove(args) => {
            let path = format!("{}/secrets/{}", repo_path(&args.repo)?, args.name);
            let _: serde_json::Value = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!("removed {} from {}", args.name, args.repo);
        }
        SecretCommand::List(args) => {
            #[derive(Deserialize)]
            struct Secret {
                name: String,
            }
            let path = format!("{}/secrets", repo_path(&args.name)?);
            let secrets: Vec<Secret> = client(&args.server)?.get(&path).await?;
            for secret in secrets {
                println!("{}", secret.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    #[derive(Deserialize)]
    struct Created {
        run_id: i64,
    }
    let inputs: serde_json::Map<String, serde_json::Value> = args
        .inputs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let mut body = json!({ "workflow": args.workflow, "inputs": inputs });
    if let Some(git_ref) = args.git_ref {
        body["ref"] = json!(git_ref);
    }
    let path = format!("{}/dispatch", repo_path(&args.repo)?);
    let client = client(&args.server)?;
    let created: Created = client.send(Method::POST, &path, Some(&body)).await?;
    // The run's page on the dashboard, to open or follow.
    println!(
        "run {} started: {}",
        created.run_id,
        client.url(&format!("/runs/{}", created.run_id))
    );
    Ok(ExitCode::SUCCESS)
}
