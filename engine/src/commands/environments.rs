//! `plue env list|set|delete|secret-set|secret-delete|secret-list`: a repository's
//! environments on a server (`/api/repos/{owner}/{name}/environments`), for its
//! maintainers. The server checks every rule; this only shapes requests and prints.

use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api_paths::{repo_path, secret_value};
use super::client::ApiClient;
use crate::cli::environments::EnvCommand;
use crate::cli::ServerArgs;

#[derive(Debug, Deserialize)]
struct Environment {
    name: String,
    allowed_refs: Vec<String>,
    reviewers: Vec<String>,
    wait_timer_s: i64,
    prevent_self_review: bool,
    #[serde(default)]
    untrusted_id_tokens: bool,
}

impl Environment {
    /// One tab-separated line: name, allowed refs, reviewers, wait timer, self review, and
    /// `untrusted-id-tokens=allowed` when untrusted runs may have tokens.
    fn line(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        };
        let untrusted = if self.untrusted_id_tokens {
            "\tuntrusted-id-tokens=allowed"
        } else {
            ""
        };
        format!(
            "{}\trefs={}\treviewers={}\twait={}s\tself-review={}{untrusted}",
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
                "untrusted_id_tokens": args.untrusted_id_tokens,
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
            untrusted_id_tokens: false,
        };
        assert_eq!(
            environment.line(),
            "prod\trefs=main,release/*\treviewers=-\twait=60s\tself-review=refused"
        );
        let preview = Environment {
            name: "preview".into(),
            reviewers: vec!["@maintainers".into()],
            untrusted_id_tokens: true,
            ..environment
        };
        assert_eq!(
            preview.line(),
            "preview\trefs=main,release/*\treviewers=@maintainers\twait=60s\t\
             self-review=refused\tuntrusted-id-tokens=allowed"
        );
    }
}
