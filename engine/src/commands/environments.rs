//! `plue env list|set|delete|secret-set|secret-delete|secret-list`: a repository's
//! environments on a server (`/api/repos/{owner}/{name}/environments`), for its
//! maintainers. The server checks every rule; this only shapes requests and prints.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::ApiClient;
use super::forges::{repo_path, secret_value};
use crate::cli::ServerArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCommand {
    /// List a repository's environments: name, allowed refs, reviewers, wait timer.
    List(EnvRepoArgs),
    /// Create or replace an environment (all its settings at once; its secrets are kept).
    Set(EnvSetArgs),
    /// Delete an environment and its secrets (steps naming it fail from then on).
    Delete(EnvNameArgs),
    /// Store an environment secret (the value is read from stdin unless --value is given).
    SecretSet(EnvSecretSetArgs),
    /// Remove an environment secret.
    SecretDelete(EnvSecretArgs),
    /// List the names of an environment's secrets.
    SecretList(EnvNameArgs),
}

#[derive(Debug, Args)]
pub(crate) struct EnvRepoArgs {
    /// owner/name
    pub(crate) repo: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnvNameArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The environment, e.g. prod.
    pub(crate) environment: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnvSetArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The environment, e.g. prod.
    pub(crate) environment: String,
    /// A branch glob whose runs may use it (`main`, `release/*`); repeatable. None: no run
    /// may.
    #[arg(long = "allow", value_name = "GLOB")]
    pub(crate) allowed_refs: Vec<String>,
    /// A user name or @group whose approval each step using it needs; repeatable.
    #[arg(long = "reviewer", value_name = "NAME")]
    pub(crate) reviewers: Vec<String>,
    /// Seconds between the review (or the step becoming ready) and the step's dispatch.
    #[arg(long, default_value_t = 0)]
    pub(crate) wait_timer: u64,
    /// Let the user who started a run review it too (refused by default).
    #[arg(long)]
    pub(crate) allow_self_review: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnvSecretSetArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The environment, e.g. prod.
    pub(crate) environment: String,
    /// The variable name steps see, e.g. DEPLOY_KEY.
    pub(crate) name: String,
    /// The value (prefer stdin: command lines are visible to other users).
    #[arg(long)]
    pub(crate) value: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnvSecretArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The environment, e.g. prod.
    pub(crate) environment: String,
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Deserialize)]
struct Environment {
    name: String,
    allowed_refs: Vec<String>,
    reviewers: Vec<String>,
    wait_timer_s: i64,
    prevent_self_review: bool,
}

impl Environment {
    /// One tab-separated line: name, allowed refs, reviewers, wait timer, self review.
    fn line(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        };
        format!(
            "{}\trefs={}\treviewers={}\twait={}s\tself-review={}",
            self.name,
            list(&self.allowed_refs),
            list(&self.reviewers),
            self.wait_timer_s,
            if self.prevent_self_review {
                "refused"
            } else {
                "allowed"
            }
        )
    }
}

fn client(server: &ServerArgs) -> anyhow::Result<ApiClient> {
    ApiClient::new(&server.server, server.token.clone())
}

fn environment_path(repo: &str, environment: &str) -> anyhow::Result<String> {
    Ok(format!("{}/environments/{environment}", repo_path(repo)?))
}

pub(crate) async fn run(command: EnvCommand) -> anyhow::Result<ExitCode> {
    match command {
        EnvCommand::List(args) => {
            let path = format!("{}/environments", repo_path(&args.repo)?);
            let environments: Vec<Environment> = client(&args.server)?.get(&path).await?;
            for environment in environments {
                println!("{}", environment.line());
            }
        }
        EnvCommand::Set(args) => {
            let body = json!({
                "allowed_refs": args.allowed_refs,
                "reviewers": args.reviewers,
                "wait_timer_s": args.wait_timer,
                "prevent_self_review": !args.allow_self_review,
            });
            let path = environment_path(&args.repo, &args.environment)?;
            let environment: Environment = client(&args.server)?
                .send(Method::PUT, &path, Some(&body))
                .await?;
            println!("set on {}: {}", args.repo, environment.line());
        }
        EnvCommand::Delete(args) => {
            let path = environment_path(&args.repo, &args.environment)?;
            let _: serde_json::Value = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!("deleted environment {} of {}", args.environment, args.repo);
        }
        EnvCommand::SecretSet(args) => {
            let value = secret_value(args.value)?;
            let path = format!(
                "{}/secrets/{}",
                environment_path(&args.repo, &args.environment)?,
                args.name
            );
            let _: serde_json::Value = client(&args.server)?
                .send(Method::PUT, &path, Some(&json!({ "value": value })))
                .await?;
            println!(
                "set {} on environment {} of {}",
                args.name, args.environment, args.repo
            );
        }
        EnvCommand::SecretDelete(args) => {
            let path = format!(
                "{}/secrets/{}",
                environment_path(&args.repo, &args.environment)?,
                args.name
            );
            let _: serde_json::Value = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!(
                "removed {} from environment {} of {}",
                args.name, args.environment, args.repo
            );
        }
        EnvCommand::SecretList(args) => {
            #[derive(Deserialize)]
            struct Secret {
                name: String,
            }
            let path = format!(
                "{}/secrets",
                environment_path(&args.repo, &args.environment)?
            );
            let secrets: Vec<Secret> = client(&args.server)?.get(&path).await?;
            for secret in secrets {
                println!("{}", secret.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_prints_on_one_line() {
        let environment = Environment {
            name: "prod".into(),
            allowed_refs: vec!["main".into(), "release/*".into()],
            reviewers: vec![],
            wait_timer_s: 60,
            prevent_self_review: true,
        };
        assert_eq!(
            environment.line(),
            "prod\trefs=main,release/*\treviewers=-\twait=60s\tself-review=refused"
        );
    }
}
