//! Steps shared across repositories: what `use("acme/plue-steps", "rust.plue.py",
//! commit=...)` asks for, what the engine hands back, and how the two are checked.
//!
//! A workflow names a module by repository (`owner/name` on the calling repository's
//! forge), path (a `*.plue.py` file in it) and a pin: a full commit, or a tag or branch
//! (`ref=`) that the calling repository's lock file (`.plue/lock.json`, [`lock`]) pins to a
//! commit. Resolution is two-phase, because the worker has no network: the worker reports
//! the modules it met and has not been given ([`crate::protocol::Frame::NeedModules`]);
//! the parent fetches each through a [`ModuleFetcher`] (the engine's mirror) and evaluates
//! again with their sources ([`ModulesIn`]); see [`crate::pool`].
//!
//! Guarantees, each kept in one place:
//! - only a full commit is ever fetched: an unpinned `use` and a ref the lock file does not
//!   hold are refused in the worker, and the parent fetches nothing but the full commits
//!   [`check_request`] accepts ([`crate::pool`] refuses any other request);
//! - at most [`MAX_MODULES`] modules per evaluation, each at most [`MAX_MODULE_BYTES`], all
//!   fetched within [`FETCH_TIMEOUT`]; modules are one level deep (a used module may not
//!   `use` another: the worker's check refuses the name);
//! - every module used is in the plan ([`UsedModule`], `Plan::modules`) and so in its hash;
//!   the parent, not the worker, writes that list;
//! - a module's functions take only plain values (strings, numbers, booleans, lists and
//!   dicts of them) and return steps; a step a module builds names only secrets (and an
//!   environment) whose names the caller passed in, and declares no `id_tokens` (a token
//!   would carry the calling repository's identity) (`worker/sandbox.py`).

pub mod lock;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The lock file's path in the calling repository.
pub const LOCK_FILE: &str = ".plue/lock.json";
/// The most modules one evaluation may use.
pub const MAX_MODULES: usize = 16;
/// The largest module source.
pub const MAX_MODULE_BYTES: usize = 256 * 1024;
/// How long fetching all of one evaluation's modules may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A module the worker met and was not given (untrusted until [`check_request`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleRequest {
    pub repository: String,
    pub path: String,
    /// The commit to read; `None` only when the parent asked refs to be resolved
    /// ([`ModulesIn::resolve_refs`], `plue lock`).
    pub commit: Option<String>,
    /// The tag or branch the workflow named, if it named one.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// A module given to the worker: the file at `commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSource {
    pub repository: String,
    pub path: String,
    pub commit: String,
    pub source: String,
}

/// What the parent gives one evaluation: the lock file's entries and the modules fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulesIn {
    pub lock: Vec<lock::LockEntry>,
    pub sources: Vec<ModuleSource>,
    /// `plue lock`: a ref absent from the lock is reported to be resolved, not refused.
    #[serde(default)]
    pub resolve_refs: bool,
}

/// One module a plan used, as its plan records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsedModule {
    pub repository: String,
    pub path: String,
    /// The tag or branch named, pinned to `commit` by the lock file.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
    pub git_ref: Option<String>,
    pub commit: String,
}

/// Where the engine gets modules: its mirror of `repository` on the calling repository's
/// forge (or a local directory of repositories for `plue run`).
pub trait ModuleFetcher: Send + Sync {
    /// The UTF-8 text of `path` at `commit` in `repository`, at most `max_bytes`.
    fn fetch<'a>(
        &'a self,
        repository: &'a str,
        path: &'a str,
        commit: &'a str,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// The commit `git_ref` (a tag or branch) of `repository` points at now.
    fn resolve<'a>(
        &'a self,
        repository: &'a str,
        git_ref: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// How an evaluation may use modules.
#[derive(Clone, Copy, Default)]
pub struct Modules<'a> {
    /// The calling repository's lock file (`None`: it has none).
    pub lock: Option<&'a lock::LockFile>,
    /// `None`: this evaluation cannot fetch, and any `use` is refused.
    pub fetcher: Option<&'a dyn ModuleFetcher>,
    /// `plue lock`: refs absent from the lock are resolved, not refused.
    pub resolve_refs: bool,
}

/// `owner/name`: two parts of letters, digits, `.`, `_` and `-`, neither starting with `.`
/// or `-` (so no part can be `..` or read as an option).
pub fn check_repository(repository: &str) -> Result<(), String> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.len() <= 100
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !part.starts_with(['.', '-'])
    };
    match repository.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(()),
        _ => Err(format!(
            "'{repository}' is not a repository: expected 'owner/name'"
        )),
    }
}

/// A relative path of a `*.plue.py` file: no empty, `.` or `..` part, no leading `/` or `-`,
/// printable ASCII, at most 255 bytes.
pub fn check_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.len() <= 255
        && !path.starts_with(['/', '-'])
        && path.ends_with(".plue.py")
        && path.bytes().all(|b| b.is_ascii_graphic())
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{path}' is not a module path: expected a relative path to a *.plue.py file"
        ))
    }
}

/// A full commit: 40 (or 64) lowercase hex digits.
pub fn check_commit(commit: &str) -> Result<(), String> {
    let hex = commit
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if (commit.len() == 40 || commit.len() == 64) && hex {
        Ok(())
    } else {
        Err(format!(
            "commit '{commit}' is not a full commit: expected 40 lowercase hex digits"
        ))
    }
}

/// A tag or branch name: what git accepts and cannot read as an option or a range.
pub fn check_ref(git_ref: &str) -> Result<(), String> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= 255
        && !git_ref.starts_with(['-', '/', '.'])
        && !git_ref.ends_with(['/', '.'])
        && !git_ref.ends_with(".lock")
        && !git_ref.contains("..")
        && !git_ref.contains("@{")
        && !git_ref.contains("//")
        && git_ref
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("'{git_ref}' is not a tag or branch name"))
    }
}

/// How the workflow wrote a `use`, for messages.
pub fn spelling(
    repository: &str,
    path: &str,
    commit: Option<&str>,
    git_ref: Option<&str>,
) -> String {
    match (commit, git_ref) {
        (_, Some(git_ref)) => format!("use(\"{repository}\", \"{path}\", ref=\"{git_ref}\")"),
        (Some(commit), None) => format!("use(\"{repository}\", \"{path}\", commit=\"{commit}\")"),
        (None, None) => format!("use(\"{repository}\", \"{path}\")"),
    }
}

/// Checks a worker's request as the parent must: well-formed names, and either a full
/// commit, or (only when `resolve_refs`) a ref to resolve.
pub fn check_request(request: &ModuleRequest, resolve_refs: bool) -> Result<(), String> {
    check_repository(&request.repository)?;
    check_path(&request.path)?;
    if let Some(git_ref) = &request.git_ref {
        check_ref(git_ref)?;
    }
    match (&request.commit, &request.git_ref) {
        (Some(commit), _) => check_commit(commit),
        (None, Some(_)) if resolve_refs => Ok(()),
        (None, _) => Err(format!(
            "{}: not pinned to a commit",
            spelling(
                &request.repository,
                &request.path,
                None,
                request.git_ref.as_deref()
            )
        )),
    }
}

#[cfg(test)]
mod tests;
