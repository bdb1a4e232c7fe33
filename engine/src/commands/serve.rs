//! `plue serve`: the engine as a server — public API, runner API (on `--listen`, or alone
//! on `--runner-listen`), sweeper and a local pool of N runners (0 for remote runners
//! only) — until SIGINT/SIGTERM, which drain it
//! (readiness fails and no new claims are answered for `--drain-delay`, then in-flight
//! requests finish within `--shutdown-grace`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plue_core::artifacts::ArtifactsConfig;
use plue_pool::kubernetes::KubernetesPool;
use plue_server::server::{self, EngineConfig, LocalPoolSettings};
use plue_store::Store;
use plue_vault::tokens;
use plue_vault::Vault;
use tokio::net::TcpListener;

use super::{
    cpus, evaluator_pool_with, interrupted, limits_for_steps, local_runners, RemoveOnExit,
};
use crate::cli::{PoolKind, ServeArgs, StoreArgs};
use crate::logging::notice;

/// `--check-config`: validates `--pool-config`, `--llm-prices` and the GitHub App's key,
/// whichever are given, reporting every problem of each; 1 when any is invalid or none is
/// given.
fn check_config(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if args.pool_config.is_none() && args.llm_prices.is_none() && args.github_app_id.is_none() {
        anyhow::bail!("--check-config needs --pool-config FILE, --llm-prices FILE or --github-app-id ID --github-app-key-file PATH");
    }
    let mut ok = true;
    match github_app(args) {
        Ok(Some(app)) => println!(
            "GitHub App {}: its private key is an RSA key that signs",
            app.id()
        ),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            ok = false;
        }
    }
    if let Some(file) = &args.pool_config {
        ok &= plue_pool::config_file::check_command(file) == ExitCode::SUCCESS;
    }
    if let Some(file) = &args.llm_prices {
        ok &= plue_core::pricing::file::check_command(file) == ExitCode::SUCCESS;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The most bytes of a key file read.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// The GitHub App of `--github-app-id` and `--github-app-key-file` (clap makes each need
/// the other), its key checked now: an unreadable, non-RSA or others-readable key
/// ([`super::private_file`]) stops the start.
fn github_app(args: &ServeArgs) -> anyhow::Result<Option<plue_forge::auth::GitHubApp>> {
    let (Some(id), Some(file)) = (args.github_app_id, &args.github_app_key_file) else {
        return Ok(None);
    };
    // A Token is zeroized when dropped.
    let pem = plue_forge::auth::Token::new(
        super::private_file::read_private(file, "the GitHub App's private key file", MAX_KEY_BYTES)
            .context("--github-app-key-file")?,
    );
    let app = plue_forge::auth::GitHubApp::new(id, pem.expose())
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
        .context("--github-app-key-file")?
        .with_api_url(args.github_app_api_url.clone());
    Ok(Some(app))
}

/// The GitHub App's webhook secret, read from `--github-app-webhook-secret-file` (its
/// surrounding whitespace trimmed; at least 8 characters, as a repository's).
fn app_webhook_secret(args: &ServeArgs) -> anyhow::Result<Option<plue_forge::auth::Token>> {
    let Some(file) = &args.github_app_webhook_secret_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--github-app-webhook-secret-file {}", file.display()))?;
    let secret = text.trim();
    if secret.chars().count() < 8 {
        anyhow::bail!(
            "--github-app-webhook-secret-file {}: the secret must be at least 8 characters",
            file.display()
        );
    }
    Ok(Some(plue_forge::auth::Token::new(secret.to_string())))
}

/// The engine's own secrets (`--secret`) with the repositories each reaches
/// (`--secret-repos`, merged per name); a `--secret-repos` for a secret no `--secret` gives
/// stops the start.
fn engine_secrets(args: &ServeArgs) -> anyhow::Result<plue_core::engine_secrets::EngineSecrets> {
    let mut reaches: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (name, patterns) in &args.secret_repos {
        reaches
            .entry(name.clone())
            .or_default()
            .extend(patterns.iter().cloned());
    }
    plue_core::engine_secrets::EngineSecrets::new(args.secrets.iter().cloned().collect(), reaches)
}

/// The egress proxy's token (`--egress-proxy-token-file`); without one, a pool class with
/// an `egress_proxy` stops the start: its allow-list steps would be routed to it and fail
/// for want of a credential.
fn egress_proxy_token(
    token_file: Option<&std::path::Path>,
    pool_config: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(file) = token_file {
        return super::egress_proxy::read_token(file, "--egress-proxy-token-file").map(Some);
    }
    if let Some(file) = pool_config {
        let pool = plue_pool::config_file::load(file)?;
        if let Some(class) = pool.classes.iter().find(|c| c.egress_proxy.is_some()) {
            anyhow::bail!(
                "the pool class '{}' has an egress_proxy: give the proxy's token with \
                 --egress-proxy-token-file (the file `plue egress-proxy --token-file` reads)",
                class.name
            );
        }
    }
    Ok(None)
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.check_config {
        return check_config(&args);
    }
    let kubernetes = match (
        args.pools.contains(&PoolKind::Kubernetes),
        &args.pool_config,
    ) {
        (true, None) => anyhow::bail!("--pool kubernetes needs --pool-config FILE"),
        (true, Some(file)) => Some(file.clone()),
        (false, _) => None,
    };
    // Before anything starts: a bad key is a configuration error, not a failing write later.
    let github_app = github_app(&args)?;
    let app_webhook_secret = app_webhook_secret(&args)?;
    let secrets = engine_secrets(&args)?;
    // Caught from now on: a SIGTERM while starting drains too, instead of killing.
    let stop = interrupted();
    let store = open_store(&args.store).await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let runner_listener = match &args.runner_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (--runner-listen)"))?,
        ),
        None => None,
    };
    let generated = args.runner_token.is_none();
    let runner_token = match args.runner_token {
        Some(token) if token.len() < 16 => {
            anyhow::bail!("the runner token must be at least 16 characters")
        }
        Some(token) => token,
        None => tokens::new_token()?,
    };
    let mut config = EngineConfig::new(runner_token.clone());
    let admin_generated = args.admin_token.as_deref().unwrap_or_default().is_empty();
    let admin_token = match args.admin_token.filter(|t| !t.is_empty()) {
        Some(token) if token.len() < 16 => {
            anyhow::bail!("the admin token must be at least 16 characters")
        }
        Some(token) => token,
        None => tokens::new_token()?,
    };
    config.admin_token = Some(admin_token.clone());
    config.private_reads = args.private_reads;
    config.checkouts_from_mirror = !args.checkouts_from_forge;
    config.public_url = args.public_url.clone();
    config.sign_in = super::login::serve_settings(&args.sign_in)?;
    config.trusted_proxies = args.trusted_proxies.clone();
    config.local_workflows = args
        .local_workflows
        .iter()
        .map(|dir| {
            std::fs::canonicalize(dir)
                .with_context(|| format!("--local-workflows {}", dir.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    config.vault = Vault::from_env()?;
    if let Some(app) = &github_app {
        notice(&format!(
            "GitHub App {}: GitHub repositories without a personal api_token are written to with its installation tokens",
            app.id()
        ));
    }
    config.github_app = github_app;
    config.github_app_webhook_secret = app_webhook_secret;
    config.register_installed_repos = args.register_installed_repos;
    config.installation_owners =
        plue_server::webhooks::InstallationOwners::new(&args.installation_owners);
    if let Some(file) = &args.llm_prices {
        config.prices = Arc::new(plue_core::pricing::Prices::with_file(file)?);
    }
    config.max_parallel = args.max_parallel;
    config.secrets = secrets;
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(50));
    config.lost_after = Duration::from_millis(args.lost_after_ms.max(args.heartbeat_ms * 2));
    config.claim_ack = Duration::from_millis(args.claim_ack_ms.max(100));
    config.forge_roles_every =
        (args.forge_roles_every_secs > 0).then(|| Duration::from_secs(args.forge_roles_every_secs));
    let local = args.pools.contains(&PoolKind::Local);
    let runners = if local {
        args.runners.unwrap_or_else(cpus)
    } else {
        0
    };
    let data_dir = &args.store.data_dir;
    plue_store::prepare_data_dir(data_dir)?;
    config.mirrors_dir = std::fs::canonicalize(data_dir)?.join("mirrors");
    config.artifacts = ArtifactsConfig {
        url: args.artifacts_url.clone().filter(|u| !u.is_empty()),
        local_dir: std::fs::canonicalize(data_dir)?.join("artifacts"),
        max_bytes: args.artifacts_max_bytes.max(1),
        retention: (args.artifacts_retention_days > 0)
            .then(|| Duration::from_secs(args.artifacts_retention_days * 24 * 3600)),
        quotas: args.quotas.quotas(),
        caches: plue_core::artifacts::CacheLimits {
            quota: args.cache_quota.max(1),
            retention: (args.cache_retention_days > 0)
                .then(|| Duration::from_secs(args.cache_retention_days * 24 * 3600)),
        },
    };
    config.log_quotas = args.quotas.log_quotas();
    config.egress_proxy_token = egress_proxy_token(
        args.egress_proxy_token_file.as_deref(),
        kubernetes.as_deref(),
    )?;
    config.provenance = Some(super::signing_key::keys(
        &args.signing,
        &std::fs::canonicalize(data_dir)?,
    )?);
    let mut work_dir = None;
    if local && (runners > 0 || args.max_runners.unwrap_or(0) > 0) {
        let data_dir = std::fs::canonicalize(data_dir)?;
        let mut runner = local_runners(
            &data_dir,
            Duration::from_secs(300),
            !args.reuse_runners,
            args.work_dir_on_disk,
        )?;
        // Dropped when this function returns, after the drain below stopped the runners.
        work_dir = Some(RemoveOnExit(runner.work_dir.clone()));
        runner.pass_env = args.pass_env.clone();
        config.pool = Some(LocalPoolSettings {
            min_warm: runners,
            max_runners: args.max_runners.unwrap_or(runners).max(runners),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            runner,
        });
    }
    let (classes_tx, classes) = tokio::sync::watch::channel(Vec::new());
    // Filled once the pool runs: the egress proxy's credentials are bound to these pods.
    let runner_pods = plue_pool::kubernetes::PodAddresses::default();
    config.runner_pods = runner_pods.clone();
    if kubernetes.is_some() {
        config.pool_classes = Some(classes);
        // Its unservable check knows which classes accept forks.
        config.fail_unservable_forks = false;
    }
    let config_vault_keyed = config.vault.is_keyed();
    let evaluator = Arc::new(
        evaluator_pool_with(2, limits_for_steps(args.max_steps))
            .await
            .context("starting the evaluator")?,
    );
    let engine = server::start_with_runner_listener(
        store.clone(),
        listener,
        runner_listener,
        config,
        Some(evaluator),
    )
    .await?;
    let kubernetes = match kubernetes {
        Some(file) => {
            let executor = engine.executor.clone();
            let pool = KubernetesPool::from_file(&file, executor, local, classes_tx).await?;
            pool.publish_addresses(&runner_pods);
            Some(pool)
        }
        None => None,
    };
    notice(&format!(
        "plue engine listening on {} ({} store, {runners} local runner(s))",
        engine.url,
        store.backend()
    ));
    if engine.runner_url != engine.url {
        notice(&format!(
            "runner protocol listening on {} only",
            engine.runner_url
        ));
    }
    if admin_generated {
        notice(&format!(
            "admin token (set PLUE_ADMIN_TOKEN to choose one): {admin_token}"
        ));
    }
    if !config_vault_keyed {
        notice(&format!(
            "note: no {} set: repository secrets cannot be stored, webhook secrets are kept unencrypted",
            plue_vault::KEY_ENV
        ));
    }
    if generated {
        notice(&format!(
            "runner registration token (set PLUE_RUNNER_TOKEN to choose one): {runner_token}"
        ));
    }
    stop.await;
    if let Some(kubernetes) = kubernetes {
        kubernetes.shutdown().await;
    }
    notice(&format!(
        "draining: unready for {}s, then up to {}s for in-flight requests",
        args.drain_delay, args.shutdown_grace
    ));
    let (delay, grace) = (args.drain_delay, args.shutdown_grace);
    if !engine
        .drain(Duration::from_secs(delay), Duration::from_secs(grace))
        .await
    {
        notice("shutdown grace ran out: stopping with requests still open");
    }
    store.close().await;
    drop(work_dir);
    Ok(ExitCode::SUCCESS)
}

/// The store `--database-url` names, else the embedded SQLite in `--data-dir`.
pub(crate) async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    match &args.database_url {
        Some(url) => Store::connect_with(url, args.database_connections).await,
        None => Store::open_data_dir(&args.data_dir).await,
    }
}
