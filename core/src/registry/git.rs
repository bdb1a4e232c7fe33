//! Bare mirrors of repositories: one per repository under the data directory, fetched
//! incrementally (only the commits an event names, on top of what is already there), and
//! read without a work tree (`ls-tree`, `cat-file --batch`, `diff --name-only`).
//!
//! Invariants:
//! - Every argument that comes from a payload is validated (shas are hex, refs cannot be
//!   read as options) and passed after `--` where git allows it.
//! - git runs non-interactively with the caller's `GIT_DIR`-style variables removed, and
//!   is killed when the future is dropped or the timeout passes.
//! - A mirror given a credential ([`Mirror::with_credential`], or
//!   [`Mirror::with_forge_credential`]: a GitHub App's read-only installation token, asked
//!   of [`ForgeAuth`] at each fetch) sends it on its fetches from the repository's clone URL
//!   only (never a fork's), as git's `http.extraHeader` in `GIT_CONFIG_*` variables: never
//!   in a URL, an argument, the mirror's config or an error; and those fetches follow no
//!   HTTP redirect (git would send the header on to the host redirected to). A fetch whose
//!   installation token the forge refuses ([`plue_forge::auth::git_refused`]) is one
//!   exchange of [`ForgeAuth::renewing`]: that token is forgotten and the fetch made again
//!   with a new one, once.
//! - An anonymous mirror ([`Mirror::anonymous`]: a used module's repository, named by a
//!   workflow) reaches its remote with no credential of the engine's host at all: no
//!   global or system git configuration (credential helpers, `http.extraHeader`), no
//!   `~/.netrc`, no SSH (its keys and agent), only `file`, `http` and `https`; and it
//!   fetches the commits asked for without their history (`--depth=1`), so a huge
//!   repository a workflow names costs one commit's tree.
//! - One operation at a time per mirror: the caller ([`super::Registry`]) holds the
//!   mirror's lock, so concurrent deliveries for one repository never race on git's
//!   lock files.
//!
//! Why one file past ~600 lines: every git command the engine runs goes through this file's
//! one environment and argument checks; split, that one choke point would be several.

use plue_forge::auth::{git_refused, ForgeAuth, Refused, Token};
pub use plue_forge::git_names::{check_ref, is_full_sha};
use plue_store::RepoRow;
use plue_types::protocol::GitCredential;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Workflow files are those whose path ends with this.
pub const WORKFLOW_SUFFIX: &str = ".plue.py";
/// At most this many workflow files are read per commit.
pub const MAX_WORKFLOW_FILES: usize = 200;
/// The most of a commit message [`Mirror::commit_message`] reads.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How every fetch of commits into a mirror starts. No `maintenance run --auto` after it:
/// a mirror's `gc.auto` is 0, so it would only be one more process on a delivery's path.
const FETCH: [&str; 5] = [
    "fetch",
    "-q",
    "--no-tags",
    "--no-write-fetch-head",
    "--no-auto-maintenance",
];
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A workflow file at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    pub path: String,
    /// `None` when the blob is not UTF-8 (reported as an evaluation error).
    pub source: Option<String>,
}

/// What [`Mirror::shallow_pack`] made.
#[derive(Debug, PartialEq, Eq)]
pub enum Packed {
    Pack(Vec<u8>),
    /// The mirror does not hold the commit.
    NoCommit,
    /// The pack would pass the limit.
    TooLarge,
}

/// A bare repository mirroring one forge repository.
#[derive(Clone)]
pub struct Mirror {
    dir: PathBuf,
    /// The credential its fetches from one URL (the repository's clone URL) send, if any.
    credential: Option<(String, Credential)>,
    /// Its fetches carry no credential of the engine's host ([`Mirror::anonymous`]).
    anonymous: bool,
}

/// Where a mirror's credential comes from.
#[derive(Clone)]
enum Credential {
    /// This one, as given.
    Given(GitCredential),
    /// `repo`'s read-only installation token, asked of `auth` for each fetch (cached
    /// there) and renewed when the forge refuses it.
    Forge { auth: ForgeAuth, repo: Box<RepoRow> },
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = self.credential.as_ref().map(|(url, c)| match c {
            Credential::Given(given) => format!("{} {given:?}", shown(url)),
            Credential::Forge { repo, .. } => {
                format!("{} (read-code of {})", shown(url), repo.name)
            }
        });
        f.debug_struct("Mirror")
            .field("dir", &self.dir)
            .field("credential", &credential)
            .finish()
    }
}

impl Mirror {
    /// The mirror in `dir`, created (`git init --bare`) when missing. Created in a private
    /// directory beside it and renamed into place, so deliveries that open a new mirror at
    /// once (a push and its pull request event) never see half of one, nor race on its
    /// `config.lock`: the first rename wins and the others use its mirror.
    pub async fn open(dir: PathBuf) -> anyhow::Result<Mirror> {
        let mirror = Mirror {
            dir,
            credential: None,
            anonymous: false,
        };
        if mirror.dir.join("HEAD").exists() {
            return Ok(mirror);
        }
        let parent = mirror
            .dir
            .parent()
            .context("a mirror needs a parent directory")?;
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
        static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = mirror.dir.file_name().context("a mirror needs a name")?;
        let staging = Mirror {
            dir: parent.join(format!(
                ".{}.{}.{n}.new",
                name.to_string_lossy(),
                std::process::id()
            )),
            credential: None,
            anonymous: false,
        };
        let built = async {
            let path = staging.dir.to_str().context("mirror path is not UTF-8")?;
            git(None, &["init", "-q", "--bare", "--", path], LOCAL_TIMEOUT).await?;
            // Fetched commits are only referenced by FETCH_HEAD; never prune them.
            staging
                .run(&["config", "gc.auto", "0"], LOCAL_TIMEOUT)
                .await?;
            anyhow::Ok(())
        }
        .await;
        // An empty directory in the way (left by an older engine) is replaced by the rename.
        let placed = match built {
            Ok(()) => tokio::fs::rename(&staging.dir, &mirror.dir)
                .await
                .with_context(|| format!("placing {}", mirror.dir.display())),
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging.dir).await;
            if !mirror.dir.join("HEAD").exists() {
                placed?;
            }
        }
        Ok(mirror)
    }

    /// The mirror in `dir` if there is one: never made.
    pub fn existing(dir: PathBuf) -> Option<Mirror> {
        dir.join("HEAD").exists().then_some(Mirror {
            dir,
            credential: None,
            anonymous: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This mirror, its fetches from `url` (the repository's clone URL) sending
    /// `credential`, and no other (see the module doc).
    pub fn with_credential(mut self, url: &str, credential: Option<GitCredential>) -> Mirror {
        self.credential = credential.map(|c| (url.to_owned(), Credential::Given(c)));
        self
    }

    /// This mirror, its fetches from `repo`'s clone URL sending the read-only installation
    /// token `auth` gives `repo` ([`ForgeAuth::git_credential`]) when it is served as the
    /// GitHub App, renewed when the forge refuses it; nothing for any other repository,
    /// whose clone URL says all.
    pub fn with_forge_credential(mut self, auth: &ForgeAuth, repo: &RepoRow) -> Mirror {
        self.credential = auth.is_app(repo).then(|| {
            let source = Credential::Forge {
                auth: auth.clone(),
                repo: Box::new(repo.clone()),
            };
            (repo.clone_url.clone(), source)
        });
        self
    }

    /// This mirror, its remotes reached with no credential of the engine's host (and none
    /// given with [`Mirror::with_credential`]): for repositories a workflow names, which
    /// the engine must read only as anyone may.
    pub fn anonymous(mut self) -> Mirror {
        self.anonymous = true;
        self.credential = None;
        self
    }

    /// Runs a git command that reaches the remote `url`: with the credential's header in
    /// the environment when it is the credential's URL, and its token kept out of the
    /// error.
    async fn remote(&self, url: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        if self.anonymous {
            return git_with(Some(&self.dir), args, ANONYMOUS_ENV, None, FETCH_TIMEOUT).await;
        }
        let credential = match &self.credential {
            Some((own, credential)) if own == url => credential,
            // A fork's URL (a pull request's head) never gets the repository's token.
            _ => return git(Some(&self.dir), args, FETCH_TIMEOUT).await,
        };
        let (auth, repo) = match credential {
            Credential::Given(given) => return self.remote_with(args, given).await,
            Credential::Forge { auth, repo } => (auth, repo),
        };
        auth.renewing(repo, || async {
            let credential = auth
                .git_credential(repo)
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("reading {}", repo.name)))?
                .with_context(|| format!("{} has no read credential any more", repo.name))?;
            self.remote_with(args, &credential).await
        })
        .await
    }

    /// A git command reaching the remote with `credential`'s header; a refusal of its token
    /// is a [`Refused`] error carrying it.
    async fn remote_with(
        &self,
        args: &[&str],
        credential: &GitCredential,
    ) -> anyhow::Result<Vec<u8>> {
        let header = credential.header();
        // No redirect followed: git sends the rest of an exchange whose first request was
        // redirected to the host redirected to, the extra header with it.
        let env = [
            ("GIT_CONFIG_COUNT", "2"),
            ("GIT_CONFIG_KEY_0", "http.extraHeader"),
            ("GIT_CONFIG_VALUE_0", header.as_str()),
            ("GIT_CONFIG_KEY_1", "http.followRedirects"),
            ("GIT_CONFIG_VALUE_1", "false"),
        ];
        git_with(Some(&self.dir), args, &env, None, FETCH_TIMEOUT)
            .await
            .map_err(|e| {
                let said = format!("{e:#}").replace(credential.token(), "***");
                if git_refused(&said) {
                    let token = Token::new(credential.token().to_string());
                    return anyhow::Error::new(Refused::new(said, token));
                }
                anyhow::anyhow!(said)
            })
    }

    /// Fetches `wants` (full shas or ref names) from `url` unless every sha among them is
    /// already here. Refs are always fetched (they move).
    pub async fn fetch(&self, url: &str, wants: &[&str]) -> anyhow::Result<()> {
        check_url(url)?;
        let mut missing = Vec::new();
        for want in wants {
            if is_full_sha(want) {
                if !self.has_commit(want).await {
                    missing.push(*want);
                }
            } else {
                check_ref(want)?;
                missing.push(*want);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut args = FETCH.to_vec();
        if self.anonymous {
            // A repository a workflow names may be as large as its author likes: only the
            // commits asked for come, not their history.
            args.push("--depth=1");
        }
        args.extend(["--", url]);
        args.extend(missing.iter().copied());
        self.remote(url, &args)
            .await
            .with_context(|| format!("fetching {} from {}", missing.join(" "), shown(url)))?;
        Ok(())
    }

    /// Fetches commit `sha` from a pull request's fork at `url` (built by the caller from
    /// the repository's own clone URL, never taken from a payload) unless it is here: with no
    /// credential of the engine's host (as [`Mirror::anonymous`]: no global or system
    /// configuration, no `~/.netrc`, no SSH, only `file`, `http` and `https`), and with its
    /// history (the pull request's changed files are read from its merge base).
    pub async fn fetch_fork(&self, url: &str, sha: &str) -> anyhow::Result<()> {
        check_url(url)?;
        check_sha(sha)?;
        if self.has_commit(sha).await {
            return Ok(());
        }
        let mut args = FETCH.to_vec();
        args.extend(["--", url, sha]);
        git_with(Some(&self.dir), &args, ANONYMOUS_ENV, None, FETCH_TIMEOUT)
            .await
            .with_context(|| format!("fetching {sha} from the fork {}", shown(url)))?;
        Ok(())
    }

    /// The commit `git_ref` (a branch, tag, `refs/...` or sha) points at in `url`.
    pub async fn resolve(&self, url: &str, git_ref: &str) -> anyhow::Result<String> {
        check_url(url)?;
        if is_full_sha(git_ref) {
            self.fetch(url, &[git_ref]).await?;
            return Ok(git_ref.to_string());
        }
        check_ref(git_ref)?;
        self.remote(url, &["fetch", "-q", "--no-tags", "--", url, git_ref])
            .await
            .with_context(|| format!("fetching '{git_ref}' from {}", shown(url)))?;
        let sha = self
            .output(&["rev-parse", "--verify", "-q", "FETCH_HEAD^{commit}"])
            .await
            .with_context(|| format!("'{git_ref}' is not a commit"))?;
        Ok(sha.trim().to_string())
    }

    /// The branch `HEAD` of `url` points at (its default branch).
    pub async fn remote_head_branch(&self, url: &str) -> anyhow::Result<String> {
        self.remote_head(url)
            .await?
            .with_context(|| format!("{} does not say which branch HEAD is", shown(url)))
    }

    /// The branch `HEAD` of `url` points at; `None` when it names none (an empty
    /// repository, a detached `HEAD`). An error: `url` could not be read.
    pub async fn remote_head(&self, url: &str) -> anyhow::Result<Option<String>> {
        check_url(url)?;
        let listing = self
            .remote(url, &["ls-remote", "--symref", "--", url, "HEAD"])
            .await
            .with_context(|| format!("reading HEAD of {}", shown(url)))?;
        let listing = String::from_utf8_lossy(&listing);
        Ok(listing
            .lines()
            .find_map(|line| line.strip_prefix("ref: refs/heads/"))
            .and_then(|rest| rest.split('\t').next())
            .map(String::from))
    }

    pub async fn has_commit(&self, sha: &str) -> bool {
        is_full_sha(sha)
            && self
                .run(
                    &["cat-file", "-e", &format!("{sha}^{{commit}}")],
                    LOCAL_TIMEOUT,
                )
                .await
                .is_ok()
    }

    /// Every `*.plue.py` file at `sha`, sorted by path, with its content. Only regular
    /// files are read, by object id (a submodule or a link named `*.plue.py`, or a path
    /// holding a newline, cannot make the read of the others fail); a blob over
    /// [`MAX_WORKFLOW_BYTES`] is listed without its content, never read into memory.
    pub async fn workflow_files(&self, sha: &str) -> anyhow::Result<Vec<WorkflowFile>> {
        check_sha(sha)?;
        let listing = self.output(&["ls-tree", "-r", "-z", "-l", sha]).await?;
        let mut entries: Vec<(&str, &str, usize)> = listing
            .split('\0')
            .filter_map(parse_tree_entry)
            .filter(|(path, _, _)| path.ends_with(WORKFLOW_SUFFIX))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if entries.len() > MAX_WORKFLOW_FILES {
            bail!(
                "{} workflow files at {sha}; at most {MAX_WORKFLOW_FILES} are read",
                entries.len()
            );
        }
        let wanted: Vec<&str> = entries
            .iter()
            .filter(|(_, _, size)| *size <= MAX_WORKFLOW_BYTES)
            .map(|(_, oid, _)| *oid)
            .collect();
        let mut blobs = if wanted.is_empty() {
            Vec::new()
        } else {
            let input: String = wanted.iter().map(|oid| format!("{oid}\n")).collect();
            let output = self.batch(input).await?;
            parse_batch(&output, wanted.len())?
        }
        .into_iter();
        Ok(entries
            .into_iter()
            .map(|(path, _, size)| WorkflowFile {
                path: path.to_string(),
                source: if size <= MAX_WORKFLOW_BYTES {
                    blobs.next().and_then(|blob| String::from_utf8(blob).ok())
                } else {
                    None
                },
            })
            .collect())
    }

    /// The text of the regular file `path` at `sha`: `Ok(None)` when there is none (or it is
    /// a link, a submodule or a tree), an error when it is over `max_bytes` (never read into
    /// memory) or not UTF-8. For a used module and the lock file ([`super::modules`]).
    pub async fn read_file(
        &self,
        sha: &str,
        path: &str,
        max_bytes: usize,
    ) -> anyhow::Result<Option<String>> {
        check_sha(sha)?;
        let plain = !path.is_empty()
            && !path.starts_with(['/', '-'])
            && path
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..");
        if !plain {
            bail!("'{path}' is not a plain relative path");
        }
        // `^{commit}`: a tree's or a blob's id (a `use(commit=)` that names no commit) is
        // refused, never listed as if it were one.
        let commit = format!("{sha}^{{commit}}");
        let listing = self
            .output(&["ls-tree", "-z", "-l", &commit, "--", path])
            .await
            .with_context(|| format!("{sha} is not a commit here"))?;
        let Some((_, oid, size)) = listing
            .split('\0')
            .filter_map(parse_tree_entry)
            .find(|(listed, _, _)| *listed == path)
        else {
            return Ok(None);
        };
        if size > max_bytes {
            bail!("{path} is {size} bytes; the limit is {max_bytes}");
        }
        let blob = self.batch(format!("{oid}\n")).await?;
        let blob = parse_batch(&blob, 1)?
            .pop()
            .context("cat-file gave no blob")?;
        String::from_utf8(blob)
            .map(Some)
            .with_context(|| format!("{path} is not UTF-8"))
    }

    /// Paths that differ between two commits (`from` may be a merge-base expression).
    pub async fn changed_files(&self, from: &str, to: &str) -> anyhow::Result<Vec<String>> {
        check_sha(from)?;
        check_sha(to)?;
        let listing = self
            .output(&["diff", "--name-only", "-z", "--no-renames", from, to])
            .await?;
        Ok(split_paths(&listing))
    }

    /// Paths a pull request changes: from the merge base of `base` and `head` to `head`.
    pub async fn pull_request_files(&self, base: &str, head: &str) -> anyhow::Result<Vec<String>> {
        check_sha(base)?;
        check_sha(head)?;
        let range = format!("{base}...{head}");
        let listing = self
            .output(&["diff", "--name-only", "-z", "--no-renames", &range])
            .await?;
        Ok(split_paths(&listing))
    }

    /// Paths a commit changes against its first parent (every path for a root commit).
    pub async fn commit_files(&self, sha: &str) -> anyhow::Result<Vec<String>> {
        check_sha(sha)?;
        let listing = self
            .output(&[
                "diff-tree",
                "--root",
                "--no-commit-id",
                "-r",
                "-z",
                "--name-only",
                "--no-renames",
                sha,
            ])
            .await?;
        Ok(split_paths(&listing))
    }

    /// The message of commit `sha` (lossily decoded, at most [`MAX_MESSAGE_BYTES`]; `None`
    /// when the mirror does not hold the commit).
    pub async fn commit_message(&self, sha: &str) -> anyhow::Result<Option<String>> {
        check_sha(sha)?;
        if !self.has_commit(sha).await {
            return Ok(None);
        }
        let bytes = git(Some(&self.dir), &["cat-file", "commit", sha], LOCAL_TIMEOUT).await?;
        // A commit object is its headers, an empty line, then the message.
        let message = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(&[][..], |at| &bytes[at + 2..]);
        let message = &message[..message.len().min(MAX_MESSAGE_BYTES)];
        Ok(Some(
            String::from_utf8_lossy(message).trim_end().to_string(),
        ))
    }

    /// A pack of commit `sha` and every object of its tree, without its history: what a
    /// fetch of depth 1 receives (pack-objects' `--shallow` line cuts the commit's parents
    /// off); none when the mirror holds no commit object `sha` (a tag's id is not
    /// peeled) or the pack would pass `max_bytes` (git is stopped as soon as it does).
    /// One thread of git's: the engine's cores serve everything else meanwhile.
    pub async fn shallow_pack(&self, sha: &str, max_bytes: usize) -> anyhow::Result<Packed> {
        check_sha(sha)?;
        let kind = git(Some(&self.dir), &["cat-file", "-t", sha], LOCAL_TIMEOUT).await;
        if !kind.is_ok_and(|kind| kind == b"commit\n") {
            return Ok(Packed::NoCommit);
        }
        let mut child = command(Some(&self.dir))
            .args([
                "-c",
                "pack.threads=1",
                "pack-objects",
                "--revs",
                "--stdout",
                "-q",
                "--delta-base-offset",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running git pack-objects")?;
        let mut stdin = child.stdin.take().context("git stdin")?;
        let mut stdout = child.stdout.take().context("git stdout")?;
        let mut stderr = child.stderr.take().context("git stderr")?;
        let input = format!("--shallow {sha}\n{sha}\n");
        let made = async {
            use tokio::io::AsyncReadExt;
            let write = async {
                stdin.write_all(input.as_bytes()).await?;
                drop(stdin);
                std::io::Result::Ok(())
            };
            let (mut pack, mut said) = (Vec::new(), Vec::new());
            let mut stdout = (&mut stdout).take(max_bytes as u64 + 1);
            let mut stderr = (&mut stderr).take(64 * 1024);
            // Its standard error is read once the pack is (with `-q` it says nothing but a
            // failure, far less than a pipe holds): read alongside, it would keep the join
            // waiting on a git blocked writing a pack too large to read to its end.
            let (written, read) = tokio::join!(write, stdout.read_to_end(&mut pack));
            read.context("reading git pack-objects")?;
            if pack.len() > max_bytes {
                return anyhow::Ok(Packed::TooLarge);
            }
            written.context("writing to git pack-objects")?;
            stderr
                .read_to_end(&mut said)
                .await
                .context("reading git's errors")?;
            let status = child.wait().await.context("waiting for git pack-objects")?;
            if !status.success() {
                bail!(
                    "git pack-objects failed ({status}): {}",
                    String::from_utf8_lossy(&said).trim()
                );
            }
            Ok(Packed::Pack(pack))
        };
        // Too large or too slow: the child is killed when dropped (`kill_on_drop`).
        tokio::time::timeout(LOCAL_TIMEOUT, made)
            .await
            .with_context(|| format!("packing {sha} timed out after {LOCAL_TIMEOUT:?}"))?
            .with_context(|| format!("packing {sha} for a checkout"))
    }

    async fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<()> {
        git(Some(&self.dir), args, timeout).await.map(|_| ())
    }

    async fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let bytes = git(Some(&self.dir), args, LOCAL_TIMEOUT).await?;
        String::from_utf8(bytes).context("git printed something that is not UTF-8")
    }

    async fn batch(&self, input: String) -> anyhow::Result<Vec<u8>> {
        let mut child = command(Some(&self.dir))
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running git cat-file")?;
        let mut stdin = child.stdin.take().context("git stdin")?;
        let writer = tokio::spawn(async move {
            let written = stdin.write_all(input.as_bytes()).await;
            drop(stdin);
            written
        });
        let output = tokio::time::timeout(LOCAL_TIMEOUT, child.wait_with_output())
            .await
            .context("git cat-file timed out")??;
        writer.await.context("git stdin writer")??;
        if !output.status.success() {
            bail!(
                "git cat-file failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output.stdout)
    }
}

/// The largest workflow file read; the evaluator refuses far smaller ones.
pub const MAX_WORKFLOW_BYTES: usize = 1024 * 1024;

/// One `ls-tree -l` entry of a regular file: (path, object id, size). Submodules, links
/// and trees are `None`.
fn parse_tree_entry(entry: &str) -> Option<(&str, &str, usize)> {
    let (meta, path) = entry.split_once('\t')?;
    let mut fields = meta.split_ascii_whitespace();
    let (mode, kind, oid, size) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let regular = kind == "blob" && (mode == "100644" || mode == "100755");
    (regular && is_full_sha(oid)).then_some((path, oid, size.parse().ok()?))
}

/// Splits `cat-file --batch` output into `count` blob contents.
fn parse_batch(mut output: &[u8], count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut blobs = Vec::with_capacity(count);
    for _ in 0..count {
        let end = output
            .iter()
            .position(|b| *b == b'\n')
            .context("truncated cat-file output")?;
        let header = std::str::from_utf8(&output[..end]).context("cat-file header")?;
        let mut fields = header.split(' ');
        let (_oid, kind, size) = (fields.next(), fields.next(), fields.next());
        if kind != Some("blob") {
            bail!("cat-file: {header}");
        }
        let size: usize = size.and_then(|s| s.parse().ok()).context("cat-file size")?;
        let body = &output[end + 1..];
        if body.len() < size + 1 {
            bail!("truncated cat-file output");
        }
        blobs.push(body[..size].to_vec());
        output = &body[size + 1..];
    }
    Ok(blobs)
}

fn split_paths(listing: &str) -> Vec<String> {
    listing
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn check_sha(sha: &str) -> anyhow::Result<()> {
    if !is_full_sha(sha) {
        bail!("invalid commit '{sha}': expected 40 or 64 lowercase hex digits");
    }
    Ok(())
}

/// `url` as errors show it: without credentials (they reach dispatchers and the forge).
fn shown(url: &str) -> String {
    plue_forge::without_credentials(url)
}

fn check_url(url: &str) -> anyhow::Result<()> {
    runner::workspace::validate_git_source(url, &"0".repeat(40))
}

/// What of the engine's environment git gets besides `PATH`, `LANG`, `LC_ALL` and `TZ`:
/// where it finds its configuration and how it reaches the network — never a credential
/// (a git process is a child of the engine that steps running as the same user could
/// otherwise read the engine's tokens from).
const GIT_ENV: &[&str] = &[
    "HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "GIT_SSH_COMMAND",
    "SSH_AUTH_SOCK",
];

/// What an anonymous mirror's git gets on top of [`command`]'s environment: a home with
/// nothing in it (no `~/.gitconfig`, `~/.git-credentials`, `~/.netrc`), no system or
/// global configuration, no credential helper, no SSH agent or command, and no transport
/// that would use the host's SSH keys.
const ANONYMOUS_ENV: &[(&str, &str)] = &[
    ("HOME", "/nonexistent/plue-anonymous-git"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_ALLOW_PROTOCOL", "file:http:https"),
    ("SSH_AUTH_SOCK", ""),
    ("GIT_SSH_COMMAND", "false"),
    ("GIT_CONFIG_COUNT", "1"),
    ("GIT_CONFIG_KEY_0", "credential.helper"),
    ("GIT_CONFIG_VALUE_0", ""),
];

fn command(dir: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    let passed: Vec<String> = GIT_ENV.iter().map(|name| name.to_string()).collect();
    let base = runner::step_env::Base::minimal_with(std::env::vars(), &passed);
    command
        .env_clear()
        .envs(base.vars())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "file:http:https:ssh:git")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in runner::workspace::GIT_LOCATION_VARS {
        command.env_remove(var);
    }
    command
}

/// Runs git; a failure carries its stderr. Returns stdout.
async fn git(dir: Option<&Path>, args: &[&str], timeout: Duration) -> anyhow::Result<Vec<u8>> {
    git_with(dir, args, &[], None, timeout).await
}

/// Runs git like [`git`] with `env` added (values never appear in errors) and `input` on
/// its standard input: for callers that build commits in a mirror with a private index or
/// push with a credential in `GIT_CONFIG_*` (the safe-output applier).
pub(crate) async fn git_with(
    dir: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let mut command = command(dir);
    command.args(args).envs(env.iter().copied());
    let output = async {
        let Some(input) = input else {
            return command.output().await;
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        let writer = tokio::spawn(async move { stdin.write_all(&input).await });
        let output = child.wait_with_output().await;
        let _ = writer.await;
        output
    };
    let output = tokio::time::timeout(timeout, output)
        .await
        .with_context(|| format!("git {} timed out after {timeout:?}", args.join(" ")))?
        .context("running git")?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    bail!(
        "git {} failed ({}): {}",
        args.first().copied().unwrap_or_default(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

#[cfg(test)]
#[path = "git_refusal_tests.rs"]
mod refusal_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sh(dir: &Path, script: &str) -> String {
        let out = std::process::Command::new("bash")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    // The attack (issue 29): a failed fetch's error — the refusal a writer's dispatch gets —
    // repeated the clone URL with the credentials it holds.
    #[tokio::test]
    async fn a_failed_fetch_never_repeats_the_urls_credentials() {
        let tmp = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(tmp.path().join("m.git")).await.unwrap();
        let url = "http://bot:s3cr3t@127.0.0.1:1/acme/app.git";
        let errors = [
            mirror.resolve(url, "main").await.unwrap_err(),
            mirror.fetch(url, &["main"]).await.unwrap_err(),
            mirror.remote_head_branch(url).await.unwrap_err(),
        ];
        for error in errors {
            let text = format!("{error:#}");
            assert!(text.contains("127.0.0.1:1"), "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    // The attack: the forge redirects the mirror's fetch to another host; git follows the
    // first request's redirect and sends the rest there with every `http.extraHeader`.
    #[tokio::test]
    async fn a_mirrors_credential_never_follows_a_redirect_to_another_host() {
        use testkit::redirect_trap::RedirectTrap;
        let trap = RedirectTrap::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let credential = plue_types::protocol::GitCredential::new("ghs_trapped".into());
        let basic = credential.header().replace("Authorization: ", "");
        let mirror = Mirror::open(tmp.path().join("m.git"))
            .await
            .unwrap()
            .with_credential(&trap.url("acme/app.git"), Some(credential));
        let url = trap.url("acme/app.git");
        let _ = mirror.fetch(&url, &[RedirectTrap::SHA]).await;
        let _ = mirror.fetch(&url, &["main"]).await;
        let _ = mirror.resolve(&url, "main").await;
        let _ = mirror.remote_head_branch(&url).await;
        assert!(
            !trap.authorizations().contains(&basic),
            "the token reached the host redirected to: {:?}",
            trap.authorizations()
        );
    }

    // The attack: a pull request's head lives in a fork at another URL; the mirror fetched
    // it with the repository's installation token in its header, wherever it was.
    #[tokio::test]
    async fn a_mirrors_credential_goes_to_its_repositorys_url_only() {
        use testkit::redirect_trap::RedirectTrap;
        let trap = RedirectTrap::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let credential = plue_types::protocol::GitCredential::new("ghs_trapped".into());
        let basic = credential.header().replace("Authorization: ", "");
        let mirror = Mirror::open(tmp.path().join("m.git"))
            .await
            .unwrap()
            .with_credential("http://127.0.0.1:1/acme/app.git", Some(credential.clone()));
        let fork = trap.trap_url("mallory/app.git");
        let _ = mirror.fetch(&fork, &[RedirectTrap::SHA]).await;
        let _ = mirror.resolve(&fork, "main").await;
        let _ = mirror.remote_head_branch(&fork).await;
        assert!(
            !trap.authorizations().contains(&basic),
            "the token reached another repository's host: {:?}",
            trap.authorizations()
        );
        // The repository's own URL does get it.
        let own = mirror.with_credential(&fork, Some(credential));
        let _ = own.remote_head_branch(&fork).await;
        assert!(trap.authorizations().contains(&basic));
    }

    // The attack (issue 52): a workflow `use`s a private repository beside its own on the
    // forge; the engine's host has credentials for it in its git configuration (a
    // credential helper, an `http.extraHeader`, a URL rewrite adding a user) or its SSH
    // keys. An anonymous mirror's git sees none of that configuration, and no SSH.
    #[tokio::test]
    async fn an_anonymous_mirror_uses_no_credential_of_the_host() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join(".gitconfig"),
            "[credential]\n\thelper = store\n[http]\n\textraHeader = Authorization: Basic aG9zdDpzZWNyZXQ=\n\
             [url \"https://bot:secret@forge.example/\"]\n\tinsteadOf = https://forge.example/\n",
        )
        .unwrap();
        let listed = |anonymous: bool| {
            let mut git = std::process::Command::new("git");
            git.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", home.path());
            if anonymous {
                git.envs(ANONYMOUS_ENV.iter().copied());
            }
            let out = git.args(["config", "--list"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        };
        // The host's configuration is there for git run as the engine runs it...
        let host = listed(false);
        assert!(host.contains("credential.helper=store"), "{host}");
        assert!(host.contains("http.extraheader"), "{host}");
        // ...and not for an anonymous mirror's.
        let anonymous = listed(true);
        assert!(!anonymous.contains("helper=store"), "{anonymous}");
        assert!(!anonymous.contains("extraheader"), "{anonymous}");
        assert!(!anonymous.contains("secret"), "{anonymous}");
        assert!(!anonymous.contains("insteadof"), "{anonymous}");
        // No SSH: the host's keys and agent would be a credential.
        let tmp = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(tmp.path().join("m.git"))
            .await
            .unwrap()
            .anonymous();
        let refused = mirror
            .fetch("ssh://git@127.0.0.1:1/victim/private.git", &["main"])
            .await
            .unwrap_err();
        let refused = format!("{refused:#}");
        assert!(refused.contains("not allowed"), "{refused}");
        // A local repository is still read (plue run's modules directory).
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let sha = sh(
            &src,
            "git init -q -b main . && echo a > m.plue.py && git add -A && git commit -qm one \
             && git rev-parse HEAD",
        );
        sh(&src, "echo b > m.plue.py && git commit -qam two");
        let tip = sh(&src, "git rev-parse HEAD");
        mirror.fetch(src.to_str().unwrap(), &[&tip]).await.unwrap();
        assert!(mirror.has_commit(&tip).await);
        // Without its history: a commit asked for brings no older one along.
        let fresh = Mirror::open(tmp.path().join("fresh.git"))
            .await
            .unwrap()
            .anonymous();
        fresh.fetch(src.to_str().unwrap(), &[&tip]).await.unwrap();
        assert!(fresh.has_commit(&tip).await);
        assert!(!fresh.has_commit(&sha).await, "history came along");
        let read = fresh.read_file(&tip, "m.plue.py", 64).await.unwrap();
        assert_eq!(read.as_deref(), Some("b\n"));
    }

    // The attack: `use(..., commit=<40 hex>)` naming a tree (or a blob) of the module's
    // repository instead of a commit; it is refused, not read as one.
    #[tokio::test]
    async fn read_file_reads_commits_only() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let commit = sh(
            &src,
            "git init -q -b main . && echo a > m.plue.py && git add -A && git commit -qm one \
             && git rev-parse HEAD",
        );
        let tree = sh(&src, "git rev-parse 'HEAD^{tree}'");
        let blob = sh(&src, "git rev-parse HEAD:m.plue.py");
        let mirror = Mirror::open(tmp.path().join("m.git")).await.unwrap();
        mirror
            .fetch(src.to_str().unwrap(), &[&commit])
            .await
            .unwrap();
        let read = mirror.read_file(&commit, "m.plue.py", 1024).await.unwrap();
        assert_eq!(read.as_deref(), Some("a\n"));
        for not_a_commit in [&tree, &blob] {
            let refused = mirror
                .read_file(not_a_commit, "m.plue.py", 1024)
                .await
                .unwrap_err();
            assert!(
                format!("{refused:#}").contains("is not a commit"),
                "{refused:#}"
            );
        }
    }

    #[tokio::test]
    async fn mirrors_fetch_commits_and_read_workflow_files() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let first = sh(
            &src,
            "git init -q -b main . && mkdir -p .plue sub && echo 'a' > .plue/ci.plue.py \
             && printf 'b\\n' > sub/x.plue.py && echo no > notes.py && git add -A \
             && git commit -qm one && git rev-parse HEAD",
        );
        let second = sh(
            &src,
            "git checkout -q -b feature && echo c > sub/x.plue.py && echo d > new.txt \
             && git add -A && git commit -qm two && git rev-parse HEAD",
        );
        let mirror = Mirror::open(tmp.path().join("m.git")).await.unwrap();
        let url = src.to_str().unwrap();
        mirror.fetch(url, &[&second]).await.unwrap();
        assert!(mirror.has_commit(&first).await, "history comes along");
        let files = mirror.workflow_files(&second).await.unwrap();
        assert_eq!(
            files,
            vec![
                WorkflowFile {
                    path: ".plue/ci.plue.py".into(),
                    source: Some("a\n".into())
                },
                WorkflowFile {
                    path: "sub/x.plue.py".into(),
                    source: Some("c\n".into())
                },
            ]
        );
        assert_eq!(
            mirror.changed_files(&first, &second).await.unwrap(),
            vec!["new.txt", "sub/x.plue.py"]
        );
        assert_eq!(
            mirror.pull_request_files(&first, &second).await.unwrap(),
            vec!["new.txt", "sub/x.plue.py"]
        );
        assert_eq!(
            mirror.commit_files(&first).await.unwrap(),
            vec![".plue/ci.plue.py", "notes.py", "sub/x.plue.py"]
        );
        assert_eq!(mirror.resolve(url, "main").await.unwrap(), first);
        assert_eq!(
            mirror.resolve(url, "refs/heads/feature").await.unwrap(),
            second
        );
        assert!(mirror.resolve(url, "nope").await.is_err());
        assert_eq!(mirror.remote_head_branch(url).await.unwrap(), "feature");
    }

    /// A push that carries a submodule and a link named like workflows, a path with a
    /// newline and an oversized file beside a valid workflow: the valid one is read.
    #[tokio::test]
    async fn odd_entries_never_keep_the_other_workflows_from_being_read() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let oid = sh(&src, "git init -q -b main . && echo 'ok' > good.plue.py && git add -A && git commit -qm one && git rev-parse HEAD");
        let sha = sh(
            &src,
            &format!(
                "git update-index --add --cacheinfo 160000,{oid},sub.plue.py \
                 && ln -s /etc/shadow link.plue.py && printf 'x' > \"$(printf 'new\\nline.plue.py')\" \
                 && head -c 1100000 /dev/zero > big.plue.py && git add -A && git commit -qm two && git rev-parse HEAD"
            ),
        );
        let mirror = Mirror::open(tmp.path().join("m.git")).await.unwrap();
        mirror.fetch(src.to_str().unwrap(), &[&sha]).await.unwrap();
        let files = mirror.workflow_files(&sha).await.unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["big.plue.py", "good.plue.py", "new\nline.plue.py"]
        );
        assert_eq!(files[0].source, None, "too large: not read");
        assert_eq!(files[1].source.as_deref(), Some("ok\n"));
        assert_eq!(files[2].source.as_deref(), Some("x"));
    }

    /// Deliveries that open a new mirror at once (GitHub sends a push and its pull request
    /// event together) all get it; none fails on the mirror's `config.lock`.
    #[tokio::test]
    async fn a_new_mirror_opened_at_once_by_many_deliveries_is_one_mirror() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mirrors").join("7.git");
        let opens = (0..8).map(|_| Mirror::open(dir.clone()));
        for opened in futures::future::join_all(opens).await {
            opened.expect("every delivery gets the mirror");
        }
        assert!(dir.join("HEAD").exists());
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("mirrors"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("7.git")],
            "no staging left"
        );
    }

    #[tokio::test]
    async fn payload_values_cannot_become_options() {
        let tmp = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(tmp.path().join("m.git")).await.unwrap();
        let marker = tmp.path().join("pwned");
        let evil_url = format!("--upload-pack=touch {}", marker.display());
        assert!(mirror.fetch(&evil_url, &["main"]).await.is_err());
        for evil_ref in ["--upload-pack=x", "+main:refs/heads/x", "a b", "main:x", ""] {
            assert!(
                mirror
                    .fetch(tmp.path().to_str().unwrap(), &[evil_ref])
                    .await
                    .is_err(),
                "{evil_ref}"
            );
        }
        assert!(mirror.workflow_files("--all").await.is_err());
        assert!(!marker.exists());
    }
}
