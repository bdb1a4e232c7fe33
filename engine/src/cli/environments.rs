//! The arguments of `plue env ...` (run by `commands::environments`).

use clap::{Args, Subcommand};

use super::ServerArgs;

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
    /// Let steps of untrusted runs (a fork's pull request, an event the engine caused) use
    /// it after a reviewer approved them, for OpenID Connect tokens marked untrusted, never
    /// its secrets. Needs --reviewer.
    #[arg(long)]
    pub(crate) untrusted_id_tokens: bool,
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
