//! The arguments of `plue user`, `plue token`, `plue group`, `plue member`, `plue repo
//! set-public` and `plue audit` (run by `commands::people`).

use clap::{Args, Subcommand};

use super::ServerArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user, a person or a bot (admins only). It holds no role until granted one
    /// (`plue member set`).
    Create(UserCreateArgs),
    /// List every user (admins only).
    List(PeopleServerArgs),
    /// Show a user, its forge logins and roles (admins, and the user itself).
    Show(UserNameArgs),
    /// Disable a user: its tokens and dashboard sessions stop working (admins only).
    Disable(UserNameArgs),
    /// Link a forge login to a user, so runs its pushes and pull requests start count as
    /// that user's (admins only).
    Link(UserLinkArgs),
    /// Unlink a forge login from a user (admins only).
    Unlink(UserLinkArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PeopleServerArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UserCreateArgs {
    /// 1 to 39 letters, digits, '.', '_' and '-' (unique in any case).
    pub(crate) name: String,
    /// A bot (default: a person).
    #[arg(long)]
    pub(crate) bot: bool,
    /// An installation admin.
    #[arg(long)]
    pub(crate) admin: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UserNameArgs {
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UserLinkArgs {
    /// The user.
    pub(crate) name: String,
    /// The forge.
    #[arg(value_parser = ["github", "gitea"])]
    pub(crate) forge: String,
    /// The login on that forge.
    pub(crate) login: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a new API token and print it (only its hash is kept): yours, or with --user a
    /// user's (admins only). It is never wider than the token making it.
    Create(TokenCreateArgs),
    /// List your API tokens (never the tokens), or with --user a user's (admins only).
    List(TokenListArgs),
    /// Revoke an API token: it and the dashboard sessions it opened stop working.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    /// What the token is for (a label).
    pub(crate) name: String,
    /// The highest role it acts with (default: yours).
    #[arg(long, value_parser = ["reader", "writer", "maintainer"])]
    pub(crate) max_role: Option<String>,
    /// A repository (owner/name) it may act on; repeatable (default: all of yours).
    #[arg(long = "repo", value_name = "OWNER/NAME")]
    pub(crate) repos: Vec<String>,
    /// It stops working after this many days (default: never).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(crate) expires_in_days: Option<u32>,
    /// Make it for this user or bot (admins only).
    #[arg(long)]
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenListArgs {
    /// A user's tokens (admins only).
    #[arg(long)]
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenRevokeArgs {
    /// The token's id (from `plue token list`).
    pub(crate) id: i64,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group, named `@name` in reviewer and approver lists (admins only).
    Create(GroupNameArgs),
    /// List the groups and their members (admins only).
    List(PeopleServerArgs),
    /// Delete a group (admins only).
    Delete(GroupNameArgs),
    /// Add a user to a group (admins only).
    Add(GroupMemberArgs),
    /// Remove a user from a group (admins only).
    Remove(GroupMemberArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GroupNameArgs {
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct GroupMemberArgs {
    /// The group.
    pub(crate) group: String,
    /// The user.
    pub(crate) user: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// List who holds which role on a repository (its maintainers).
    List(MemberRepoArgs),
    /// Give a user a role on a repository, replacing the one it held (its maintainers).
    Set(MemberSetArgs),
    /// Take a user's role on a repository away (its maintainers).
    Remove(MemberUserArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MemberRepoArgs {
    /// owner/name
    pub(crate) repo: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MemberSetArgs {
    /// owner/name
    pub(crate) repo: String,
    pub(crate) user: String,
    #[arg(value_parser = ["reader", "writer", "maintainer"])]
    pub(crate) role: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MemberUserArgs {
    /// owner/name
    pub(crate) repo: String,
    pub(crate) user: String,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SetPublicArgs {
    /// owner/name
    pub(crate) repo: String,
    /// Whether anyone, signed in or not, may read its runs and logs.
    #[arg(action = clap::ArgAction::Set)]
    pub(crate) public: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only this repository's events (owner/name); maintainers need it or see only theirs.
    #[arg(long)]
    pub(crate) repo: Option<String>,
    /// Only this run's events.
    #[arg(long)]
    pub(crate) run: Option<i64>,
    /// At most this many events, newest first.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: i64,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}
