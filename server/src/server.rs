//! Starting and stopping an engine: the HTTP server (public API, webhooks and internal
//! runner API), the sweeper, the scheduler, the commit status reporter and, optionally, a
//! local warm pool — all sharing one executor and store.
//!
//! Shutdown is injected: [`RunningEngine::shutdown`] cancels one token that the server,
//! long-polls, SSE streams, the sweeper and the pool all watch, then waits for every task.
//! [`RunningEngine::drain`] (SIGTERM) first fails `/readyz` and stops answering claims,
//! then shuts down within a bounded grace, so in-flight requests finish.
//!
//! The runner protocol (`/internal/...`) may have a listener of its own
//! ([`start_with_runner_listener`], `plue serve --runner-listen`): it then serves only
//! there, the public listener answers 404 for it, and the runner listener serves nothing
//! else (no API, dashboard, webhooks or metrics), so a network policy can let runners
//! reach that port and nothing else of the engine. [`start_with_runner_socket`] (`plue
//! run`) serves it the same way on a private Unix socket instead ([`RunnerSocket`]), which
//! its local pool's runners are given: no runner of it speaks TCP.
//!
//! Why one file past ~600 lines: `start_serving` wires every part of an engine in one
//! straight-line function (half the file), so the order things start in — and the tasks
//! `shutdown` waits for — reads top to bottom; [`EngineConfig`], what it is given, is most
//! of the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use evaluator::EvaluatorPool;
use plue_core::artifacts::{Artifacts, ArtifactsConfig};
use plue_core::attempts::{Attempts, AttemptsConfig};
use plue_core::executor::Executor;
use plue_core::registry::Registry;
use plue_core::scheduler;
use plue_core::status_reporter::StatusReporter;
use plue_pool::kubernetes::ClassStatus;
use plue_pool::local::{LocalConfig, LocalProvider, RunnerProcess};
use plue_pool::{Demand, Pool, PoolConfig, PoolStatus};
use plue_store::events::Events;
use plue_store::Store;
use plue_vault::Vault;
use runner::network::capability::Capability;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::followers::{FollowerLimits, Followers, TrustedProxies};
use crate::api::{self, ApiState};
use crate::internal_api::{self, InternalConfig, InternalState, RunnerAuth};
use crate::ops::{self, OpsState};
use crate::runner_socket::RunnerSocket;
use crate::sweeper::{self, SweeperConfig};
use crate::{web, webhooks};

/// A local pool of runner processes.
#[derive(Debug, Clone)]
pub struct LocalPoolSettings {
    pub min_warm: usize,
    pub max_runners: usize,
    pub idle_timeout: Duration,
    pub runner: RunnerProcess,
}

/// The labels a local pool's runners announce: its settings' and the reserved labels of the
/// network policies they enforce, found as they find them (they run as this process's
/// user: `runner::network::capability`).
fn local_offer(settings: &LocalPoolSettings) -> BTreeMap<String, String> {
    static CAN: std::sync::OnceLock<Capability> = std::sync::OnceLock::new();
    let can = *CAN.get_or_init(|| Capability::probe(false));
    let mut offered = settings.runner.labels.clone();
    offered.extend(can.labels());
    offered
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub registration_token: String,
    pub admin_token: Option<String>,
    /// Reads of the API need a token too.
    pub private_reads: bool,
    /// Runners may check commits out from the mirrors (`GET .../checkout`); `false`
    /// (`--checkouts-from-forge`): every checkout comes from the forge.
    pub checkouts_from_mirror: bool,
    /// Opens sealed repository secrets, webhook secrets and forge tokens.
    pub vault: Vault,
    /// The engine's GitHub App (`--github-app-id`, `--github-app-key-file`): GitHub
    /// repositories without a personal token are written to with its installation tokens.
    pub github_app: Option<plue_forge::auth::GitHubApp>,
    /// The GitHub App's webhook secret (`--github-app-webhook-secret-file`): its
    /// `installation` and `installation_repositories` deliveries are checked with it.
    pub github_app_webhook_secret: Option<plue_forge::auth::Token>,
    /// Register the repositories the App's accepted installations name
    /// (`--register-installed-repos`; off by default: an admin registers them).
    pub register_installed_repos: bool,
    /// The accounts whose installations of the App the engine accepts
    /// (`--installation-owner`; none by default): every other installation is refused.
    pub installation_owners: webhooks::InstallationOwners,
    /// The engine's URL as users reach it (links in commit statuses); default: its own.
    pub public_url: Option<String>,
    /// Where the repositories' bare mirrors live.
    pub mirrors_dir: PathBuf,
    /// How often due schedules and owed commit statuses are looked for.
    pub schedule_interval: Duration,
    pub status_interval: Duration,
    /// The engine's own secrets (`--secret`) and the repositories each reaches
    /// (`--secret-repos`).
    pub secrets: plue_core::engine_secrets::EngineSecrets,
    /// Most steps of one run queued or running at once.
    pub max_parallel: usize,
    pub heartbeat_interval: Duration,
    pub lost_after: Duration,
    /// How often the roles people hold through their forge permissions are refreshed
    /// ([`plue_core::forge_roles`], `--forge-roles-every-secs`): 5 minutes; `None`: never
    /// (only Plue's own grants count then, and forge roles already learnt go stale).
    pub forge_roles_every: Option<Duration>,
    /// How long a runner has to acknowledge a claim a poll handed it before the step goes
    /// back to the queue, using no retry (`--claim-ack-ms`): 5 s.
    pub claim_ack: Duration,
    /// How often this engine looks for queued work that became due as time passed (a
    /// retry's backoff, a wait timer; a wake lost between replicas) and wakes polls for it
    /// ([`crate::due_wake`]): 250 ms.
    pub due_check: Duration,
    /// How often a runner's waiting poll looks for work again unwoken, a safety net under
    /// the wakes and [`EngineConfig::due_check`]: 5 s.
    pub poll_recheck: Duration,
    pub pool: Option<LocalPoolSettings>,
    /// The Kubernetes pool's classes as `GET /api/pool` shows them (when it runs).
    pub pool_classes: Option<watch::Receiver<Vec<ClassStatus>>>,
    /// Directories below which `POST /api/runs` may run workflow files of the server's own
    /// file system (canonical paths; none by default).
    pub local_workflows: Vec<PathBuf>,
    /// Where hand-off blobs and artifacts go (default: a temporary directory; `plue serve`
    /// and `plue run` use the data directory's `artifacts/`).
    pub artifacts: ArtifactsConfig,
    /// Proxies (an ingress, a load balancer) whose `X-Forwarded-For` names the client the
    /// live-stream caps count (`--trusted-proxy`; none by default: the direct peer).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The most bytes of log text an attempt and a run may store (`--quota-*-log-bytes`).
    pub log_quotas: plue_store::LogQuotas,
    /// Whether the engine itself fails fork steps no runner accepting forks can serve
    /// ([`plue_pool::forks::run`]); off when the Kubernetes pool, which knows its
    /// classes, does it.
    pub fail_unservable_forks: bool,
    /// What `llm` tokens cost (`--llm-prices FILE` over the built-in table).
    pub prices: Arc<plue_core::pricing::Prices>,
    /// Steps whose final workspace every run keeps (`plue run --export STEP=DIR`).
    pub kept_workspaces: std::collections::BTreeSet<String>,
    /// Where llm steps' `prompt_file`s are read (by the engine, when a step is claimed)
    /// instead of the step's workspace: `plue run` sets the workflow file's repository
    /// when it runs against another directory. `None` (servers): the workspace, which is
    /// the workflow's own repository.
    pub prompt_root: Option<PathBuf>,
    /// The keys provenance statements are signed with (`plue serve --signing-key`); `None`:
    /// changes are applied without a statement.
    pub provenance: Option<plue_core::safe_outputs::attest::Keys>,
    /// The cluster's egress proxy's token (`plue serve --egress-proxy-token-file`): allow-list
    /// steps' assignments carry a grant the proxy checks here (`internal_api::egress`);
    /// `None`: no grants, and a runner that needs one fails such a step closed.
    pub egress_proxy_token: Option<String>,
    /// Where the Kubernetes pool's runner pods are (filled once the pool runs): the egress
    /// proxy's credentials are honoured only from the pod of the attempt's runner.
    pub runner_pods: plue_pool::kubernetes::PodAddresses,
    /// The providers people sign in with (`--oidc-issuer`, `--github-sign-in-client-id`,
    /// `--gitea-sign-in-url`; none by default: API tokens only).
    pub sign_in: crate::sign_in::Settings,
}

impl EngineConfig {
    /// Defaults suited to a local engine; the caller sets tokens and the pool.
    pub fn new(registration_token: String) -> EngineConfig {
        EngineConfig {
            registration_token,
            admin_token: None,
            private_reads: false,
            checkouts_from_mirror: true,
            vault: Vault::unkeyed(),
            github_app: None,
            github_app_webhook_secret: None,
            register_installed_repos: false,
            installation_owners: webhooks::InstallationOwners::default(),
            public_url: None,
            mirrors_dir: std::env::temp_dir().join(format!("plue-mirrors-{}", std::process::id())),
            schedule_interval: scheduler::TICK,
            status_interval: Duration::from_millis(250),
            secrets: Default::default(),
            max_parallel: 64,
            heartbeat_interval: Duration::from_secs(2),
            lost_after: Duration::from_secs(10),
            claim_ack: Duration::from_secs(5),
            forge_roles_every: Some(plue_core::forge_roles::REFRESH),
            due_check: Duration::from_millis(250),
            poll_recheck: Duration::from_secs(5),
            pool: None,
            pool_classes: None,
            local_workflows: Vec::new(),
            artifacts: ArtifactsConfig::local(
                std::env::temp_dir().join(format!("plue-artifacts-{}", std::process::id())),
            ),
            trusted_proxies: Vec::new(),
            log_quotas: plue_store::LogQuotas::default(),
            fail_unservable_forks: true,
            prices: Arc::new(plue_core::pricing::Prices::builtin()),
            kept_workspaces: std::collections::BTreeSet::new(),
            prompt_root: None,
            provenance: None,
            egress_proxy_token: None,
            runner_pods: plue_pool::kubernetes::PodAddresses::default(),
            sign_in: crate::sign_in::Settings::default(),
        }
    }
}

pub struct RunningEngine {
    /// Base URL, e.g. `http://127.0.0.1:8600`.
    pub url: String,
    /// Where runners reach the runner protocol: the runner listener's base URL, else
    /// [`RunningEngine::url`] (with a runner socket, a nominal `http://localhost`).
    pub runner_url: String,
    /// The runner socket's path, when the runner protocol is served on one.
    pub runner_socket: Option<PathBuf>,
    pub executor: Arc<Executor>,
    pub pool: Option<watch::Receiver<PoolStatus>>,
    shutdown: CancellationToken,
    /// A child of `shutdown`: cancelled first when draining.
    draining: CancellationToken,
    pool_shutdown: CancellationToken,
    pool_task: Option<tokio::task::JoinHandle<()>>,
    tasks: JoinSet<()>,
    /// On PostgreSQL: this engine and the other replicas of its database waking each
    /// other ([`plue_store::wake`]); stopped when the engine is dropped.
    wakes: Option<plue_store::wake::ReplicaWakes>,
}

impl RunningEngine {
    /// How this engine and the other replicas of its PostgreSQL wake each other; `None`
    /// on SQLite.
    pub fn replica_wakes(&self) -> Option<&plue_store::wake::ReplicaWakes> {
        self.wakes.as_ref()
    }

    /// Stops the pool's idle runners first (while the API still answers their
    /// deregistration), then the server and timers, and waits for every task.
    pub async fn shutdown(mut self) {
        self.pool_shutdown.cancel();
        if let Some(pool) = self.pool_task.take() {
            let _ = pool.await;
        }
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Drains, then shuts down: `/readyz` fails and runner polls stop claiming at once;
    /// the engine keeps serving for `delay` (so load balancers notice), then
    /// [`RunningEngine::shutdown`] closes the listener and lets in-flight requests finish.
    /// Whatever is still running `grace` later is dropped. Returns false when the grace ran
    /// out.
    pub async fn drain(self, delay: Duration, grace: Duration) -> bool {
        self.draining.cancel();
        tokio::time::sleep(delay).await;
        tokio::time::timeout(grace, self.shutdown()).await.is_ok()
    }
}

/// Serves the runner protocol alone on `listener` until `shutdown`; a Unix socket's
/// directory goes when serving ends (or this task is dropped).
async fn serve_runners(
    listener: RunnerListener,
    runners: axum::Router,
    shutdown: CancellationToken,
) {
    let stop = async move { shutdown.cancelled().await };
    let served = match listener {
        RunnerListener::Tcp(listener) => {
            let runners = runners.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(accepting(listener), runners)
                .with_graceful_shutdown(stop)
                .await
        }
        RunnerListener::Unix(socket) => {
            let (listener, _removed_after) = socket.into_parts();
            axum::serve(listener, runners.into_make_service())
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!("runner listener failed: {e}");
    }
}

/// `listener`, set so that each connection it accepts sends its small writes at once
/// (`TCP_NODELAY`, which Linux copies from the listening socket to every accepted one). A
/// live log's event, a held connection's answer or a streamed page's next chunk written
/// while the peer has not yet acknowledged the one before would otherwise wait for that
/// acknowledgement (Nagle's algorithm), which the peer may delay: a follower got a step's
/// first line ≈ 20 ms after it was stored. Where the option cannot be set the listener
/// serves as it is.
fn accepting(listener: TcpListener) -> TcpListener {
    if let Err(err) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::warn!(%err, "TCP_NODELAY not set on the listener: small writes may wait");
    }
    listener
}

/// The live-stream followers' caps: places are kept for signed-in users only where users
/// can sign in (an admin token is configured).
fn followers(config: &EngineConfig) -> Followers {
    let limits = if config.admin_token.as_deref().is_some_and(|t| !t.is_empty()) {
        FollowerLimits::default()
    } else {
        FollowerLimits::without_sign_in()
    };
    Followers::new(limits).trusting(TrustedProxies::new(config.trusted_proxies.clone()))
}

/// Starts an engine serving everything on `listener`.
pub async fn start(
    store: Store,
    listener: TcpListener,
    config: EngineConfig,
    evaluator: Option<Arc<EvaluatorPool>>,
) -> anyhow::Result<RunningEngine> {
    start_with_runner_listener(store, listener, None, config, evaluator).await
}

/// Starts an engine serving on `listener`, and the runner protocol on `runner_listener`
/// alone when there is one (see the module's doc).
pub async fn start_with_runner_listener(
    store: Store,
    listener: TcpListener,
    runner_listener: Option<TcpListener>,
    config: EngineConfig,
    evaluator: Option<Arc<EvaluatorPool>>,
) -> anyhow::Result<RunningEngine> {
    let runners = runner_listener.map(RunnerListener::Tcp);
    start_serving(store, listener, runners, config, evaluator).await
}

/// Starts an engine serving on `listener`, and the runner protocol on `socket` alone: its
/// local pool's runners connect there (`plue run`; see the module's doc).
pub async fn start_with_runner_socket(
    store: Store,
    listener: TcpListener,
    socket: RunnerSocket,
    config: EngineConfig,
    evaluator: Option<Arc<EvaluatorPool>>,
) -> anyhow::Result<RunningEngine> {
    let runners = Some(RunnerListener::Unix(socket));
    start_serving(store, listener, runners, config, evaluator).await
}

/// Where the runner protocol is served apart from the public listener.
enum RunnerListener {
    Tcp(TcpListener),
    Unix(RunnerSocket),
}

async fn start_serving(
    store: Store,
    listener: TcpListener,
    runner_listener: Option<RunnerListener>,
    config: EngineConfig,
    evaluator: Option<Arc<EvaluatorPool>>,
) -> anyhow::Result<RunningEngine> {
    crate::access::prepare(&store, !config.private_reads).await?;
    let address = listener.local_addr().context("listener address")?;
    let url = format!("http://{address}");
    let (runner_url, runner_socket) = match &runner_listener {
        Some(RunnerListener::Tcp(runners)) => (
            format!(
                "http://{}",
                runners.local_addr().context("runner listener address")?
            ),
            None,
        ),
        // The host is nominal: every connection goes to the socket.
        Some(RunnerListener::Unix(socket)) => (
            "http://localhost".to_string(),
            Some(socket.path().to_path_buf()),
        ),
        None => (url.clone(), None),
    };
    let events = Arc::new(Events::default());
    // Before anything can queue work: the other replicas hear of all of it.
    let wakes = plue_store::wake::start(&store, events.clone()).await;
    let executor = Arc::new(
        Executor::new(
            store.clone(),
            events.clone(),
            config.secrets.clone(),
            config.max_parallel,
        )
        .with_forge_auth(plue_forge::auth::ForgeAuth::new(
            config.vault.clone(),
            config.github_app.clone(),
        ))
        .with_prices(config.prices.clone())
        .with_kept_workspaces(config.kept_workspaces.clone()),
    );
    let registry = evaluator.clone().map(|evaluator| {
        Arc::new(
            Registry::new(executor.clone(), evaluator, config.mirrors_dir.clone())
                .serving_checkouts(config.checkouts_from_mirror),
        )
    });
    let artifacts = Arc::new(Artifacts::open(&config.artifacts)?);
    let auth = Arc::new(RunnerAuth::default());
    let shutdown = CancellationToken::new();
    let draining = shutdown.child_token();
    let mut tasks = JoinSet::new();

    let mut pool_status = None;
    let mut pool_task = None;
    let pool_shutdown = CancellationToken::new();
    if let Some(settings) = &config.pool {
        let provider_config = LocalConfig {
            engine_url: runner_url.clone(),
            engine_socket: runner_socket.clone(),
            runner: settings.runner.clone(),
        };
        // Only steps its runners can claim (labels within theirs, with the reserved labels
        // of the network policies they enforce) make the local pool grow.
        let offered = local_offer(settings);
        let unlabelled = settings.runner.labels.is_empty();
        let pool = Pool::with_demand(
            LocalProvider::new(provider_config),
            PoolConfig {
                min_warm: settings.min_warm,
                max_runners: settings.max_runners.max(settings.min_warm),
                idle_timeout: settings.idle_timeout,
                start_timeout: Duration::from_secs(30),
                tick: Duration::from_millis(100),
                class: "local".into(),
                start_backoff: plue_pool::BackoffPolicy::default(),
            },
            executor.clone(),
            // Forks' steps only when its runners accept forks (they have no labels).
            Demand::Labels(Arc::new(move |wanted, fork| {
                (!fork || unlabelled) && wanted.iter().all(|(k, v)| offered.get(k) == Some(v))
            })),
        )?;
        pool_status = Some(pool.status());
        pool_task = Some(tokio::spawn(pool.run(pool_shutdown.clone())));
    }

    // Steps' OpenID Connect tokens name this issuer; relying parties fetch its keys there.
    let issuer: Arc<str> = config
        .public_url
        .as_deref()
        .unwrap_or(&url)
        .trim_end_matches('/')
        .into();
    let id_token_keys = Arc::new(plue_core::id_tokens::IdTokens::default());
    let egress = config
        .egress_proxy_token
        .as_deref()
        .map(|token| internal_api::EgressAuth::new(token, config.runner_pods.clone()));
    let attempts = Arc::new(Attempts::new(
        executor.clone(),
        artifacts.clone(),
        id_token_keys.clone(),
        AttemptsConfig {
            log_quotas: config.log_quotas,
            prompt_root: config.prompt_root.clone(),
            oidc_issuer: issuer.clone(),
            egress_grants: egress.as_ref().map(internal_api::EgressAuth::grant_key),
        },
        draining.clone(),
    ));
    let internal = internal_api::router(InternalState {
        executor: executor.clone(),
        config: Arc::new(InternalConfig {
            registration_token: config.registration_token.clone(),
            heartbeat_interval: config.heartbeat_interval,
            liveness_window: InternalConfig::liveness_for(config.heartbeat_interval),
            max_wait: Duration::from_secs(25),
            poll_recheck: config.poll_recheck,
            egress,
        }),
        auth: auth.clone(),
        shutdown: draining.clone(),
        artifacts: artifacts.clone(),
        id_tokens: id_token_keys.clone(),
        attempts,
        checkouts: registry
            .as_ref()
            .and_then(|registry| registry.checkout_packs()),
    });
    let api_state = ApiState {
        executor: executor.clone(),
        evaluator,
        pool: pool_status.clone(),
        pool_classes: config.pool_classes.clone(),
        registry: registry.clone(),
        resolver: crate::access::Resolver::new(store.clone(), config.admin_token.as_deref()),
        shutdown: shutdown.clone(),
        local_workflows: Arc::new(config.local_workflows.clone()),
        followers: Arc::new(followers(&config)),
        artifacts: artifacts.clone(),
    };
    // People sign in with their forge account or an OpenID Connect provider.
    let sign_in = crate::sign_in::SignIn::start(
        &config.sign_in,
        store.clone(),
        api_state.resolver.clone(),
        &issuer,
    )
    .await?;
    let sign_in = match config.forge_roles_every {
        Some(every) => sign_in.with_forge_roles(executor.clone(), every),
        None => sign_in,
    };
    let public = api::router(api_state.clone()).merge(web::router(web::WebState {
        sign_in_links: sign_in.links(),
        extra: sign_in.router(),
        api: api_state,
        secure_cookies: config
            .public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://")),
    }));
    if config.github_app_webhook_secret.is_some() {
        // The accounts accepted may have changed since an installation was recorded.
        webhooks::judge_recorded_installations(&store, &config.installation_owners)
            .await
            .context("judging the GitHub App's recorded installations")?;
    }
    let hooks = webhooks::router(webhooks::WebhookState {
        store: store.clone(),
        vault: config.vault.clone(),
        registry: registry.clone(),
        app: config
            .github_app_webhook_secret
            .clone()
            .map(|secret| webhooks::AppHooks {
                secret,
                owners: config.installation_owners.clone(),
                register: config
                    .register_installed_repos
                    .then(|| webhooks::Registering {
                        api_url: config
                            .github_app
                            .as_ref()
                            .map(|app| app.api_url().to_string())
                            .filter(|api| api != plue_forge::auth::DEFAULT_APP_API),
                    }),
            }),
    });
    let ops = ops::router(OpsState {
        store: store.clone(),
        draining: draining.clone(),
        pools: crate::pool_gauges::reader(pool_status.clone(), config.pool_classes.clone()),
    });
    let oidc = crate::oidc::router(crate::oidc::OidcState {
        executor: executor.clone(),
        issuer: issuer.clone(),
        keys: id_token_keys,
    });
    let public = public.merge(hooks).merge(ops).merge(oidc);
    let app = match runner_listener {
        None => public.merge(internal),
        Some(runner_listener) => {
            let runners = internal
                .fallback(internal_api::not_found)
                .layer(axum::middleware::from_fn(ops::track_http));
            tasks.spawn(serve_runners(runner_listener, runners, shutdown.clone()));
            public
        }
    }
    // No fallback here: the dashboard's (web::router) answers unknown URLs, in HTML for
    // pages and JSON under /api, /internal and /webhooks.
    .layer(axum::middleware::from_fn(ops::track_http));
    let server_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(accepting(listener), app)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    if config.fail_unservable_forks {
        // A local pool whose runners accept forks (no labels) serves them.
        let offered = config
            .pool
            .iter()
            .filter(|pool| pool.runner.labels.is_empty())
            .map(local_offer)
            .collect();
        tasks.spawn(plue_pool::forks::run(
            executor.clone(),
            offered,
            shutdown.clone(),
        ));
        // Without the Kubernetes pool (whose check covers its classes and this pool), a
        // step whose network policy no runner enforces fails with the reason.
        tasks.spawn(plue_pool::unenforceable::run(
            executor.clone(),
            config.pool.as_ref().map(local_offer),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::due_wake::run(
        executor.clone(),
        config.due_check,
        shutdown.clone(),
    ));
    tasks.spawn(sweeper::run(
        executor.clone(),
        auth,
        SweeperConfig {
            lost_after: config.lost_after,
            claim_ack: config.claim_ack,
            interval: (config.heartbeat_interval / 2).max(Duration::from_millis(100)),
            timeout_grace: Duration::from_secs(30),
        },
        shutdown.clone(),
    ));
    tasks.spawn(
        artifacts
            .as_ref()
            .clone()
            .run_retention(store.clone(), shutdown.clone()),
    );
    if let Some(registry) = &registry {
        tasks.spawn(scheduler::run(
            registry.clone(),
            config.schedule_interval,
            shutdown.clone(),
        ));
    }
    if let Some(every) = config.forge_roles_every {
        tasks.spawn(plue_core::forge_roles::refresh_every(
            executor.clone(),
            every,
            shutdown.clone(),
        ));
    }
    let public_url = config.public_url.clone().unwrap_or_else(|| url.clone());
    let reporter = StatusReporter {
        store: store.clone(),
        auth: executor.forge_auth().clone(),
        client: std::sync::OnceLock::new(),
        public_url: public_url.clone(),
        walls: executor.walls(public_url.clone()),
    };
    tasks.spawn(reporter.run(config.status_interval, shutdown.clone()));
    // Accepted safe outputs, written to the forge with the repository's token.
    let applier = plue_core::safe_outputs::apply::Applier::new(
        store.clone(),
        config.vault.clone(),
        config.mirrors_dir.clone(),
        executor.walls(public_url),
    );
    let applier = match &config.provenance {
        Some(keys) => {
            keys.list(&store).await?;
            applier.with_attestor(keys.attestor(artifacts.clone()))
        }
        None => applier,
    };
    tasks.spawn(applier.run(config.status_interval, shutdown.clone()));
    // Runs left active by a previous engine continue now.
    for run_id in store.active_runs().await? {
        executor.advance(run_id).await?;
    }
    Ok(RunningEngine {
        url,
        runner_url,
        runner_socket,
        executor,
        pool: pool_status,
        shutdown,
        draining,
        pool_shutdown,
        pool_task,
        tasks,
        wakes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One connection accepted on `listener` from a client on loopback.
    async fn one_accepted(listener: TcpListener) -> tokio::net::TcpStream {
        let address = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        drop(client.expect("connects"));
        accepted.expect("accepts").0
    }

    #[tokio::test]
    async fn every_accepted_connection_sends_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let accepted = one_accepted(accepting(listener)).await;
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set");
        // Not so by default: the assertion above is `accepting`'s doing.
        let plain = one_accepted(TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
        assert!(!plain.nodelay().unwrap());
    }
}
