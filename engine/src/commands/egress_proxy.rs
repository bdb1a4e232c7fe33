//! `plue egress-proxy`: the cluster's shared egress proxy (`runner::network::gateway`),
//! asking the engine about every connection's credential and peer address with its own
//! token.
//!
//! The engine is reached directly, never through a proxy of this process's environment,
//! and the token is read from a file (never an argument, which `/proc` shows).

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ::runner::network::gateway::{self, Grant, Grants};
use anyhow::Context;
use plue_types::protocol::egress::{EgressCheck, EgressGrant, CHECK};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use super::interrupted;
use crate::cli::EgressProxyArgs;

/// The shortest token accepted (the engine's rule for the same file).
const MIN_TOKEN_CHARS: usize = 16;
/// How long one question to the engine may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine, asked over HTTP.
struct Engine {
    client: reqwest::Client,
    check: String,
    token: String,
}

impl Grants for Engine {
    async fn check(&self, credential: &str, peer: IpAddr) -> Result<Option<Grant>, String> {
        let answer = self
            .client
            .post(&self.check)
            .bearer_auth(&self.token)
            .json(&EgressCheck {
                credential: credential.to_owned(),
                peer,
            })
            .send()
            .await
            .map_err(|e| format!("asking the engine: {e}"))?;
        match answer.status() {
            StatusCode::OK => {
                let grant: EgressGrant = answer
                    .json()
                    .await
                    .map_err(|e| format!("the engine's answer: {e}"))?;
                Ok(Some(Grant {
                    attempt_id: grant.attempt_id,
                    hosts: grant.hosts,
                }))
            }
            StatusCode::FORBIDDEN => Ok(None),
            other => Err(format!("the engine answered {other}")),
        }
    }
}

/// The proxy's token from `path`, trimmed.
pub(crate) fn read_token(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let token = text.trim();
    if token.chars().count() < MIN_TOKEN_CHARS {
        anyhow::bail!(
            "{flag} {}: the token must be at least {MIN_TOKEN_CHARS} characters",
            path.display()
        );
    }
    Ok(token.to_owned())
}

pub(crate) async fn run(args: EgressProxyArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token_file, "--token-file")?;
    let engine = args.engine.trim_end_matches('/');
    if !(engine.starts_with("http://") || engine.starts_with("https://")) {
        anyhow::bail!("--engine {engine}: not an http(s):// URL");
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(ASK_TIMEOUT)
        .build()
        .context("the engine's HTTP client")?;
    let grants = Arc::new(Engine {
        client,
        check: format!("{engine}{CHECK}"),
        token,
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let denied: Vec<String> = args.deny.iter().map(ToString::to_string).collect();
    tracing::warn!(
        "plue egress-proxy listening on {}; never reached: {}",
        listener.local_addr()?,
        if denied.is_empty() {
            "link-local and unspecified addresses, and loopback but for a listed address".to_owned()
        } else {
            format!("link-local, unspecified, {}", denied.join(", "))
        }
    );
    let stop = CancellationToken::new();
    let serving = tokio::spawn(gateway::serve(listener, grants, args.deny, stop.clone()));
    interrupted().await;
    stop.cancel();
    let _ = serving.await;
    Ok(ExitCode::SUCCESS)
}
