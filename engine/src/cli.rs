//! Command-line syntax: every verb, flag and its help text. No behaviour lives here.
//!
//! Why one file past ~600 lines: it is the command line's whole syntax, every verb and flag
//! with its help text, read by clap and by the generated CLI reference as one tree;
//! behaviour lives in `commands/`, and the larger argument families are in `cli/`.

pub(crate) mod debug;
pub(crate) mod environments;
pub(crate) mod people;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use values::{
    parse_key_value, parse_labels, parse_passed_env, parse_secret, parse_secret_repos,
    parse_uid_range,
};

#[derive(Debug, Parser)]
#[command(
    name = "plue",
    version,
    about = "Plue: workflows as Python, run on warm runners",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// How the log on stderr looks: `text` for people, `json` for log collectors (one JSON
    /// object a line; run and step ids are fields). PLUE_LOG filters it (e.g. info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "PLUE_LOG_FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    /// Also append the JSON log lines to this file (created private to your user): the
    /// same lines `--log-format json` writes on stderr, step lines included. Needs
    /// `--log-format json`.
    #[arg(long, global = true, value_name = "PATH", env = "PLUE_LOG_FILE")]
    pub(crate) log_file: Option<PathBuf>,
}

pub(crate) use crate::logging::LogFormat;

impl Command {
    /// Whether the command's async work runs on one thread. The runner agent does one
    /// step at a time, and its work is mostly waiting on a child, its pipes and the engine:
    /// worker threads stealing its few tasks from each other cost more wake-ups and
    /// context switches than they save (its blocking work has threads of its own).
    pub(crate) fn runs_on_one_thread(&self) -> bool {
        matches!(self, Command::Runner(_))
    }

    /// How many worker threads the command's runtime gets, when not one per core.
    /// `plue run` follows its run on the main thread (the runtime's `block_on`), beside
    /// the engine's tasks on the workers: one worker a core would put a third busy thread
    /// on a two-core machine, and its wake-ups and task stealing cost the steps more than
    /// it adds (W2, W3 and V3 2–4 % faster with one worker on two cores).
    pub(crate) fn worker_threads(&self, cores: usize) -> Option<usize> {
        matches!(self, Command::Run(_)).then(|| cores.saturating_sub(1).max(1))
    }

    /// Whether the command only prints, so a closed stdout may simply end it (see `main`).
    pub(crate) fn ends_on_closed_pipe(&self) -> bool {
        !matches!(
            self,
            Command::Run(_) | Command::Serve(_) | Command::Runner(_) | Command::EgressProxy(_)
        )
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Evaluate one workflow file and print its plan.
    Eval(EvalArgs),
    /// Evaluate a workflow file, or every *.plue.py below a directory, and report every
    /// problem.
    Check(CheckArgs),
    /// Resolve the tags and branches the workflows below PATH `use(...)` and pin each to its
    /// commit in the repository's .plue/lock.json (commit the file).
    Lock(LockArgs),
    /// Run a workflow on this machine: an embedded engine and a local pool of runners.
    ///
    /// Steps see your environment (it is your own machine), except engine and runner
    /// credentials and the variables named by --secret, which reach only the steps that name
    /// them. Run as root, each step runs as its own unprivileged user.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Run the engine: HTTP API, runner API and a local pool of runners.
    // Boxed: its flags make it the largest variant by far.
    Serve(Box<ServeArgs>),
    /// Run a runner agent that takes steps from an engine.
    Runner(RunnerArgs),
    /// Run the cluster's egress proxy: allow-list steps on Kubernetes pods reach the hosts
    /// of their own list through it, each connection checked with the engine.
    EgressProxy(EgressProxyArgs),
    /// Print the log lines of a run's steps.
    Logs(LogsArgs),
    /// List recent runs.
    Runs(RunsArgs),
    /// List a run's artifact files, or download them into a directory (--to).
    Artifacts(ArtifactsArgs),
    /// Cancel a run on a server.
    Cancel(RunOnServerArgs),
    /// Start a new run with the plan and workspace of an earlier one, or (--replay) replay
    /// an llm step of a local run from its transcript.
    Rerun(RerunArgs),
    /// Approve (or --reject) a run's waiting approval step on a server, or (--data-dir) on
    /// a `plue run` running from that data directory, e.g. from another terminal.
    Approve(ApproveArgs),
    /// Run a failed step again on a server's runner and open a shell in its workspace, as
    /// its user and in its sandbox (writers of the repository; audited).
    Debug(DebugArgs),
    /// Render a prompt file, or check every prompt file below a directory.
    #[command(subcommand)]
    Prompt(PromptCommand),
    /// Register, list and remove repositories on a server.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Set or remove a repository secret on a server.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage a repository's environments (allowed refs, reviewers, wait timer) and their
    /// secrets on a server.
    #[command(subcommand)]
    Env(environments::EnvCommand),
    /// Sign in to a server in the browser (its GitHub, Gitea or OpenID Connect sign-in)
    /// and keep the API token it gives for the other commands.
    Login(LoginArgs),
    /// Make, list and revoke API tokens on a server (yours, or a user's as an admin).
    #[command(subcommand)]
    Token(people::TokenCommand),
    /// Create, list, show and disable users, and link their forge logins (admins).
    #[command(subcommand)]
    User(people::UserCommand),
    /// Create and delete groups (`@name` in reviewer lists) and their members (admins).
    #[command(subcommand)]
    Group(people::GroupCommand),
    /// List, set and remove who holds which role on a repository (its maintainers).
    #[command(subcommand)]
    Member(people::MemberCommand),
    /// Show the audit trail: who did what (admins; maintainers for their repositories).
    Audit(people::AuditArgs),
    /// Make, list and revoke scoped registration tokens for runners you start by hand.
    #[command(subcommand)]
    RunnerToken(RunnerTokenCommand),
    /// Start a workflow of a registered repository by hand (its manual trigger).
    Trigger(TriggerArgs),
    /// Verify a change's signed provenance statement offline: its signature, and that a
    /// commit of a clone is exactly the proposal it attests; then say who, what and how.
    Verify(VerifyArgs),
    /// Write the book's generated reference pages (docs/src/reference/generated).
    #[command(name = "__docs", hide = true)]
    Docs(DocsArgs),
}

/// `plue login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The engine's base URL.
    #[arg(long, env = "PLUE_SERVER", default_value = "http://127.0.0.1:8600")]
    pub(crate) server: String,
    /// The sign-in provider: `github`, `gitea` or `oidc` (default: the server's only one).
    #[arg(long, value_name = "NAME")]
    pub(crate) provider: Option<String>,
    /// Print the URL to open instead of opening a browser.
    #[arg(long)]
    pub(crate) no_browser: bool,
    /// Seconds to wait for the sign-in to finish in the browser.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub(crate) timeout: u64,
}

/// The providers people sign in with (`plue serve`): an OpenID Connect provider, GitHub,
/// Gitea; each needs its client id and a file holding its client secret.
#[derive(Debug, Args)]
pub(crate) struct SignInArgs {
    /// An OpenID Connect provider's issuer URL: people sign in with it (discovered at start
    /// from ISSUER/.well-known/openid-configuration). Needs --oidc-client-id and
    /// --oidc-client-secret-file.
    #[arg(long, value_name = "URL", env = "PLUE_OIDC_ISSUER")]
    pub(crate) oidc_issuer: Option<String>,
    /// The client id Plue is registered with at the OpenID Connect provider.
    #[arg(long, value_name = "ID", env = "PLUE_OIDC_CLIENT_ID")]
    pub(crate) oidc_client_id: Option<String>,
    /// A file (readable by this user only) holding the OpenID Connect client's secret.
    #[arg(long, value_name = "PATH", env = "PLUE_OIDC_CLIENT_SECRET_FILE")]
    pub(crate) oidc_client_secret_file: Option<PathBuf>,
    /// Scopes to ask the OpenID Connect provider for, besides `openid` (repeatable or
    /// comma-separated).
    #[arg(
        long,
        value_name = "SCOPE",
        env = "PLUE_OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "profile"
    )]
    pub(crate) oidc_scopes: Vec<String>,
    /// The ID token claim listing the user's groups: the user's memberships in Plue
    /// groups of those names follow it at every sign-in (none by default: groups are
    /// untouched).
    #[arg(long, value_name = "CLAIM", env = "PLUE_OIDC_GROUPS_CLAIM")]
    pub(crate) oidc_groups_claim: Option<String>,
    /// How the sign-in page names the OpenID Connect provider.
    #[arg(
        long,
        value_name = "NAME",
        env = "PLUE_OIDC_NAME",
        default_value = "OpenID Connect"
    )]
    pub(crate) oidc_name: String,
    /// The client id of a GitHub OAuth app (or the GitHub App's): people sign in with
    /// their GitHub account, linked to Plue users by login. Needs
    /// --github-sign-in-client-secret-file.
    #[arg(long, value_name = "ID", env = "PLUE_GITHUB_SIGN_IN_CLIENT_ID")]
    pub(crate) github_sign_in_client_id: Option<String>,
    /// A file (readable by this user only) holding that GitHub client's secret.
    #[arg(
        long,
        value_name = "PATH",
        env = "PLUE_GITHUB_SIGN_IN_CLIENT_SECRET_FILE"
    )]
    pub(crate) github_sign_in_client_secret_file: Option<PathBuf>,
    /// Where people sign in to GitHub (a GitHub Enterprise Server's https://HOST).
    #[arg(
        long,
        value_name = "URL",
        env = "PLUE_GITHUB_SIGN_IN_URL",
        default_value = "https://github.com"
    )]
    pub(crate) github_sign_in_url: String,
    /// GitHub's API, asked who signed in (a GitHub Enterprise Server's
    /// https://HOST/api/v3).
    #[arg(
        long,
        value_name = "URL",
        env = "PLUE_GITHUB_SIGN_IN_API_URL",
        default_value = "https://api.github.com"
    )]
    pub(crate) github_sign_in_api_url: String,
    /// A Gitea's root URL: people sign in with their account there (an OAuth2
    /// application of that Gitea), linked to Plue users by login. Needs
    /// --gitea-sign-in-client-id and --gitea-sign-in-client-secret-file.
    #[arg(long, value_name = "URL", env = "PLUE_GITEA_SIGN_IN_URL")]
    pub(crate) gitea_sign_in_url: Option<String>,
    /// The Gitea OAuth2 application's client id.
    #[arg(long, value_name = "ID", env = "PLUE_GITEA_SIGN_IN_CLIENT_ID")]
    pub(crate) gitea_sign_in_client_id: Option<String>,
    /// A file (readable by this user only) holding the Gitea application's secret.
    #[arg(
        long,
        value_name = "PATH",
        env = "PLUE_GITEA_SIGN_IN_CLIENT_SECRET_FILE"
    )]
    pub(crate) gitea_sign_in_client_secret_file: Option<PathBuf>,
}

/// The engine's provenance keys (`plue serve`).
#[derive(Debug, Args)]
pub(crate) struct SigningArgs {
    /// The ed25519 key provenance statements are signed with (PKCS#8 PEM, as `openssl
    /// genpkey -algorithm ed25519` writes); default: provenance-signing-key.pem in the data
    /// directory, made at the first start.
    #[arg(long, value_name = "FILE", env = "PLUE_SIGNING_KEY")]
    pub(crate) signing_key: Option<PathBuf>,
    /// A key statements were signed with before a rotation (its public or private key
    /// file; repeatable): listed at /api/provenance/keys so those statements still verify.
    #[arg(long = "previous-signing-key", value_name = "FILE")]
    pub(crate) previous_signing_keys: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The statement: a DSSE envelope file, as
    /// GET /api/runs/{id}/proposals/{pid}/provenance serves it.
    #[arg(long, value_name = "FILE")]
    pub(crate) statement: Option<PathBuf>,
    /// A clone holding the commit to check against the statement.
    #[arg(long, value_name = "DIR")]
    pub(crate) repo: Option<PathBuf>,
    /// The commit to check (with --repo; default: HEAD).
    pub(crate) commit: Option<String>,
    /// Fetch the statement the commit's Plue-Provenance trailer names from this engine
    /// (instead of --statement; the trailer's URL must be on it); with --statement, ask
    /// this engine whether it serves that statement. An engine serves a statement only
    /// once the forge accepted its change: one that is pending or failed is refused, with
    /// the engine's reason.
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// API token, when the engine's reads are private.
    #[arg(long, env = "PLUE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A public key to accept (repeatable): PEM, 64 hex digits, or the JSON list
    /// GET /api/provenance/keys serves.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub(crate) keys: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DocsArgs {
    /// Where the pages go.
    #[arg(default_value = "docs/src/reference/generated")]
    pub(crate) dir: PathBuf,
    /// Write nothing; exit 1 when a page there differs from what this program generates.
    #[arg(long)]
    pub(crate) check: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The workflow file.
    pub(crate) file: PathBuf,
    /// Runners in the local pool (default: the number of CPUs).
    #[arg(long)]
    pub(crate) runners: Option<usize>,
    /// A secret given to steps that name it (and to no other step); repeatable. `NAME` alone
    /// takes the value from the environment variable NAME (keeps it off the command line).
    #[arg(long = "secret", value_name = "NAME[=VALUE]", value_parser = parse_secret)]
    pub(crate) secrets: Vec<(String, String)>,
    /// Where the embedded database lives (private to your user).
    #[arg(long, default_value = ".plue", env = "PLUE_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// Write the run's record here as JSON (what `plue runs show RUN --json` prints; its
    /// schema is docs/src/reference/generated/run-record.schema.json).
    #[arg(long, value_name = "PATH")]
    pub(crate) summary_json: Option<PathBuf>,
    /// Prices of llm models (YAML or JSON, USD per million tokens) added to and replacing
    /// the built-in table.
    #[arg(long, value_name = "FILE", env = "PLUE_LLM_PRICES")]
    pub(crate) llm_prices: Option<PathBuf>,
    /// Most steps running at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_parallel: usize,
    /// Most steps a workflow's plan may have (the evaluator's bound; its plan may take
    /// 1 KiB of JSON per step, at least 1 MiB).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_steps: u32,
    /// Replace each runner after one step (as `plue serve` does). By default `plue run`'s
    /// runners take step after step: the workflow is your own, and every step still gets
    /// a fresh copy of the directory and has its processes killed when it ends.
    #[arg(long)]
    pub(crate) ephemeral_runners: bool,
    /// Keep the local runners' attempt directories (each step's workspace, home and tmp) on
    /// disk under $TMPDIR. By default a root runner keeps them on a tmpfs of its own (at
    /// most half the memory), which is faster on disks where new files are slow to make.
    #[arg(long)]
    pub(crate) work_dir_on_disk: bool,
    /// Let the local runners reach the engine over loopback TCP. By default they use a
    /// Unix socket only your user can open (in the data directory, or $TMPDIR when its path
    /// is too long), which saves a fraction of a millisecond a step.
    #[arg(long)]
    pub(crate) runners_over_tcp: bool,
    /// Let the local runners send each call as its own HTTP request. By default each
    /// holds one connection to the engine that all its calls ride (less work a step).
    #[arg(long)]
    pub(crate) runners_without_held_connection: bool,
    /// Approve this approval step when it waits (repeatable), without asking. Otherwise
    /// `plue run` prints the question and the `plue approve RUN STEP --data-dir DIR`
    /// command that decides it from another terminal, and, when stdin is a terminal, asks
    /// y/n; undecided, the step waits until its timeout and then fails.
    #[arg(long = "approve", value_name = "STEP")]
    pub(crate) approve: Vec<String>,
    /// After the run, write step STEP's final workspace into DIR (repeatable): a directory
    /// that does not exist yet or is empty. The engine keeps that step's workspace for it.
    #[arg(long = "export", value_name = "STEP=DIR", value_parser = parse_key_value)]
    pub(crate) export: Vec<(String, String)>,
    #[command(flatten)]
    pub(crate) event: EventArgs,
    #[command(flatten)]
    pub(crate) modules: ModulesArgs,
    #[command(flatten)]
    pub(crate) quotas: QuotaArgs,
}

/// What runs and repositories may keep in the blob store (workspaces handed on and
/// artifacts, every attempt's, until retention deletes them). Bytes are the tars' stored
/// bytes (a sparse file counts at its full size); files are artifact files. An upload past
/// one fails its step with the quota and the figures.
#[derive(Debug, Args)]
pub(crate) struct QuotaArgs {
    /// The most bytes one run keeps.
    #[arg(long, env = "PLUE_QUOTA_RUN_BYTES", default_value_t = plue_core::artifacts::Quotas::default().run.bytes)]
    pub(crate) quota_run_bytes: u64,
    /// The most artifact files one run keeps.
    #[arg(long, env = "PLUE_QUOTA_RUN_FILES", default_value_t = plue_core::artifacts::Quotas::default().run.files)]
    pub(crate) quota_run_files: u64,
    /// The most bytes one run of a pull request from a fork keeps.
    #[arg(long, env = "PLUE_QUOTA_FORK_RUN_BYTES", default_value_t = plue_core::artifacts::Quotas::default().fork_run.bytes)]
    pub(crate) quota_fork_run_bytes: u64,
    /// The most artifact files one run of a pull request from a fork keeps.
    #[arg(long, env = "PLUE_QUOTA_FORK_RUN_FILES", default_value_t = plue_core::artifacts::Quotas::default().fork_run.files)]
    pub(crate) quota_fork_run_files: u64,
    /// The most bytes the kept runs of one repository hold together.
    #[arg(long, env = "PLUE_QUOTA_REPO_BYTES", default_value_t = plue_core::artifacts::Quotas::default().repository.bytes)]
    pub(crate) quota_repo_bytes: u64,
    /// The most artifact files the kept runs of one repository hold together.
    #[arg(long, env = "PLUE_QUOTA_REPO_FILES", default_value_t = plue_core::artifacts::Quotas::default().repository.files)]
    pub(crate) quota_repo_files: u64,
    /// The part of --quota-repo-bytes a repository's runs of forks may hold together.
    #[arg(long, env = "PLUE_QUOTA_REPO_FORK_BYTES", default_value_t = plue_core::artifacts::Quotas::default().repository_forks.bytes)]
    pub(crate) quota_repo_fork_bytes: u64,
    /// The part of --quota-repo-files a repository's runs of forks may hold together.
    #[arg(long, env = "PLUE_QUOTA_REPO_FORK_FILES", default_value_t = plue_core::artifacts::Quotas::default().repository_forks.files)]
    pub(crate) quota_repo_fork_files: u64,
    /// The most bytes of log text one attempt of a step stores; past it its log ends with
    /// a marker line and the step fails.
    #[arg(long, env = "PLUE_QUOTA_STEP_LOG_BYTES", default_value_t = plue_store::LogQuotas::default().step)]
    pub(crate) quota_step_log_bytes: u64,
    /// The most bytes of log text one run's steps store together.
    #[arg(long, env = "PLUE_QUOTA_RUN_LOG_BYTES", default_value_t = plue_store::LogQuotas::default().run)]
    pub(crate) quota_run_log_bytes: u64,
    /// --quota-step-log-bytes for a run of a pull request from a fork.
    #[arg(long, env = "PLUE_QUOTA_FORK_STEP_LOG_BYTES", default_value_t = plue_store::LogQuotas::default().fork_step)]
    pub(crate) quota_fork_step_log_bytes: u64,
    /// --quota-run-log-bytes for a run of a pull request from a fork.
    #[arg(long, env = "PLUE_QUOTA_FORK_RUN_LOG_BYTES", default_value_t = plue_store::LogQuotas::default().fork_run)]
    pub(crate) quota_fork_run_log_bytes: u64,
}

impl QuotaArgs {
    pub(crate) fn log_quotas(&self) -> plue_store::LogQuotas {
        plue_store::LogQuotas {
            step: self.quota_step_log_bytes,
            run: self.quota_run_log_bytes,
            fork_step: self.quota_fork_step_log_bytes,
            fork_run: self.quota_fork_run_log_bytes,
        }
    }

    pub(crate) fn quotas(&self) -> plue_core::artifacts::Quotas {
        use plue_core::artifacts::{Quota, Quotas};
        Quotas {
            run: Quota {
                bytes: self.quota_run_bytes,
                files: self.quota_run_files,
            },
            fork_run: Quota {
                bytes: self.quota_fork_run_bytes,
                files: self.quota_fork_run_files,
            },
            repository: Quota {
                bytes: self.quota_repo_bytes,
                files: self.quota_repo_files,
            },
            repository_forks: Quota {
                bytes: self.quota_repo_fork_bytes,
                files: self.quota_repo_fork_files,
            },
        }
    }
}

/// Where the database is: a URL, or the embedded SQLite file in a data directory.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Directory of the embedded SQLite database (used unless --database-url is given).
    #[arg(long, default_value = ".plue", env = "PLUE_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// postgres://... (or sqlite://PATH) instead of the embedded database.
    #[arg(long, env = "DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// PostgreSQL: the connections this engine opens at start and keeps open (2 to 1000;
    /// one listens for the other replicas). The server's max_connections must take this
    /// many from every replica, the one a rollout adds included.
    #[arg(
        long,
        env = "PLUE_DATABASE_CONNECTIONS",
        default_value_t = plue_store::PostgresConnections::DEFAULT
    )]
    pub(crate) database_connections: plue_store::PostgresConnections,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8600", env = "PLUE_LISTEN")]
    pub(crate) listen: String,
    /// Serve the runner protocol (`/internal/...`) only on this address, and nothing else
    /// there; the main address then answers 404 for it (default: both on --listen).
    #[arg(long, value_name = "ADDR", env = "PLUE_RUNNER_LISTEN")]
    pub(crate) runner_listen: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Warm runners in the local pool (0: remote runners only; default: the number of CPUs).
    #[arg(long)]
    pub(crate) runners: Option<usize>,
    /// Most runners the local pool grows to under demand (default: --runners).
    #[arg(long)]
    pub(crate) max_runners: Option<usize>,
    /// Let local runners take step after step instead of one step each (trusted work only).
    #[arg(long)]
    pub(crate) reuse_runners: bool,
    /// Keep the local runners' attempt directories (each step's workspace, home and tmp) on
    /// disk under $TMPDIR. By default a root runner keeps them on a tmpfs of its own (at
    /// most half the memory), which is faster on disks where new files are slow to make.
    #[arg(long)]
    pub(crate) work_dir_on_disk: bool,
    /// Seconds an extra idle runner is kept before it is stopped.
    #[arg(long, default_value_t = 60)]
    pub(crate) idle_timeout: u64,
    /// Token runners register with (default: generated and printed).
    #[arg(long, env = "PLUE_RUNNER_TOKEN", hide_env_values = true)]
    pub(crate) runner_token: Option<String>,
    /// Token API writes need (default: generated and printed).
    #[arg(long, env = "PLUE_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) admin_token: Option<String>,
    /// Repositories registered before roles existed become private at the first start
    /// (without it they keep the public reads they had). New repositories are always
    /// private until a maintainer makes them public (`plue repo set-public`).
    #[arg(long, env = "PLUE_PRIVATE_READS")]
    pub(crate) private_reads: bool,
    /// Runners fetch every step's commit from the forge, as before the engine served them
    /// from its mirrors (by default a runner asks the engine first, and only a commit the
    /// engine does not serve — a fork's, one over 32 MiB packed — comes from the forge).
    #[arg(long, env = "PLUE_CHECKOUTS_FROM_FORGE")]
    pub(crate) checkouts_from_forge: bool,
    /// Pass this variable of the engine's environment to local runners and their steps
    /// (e.g. HTTPS_PROXY); repeatable. Nothing else of the engine's environment reaches
    /// them; credentials are refused.
    #[arg(long, value_name = "NAME", value_parser = parse_passed_env)]
    pub(crate) pass_env: Vec<String>,
    /// A directory below which `POST /api/runs` (admin token only) may run workflow files
    /// of this machine, copying their workspaces from it too; repeatable. None by default.
    #[arg(long, value_name = "DIR")]
    pub(crate) local_workflows: Vec<PathBuf>,
    /// Where step hand-offs and artifacts are kept: `s3://bucket/prefix` for an
    /// S3-compatible bucket (endpoint, region and credentials from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); default: the data directory's
    /// `artifacts/`.
    #[arg(long, env = "PLUE_ARTIFACTS_URL", value_name = "URL")]
    pub(crate) artifacts_url: Option<String>,
    /// The most bytes one step may keep in one tar (its workspace, or its artifacts).
    #[arg(long, env = "PLUE_ARTIFACTS_MAX_BYTES", default_value_t = plue_core::artifacts::DEFAULT_MAX_BYTES)]
    pub(crate) artifacts_max_bytes: u64,
    /// Blobs of runs older than this many days are deleted (0: kept forever).
    #[arg(long, env = "PLUE_ARTIFACTS_RETENTION_DAYS", default_value_t = plue_core::artifacts::DEFAULT_RETENTION_DAYS)]
    pub(crate) artifacts_retention_days: u64,
    /// The most bytes of step caches one repository keeps; past it the least recently used
    /// entries are evicted (a run below the default branch never evicts the default
    /// branch's or protected entries).
    #[arg(long, env = "PLUE_CACHE_QUOTA", value_name = "BYTES", default_value_t = plue_core::artifacts::DEFAULT_CACHE_QUOTA)]
    pub(crate) cache_quota: u64,
    /// Cache entries unused for this many days are deleted (0: kept until evicted).
    #[arg(long, env = "PLUE_CACHE_RETENTION_DAYS", value_name = "DAYS", default_value_t = plue_core::artifacts::DEFAULT_CACHE_RETENTION_DAYS)]
    pub(crate) cache_retention_days: u64,
    #[command(flatten)]
    pub(crate) quotas: QuotaArgs,
    /// This server's URL as users reach it (links in commit statuses).
    #[arg(long, env = "PLUE_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// A proxy (an ingress, a load balancer) whose X-Forwarded-For names the client: a
    /// network (10.0.0.0/8) or one address; repeatable. The live-stream caps count the
    /// right-most address no trusted proxy has; any other peer's header is ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = plue_server::api::followers::parse_trusted_proxy)]
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// Milliseconds between runner heartbeats.
    #[arg(long, default_value_t = 2000)]
    pub(crate) heartbeat_ms: u64,
    /// Milliseconds of silence after which a runner is lost.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) lost_after_ms: u64,
    /// Milliseconds a runner has to acknowledge a claim a poll handed it; past them the
    /// step goes back to the queue without using a retry, and the runner is suspect until
    /// it proves alive.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) claim_ack_ms: u64,
    /// Seconds between refreshes of the roles people hold through their forge permissions
    /// (for the forge logins linked to them); 0 turns roles from the forge off.
    #[arg(long, default_value_t = 300)]
    pub(crate) forge_roles_every_secs: u64,
    /// Most steps of one run running at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_parallel: usize,
    /// Most steps a workflow's plan may have (the evaluator's bound; its plan may take
    /// 1 KiB of JSON per step, at least 1 MiB).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_steps: u32,
    /// Seconds in-flight requests get to finish after SIGTERM (readiness fails and runner
    /// polls stop claiming at once); keep it below the pod's termination grace period.
    #[arg(
        long,
        default_value_t = 30,
        env = "PLUE_SHUTDOWN_GRACE",
        value_name = "SECONDS"
    )]
    pub(crate) shutdown_grace: u64,
    /// Seconds to keep serving, unready and claiming nothing, after SIGTERM before the
    /// listener closes (load balancers that poll readiness stop sending requests).
    #[arg(
        long,
        default_value_t = 0,
        env = "PLUE_DRAIN_DELAY",
        value_name = "SECONDS"
    )]
    pub(crate) drain_delay: u64,
    /// A secret given to steps that name it; repeatable (kept in memory only). `NAME` alone
    /// takes the value from the environment variable NAME. It reaches runs without a
    /// repository (an admin's) and only the repositories --secret-repos names for it.
    #[arg(long = "secret", value_name = "NAME[=VALUE]", value_parser = parse_secret)]
    pub(crate) secrets: Vec<(String, String)>,
    /// The repositories a --secret NAME reaches: `owner/name`, or `owner/*` for every
    /// repository of an owner; repeatable. A secret no --secret-repos names reaches no
    /// repository's run.
    #[arg(long = "secret-repos", value_name = "NAME=REPO[,REPO...]", value_parser = parse_secret_repos)]
    pub(crate) secret_repos: Vec<(String, Vec<plue_core::engine_secrets::RepoPattern>)>,
    /// Runner pools: `local` (processes on this machine) and/or `kubernetes` (pods, set up
    /// by --pool-config); repeatable, both may serve at once.
    #[arg(long = "pool", value_enum, default_values_t = [PoolKind::Local])]
    pub(crate) pools: Vec<PoolKind>,
    /// The pool configuration file (YAML) of `--pool kubernetes`.
    #[arg(long, value_name = "FILE", env = "PLUE_POOL_CONFIG")]
    pub(crate) pool_config: Option<PathBuf>,
    /// Prices of llm models (YAML or JSON, USD per million tokens) added to and replacing
    /// the built-in table; every problem of the file is reported.
    #[arg(long, value_name = "FILE", env = "PLUE_LLM_PRICES")]
    pub(crate) llm_prices: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) signing: SigningArgs,
    #[command(flatten)]
    pub(crate) sign_in: SignInArgs,
    /// The engine's GitHub App id: GitHub repositories without a personal api_token are
    /// written to with the App's installation tokens (needs --github-app-key-file).
    #[arg(
        long,
        value_name = "ID",
        env = "PLUE_GITHUB_APP_ID",
        requires = "github_app_key_file"
    )]
    pub(crate) github_app_id: Option<u64>,
    /// The GitHub App's private key: the PEM file GitHub generates (an RSA key).
    #[arg(
        long,
        value_name = "PATH",
        env = "PLUE_GITHUB_APP_KEY_FILE",
        requires = "github_app_id"
    )]
    pub(crate) github_app_key_file: Option<PathBuf>,
    /// The GitHub App's API (default: `https://api.github.com`; a GitHub Enterprise Server's
    /// is https://HOST/api/v3): the only API the App's JWT is sent to. Only a repository on
    /// this API (its api_url, or `https://api.github.com`) is served through the App; another
    /// GitHub repository without an api_token has no credential.
    #[arg(long, value_name = "URL", env = "PLUE_GITHUB_APP_API_URL")]
    pub(crate) github_app_api_url: Option<String>,
    /// A file holding the GitHub App's webhook secret: the App's `installation` and
    /// `installation_repositories` deliveries are checked with it (without it they are
    /// refused), recorded and shown by GET /api/installations.
    #[arg(long, value_name = "PATH", env = "PLUE_GITHUB_APP_WEBHOOK_SECRET_FILE")]
    pub(crate) github_app_webhook_secret_file: Option<PathBuf>,
    /// Register every repository an accepted installation of the GitHub App adds (readable
    /// by nobody until an admin grants a role). Off by default: an admin registers them.
    #[arg(
        long,
        env = "PLUE_REGISTER_INSTALLED_REPOS",
        requires = "github_app_webhook_secret_file"
    )]
    pub(crate) register_installed_repos: bool,
    /// An account (user or organization login) whose installations of the GitHub App this
    /// engine accepts; repeatable, or comma-separated. Every other installation is
    /// recorded as refused: it registers nothing and its deliveries start nothing (a
    /// repository an admin registered included). None by default.
    #[arg(
        long = "installation-owner",
        value_name = "ACCOUNT",
        env = "PLUE_INSTALLATION_OWNERS",
        value_delimiter = ',',
        requires = "github_app_webhook_secret_file"
    )]
    pub(crate) installation_owners: Vec<String>,
    /// A file holding the token of the cluster's egress proxy (`plue egress-proxy`, at
    /// least 16 characters; the same file the proxy is given): allow-list steps' assignments
    /// then carry a per-attempt credential the proxy checks with this engine. Needed by a
    /// Kubernetes class with `egress_proxy`.
    #[arg(long, value_name = "PATH", env = "PLUE_EGRESS_PROXY_TOKEN_FILE")]
    pub(crate) egress_proxy_token_file: Option<PathBuf>,
    /// Only parse and validate --pool-config, --llm-prices and the GitHub App's key,
    /// whichever are given, say what they hold, and exit (0: valid, 1: not).
    #[arg(long)]
    pub(crate) check_config: bool,
}

/// `plue egress-proxy`.
#[derive(Debug, Args)]
pub(crate) struct EgressProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:3128", env = "PLUE_EGRESS_LISTEN")]
    pub(crate) listen: String,
    /// The engine's runner protocol (http(s)://HOST:PORT), asked about every connection.
    #[arg(long, value_name = "URL", env = "PLUE_ENGINE")]
    pub(crate) engine: String,
    /// A file holding this proxy's token: the engine's --egress-proxy-token-file.
    #[arg(long, value_name = "PATH", env = "PLUE_EGRESS_PROXY_TOKEN_FILE")]
    pub(crate) token_file: PathBuf,
    /// A network no connection reaches, not even to an address a list names: the
    /// cluster's pod and service ranges (repeatable; loopback and link-local addresses are
    /// never reached for a listed name anyway).
    #[arg(long = "deny", value_name = "CIDR", value_parser = parse_cidr)]
    pub(crate) deny: Vec<::runner::network::Cidr>,
}

fn parse_cidr(text: &str) -> Result<::runner::network::Cidr, String> {
    ::runner::network::Cidr::parse(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PoolKind {
    Local,
    Kubernetes,
}

#[derive(Debug, Args)]
pub(crate) struct RunnerArgs {
    /// The engine's base URL.
    #[arg(long)]
    pub(crate) engine: String,
    /// The registration token. Prefer --token-stdin or --token-file: a value here or in
    /// PLUE_RUNNER_TOKEN is visible to anyone who can read `/proc/<pid>/cmdline` or environ.
    #[arg(long, env = "PLUE_RUNNER_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Read the registration token from the first line of stdin (how the engine's pool
    /// hands its runners their one-time tokens).
    #[arg(long, conflicts_with = "token_file")]
    pub(crate) token_stdin: bool,
    /// Read the registration token from this file (which only this runner's user may read).
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
    /// Exit when the process PARENT_PID (this runner's parent) dies, even by SIGKILL.
    #[arg(long, value_name = "PARENT_PID")]
    pub(crate) die_with_parent: Option<i32>,
    /// Labels this runner offers, k=v,k2=v2.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Name (default: host-pid).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Take one step, then exit.
    #[arg(long)]
    pub(crate) ephemeral: bool,
    /// Take steps of runs of pull requests from forks, if the registration token allows it
    /// (default: as the token says; the shared token's runners take them).
    #[arg(long, conflicts_with = "refuse_forks")]
    pub(crate) accept_forks: bool,
    /// Never take steps of runs of pull requests from forks, whatever the token allows.
    #[arg(long)]
    pub(crate) refuse_forks: bool,
    /// Parent directory of step workspaces (default: a temporary directory).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Seconds to keep retrying an unreachable engine before exiting.
    #[arg(long, default_value_t = 300)]
    pub(crate) give_up_after: u64,
    /// Give steps this runner's whole environment (credentials excepted) instead of only
    /// PATH, LANG, LC_ALL and TZ; `plue run` sets it (the caller's own machine).
    #[arg(long)]
    pub(crate) inherit_env: bool,
    /// Also give steps this variable of the runner's environment (e.g. HTTPS_PROXY);
    /// repeatable. Credentials are refused.
    #[arg(long, value_name = "NAME", value_parser = parse_passed_env)]
    pub(crate) pass_env: Vec<String>,
    /// When the runner is root: the uids (and gids) steps run as, FIRST-LAST; each attempt
    /// gets one, so concurrent steps are different users (default: 3000000-3065535).
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_uid_range)]
    pub(crate) step_users: Option<(u32, u32)>,
    /// Where `llm` steps send the Messages API requests and the API key (default: the
    /// public API). A workflow's `env` never changes it.
    #[arg(long, env = "ANTHROPIC_BASE_URL", value_name = "URL")]
    pub(crate) anthropic_base_url: Option<String>,
    /// This runner's pod is confined by a NetworkPolicy (the pool gives it to a class with
    /// `step_network: pod`): steps with network="none" run without a namespace of their
    /// own, confined per pod. Allow-lists need a namespace, or --egress-proxy.
    #[arg(long)]
    pub(crate) network_confined_by_pod: bool,
    /// Reach the engine through this HTTP proxy (http://HOST:PORT). Without it the runner
    /// connects directly, whatever HTTP_PROXY, HTTPS_PROXY or ALL_PROXY say (so a pod's
    /// environment cannot route the runner's token through a proxy); deliberately no
    /// environment variable. The Kubernetes pool gives a class's `engine_proxy`.
    #[arg(long, value_name = "URL")]
    pub(crate) engine_proxy: Option<String>,
    /// The cluster's egress proxy (http://HOST:PORT; the pool gives a class's
    /// `egress_proxy`): an allow-list step runs with the pod's network and the runner's own
    /// proxy, which connects through this one with the attempt's credential (never given to
    /// the step), instead of a namespace of its own. Only for pods a NetworkPolicy keeps
    /// from reaching anything else: it needs --network-confined-by-pod.
    #[arg(long, value_name = "URL", requires = "network_confined_by_pod")]
    pub(crate) egress_proxy: Option<String>,
    /// Reach the engine on this Unix socket instead of --engine's host and port (how `plue
    /// run`'s own runners reach it); the requests, and the tokens, are the same.
    #[arg(long, value_name = "PATH", conflicts_with = "engine_proxy")]
    pub(crate) engine_socket: Option<PathBuf>,
    /// Start the warm Python interpreter that `python` steps are forked from when the
    /// runner starts, instead of at its first `python` step (which then waits ≈ 50 ms for
    /// it). For runners that run `python` steps; one that runs none holds an idle
    /// interpreter.
    #[arg(long)]
    pub(crate) warm_python: bool,
    /// When root: keep the work directory in memory — a tmpfs in a mount namespace of the
    /// runner's own, gone with it — so attempts' directories cost no disk inodes (the
    /// local pool of `plue run` and `plue serve` sets it). Refused (not root, no
    /// CAP_SYS_ADMIN, a directory others may write to): the directory stays on disk.
    #[arg(long)]
    pub(crate) work_dir_in_memory: bool,
    /// Send every call to the engine as its own HTTP request, instead of over one held
    /// connection (opened after registering when the engine offers it; the calls, and
    /// the tokens, are the same).
    #[arg(long)]
    pub(crate) no_held_connection: bool,
}

/// Where to read runs from: a server, or the embedded database directly.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// An engine's base URL, e.g. http://127.0.0.1:8600.
    #[arg(long, env = "PLUE_SERVER", conflicts_with = "data_dir")]
    pub(crate) server: Option<String>,
    /// API token, when the server's reads are private.
    #[arg(long, env = "PLUE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The embedded database's directory (when no --server).
    #[arg(long, default_value = ".plue", env = "PLUE_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The run's id (as `plue run` prints it and `plue runs` lists it).
    pub(crate) run_id: i64,
    /// One step (default: every step, in plan order).
    pub(crate) step: Option<String>,
    /// Keep printing new lines until the steps finish.
    #[arg(long, short)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<RunsCommand>,
    /// How many runs.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: i64,
    /// Only runs in this status (`waiting`: held only by approvals or environment reviews).
    #[arg(long, value_parser = ["pending", "queued", "running", "waiting", "succeeded", "failed", "cancelled"])]
    pub(crate) status: Option<String>,
    /// Only runs of the workflow of this name.
    #[arg(long)]
    pub(crate) workflow: Option<String>,
    /// Only runs of this branch (or full ref).
    #[arg(long)]
    pub(crate) branch: Option<String>,
    /// Only runs started by this event.
    #[arg(long, value_parser = ["push", "pull_request", "schedule", "manual", "issue", "comment"])]
    pub(crate) event: Option<String>,
    /// Print the runs as a JSON array instead of a table: each with `loops_taken` (how many
    /// times its review loops went back) and the artifacts its steps kept.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
}

/// `plue artifacts RUN`.
#[derive(Debug, Args)]
pub(crate) struct ArtifactsArgs {
    /// The run's id (as `plue run` prints it and `plue runs` lists it).
    pub(crate) run_id: i64,
    /// Only this step's files (default: every step's).
    #[arg(long)]
    pub(crate) step: Option<String>,
    /// Write the files here instead of listing them: a directory that does not exist yet or
    /// is empty. With --step the step's files go straight in; otherwise each step's go in
    /// DIR/STEP. Nothing is written outside it, whatever the archive holds.
    #[arg(long, value_name = "DIR")]
    pub(crate) to: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Show one run's complete record: its event and inputs, every attempt of every step
    /// (runner, times, exit code, reason, usage and cost), every round's outputs,
    /// artifacts, approvals and proposals.
    Show(RunShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunShowArgs {
    /// The run's id (as `plue run` prints it and `plue runs` lists it).
    pub(crate) run_id: i64,
    /// Print the record as JSON (the document `plue run --summary-json` writes; its schema
    /// is docs/src/reference/generated/run-record.schema.json).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
}

/// `plue rerun RUN [--failed]`, or `plue rerun RUN --step S --replay`.
#[derive(Debug, Args)]
pub(crate) struct RerunArgs {
    #[command(flatten)]
    pub(crate) target: RunOnServerArgs,
    /// Run again only the failed and cancelled steps and the steps after them; the others
    /// are carried over from the run with their outputs and files (the run must have ended).
    #[arg(long, conflicts_with = "replay")]
    pub(crate) failed: bool,
    /// Re-run the tools of llm step --step against the model answers its transcript
    /// recorded, in a fresh workspace, without calling the API (zero tokens); reports
    /// where the tools' results now differ (exit 1). Reads a local data directory. The
    /// recorded tool calls run in the step's room, as a runner would run them: a step user
    /// when plue runs as root, the step's namespaces, and its network policy from the plan
    /// (an llm step's default: loopback only); without secrets unless
    /// --replay-with-secrets.
    #[arg(long, requires = "step")]
    pub(crate) replay: bool,
    /// With --replay: the llm step to replay.
    #[arg(long, requires = "replay")]
    pub(crate) step: Option<String>,
    /// With --replay: answer turns 1..=N from the transcript, then continue live against
    /// the API (ANTHROPIC_BASE_URL; the key from --secret ANTHROPIC_API_KEY).
    #[arg(long, value_name = "N", requires = "replay")]
    pub(crate) from_turn: Option<u32>,
    /// With --replay: the data directory of the `plue run` that ran the step.
    #[arg(long, default_value = ".plue", env = "PLUE_DATA_DIR")]
    pub(crate) data_dir: PathBuf,
    /// With --replay: the directory the workspace is copied from, as `plue run` copied the
    /// current directory (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "replay")]
    pub(crate) dir: Option<PathBuf>,
    /// With --replay: a secret (NAME=VALUE, or NAME to read it from the environment),
    /// masked in the replay's output. ANTHROPIC_API_KEY authenticates the live turns of
    /// --from-turn and never reaches the tools; any other is for the replayed tool calls,
    /// and is refused without --replay-with-secrets. A replay takes no secret from
    /// anywhere else.
    #[arg(long = "secret", value_name = "NAME[=VALUE]", value_parser = parse_secret, requires = "replay")]
    pub(crate) secrets: Vec<(String, String)>,
    /// With --replay: hand the --secret values (but ANTHROPIC_API_KEY) to the replayed tool
    /// calls, as the run gave them to the step. The calls are whatever the transcript
    /// recorded — the model's choices, perhaps a prompt injection's — so give secrets only
    /// to a replay of a transcript you trust; the calls still run in the step's room.
    #[arg(long, requires = "replay")]
    pub(crate) replay_with_secrets: bool,
    /// With --replay: the transcript to replay, as `GET /api/runs/{id}/steps/{step}/transcript`
    /// of a server gave it (instead of the data directory's).
    #[arg(long, value_name = "FILE", requires = "replay")]
    pub(crate) transcript: Option<PathBuf>,
    /// With --replay: print the report as JSON on stdout.
    #[arg(long, requires = "replay")]
    pub(crate) json: bool,
}

/// `plue cancel RUN` and the like.
#[derive(Debug, Args)]
pub(crate) struct RunOnServerArgs {
    /// The run's id (as `plue runs` lists it).
    pub(crate) run_id: i64,
    /// The engine's base URL.
    #[arg(long, env = "PLUE_SERVER", default_value = "http://127.0.0.1:8600")]
    pub(crate) server: String,
    /// Token for API writes.
    #[arg(long, env = "PLUE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// `plue debug RUN STEP`.
#[derive(Debug, Args)]
pub(crate) struct DebugArgs {
    /// The id of the run the failed step belongs to (as `plue runs` lists it).
    pub(crate) run_id: i64,
    /// The failed step's id.
    pub(crate) step: String,
    /// End the session after this long without a byte either way, or detached: `90s`,
    /// `10m`, `1h` (5 s to 4 h).
    #[arg(long, default_value = "10m", value_parser = debug::parse_idle)]
    pub(crate) idle_timeout: u64,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `plue approve RUN STEP`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The id of the run whose step waits (as `plue run` prints it in its question, or
    /// `plue runs --status waiting` lists it).
    pub(crate) run_id: i64,
    /// The approval step's id.
    pub(crate) step: String,
    /// Reject instead of approve: the step fails.
    #[arg(long)]
    pub(crate) reject: bool,
    /// Why, stored with the decision.
    #[arg(long)]
    pub(crate) comment: Option<String>,
    /// Decide a step of a `plue run` running from this data directory, instead of a
    /// server's: the run's engine published its loopback address there while the run has
    /// an approval step (no token: that engine takes none; --server and --token are then
    /// not used).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// A server and the token its writes need.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The engine's base URL.
    #[arg(long, env = "PLUE_SERVER", default_value = "http://127.0.0.1:8600")]
    pub(crate) server: String,
    /// API token (the admin token or one from `plue token create`).
    #[arg(long, env = "PLUE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RepoCommand {
    /// Register a repository whose webhooks the server will accept.
    Add(RepoAddArgs),
    /// List registered repositories.
    List(ServerOnlyArgs),
    /// Unregister a repository (its runs, secrets and schedules go with it).
    Remove(RepoNameArgs),
    /// Choose whether anyone may read a repository's runs and logs (its maintainers).
    SetPublic(people::SetPublicArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServerOnlyArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RepoNameArgs {
    /// owner/name
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RepoAddArgs {
    /// owner/name, as the forge's payloads spell it (repository.full_name).
    pub(crate) name: String,
    /// Where to fetch commits: https://..., file://... or an absolute path.
    #[arg(long)]
    pub(crate) clone_url: String,
    #[arg(long, value_parser = ["github", "gitea"])]
    pub(crate) forge: String,
    /// The secret the forge signs deliveries with.
    #[arg(long, env = "PLUE_WEBHOOK_SECRET", hide_env_values = true)]
    pub(crate) webhook_secret: String,
    /// The forge's REST API base (default: `https://api.github.com`, or `<host>/api/v1` for Gitea).
    #[arg(long)]
    pub(crate) api_url: Option<String>,
    /// Token for posting commit statuses.
    #[arg(long, env = "PLUE_FORGE_TOKEN", hide_env_values = true)]
    pub(crate) api_token: Option<String>,
    /// The default branch (default: learned from the remote and from webhooks).
    #[arg(long)]
    pub(crate) default_branch: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Store a secret (the value is read from stdin unless --value is given).
    Set(SecretSetArgs),
    /// Remove a secret.
    Remove(SecretNameArgs),
    /// List the names of a repository's secrets.
    List(RepoNameArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SecretSetArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The variable name steps see, e.g. DEPLOY_TOKEN.
    pub(crate) name: String,
    /// The value (prefer stdin: command lines are visible to other users).
    #[arg(long)]
    pub(crate) value: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SecretNameArgs {
    /// owner/name
    pub(crate) repo: String,
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunnerTokenCommand {
    /// Make a registration token bound to the labels its runners may claim, and print it
    /// (only its hash is kept). Needs the admin token.
    Create(RunnerTokenCreateArgs),
    /// List scoped registration tokens (never the tokens themselves).
    List(ServerOnlyArgs),
    /// Revoke a registration token: it registers no runner any more, and the runners
    /// registered with it stop (their steps fail).
    Revoke(RunnerTokenRevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunnerTokenCreateArgs {
    /// Labels its runners may announce, k=v,k2=v2 (default: none, unlabelled steps only).
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Its runners are never handed a step that names secrets.
    #[arg(long)]
    pub(crate) no_secrets: bool,
    /// Its runners may take steps of runs of pull requests from forks (default: they may
    /// not; keep such runners apart from trusted work).
    #[arg(long)]
    pub(crate) accept_forks: bool,
    /// What the token is for (default: its labels).
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RunnerTokenRevokeArgs {
    /// The token's id (from `plue runner-token list`).
    pub(crate) id: i64,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// owner/name
    pub(crate) repo: String,
    /// The workflow: its file path, file name without .plue.py, or plan name.
    pub(crate) workflow: String,
    /// Branch, tag or commit (default: the repository's default branch).
    #[arg(long = "ref")]
    pub(crate) git_ref: Option<String>,
    /// An input of the manual trigger; repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) inputs: Vec<(String, String)>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// The workflow file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) event: EventArgs,
    #[command(flatten)]
    pub(crate) modules: ModulesArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// A workflow file to check, or a directory to search for *.plue.py (default: the
    /// current directory).
    #[arg(default_value = ".", value_name = "PATH")]
    pub(crate) path: PathBuf,
    #[command(flatten)]
    pub(crate) event: EventArgs,
    #[command(flatten)]
    pub(crate) modules: ModulesArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// A directory of the repository whose workflows are locked (default: the current
    /// directory); the lock file is .plue/lock.json at the repository's root.
    #[arg(default_value = ".", value_name = "PATH")]
    pub(crate) path: PathBuf,
    #[command(flatten)]
    pub(crate) event: EventArgs,
    #[command(flatten)]
    pub(crate) modules: ModulesArgs,
}

/// Where `use("owner/name", ...)` finds repository owner/name.
#[derive(Debug, Args)]
pub(crate) struct ModulesArgs {
    /// The base URL (or a local directory) of the repositories workflows use modules of:
    /// `use("acme/steps", ...)` fetches BASE/acme/steps.
    #[arg(
        long,
        value_name = "BASE",
        env = "PLUE_MODULES_FROM",
        default_value = "https://github.com"
    )]
    pub(crate) modules_from: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PromptCommand {
    /// Render a prompt with inputs and print it (exit 2 if it can not be rendered).
    Render(PromptRenderArgs),
    /// Parse every *.md in a prompts/ directory below DIR and report every problem.
    Check(PromptCheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PromptRenderArgs {
    /// The prompt file, or builtin:NAME (builtin:code-review, builtin:bug-fix).
    pub(crate) file: String,
    /// An input; VALUE is read as JSON when it is valid JSON, else as a string; repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) inputs: Vec<(String, String)>,
    /// A file holding a JSON object of inputs (--input values override its keys).
    #[arg(long, value_name = "FILE")]
    pub(crate) inputs_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct PromptCheckArgs {
    /// Directory to search (default: the current directory).
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
}

/// The `ctx` a workflow is evaluated with.
#[derive(Debug, Args)]
pub(crate) struct EventArgs {
    /// The triggering event.
    #[arg(long, value_enum, default_value_t = EventKind::Push)]
    pub(crate) event: EventKind,
    /// The branch (ctx.branch; ctx.ref is refs/heads/BRANCH).
    #[arg(long, default_value = "main")]
    pub(crate) branch: String,
    /// The commit (ctx.sha).
    #[arg(long)]
    pub(crate) sha: Option<String>,
    /// The repository (ctx.repo), owner/name.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// A changed file (ctx.changed_files); repeatable.
    #[arg(long = "changed-file", value_name = "PATH")]
    pub(crate) changed_files: Vec<String>,
    /// A manual input (ctx.inputs); repeatable.
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) inputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EventKind {
    Push,
    #[value(name = "pull_request")]
    PullRequest,
    Schedule,
    Manual,
    /// An issue opened (a sample `ctx.issue`).
    Issue,
    /// A comment on an issue (a sample `ctx.issue` and `ctx.comment`).
    Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Mermaid,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// `plue run` leaves a core to its own loop on the main thread; every other command
    /// keeps tokio's one worker a core (or runs on one thread: the runner).
    #[test]
    fn plue_run_gets_a_worker_a_core_but_one_and_others_tokios_default() {
        let command = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        let run = command(&["plue", "run", "flow.plue.py"]);
        assert_eq!(run.worker_threads(1), Some(1));
        assert_eq!(run.worker_threads(2), Some(1));
        assert_eq!(run.worker_threads(8), Some(7));
        let serve = command(&["plue", "serve"]);
        assert_eq!(serve.worker_threads(2), None);
        assert!(!serve.runs_on_one_thread());
        let runner = command(&["plue", "runner", "--engine", "http://127.0.0.1:1"]);
        assert!(runner.runs_on_one_thread());
        assert_eq!(runner.worker_threads(2), None);
    }

    /// Every variable a flag of any verb reads that holds a credential (a token, a secret,
    /// a key, a database URL with its password) is one `plue run` never passes to steps.
    #[test]
    fn every_credential_a_flag_reads_is_withheld_from_steps() {
        fn visit(command: &clap::Command, found: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if let Some(name) = arg.get_env().and_then(|n| n.to_str()) {
                    found.push(name.to_string());
                }
            }
            for sub in command.get_subcommands() {
                visit(sub, found);
            }
        }
        let mut names = Vec::new();
        visit(&Cli::command(), &mut names);
        // Read by a flag, named like a credential, and not one: a count.
        let not_credentials = ["PLUE_DATABASE_CONNECTIONS"];
        let credentials: Vec<&String> = names
            .iter()
            .filter(|n| {
                ["TOKEN", "SECRET", "KEY", "DATABASE"]
                    .iter()
                    .any(|w| n.contains(w))
                    && !not_credentials.contains(&n.as_str())
            })
            .collect();
        for name in not_credentials {
            assert!(names.iter().any(|n| n == name), "{name} is no longer read");
        }
        assert!(
            credentials.len() >= 5,
            "found {credentials:?} among {names:?}"
        );
        for name in credentials {
            assert!(
                runner::step_env::CREDENTIAL_VARS.contains(&name.as_str()),
                "{name} is read by a flag but not in CREDENTIAL_VARS"
            );
        }
    }

    /// A runner whose allow-list steps go out through the cluster's egress proxy runs them
    /// with its own network (no namespace): only a pod a NetworkPolicy confines may, so a
    /// runner started by hand with `--egress-proxy` alone (its steps would have the host's
    /// whole network, held only by clients that honour `HTTPS_PROXY`) does not start.
    #[test]
    fn an_egress_proxy_needs_a_runner_confined_by_its_pod() {
        use clap::Parser;
        let runner = ["plue", "runner", "--engine", "http://engine:8601"];
        let proxy = ["--egress-proxy", "http://plue-egress:3128"];
        let Err(err) = Cli::try_parse_from(runner.iter().chain(&proxy)) else {
            panic!("--egress-proxy without --network-confined-by-pod was accepted");
        };
        assert!(
            err.to_string().contains("--network-confined-by-pod"),
            "{err}"
        );
        let confined = runner
            .iter()
            .chain(&proxy)
            .chain(&["--network-confined-by-pod"]);
        assert!(Cli::try_parse_from(confined).is_ok());
    }
}
