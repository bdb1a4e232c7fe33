//! `plue user`, `plue token`, `plue group`, `plue member`, `plue repo set-public` and
//! `plue audit`: who may do what on a server, through its API (`/api/users`, `/api/tokens`,
//! `/api/groups`, `/api/repos/{owner}/{name}/members`, `/api/audit`). The server checks
//! every rule; this only shapes requests and prints tables (tab-separated, one row a line,
//! `-` for nothing).
//!
//! Why one file past ~600 lines: the people commands are thin clients of one API family and
//! share its table printing.

use std::process::ExitCode;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_paths::repo_path;
use super::client::ApiClient;
use crate::cli::people::{
    AuditArgs, GroupCommand, MemberCommand, SetPublicArgs, TokenCommand, UserCommand,
};
use crate::cli::ServerArgs;

fn client(server: &ServerArgs) -> anyhow::Result<ApiClient> {
    ApiClient::new(&server.server, server.token.clone())
}

/// A value for a table cell: `-` for nothing.
fn cell(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
fn time(ms: Option<i64>) -> String {
    cell(
        ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    )
}

/// A path segment or query value, percent-encoded so that it stays one (names are
/// checked by the server too); `.` and `..` too, which URLs would otherwise resolve.
/// (Hand-written: the workspace has no URL-encoding crate, and reqwest's `Url` encodes
/// neither `/` in a query value nor dot segments.)
fn segment(value: &str) -> String {
    let dots = value == "." || value == "..";
    value
        .bytes()
        .map(|b| match b {
            b'.' if dots => "%2E".to_string(),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct User {
    name: String,
    kind: String,
    admin: bool,
    created_at: i64,
    disabled_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ForgeLogin {
    forge: String,
    login: String,
}

#[derive(Debug, Deserialize)]
struct RepoRole {
    repository: String,
    role: String,
}

#[derive(Debug, Deserialize)]
struct UserDetail {
    #[serde(flatten)]
    user: User,
    forge_logins: Vec<ForgeLogin>,
    roles: Vec<RepoRole>,
}

fn user_row(user: &User) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        user.name,
        user.kind,
        if user.admin { "admin" } else { "-" },
        time(Some(user.created_at)),
        match user.disabled_at {
            Some(at) => format!("disabled {}", time(Some(at))),
            None => "active".to_string(),
        }
    )
}

pub(crate) async fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Create(args) => {
            let body = json!({
                "name": args.name,
                "kind": if args.bot { "bot" } else { "person" },
                "admin": args.admin,
            });
            let user: User = client(&args.server)?
                .send(Method::POST, "/api/users", Some(&body))
                .await?;
            println!(
                "created {} {}{}; give it a role with `plue member set` and a token with \
                 `plue token create --user {}`",
                user.kind,
                user.name,
                if user.admin { " (admin)" } else { "" },
                user.name
            );
        }
        UserCommand::List(args) => {
            let users: Vec<User> = client(&args.server)?.get("/api/users").await?;
            println!("NAME\tKIND\tADMIN\tCREATED\tSTATE");
            for user in &users {
                println!("{}", user_row(user));
            }
        }
        UserCommand::Show(args) => {
            let path = format!("/api/users/{}", segment(&args.name));
            let detail: UserDetail = client(&args.server)?.get(&path).await?;
            println!("NAME\tKIND\tADMIN\tCREATED\tSTATE");
            println!("{}", user_row(&detail.user));
            for login in &detail.forge_logins {
                println!("forge login\t{}:{}", login.forge, login.login);
            }
            for role in &detail.roles {
                println!("role\t{}\t{}", role.repository, role.role);
            }
        }
        UserCommand::Disable(args) => {
            let path = format!("/api/users/{}", segment(&args.name));
            let user: User = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!(
                "disabled {}: its tokens and sessions no longer work",
                user.name
            );
        }
        UserCommand::Link(args) => {
            let path = format!("/api/users/{}/forge-logins", segment(&args.name));
            let body = json!({ "forge": args.forge, "login": args.login });
            let login: ForgeLogin = client(&args.server)?
                .send(Method::POST, &path, Some(&body))
                .await?;
            println!("linked {}:{} to {}", login.forge, login.login, args.name);
        }
        UserCommand::Unlink(args) => {
            let path = format!(
                "/api/users/{}/forge-logins/{}/{}",
                segment(&args.name),
                segment(&args.forge),
                segment(&args.login)
            );
            let login: ForgeLogin = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!(
                "unlinked {}:{} from {}",
                login.forge, login.login, args.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct Token {
    id: i64,
    user: String,
    name: String,
    max_role: Option<String>,
    repos: Option<Vec<String>>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct TokenCreated {
    #[serde(flatten)]
    listed: Token,
    token: String,
}

fn scope(token: &Token) -> String {
    format!(
        "{} on {}",
        token.max_role.as_deref().unwrap_or("own role"),
        match &token.repos {
            Some(repos) => repos.join(","),
            None => "all".to_string(),
        }
    )
}

pub(crate) async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => {
            let mut body = json!({ "name": args.name });
            if let Some(role) = &args.max_role {
                body["max_role"] = json!(role);
            }
            if !args.repos.is_empty() {
                body["repos"] = json!(args.repos);
            }
            if let Some(days) = args.expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            let path = match &args.user {
                Some(user) => format!("/api/users/{}/tokens", segment(user)),
                None => "/api/tokens".to_string(),
            };
            let created: TokenCreated = client(&args.server)?
                .send(Method::POST, &path, Some(&body))
                .await?;
            let token = &created.listed;
            eprintln!(
                "token {} ({}) of {}: {}{}; shown once",
                token.id,
                token.name,
                token.user,
                scope(token),
                match token.expires_at {
                    Some(at) => format!(", expires {}", time(Some(at))),
                    None => String::new(),
                }
            );
            println!("{}", created.token);
        }
        TokenCommand::List(args) => {
            let path = match &args.user {
                Some(user) => format!("/api/tokens?user={}", segment(user)),
                None => "/api/tokens".to_string(),
            };
            let tokens: Vec<Token> = client(&args.server)?.get(&path).await?;
            println!("ID\tUSER\tNAME\tSCOPE\tEXPIRES\tLAST USED\tSTATE");
            for token in &tokens {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.user,
                    token.name,
                    scope(token),
                    time(token.expires_at),
                    time(token.last_used_at),
                    match token.revoked_at {
                        Some(at) => format!("revoked {}", time(Some(at))),
                        None => "active".to_string(),
                    }
                );
            }
        }
        TokenCommand::Revoke(args) => {
            let token: Token = client(&args.server)?
                .send(Method::DELETE, &format!("/api/tokens/{}", args.id), None)
                .await?;
            println!(
                "revoked token {} ({}) of {}: it and its sessions no longer work",
                token.id, token.name, token.user
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    members: Vec<String>,
}

pub(crate) async fn group(command: GroupCommand) -> anyhow::Result<ExitCode> {
    let print = |group: &Group| {
        println!(
            "@{}\t{}",
            group.name,
            if group.members.is_empty() {
                "-".to_string()
            } else {
                group.members.join(",")
            }
        )
    };
    match command {
        GroupCommand::Create(args) => {
            let group: Group = client(&args.server)?
                .send(
                    Method::POST,
                    "/api/groups",
                    Some(&json!({"name": args.name})),
                )
                .await?;
            println!("created group @{}", group.name);
        }
        GroupCommand::List(args) => {
            let groups: Vec<Group> = client(&args.server)?.get("/api/groups").await?;
            println!("GROUP\tMEMBERS");
            groups.iter().for_each(print);
        }
        GroupCommand::Delete(args) => {
            let path = format!("/api/groups/{}", segment(&args.name));
            let group: Group = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!("deleted group @{}", group.name);
        }
        GroupCommand::Add(args) => {
            let path = format!(
                "/api/groups/{}/members/{}",
                segment(&args.group),
                segment(&args.user)
            );
            let group: Group = client(&args.server)?.send(Method::PUT, &path, None).await?;
            print(&group);
        }
        GroupCommand::Remove(args) => {
            let path = format!(
                "/api/groups/{}/members/{}",
                segment(&args.group),
                segment(&args.user)
            );
            let group: Group = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            print(&group);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct Member {
    user: String,
    role: String,
    granted_at: i64,
}

pub(crate) async fn member(command: MemberCommand) -> anyhow::Result<ExitCode> {
    match command {
        MemberCommand::List(args) => {
            let path = format!("{}/members", repo_path(&args.repo)?);
            let members: Vec<Member> = client(&args.server)?.get(&path).await?;
            println!("USER\tROLE\tGRANTED");
            for member in &members {
                println!(
                    "{}\t{}\t{}",
                    member.user,
                    member.role,
                    time(Some(member.granted_at))
                );
            }
        }
        MemberCommand::Set(args) => {
            let path = format!("{}/members/{}", repo_path(&args.repo)?, segment(&args.user));
            let _: Value = client(&args.server)?
                .send(Method::PUT, &path, Some(&json!({ "role": args.role })))
                .await?;
            println!("{} is {} on {}", args.user, args.role, args.repo);
        }
        MemberCommand::Remove(args) => {
            let path = format!("{}/members/{}", repo_path(&args.repo)?, segment(&args.user));
            let _: Value = client(&args.server)?
                .send(Method::DELETE, &path, None)
                .await?;
            println!("{} holds no role on {} any more", args.user, args.repo);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plue repo set-public OWNER/NAME true|false`.
pub(crate) async fn set_public(args: SetPublicArgs) -> anyhow::Result<ExitCode> {
    let _: Value = client(&args.server)?
        .send(
            Method::PATCH,
            &repo_path(&args.repo)?,
            Some(&json!({ "public_read": args.public })),
        )
        .await?;
    println!(
        "{}: reads are {}",
        args.repo,
        if args.public {
            "public (anyone may read its runs and logs)"
        } else {
            "private (its members only)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Deserialize)]
struct Event {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    repository: Option<String>,
    run_id: Option<i64>,
    detail: Value,
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(repo) = &args.repo {
        query.push(format!("repo={}", segment(repo)));
    }
    if let Some(run) = args.run {
        query.push(format!("run={run}"));
    }
    let path = format!("/api/audit?{}", query.join("&"));
    let events: Vec<Event> = client(&args.server)?.get(&path).await?;
    println!("ID\tAT\tACTOR\tACTION\tREPOSITORY\tRUN\tDETAIL");
    for event in &events {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            event.id,
            time(Some(event.at)),
            event.actor,
            event.action,
            cell(event.repository.as_deref()),
            cell(event.run_id),
            event.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_reach_other_routes() {
        assert_eq!(segment("alice"), "alice");
        assert_eq!(segment("../tokens"), "..%2Ftokens");
        assert_eq!(segment("a b?x=1#"), "a%20b%3Fx%3D1%23");
        assert_eq!(segment(".."), "%2E%2E");
    }
}
