//! The one way the runner runs `git` on a repository a step could have written.
//!
//! Git runs commands named by its configuration: filter drivers (`filter.<x>.clean` and
//! `.process`, picked by `.gitattributes`), `diff.<x>.textconv`, `diff.external`,
//! `core.fsmonitor`, `core.pager`, `core.*Command`, aliases, hooks, and whatever an
//! `include.path` pulls in. A workspace's `.git/config` is the step's text, so a tool that
//! runs git there would run the step's code as whoever runs the tool — for a reviewer with
//! no `bash`, code of the builder it reviews.
//!
//! So a workspace's git never reads the workspace's configuration. [`Shadow::of_checkout`]
//! builds a git directory of its own outside the workspace, and every call gets it with
//! `--git-dir` (see [`Shadow::git_args`]):
//! - `config`: written here, holding only the settings of [`ALLOWED_SETTINGS`] (repository
//!   format, object and ref formats, how the working tree's files are compared), each with a
//!   plain word as its value. This is an allow-list: a setting git adds tomorrow that runs
//!   a command is not copied, and `include.path`/`includeIf` are never followed (the file
//!   is listed with `--no-includes`). A `.gitattributes` only names drivers; with no
//!   driver defined, none runs.
//! - `HEAD`: copied after checking it is a ref name or an object id.
//! - `objects`, `refs`, `packed-refs`, `reftable`, `index`, `sharedindex.*`, `shallow`,
//!   `info/exclude`: links to the workspace's, read by git as the tool's user (never the
//!   runner's reading as root).
//! - never `hooks`, `info/attributes`, `config.worktree`, `commondir`, `modules`.
//!
//! Every call also gets [`HARDENING_ARGS`] (no fsmonitor, no hooks, no attributes file, no
//! pager) and no system or global config (the caller's environment sets
//! `GIT_CONFIG_NOSYSTEM=1` and `GIT_CONFIG_GLOBAL=/dev/null`; see [`git_environment`]).
//! Callers add `--no-ext-diff --no-textconv --ignore-submodules=all` to `diff` (a
//! submodule is its own repository with its own config).
//!
//! The runner reads the workspace's `.git` itself only through descriptors opened without
//! following links (`.git`, `config`, `HEAD`), capped in size, so a step cannot point it
//! at another file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

/// Settings kept from a workspace's `.git/config`, lower case as `git config --list`
/// prints them; everything else is dropped. None of them names a program or a path.
pub const ALLOWED_SETTINGS: &[&str] = &[
    "core.repositoryformatversion",
    "core.filemode",
    "core.symlinks",
    "core.ignorecase",
    "core.precomposeunicode",
    "core.autocrlf",
    "core.eol",
    "core.safecrlf",
    "core.checkroundtripencoding",
    "extensions.objectformat",
    "extensions.refstorage",
];

/// Settings for every git call on a workspace, given on the command line (which beats
/// every file): no fsmonitor daemon, no hooks, no attributes file of the user, no pager,
/// no lazy fetch of a partial clone, and the shadow directory (owned by the runner, not
/// the tool's user) accepted.
pub const HARDENING_ARGS: &[&str] = &[
    "--no-pager",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.excludesFile=/dev/null",
    "-c",
    "core.pager=cat",
    "-c",
    "core.quotepath=off",
    "-c",
    "safe.directory=*",
];

/// The environment variables every git call on a workspace sets: no system config, no
/// global config (neither `~/.gitconfig` nor `$XDG_CONFIG_HOME/git/config`), no prompt.
pub fn git_environment() -> [(&'static str, &'static str); 3] {
    [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
    ]
}

/// The largest `.git/config` read (real ones are a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The largest `.git/HEAD` read.
const MAX_HEAD_BYTES: u64 = 1024;

/// Why a workspace's repository cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The workspace has no `.git` at its root.
    #[error("the workspace is not a git checkout (it has no .git at its root)")]
    NotACheckout,
    /// `.git` is a link or a file (a linked worktree's or submodule's `gitdir:`).
    #[error(
        "the workspace's .git is not a directory (a symbolic link or a 'gitdir:' file); \
         only a plain checkout is read"
    )]
    NotADirectory,
    /// `.git/config` or `.git/HEAD` is not a regular file, or too large.
    #[error("the workspace's .git/{name} {why}")]
    BadFile { name: &'static str, why: String },
    /// `git config` could not list the workspace's config.
    #[error("the workspace's .git/config cannot be read by git: {0}")]
    Config(String),
    /// Building the shadow directory failed.
    #[error("preparing git's directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A git directory of the runner's own standing in for a workspace's `.git` (see the
/// module doc); removed when dropped.
#[derive(Debug)]
pub struct Shadow {
    dir: PathBuf,
}

impl Shadow {
    /// Builds the shadow of `<root>/.git` under the runner's temporary directory. Blocking
    /// (it reads small files and runs `git config` once).
    pub fn of_checkout(root: &Path) -> Result<Shadow, ShadowError> {
        Shadow::build(root, &std::env::temp_dir())
    }

    /// [`Shadow::of_checkout`] with the shadow made under `parent`.
    pub fn build(root: &Path, parent: &Path) -> Result<Shadow, ShadowError> {
        let git = open_git_dir(root)?;
        let config = read_capped(&git, "config", MAX_CONFIG_BYTES)?.unwrap_or_default();
        let head = read_capped(&git, "HEAD", MAX_HEAD_BYTES)?.ok_or(ShadowError::BadFile {
            name: "HEAD",
            why: "is missing".into(),
        })?;
        let head = checked_head(&head)?;
        let shadow = Shadow::create(parent)?;
        let settings = allowed_settings(&shadow.dir, &config)?;
        shadow.write("config", &render_config(&settings))?;
        shadow.write("HEAD", &head)?;
        let real = root.join(".git");
        for name in [
            "objects",
            "refs",
            "packed-refs",
            "reftable",
            "index",
            "shallow",
        ] {
            shadow.link_if_present(&git, &real, name)?;
        }
        for name in list_names(&git)? {
            if name.to_str().is_some_and(|n| n.starts_with("sharedindex.")) {
                shadow.link_if_present(&git, &real, &name)?;
            }
        }
        // `info/exclude` only lists ignored paths; `info/attributes` is never carried.
        std::fs::create_dir(shadow.dir.join("info"))?;
        set_mode(&shadow.dir.join("info"), 0o755)?;
        symlink(real.join("info/exclude"), shadow.dir.join("info/exclude"))?;
        Ok(shadow)
    }

    /// The git directory to pass as `--git-dir`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The arguments every git call on the workspace starts with: [`HARDENING_ARGS`],
    /// this shadow as the git directory and the current directory (the workspace) as the
    /// working tree. `None` when the shadow's path is not UTF-8.
    pub fn git_args(&self) -> Option<Vec<String>> {
        let dir = self.dir.to_str()?;
        let mut args: Vec<String> = HARDENING_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--git-dir={dir}"));
        args.push("--work-tree=.".into());
        Some(args)
    }

    /// A fresh directory `plue-git-<random>` under `parent`, readable by the tool's user.
    fn create(parent: &Path) -> Result<Shadow, ShadowError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = parent.join(format!("plue-git-{name}"));
        // `create_dir` fails if anything is already there: nothing is followed.
        std::fs::create_dir(&dir)?;
        let shadow = Shadow { dir };
        set_mode(&shadow.dir, 0o755)?;
        Ok(shadow)
    }

    fn write(&self, name: &str, content: &[u8]) -> Result<(), ShadowError> {
        let path = self.dir.join(name);
        std::fs::write(&path, content)?;
        set_mode(&path, 0o644)?;
        Ok(())
    }

    /// Links `<shadow>/<name>` to `<real>/<name>` when the workspace's `.git` has it.
    fn link_if_present(
        &self,
        git: &OwnedFd,
        real: &Path,
        name: impl AsRef<OsStr>,
    ) -> Result<(), ShadowError> {
        let name = name.as_ref();
        let present =
            nix::sys::stat::fstatat(git, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok();
        if present {
            symlink(real.join(name), self.dir.join(name))?;
        }
        Ok(())
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // `remove_dir_all` removes links, never what they point at.
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%err, dir = %self.dir.display(), "removing git's shadow directory");
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `<root>/.git`, opened as a directory without following a link.
fn open_git_dir(root: &Path) -> Result<OwnedFd, ShadowError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match nix::fcntl::open(&root.join(".git"), flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOENT) => Err(ShadowError::NotACheckout),
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
            Err(ShadowError::NotADirectory)
        }
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

/// The content of the regular file `name` in `dir` (`None` if missing), opened without
/// following a link or blocking on a FIFO, and at most `cap` bytes.
fn read_capped(
    dir: &OwnedFd,
    name: &'static str,
    cap: u64,
) -> Result<Option<Vec<u8>>, ShadowError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(ShadowError::BadFile {
                name,
                why: "is a symbolic link".into(),
            })
        }
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(ShadowError::BadFile {
            name,
            why: "is not a regular file".into(),
        });
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ShadowError::BadFile {
            name,
            why: format!("is larger than {cap} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// The names in the directory `dir`.
fn list_names(dir: &OwnedFd) -> Result<Vec<std::ffi::OsString>, ShadowError> {
    use std::os::unix::ffi::OsStrExt;
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut listing = nix::dir::Dir::from_fd(fd).map_err(std::io::Error::from)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(std::io::Error::from)?;
        names.push(OsStr::from_bytes(entry.file_name().to_bytes()).to_owned());
    }
    Ok(names)
}

/// `HEAD` as git may read it: `ref: refs/...` with a plain ref name, or an object id.
fn checked_head(head: &[u8]) -> Result<Vec<u8>, ShadowError> {
    let bad = || ShadowError::BadFile {
        name: "HEAD",
        why: "is neither 'ref: refs/...' nor an object id".into(),
    };
    let text = std::str::from_utf8(head).map_err(|_| bad())?.trim_end();
    let valid = match text.strip_prefix("ref: ") {
        Some(name) => {
            name.starts_with("refs/")
                && !name.contains("..")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"\\:?*[~^".contains(&b))
        }
        None => matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit()),
    };
    if !valid {
        return Err(bad());
    }
    Ok(format!("{text}\n").into_bytes())
}

/// The settings of `config` (a workspace's `.git/config`, never its includes) that are
/// in [`ALLOWED_SETTINGS`] and whose value is a plain word, last one winning, as git
/// lists them. The text is parsed by git itself (`git config --list`) from a copy in
/// `scratch`, so its quoting, sections and continuations mean what they mean to git.
fn allowed_settings(scratch: &Path, config: &[u8]) -> Result<Vec<(String, String)>, ShadowError> {
    if config.is_empty() {
        return Ok(Vec::new());
    }
    let copy = scratch.join("config.workspace");
    std::fs::write(&copy, config)?;
    let mut command = Command::new("git");
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(git_environment());
    let output = command
        .args(["config", "--no-includes", "--null", "--list", "--file"])
        .arg(&copy)
        .current_dir(scratch)
        .env("GIT_CEILING_DIRECTORIES", scratch)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ShadowError::Config(format!("cannot start git: {e}")));
    std::fs::remove_file(&copy)?;
    let output = output?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("").trim().to_owned();
        return Err(ShadowError::Config(first));
    }
    let mut settings: Vec<(String, String)> = Vec::new();
    for item in output.stdout.split(|&b| b == 0).filter(|i| !i.is_empty()) {
        let Ok(item) = std::str::from_utf8(item) else {
            continue;
        };
        let (key, value) = item.split_once('\n').unwrap_or((item, "true"));
        if !ALLOWED_SETTINGS.contains(&key) || !plain_word(value) {
            continue;
        }
        settings.retain(|(k, _)| k != key);
        settings.push((key.to_owned(), value.to_owned()));
    }
    Ok(settings)
}

/// A value that can be written into a config file as it is: 1 to 16 ASCII letters and
/// digits (`true`, `0`, `sha256`, `input`).
fn plain_word(value: &str) -> bool {
    (1..=16).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The shadow's `config`: `core.bare = false` and the kept settings.
fn render_config(settings: &[(String, String)]) -> Vec<u8> {
    let mut sections: Vec<(&str, Vec<(&str, &str)>)> = vec![("core", vec![("bare", "false")])];
    for (key, value) in settings {
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some((_, entries)) => entries.push((name, value)),
            None => sections.push((section, vec![(name, value)])),
        }
    }
    let mut text = String::new();
    for (section, entries) in sections {
        text.push_str(&format!("[{section}]\n"));
        for (name, value) in entries {
            text.push_str(&format!("\t{name} = {value}\n"));
        }
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests;
