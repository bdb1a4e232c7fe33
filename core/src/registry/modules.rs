//! Where the engine fetches used modules (`use(...)`, [`evaluator::modules`]) from: one
//! bare mirror per module repository ([`Mirror`]), the repository's URL being its
//! `owner/name` under a base — beside the calling repository on its forge for `plue serve`
//! ([`ModuleMirrors::beside`]: `https://forge/acme/app.git` uses
//! `https://forge/acme/plue-steps.git`), a URL or a directory of repositories for
//! `plue run`, `plue check` and `plue lock`. The registry's part, reading the calling
//! repository's lock file at the evaluated commit, is `Registry::evaluate_source`.
//!
//! Invariants:
//! - only what [`evaluator::modules`] accepts is fetched (an `owner/name` that cannot climb
//!   out of the base, a `*.plue.py` path, a full commit or a checked ref), through the
//!   mirror's one git choke point (`git.rs`: no option injection, no credential in an
//!   argument or an error);
//! - a module repository's fetches carry no credential: the calling repository's token
//!   is sent only to its own clone URL, the base drops the clone URL's user and password,
//!   and the module mirrors are anonymous ([`Mirror::anonymous`]: none of the host's git
//!   configuration, `~/.netrc` or SSH keys), so modules are public repositories (or ones
//!   the forge serves without a token) — a fork's pull request cannot read a private
//!   repository through the engine;
//! - a module repository is mirrored per base: what one forge served is never read as
//!   another's;
//! - one git operation at a time over all module mirrors (one lock in the process), so
//!   evaluations that use the same module at once never race on git's lock files.

use std::path::PathBuf;

use evaluator::modules::lock::{LockFile, MAX_LOCK_BYTES};
use evaluator::modules::{check_repository, ModuleFetcher, Modules, LOCK_FILE};
use evaluator::{Diagnostic, EvalContext, EvalError, EvaluatedPlan};
use futures::future::BoxFuture;

use super::git::Mirror;
use super::Registry;

/// One git operation at a time over every module mirror of the process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Module repositories under `base`, mirrored below `dir`.
pub struct ModuleMirrors {
    base: String,
    /// `.git` when the calling repository's clone URL has it, so its forge's spelling.
    suffix: &'static str,
    dir: PathBuf,
    /// Fetched with no credential of the host (`plue serve`: the workflow is not the
    /// host's); `plue run`, `check` and `lock` use the user's own git set-up.
    anonymous: bool,
}

impl ModuleMirrors {
    /// Modules are read from `<base>/<owner>/<name>` (a URL or a directory) and mirrored in
    /// `dir/<owner>/<name>.git`.
    pub fn new(base: impl Into<String>, dir: PathBuf) -> ModuleMirrors {
        ModuleMirrors {
            base: base.into(),
            suffix: "",
            dir,
            anonymous: false,
        }
    }

    /// The module repositories beside the calling repository whose clone URL is
    /// `clone_url` (its last two path parts replaced by the module's `owner/name`);
    /// `None` when the URL has no `owner/name` to replace.
    pub fn beside(clone_url: &str, dir: PathBuf) -> Option<ModuleMirrors> {
        let (base, suffix) = base_of(clone_url)?;
        Some(ModuleMirrors {
            base,
            suffix,
            dir,
            anonymous: true,
        })
    }

    /// The URL (or path) of `repository`.
    pub fn url(&self, repository: &str) -> String {
        format!(
            "{}/{repository}{}",
            self.base.trim_end_matches('/'),
            self.suffix
        )
    }

    /// Where `repository` is mirrored: below a directory of its base's own (the hash of
    /// the base), so a commit fetched from one forge is never read as another forge's
    /// repository of the same `owner/name` (one served only inside a network would
    /// otherwise be read by a workflow of a repository on a public forge, by its commit).
    fn mirror_dir(&self, repository: &str) -> PathBuf {
        use sha2::Digest;
        let base = hex::encode(&sha2::Sha256::digest(self.base.as_bytes())[..8]);
        self.dir.join(base).join(format!("{repository}.git"))
    }

    async fn mirror(&self, repository: &str) -> anyhow::Result<(Mirror, String)> {
        check_repository(repository).map_err(anyhow::Error::msg)?;
        let url = self.url(repository);
        let mirror = Mirror::open(self.mirror_dir(repository)).await?;
        let mirror = if self.anonymous {
            mirror.anonymous()
        } else {
            mirror
        };
        Ok((mirror, url))
    }
}

/// `base` without the user and password a clone URL may carry (`https://bot:tok@forge`
/// is `https://forge`): the calling repository's credential never goes to a module's.
/// What is left of `clone_url` without its `owner/name` (and without the userinfo of a
/// URL), and its `.git` suffix if it has one; `None` when it has no `owner/name`.
fn base_of(clone_url: &str) -> Option<(String, &'static str)> {
    let trimmed = clone_url.trim_end_matches('/');
    let (trimmed, suffix) = match trimmed.strip_suffix(".git") {
        Some(bare) => (bare, ".git"),
        None => (trimmed, ""),
    };
    let base = without_userinfo(trimmed.rsplitn(3, '/').nth(2)?);
    (!base.is_empty() && !base.ends_with(':') && !base.ends_with('/')).then_some((base, suffix))
}

/// The clone URL of repository `owner_name` (a plain `owner/name`, checked by the caller)
/// beside the repository whose clone URL is `clone_url`: its `owner/name` replaced, its
/// userinfo dropped (no credential of it goes to another repository).
pub(crate) fn sibling_url(clone_url: &str, owner_name: &str) -> Option<String> {
    let (base, suffix) = base_of(clone_url)?;
    Some(format!(
        "{}/{owner_name}{suffix}",
        base.trim_end_matches('/')
    ))
}

fn without_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => base.to_string(),
    }
}

impl Registry {
    /// Evaluates `source` (the file `path` of repository `ctx.repo` at `ctx.sha`) with the
    /// modules it `use`s fetched beside the repository on its forge, refs pinned by its
    /// `.plue/lock.json` at that commit. A file that never names `use` (the only way to
    /// reach it: it is a global name, not an attribute) is evaluated as it is, with no read
    /// of the lock file.
    pub(super) async fn evaluate_source(
        &self,
        path: &str,
        source: &str,
        ctx: &EvalContext,
    ) -> Result<EvaluatedPlan, EvalError> {
        // The lock also pins MCP servers' tool definitions (`evaluator::mcp`): a file that
        // never says `mcp` declares none.
        if !names_use(source) && !source.contains("mcp") {
            return self.evaluator.evaluate(path, source, ctx).await;
        }
        let refuse =
            |message: String| EvalError::Invalid(vec![Diagnostic::whole_file(path, message)]);
        let repo = match self.executor.store().repo_by_name(&ctx.repo).await {
            Ok(Some(repo)) => repo,
            Ok(None) => return self.evaluator.evaluate(path, source, ctx).await,
            Err(e) => {
                return Err(EvalError::Unavailable(format!(
                    "reading {}: {e:#}",
                    ctx.repo
                )))
            }
        };
        let mirror = self
            .mirror(&repo)
            .await
            .map_err(|e| EvalError::Unavailable(format!("{e:#}")))?;
        let lock = match mirror.read_file(&ctx.sha, LOCK_FILE, MAX_LOCK_BYTES).await {
            Ok(Some(text)) => Some(LockFile::parse(&text).map_err(refuse)?),
            Ok(None) => None,
            Err(e) => return Err(refuse(format!("{LOCK_FILE}: {e:#}"))),
        };
        let fetcher = ModuleMirrors::beside(&repo.clone_url, self.mirrors.join("modules"));
        let modules = Modules {
            lock: lock.as_ref(),
            fetcher: fetcher
                .as_ref()
                .map(|f| f as &dyn evaluator::modules::ModuleFetcher),
            resolve_refs: false,
        };
        self.evaluator
            .evaluate_with(path, source, ctx, modules)
            .await
    }
}

/// Whether `source` holds the word `use` (not within a longer name such as `user`).
fn names_use(source: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || !b.is_ascii();
    let bytes = source.as_bytes();
    source.match_indices("use").any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + 3).copied();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

impl ModuleFetcher for ModuleMirrors {
    fn fetch<'a>(
        &'a self,
        repository: &'a str,
        path: &'a str,
        commit: &'a str,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let _one_at_a_time = ONE_AT_A_TIME.lock().await;
            let read = async {
                let (mirror, url) = self.mirror(repository).await?;
                mirror.fetch(&url, &[commit]).await?;
                mirror
                    .read_file(commit, path, max_bytes)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{repository} has no file {path} at {commit}"))
            };
            read.await.map_err(|e| format!("{e:#}"))
        })
    }

    fn resolve<'a>(
        &'a self,
        repository: &'a str,
        git_ref: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let _one_at_a_time = ONE_AT_A_TIME.lock().await;
            let resolved = async {
                let (mirror, url) = self.mirror(repository).await?;
                mirror.resolve(&url, git_ref).await
            };
            resolved.await.map_err(|e| format!("{e:#}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evaluator::modules::MAX_MODULE_BYTES;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn only_a_file_naming_use_reads_the_lock_file() {
        assert!(names_use("s = use(\"a/b\", \"c.plue.py\", commit=x)"));
        assert!(names_use("u = use\nu(1)"));
        assert!(!names_use(
            "Step.bash(\"a\", \"useradd x; because\", users=1)"
        ));
        assert!(!names_use("reuse_it = 1; used = 2; _use = 3"));
    }

    #[tokio::test]
    async fn a_module_is_read_at_its_commit_and_a_tag_resolved() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repos/acme/steps");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("rust.plue.py"), "first").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-qm", "one"]);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["tag", "v1"]);
        std::fs::write(repo.join("rust.plue.py"), "second").unwrap();
        git(&repo, &["commit", "-qam", "two"]);
        let mirrors = ModuleMirrors::new(
            root.path().join("repos").display().to_string(),
            root.path().join("mirrors"),
        );
        let text = mirrors
            .fetch("acme/steps", "rust.plue.py", &first, MAX_MODULE_BYTES)
            .await
            .unwrap();
        assert_eq!(text, "first", "the commit asked, not the tip");
        assert_eq!(mirrors.resolve("acme/steps", "v1").await.unwrap(), first);
        let missing = mirrors
            .fetch("acme/steps", "go.plue.py", &first, MAX_MODULE_BYTES)
            .await
            .unwrap_err();
        assert!(missing.contains("has no file go.plue.py"), "{missing}");
        let big = mirrors
            .fetch("acme/steps", "rust.plue.py", &first, 3)
            .await
            .unwrap_err();
        assert!(big.contains("the limit is 3"), "{big}");
        // Beside a forge's repository, in its spelling.
        let beside = ModuleMirrors::beside("https://forge.example/acme/app.git", "m".into());
        assert_eq!(
            beside.unwrap().url("acme/steps"),
            "https://forge.example/acme/steps.git"
        );
        assert!(ModuleMirrors::beside("https://app.git", "m".into()).is_none());
        // The attack: the calling repository's clone URL carries its credential; a
        // workflow `use`s a private repository beside it. The credential stays behind.
        for url in [
            "https://bot:ghs_secret@forge.example/acme/app.git",
            "https://ghs_secret@forge.example/acme/app",
            "http://a:b@c@forge.example:8080/acme/app.git",
        ] {
            let beside = ModuleMirrors::beside(url, "m".into()).unwrap();
            let module = beside.url("victim/private");
            assert!(!module.contains('@'), "{module}");
            assert!(!module.contains("secret"), "{module}");
            assert!(module.contains("forge.example"), "{module}");
            assert!(
                beside.anonymous,
                "beside a served repository: no host credential"
            );
        }
        // The attack: `acme/steps` was fetched for a repository on a forge inside the
        // network; a workflow of a repository on another forge names its commit. Its
        // mirror is another one, which has never seen that commit.
        let public = ModuleMirrors::new(
            root.path().join("elsewhere").display().to_string(),
            root.path().join("mirrors"),
        );
        assert_ne!(
            public.mirror_dir("acme/steps"),
            mirrors.mirror_dir("acme/steps")
        );
        let leaked = public
            .fetch("acme/steps", "rust.plue.py", &first, MAX_MODULE_BYTES)
            .await
            .unwrap_err();
        assert!(!leaked.contains("first"), "{leaked}");
        // A name climbing out of the base is refused before git runs.
        let climbing = mirrors.resolve("../x", "v1").await.unwrap_err();
        assert!(climbing.contains("not a repository"), "{climbing}");
    }
}
