//! The git half of applying a pull request: the proposal's commit built in the engine's
//! mirror with a private index (the same proposal always gives the same commit), what it
//! changes read back for the validator, and the push with the forge's credential.
//!
//! Invariants: git runs with the engine's hardening and a timeout ([`GIT_TIMEOUT`]); the
//! credential reaches git only through `GIT_CONFIG_*` (`http.extraHeader`, redirects not
//! followed), never argv or a URL, and no error holds it; a push the forge answered by
//! refusing the update is a permanent failure, one that got no answer is retried, one
//! whose token the forge refused is [`PostError::Refused`] (the applier's exchange renews
//! the token).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use plue_forge::auth::{git_refused, Refused, Token};
use plue_forge::status::PostError;
use plue_outbound::Outbound;

use crate::registry::git::{self, Mirror};

pub(super) const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds `base` + `diff` as one commit with `message` in `mirror` with a private index;
/// the dates are `at_ms` (the proposal's), so the same proposal always gives the same
/// commit.
pub async fn build_commit(
    mirror: &Mirror,
    base: &str,
    diff: &[u8],
    message: &Outbound,
    at_ms: i64,
) -> anyhow::Result<String> {
    if !git::is_full_sha(base) {
        anyhow::bail!("'{base}' is not a commit id");
    }
    // A private index beside the mirror's objects, removed on every way out.
    static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = Scratch(
        mirror
            .dir()
            .join(format!("plue-apply-{}-{n}.index", std::process::id())),
    );
    let index = scratch
        .0
        .to_str()
        .context("mirror path is not UTF-8")?
        .to_string();
    // git refuses dates before 1973 in this form; a stored proposal's is always later.
    let date = format!("{} +0000", at_ms.max(946_684_800_000) / 1000);
    let env = [
        ("GIT_INDEX_FILE", index.as_str()),
        ("GIT_AUTHOR_NAME", "Plue"),
        ("GIT_AUTHOR_EMAIL", "plue@localhost"),
        ("GIT_AUTHOR_DATE", date.as_str()),
        ("GIT_COMMITTER_NAME", "Plue"),
        ("GIT_COMMITTER_EMAIL", "plue@localhost"),
        ("GIT_COMMITTER_DATE", date.as_str()),
    ];
    let dir = Some(mirror.dir());
    git::git_with(dir, &["read-tree", base], &env, None, GIT_TIMEOUT).await?;
    if !diff.is_empty() {
        git::git_with(
            dir,
            &["apply", "--cached", "--binary", "--whitespace=nowarn", "-"],
            &env,
            Some(diff),
            GIT_TIMEOUT,
        )
        .await?;
    }
    let tree = git::git_with(dir, &["write-tree"], &env, None, GIT_TIMEOUT).await?;
    let tree = String::from_utf8_lossy(&tree).trim().to_string();
    let message = format!("{}\n", message.as_str().trim());
    let commit = git::git_with(
        dir,
        &["commit-tree", &tree, "-p", base, "-F", "-"],
        &env,
        Some(message.as_bytes()),
        GIT_TIMEOUT,
    )
    .await?;
    Ok(String::from_utf8_lossy(&commit).trim().to_string())
}

/// The tree of `commit`.
pub async fn tree_of(mirror: &Mirror, commit: &str) -> anyhow::Result<String> {
    let tree = format!("{commit}^{{tree}}");
    let out = git::git_with(
        Some(mirror.dir()),
        &["rev-parse", "--verify", &tree],
        &[],
        None,
        GIT_TIMEOUT,
    )
    .await?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// What `commit` changes against `base`: `(old mode, new mode, path)` per path, renames
/// and copies seen as a deletion and an addition (so both paths are named).
pub async fn changes(
    mirror: &Mirror,
    base: &str,
    commit: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = git::git_with(
        Some(mirror.dir()),
        &[
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--no-commit-id",
            base,
            commit,
        ],
        &[],
        None,
        GIT_TIMEOUT,
    )
    .await?;
    // `:OLD NEW OLDSHA NEWSHA STATUS\0PATH\0` per path.
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    let mut changed = Vec::new();
    while let Some(meta) = fields.next() {
        let meta = std::str::from_utf8(meta).context("diff-tree output")?;
        let mut modes = meta.trim_start_matches(':').split(' ');
        let (Some(old), Some(new)) = (modes.next(), modes.next()) else {
            anyhow::bail!("diff-tree printed {meta:?}");
        };
        let path = fields.next().context("diff-tree printed no path")?;
        let path = String::from_utf8(path.to_vec())
            .map_err(|_| anyhow::anyhow!("the built commit changes a path that is not UTF-8"))?;
        changed.push((old.to_owned(), new.to_owned(), path));
    }
    Ok(changed)
}

/// A file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Pushes `commit` to `branch` of `url`, the token in an `Authorization: Basic` header
/// given to git through `GIT_CONFIG_*` (GitHub's `x-access-token:<token>`, which Gitea
/// takes too).
pub async fn push(
    mirror: &Mirror,
    url: &str,
    commit: &str,
    branch: &str,
    token: &str,
) -> Result<(), PostError> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let header = format!("Authorization: Basic {basic}");
    // No redirect followed: git sends the rest of a push whose first request was
    // redirected to the host redirected to, the token's header with it.
    let env = [
        ("GIT_CONFIG_COUNT", "2"),
        ("GIT_CONFIG_KEY_0", "http.extraHeader"),
        ("GIT_CONFIG_VALUE_0", header.as_str()),
        ("GIT_CONFIG_KEY_1", "http.followRedirects"),
        ("GIT_CONFIG_VALUE_1", "false"),
    ];
    // Forced: the branch is Plue's own (its prefix), and is only pushed while no pull
    // request is open for it; a retry pushes the very same commit.
    let refspec = format!("+{commit}:refs/heads/{branch}");
    git::git_with(
        Some(mirror.dir()),
        &["push", "-q", "--", url, &refspec],
        &env,
        None,
        GIT_TIMEOUT,
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        // Never show the URL's credentials.
        let text = format!("{e:#}").replace(url, &plue_forge::without_credentials(url));
        let text = text.replace(token, "***");
        // The forge refused the token itself (revoked): the applier's exchange forgets it
        // and pushes again with a new one.
        if git_refused(&text) {
            let token = Token::new(token.to_string());
            return PostError::Refused(Refused::new(format!("pushing {branch}: {text}"), token));
        }
        // The forge answered and refused the update (a hook, a protected branch, a rule):
        // the same forced push of the same commit gets the same answer, so it is final. A
        // failure to reach it or a server error may pass: retried.
        if refused_by_forge(&text) {
            PostError::Permanent(format!("the forge refused the push of {branch}: {text}"))
        } else {
            PostError::Retry(format!("pushing {branch}: {text}"))
        }
    })
}

/// Whether git's error says the remote refused the ref's update (`! [remote rejected]`,
/// `! [rejected]`), as opposed to a push that never got an answer.
fn refused_by_forge(git_error: &str) -> bool {
    git_error
        .lines()
        .map(str::trim_start)
        .any(|line| line.starts_with("! [remote rejected]") || line.starts_with("! [rejected]"))
}
