//! Fills a step's fresh working directory from its [`WorkspaceSource`].
//!
//! - `Copy`: the tree at a local path, as git would see it: `.gitignore`, `.ignore` and
//!   `.git/info/exclude` are honoured (also outside a git repository), hidden files are
//!   kept, `.git` directories and the engine's `.plue` data directory at the root are not
//!   copied. Permissions are preserved and symlinks are copied as symlinks, never followed.
//! - `Git`: a detached checkout of one commit, fetched shallowly when the server allows it.
//!   The URL and sha are validated first so neither can be read by git as an option, git
//!   never prompts, and only the `file`, `http(s)`, `ssh` and `git` transports are allowed.
//!   When the engine's mirror holds the commit, the runner checks it out from the pack the
//!   engine serves instead ([`checkout_pack`]): the same repository a fetch of depth 1
//!   makes (the commit, its tree, `.git/shallow`, a detached `HEAD`), with no process of
//!   the forge's and two of git's where the fetch took seven.
//! - `Empty`: nothing.
//!
//! The target directory must exist and be empty ([`empty`] makes it so again after a
//! checkout that failed half-way).

use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::AsyncRead;
use tokio::process::Command;

use plue_types::protocol::WorkspaceSource;
use plue_types::workspace::{without_credentials, CACHEDIR_SIGNATURE};

/// Variables that would point git at another repository than the workspace.
pub const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// Prepares `dir` (existing, empty) from `source` where that needs no waiting on another
/// process (`Copy`, `Empty`): blocking, for a caller already on a blocking thread. `None`
/// for a source that does (`Git`): use [`prepare`].
pub fn prepare_blocking(source: &WorkspaceSource, dir: &Path) -> Option<anyhow::Result<()>> {
    match source {
        WorkspaceSource::Copy { path } => Some(
            copy_tree(Path::new(path), dir)
                .with_context(|| format!("copying {path} into the workspace")),
        ),
        WorkspaceSource::Empty => Some(Ok(())),
        WorkspaceSource::Git { .. } => None,
    }
}

/// Prepares `dir` (existing, empty) from `source`.
pub async fn prepare(source: &WorkspaceSource, dir: &Path) -> anyhow::Result<()> {
    match source {
        WorkspaceSource::Copy { .. } => {
            let (source, to) = (source.clone(), dir.to_owned());
            tokio::task::spawn_blocking(move || prepare_blocking(&source, &to))
                .await
                .context("the copy task failed")?
                .unwrap_or(Ok(()))
        }
        WorkspaceSource::Git {
            url,
            sha,
            credential,
        } => checkout(url, sha, credential.as_ref(), dir)
            .await
            .with_context(|| format!("checking out {sha} from {}", without_credentials(url))),
        WorkspaceSource::Empty => Ok(()),
    }
}

/// Copies the files of `from` that git would not ignore into `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.is_dir() {
        // A copied workspace is a directory of the engine's machine (a run of a local
        // workflow file): a runner elsewhere, a pod's among them, never sees it.
        bail!(
            "{} is not a directory on this runner's machine: a run of a workflow file of \
             the engine's file system needs runners on the engine's machine (the local pool), \
             not runner pods or runners elsewhere",
            from.display()
        );
    }
    // Never copy the workspace into itself when it lives inside the source tree.
    let target = to
        .canonicalize()
        .with_context(|| format!("resolving {}", to.display()))?;
    let walk = ignore::WalkBuilder::new(from)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(move |entry| {
            let name = entry.file_name();
            let skipped = name == ".git"
                || (entry.depth() == 1 && name == ".plue")
                || is_data_dir(entry.path());
            !skipped && entry.path() != target
        })
        .build();
    // Directory modes are applied last, so a read-only directory can still be filled.
    let mut directories = Vec::new();
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if err.io_error().is_none() => {
                // An unparsable ignore pattern: git skips it too.
                tracing::warn!(%err, "ignoring a bad ignore rule while copying the workspace");
                continue;
            }
            Err(err) if vanished(&err) => continue,
            Err(err) => return Err(err.into()),
        };
        if entry.depth() == 0 {
            continue;
        }
        let source = entry.path();
        let relative = source
            .strip_prefix(from)
            .context("walked outside the source")?;
        let dest = to.join(relative);
        let Some(kind) = entry.file_type() else {
            continue;
        };
        // A file that vanishes between the listing and the copy (a build writing beside a
        // `plue run`) is skipped, as if it had gone a moment earlier.
        if kind.is_symlink() {
            let link = match std::fs::read_link(source) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                link => link.with_context(|| format!("reading link {}", source.display()))?,
            };
            std::os::unix::fs::symlink(&link, &dest)
                .with_context(|| format!("creating link {}", dest.display()))?;
        } else if kind.is_dir() {
            let meta = match entry.metadata() {
                Err(e) if vanished(&e) => continue,
                meta => meta.context("reading directory metadata")?,
            };
            std::fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
            directories.push((dest, meta.permissions()));
        } else if kind.is_file() {
            // `fs::copy` also copies the permission bits (the executable bit included).
            match std::fs::copy(source, &dest) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_file(&dest);
                }
                copied => {
                    copied.with_context(|| format!("copying {}", source.display()))?;
                }
            }
        } else {
            tracing::debug!(path = %source.display(), "not copying a special file");
        }
    }
    for (dest, permissions) in directories.into_iter().rev() {
        std::fs::set_permissions(&dest, permissions)
            .with_context(|| format!("setting permissions of {}", dest.display()))?;
    }
    Ok(())
}

/// Whether `dir` is tagged as a cache or data directory (see [`CACHEDIR_SIGNATURE`]).
fn is_data_dir(dir: &Path) -> bool {
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    let Ok(mut tag) = std::fs::File::open(dir.join("CACHEDIR.TAG")) else {
        return false;
    };
    use std::io::Read;
    tag.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE.as_bytes()
}

/// Whether a walk error says the entry disappeared meanwhile.
fn vanished(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::NotFound;
        }
        if let Some(walk) = e.downcast_ref::<ignore::Error>() {
            if let Some(io) = walk.io_error() {
                return io.kind() == std::io::ErrorKind::NotFound;
            }
        }
        source = e.source();
    }
    false
}

/// Checks out commit `sha` of the repository at `url` into `dir`, the fetches sending
/// `credential` (if any) as an `http.extraHeader` given in `GIT_CONFIG_*` variables of
/// those git processes only: it is in no argument, no file of the workspace, and no
/// later process; with a credential, git follows no HTTP redirect (to another host).
async fn checkout(
    url: &str,
    sha: &str,
    credential: Option<&plue_types::protocol::GitCredential>,
    dir: &Path,
) -> anyhow::Result<()> {
    validate_git_source(url, sha)?;
    let dir_arg = dir.to_str().context("the workspace path is not UTF-8")?;
    git(None, &["init", "-q", "--", dir_arg]).await?;
    let header = credential.map(|c| c.header());
    let env: Vec<(&str, &str)> = match &header {
        // git follows a redirect of the first request (`http.followRedirects=initial`)
        // and then sends the rest of the fetch, every extra header with it, to the host
        // redirected to: a credential follows no redirect.
        Some(header) => vec![
            ("GIT_CONFIG_COUNT", "2"),
            ("GIT_CONFIG_KEY_0", "http.extraHeader"),
            ("GIT_CONFIG_VALUE_0", header.as_str()),
            ("GIT_CONFIG_KEY_1", "http.followRedirects"),
            ("GIT_CONFIG_VALUE_1", "false"),
        ],
        None => Vec::new(),
    };
    let shallow = fetch(
        dir,
        &["fetch", "-q", "--depth", "1", "--", url, sha],
        &env,
        credential,
    )
    .await;
    let target = match shallow {
        Ok(()) => "FETCH_HEAD",
        Err(err) => {
            // Servers may refuse unadvertised shas, and abbreviated shas cannot be fetched:
            // fetch every branch and tag, then look the commit up locally.
            tracing::debug!(%err, "fetching the commit alone failed; fetching all refs");
            let refspecs = [
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ];
            fetch(
                dir,
                &["fetch", "-q", "--", url, refspecs[0], refspecs[1]],
                &env,
                credential,
            )
            .await?;
            sha
        }
    };
    // `^{commit}` makes an abbreviated sha that names a non-commit fail here.
    let commit = format!("{target}^{{commit}}");
    git(Some(dir), &["checkout", "-q", "--detach", &commit]).await
}

/// Checks out commit `sha` into `dir` (existing, empty) from `pack`, a git pack of the
/// commit and its tree without history, read as it arrives: the repository is laid out as
/// `git init` lays one out (no templates), the pack indexed by `git index-pack`, the commit
/// marked shallow (its parents are not there, as after `fetch --depth 1`) and checked out
/// detached. A pack that lacks the commit, or is not one, fails the checkout.
pub async fn checkout_pack(
    pack: impl AsyncRead + Unpin,
    sha: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    validate_git_source(".", sha)?;
    if !matches!(sha.len(), 40 | 64) {
        bail!("invalid commit '{sha}': a checkout from a pack needs the full id");
    }
    let git_dir = dir.join(".git");
    let laid_out = git_dir.clone();
    tokio::task::spawn_blocking(move || lay_out_repository(&laid_out))
        .await
        .context("the repository task failed")?
        .context("laying out the repository")?;
    git_piped(dir, &["index-pack", "--stdin"], pack).await?;
    tokio::fs::write(git_dir.join("shallow"), format!("{sha}\n"))
        .await
        .context("marking the commit shallow")?;
    git(
        Some(dir),
        &["checkout", "-q", "--detach", &format!("{sha}^{{commit}}")],
    )
    .await
}

/// What `git init --template=` writes: an unborn `HEAD` (the checkout detaches it), the
/// configuration of a non-bare repository, and the object and ref directories.
fn lay_out_repository(git_dir: &Path) -> std::io::Result<()> {
    for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(git_dir.join(sub))?;
    }
    std::fs::write(git_dir.join("HEAD"), "ref: refs/heads/main\n")?;
    std::fs::write(
        git_dir.join("config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
         \tlogallrefupdates = true\n",
    )
}

/// Removes everything in `dir`, keeping `dir`: a workspace a failed checkout left half
/// made, before it is filled another way. Links are removed, never followed.
pub fn empty(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A fetch with `env` (the credential's header); its error without the credential's token
/// (git never repeats the header, but a strange server's message might).
async fn fetch(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    credential: Option<&plue_types::protocol::GitCredential>,
) -> anyhow::Result<()> {
    git_with(Some(dir), args, env)
        .await
        .map_err(|e| match credential {
            Some(c) => anyhow::anyhow!("{}", format!("{e:#}").replace(c.token(), "***")),
            None => e,
        })
}

/// Refuses anything git could read as an option (`-u...`, `--upload-pack=...`).
pub fn validate_git_source(url: &str, sha: &str) -> anyhow::Result<()> {
    if url.is_empty() || url.starts_with('-') {
        bail!("invalid repository URL '{url}': it must not be empty or start with '-'");
    }
    let hex = sha
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(7..=64).contains(&sha.len()) || !hex {
        bail!("invalid commit '{sha}': expected 7 to 64 lowercase hex digits");
    }
    Ok(())
}

/// Runs git non-interactively; a failure carries git's stderr.
///
/// The repository is the runner's own (made by `git init` here, before any step ran), so
/// its config is trusted, and so are the operator's system and global config (a credential
/// helper, a proxy). What the fetched tree names (`.gitattributes` drivers) runs only if
/// the operator defined it. The hardening settings still apply: no hook or fsmonitor runs.
/// Git is the runner's own, found once on its `PATH` ([`crate::program_path::git`]).
async fn git(dir: Option<&Path>, args: &[&str]) -> anyhow::Result<()> {
    git_with(dir, args, &[]).await
}

/// [`git`] in `dir` with `input` copied to its standard input as it arrives.
async fn git_piped(
    dir: &Path,
    args: &[&str],
    mut input: impl AsyncRead + Unpin,
) -> anyhow::Result<()> {
    let mut command = command(Some(dir), args, &[])?;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running git")?;
    let mut stdin = child.stdin.take().context("git's standard input")?;
    let copied = tokio::io::copy(&mut input, &mut stdin).await;
    drop(stdin);
    let output = child.wait_with_output().await.context("running git")?;
    let copied = copied.with_context(|| format!("reading the input of git {}", args.join(" ")));
    if !output.status.success() {
        bail!(
            "git {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    copied.map(|_| ())
}

/// [`git`] with `env` added to its environment (values never shown).
async fn git_with(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let output = command(dir, args, env)?
        .stdin(Stdio::null())
        .output()
        .await
        .context("running git")?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown: Vec<String> = args.iter().map(|arg| without_credentials(arg)).collect();
    bail!(
        "git {} failed ({}): {}",
        shown.join(" "),
        output.status,
        stderr.trim()
    )
}

/// The runner's git with the hardening settings, `args` and `env`, never prompting, in
/// `dir` when given, killed when dropped.
fn command(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Command> {
    let program = crate::program_path::git().map_err(anyhow::Error::msg)?;
    let mut command = Command::new(program);
    command.args(crate::git_sandbox::HARDENING_ARGS);
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "file:http:https:ssh:git")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in GIT_LOCATION_VARS {
        command.env_remove(var);
    }
    Ok(command)
}

#[cfg(test)]
mod tests;
