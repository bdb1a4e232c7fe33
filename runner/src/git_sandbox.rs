//! The one way the runner runs `git` on a repository a step could have written.
//!
//! Git runs commands named by its configuration: filter drivers (`filter.<x>.clean` and
//! `.process`, picked by `.gitattributes`), `diff.<x>.textconv`, `diff.external`,
//! `core.fsmonitor`, `core.pager`, `core.*Command`, aliases, hooks, and whatever an
//! `include.path` pulls in. A workspace's `.git/config` is the step's text, so a tool that
//! runs git there would run the step's code as whoever runs the tool — for a reviewer with
//! no `bash`, code of the builder it reviews. Git also reads files the `.git` names: the
//! working-tree file of every index entry, at the entry's path as written (`../x`,
//! `/etc/x`), and the object directories of `objects/info/alternates`.
//!
//! So a workspace's git never reads the workspace's configuration, index or object
//! directories as they are. [`Shadow::of_checkout`] builds a git directory of its own
//! outside the workspace, and every call gets it with `--git-dir` (see
//! [`Shadow::git_args`]):
//! - `config`: written here, holding only the settings of [`ALLOWED_SETTINGS`] (repository
//!   format, object and ref formats, how the working tree's files are compared), each with a
//!   plain word as its value. This is an allow-list: a setting git adds tomorrow that runs
//!   a command is not copied, and `include.path`/`includeIf` are never followed (the file
//!   is listed with `--no-includes`). A `.gitattributes` only names drivers; with no
//!   driver defined, none runs.
//! - `HEAD`: copied after checking it is a ref name or an object id.
//! - `index` and `sharedindex.*`: copied, capped, and refused unless git's own listing of
//!   the copy has only plain paths inside the working tree (see [`index`]). A copy, not a
//!   link and not a check of the workspace's file, because the diff must read exactly what
//!   was checked: the workspace's index can be rewritten between a check and the diff.
//! - `objects`: a directory of the shadow's own with links to the workspace's loose-object
//!   fan-out directories (`objects/00` … `objects/ff`) and `objects/pack` only, each a real
//!   directory. Never `objects/info`, so `alternates` and `http-alternates` (which point
//!   git at any other repository on the host) are never read.
//! - `refs`, `packed-refs`, `reftable`, `shallow`, `info/exclude`: links to the
//!   workspace's, read by git as the tool's user (never the runner's reading as root).
//! - never `hooks`, `info/attributes`, `config.worktree`, `commondir`, `modules`.
//!
//! Every call also gets [`HARDENING_ARGS`] (no fsmonitor, no hooks, no attributes file, no
//! pager) and no system or global config (the caller's environment sets
//! `GIT_CONFIG_NOSYSTEM=1` and `GIT_CONFIG_GLOBAL=/dev/null`; see [`git_environment`]).
//! Callers add `--no-ext-diff --no-textconv --ignore-submodules=all` to `diff` (a
//! submodule is its own repository with its own config). Git is always the runner's own
//! ([`crate::program_path::git`], an absolute path found on the runner's `PATH`), never
//! one a step's `PATH` leads to, and the git this module runs to parse the workspace's
//! config and index runs as the tool's user, with an environment built from nothing.
//!
//! The runner reads the workspace's `.git` itself only through descriptors opened without
//! following links (`.git`, `config`, `HEAD`, `objects`, the index files), capped in size,
//! so a step cannot point it at another file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{Mode, SFlag};

use crate::step_user::StepUser;

pub mod index;

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

/// The most names read from `.git` or `.git/objects` (real ones hold about 20 and 260).
const MAX_DIR_NAMES: usize = 4096;

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
    /// A file of `.git` is not a regular file, too large or not what it should be.
    #[error("the workspace's .git/{name} {why}")]
    BadFile { name: String, why: String },
    /// `git config` could not list the workspace's config.
    #[error("the workspace's .git/config cannot be read by git: {0}")]
    Config(String),
    /// The index lists a path outside the working tree, or is over a bound.
    #[error("the workspace's .git/index is refused: {0}")]
    Index(String),
    /// The runner has no git.
    #[error(transparent)]
    NoGit(#[from] crate::program_path::NotInstalled),
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
    /// Builds the shadow of `<root>/.git` under the runner's temporary directory; the git
    /// it runs to read the workspace's config and index runs as `user` (the tool's user;
    /// `None`: the runner's own). Blocking (it copies the index and runs git twice).
    pub fn of_checkout(root: &Path, user: Option<StepUser>) -> Result<Shadow, ShadowError> {
        Shadow::build(root, &std::env::temp_dir(), user)
    }

    /// [`Shadow::of_checkout`] with the shadow made under `parent`.
    pub fn build(
        root: &Path,
        parent: &Path,
        user: Option<StepUser>,
    ) -> Result<Shadow, ShadowError> {
        let git = open_git_dir(root)?;
        let config = read_capped(&git, "config", MAX_CONFIG_BYTES)?.unwrap_or_default();
        let head = read_capped(&git, "HEAD", MAX_HEAD_BYTES)?.ok_or(ShadowError::BadFile {
            name: "HEAD".into(),
            why: "is missing".into(),
        })?;
        let head = checked_head(&head)?;
        let names = list_names(&git)?;
        let shadow = Shadow::create(parent)?;
        let settings = allowed_settings(&shadow.dir, &config, user)?;
        shadow.write("config", &render_config(&settings))?;
        shadow.write("HEAD", &head)?;
        let real = root.join(".git");
        for name in ["refs", "packed-refs", "reftable", "shallow"] {
            shadow.link_if_present(&git, &real, name)?;
        }
        shadow.link_objects(&git, &real.join("objects"))?;
        index::copy(&git, &names, &shadow.dir)?;
        index::check_listing(&shadow.dir, user)?;
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

    /// `<shadow>/objects`: a directory holding links to the workspace's loose-object
    /// fan-out directories and `pack`, each a real directory, and nothing else (see the
    /// module doc). `objects` itself must be a real directory, if there.
    fn link_objects(&self, git: &OwnedFd, real: &Path) -> Result<(), ShadowError> {
        let objects = self.dir.join("objects");
        std::fs::create_dir(&objects)?;
        set_mode(&objects, 0o755)?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = match openat(git, "objects", flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
                return Err(ShadowError::BadFile {
                    name: "objects".into(),
                    why: "is not a directory (a symbolic link or a file)".into(),
                })
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        };
        for name in list_names(&dir)? {
            let Some(text) = name.to_str() else {
                continue;
            };
            let wanted =
                text == "pack" || (text.len() == 2 && text.bytes().all(|b| b.is_ascii_hexdigit()));
            if !wanted {
                continue;
            }
            let is_dir = nix::sys::stat::fstatat(
                &dir,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|stat| stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits());
            if is_dir {
                symlink(real.join(&name), objects.join(&name))?;
            }
        }
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
                name: name.into(),
                why: "is a symbolic link".into(),
            })
        }
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(ShadowError::BadFile {
            name: name.into(),
            why: "is not a regular file".into(),
        });
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ShadowError::BadFile {
            name: name.into(),
            why: format!("is larger than {cap} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// The names in the directory `dir`, at most [`MAX_DIR_NAMES`].
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
        if names.len() == MAX_DIR_NAMES {
            return Err(ShadowError::BadFile {
                name: String::new(),
                why: format!("holds more than {MAX_DIR_NAMES} names in one directory"),
            });
        }
        names.push(OsStr::from_bytes(entry.file_name().to_bytes()).to_owned());
    }
    Ok(names)
}

/// `HEAD` as git may read it: `ref: refs/...` with a plain ref name, or an object id.
fn checked_head(head: &[u8]) -> Result<Vec<u8>, ShadowError> {
    let bad = || ShadowError::BadFile {
        name: "HEAD".into(),
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
/// lists them. The text is parsed by git itself (`git config --list`, as `user`) from a
/// copy in `scratch`, so its quoting, sections and continuations mean what they mean to
/// git.
fn allowed_settings(
    scratch: &Path,
    config: &[u8],
    user: Option<StepUser>,
) -> Result<Vec<(String, String)>, ShadowError> {
    if config.is_empty() {
        return Ok(Vec::new());
    }
    let copy = scratch.join("config.workspace");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&copy)?
        .write_all(config)?;
    let output = git_command(user)?
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

/// The runner's git ([`crate::program_path::git`]) with an environment of
/// [`git_environment`] only (nothing of the runner's or a step's: no `GIT_DIR`,
/// `GIT_OBJECT_DIRECTORY`, `GIT_ALTERNATE_OBJECT_DIRECTORIES`, `GIT_CONFIG_*`), no stdin,
/// `no_new_privs`, and run as `user` when given. (The tools' commands get the whole step
/// room through `containment::spawn_tool`; this blocking one, which only lists the
/// workspace's config and index before any tool runs, sets the one flag itself.)
#[allow(unsafe_code)]
pub(crate) fn git_command(user: Option<StepUser>) -> Result<Command, ShadowError> {
    let git = crate::program_path::git().map_err(ShadowError::NoGit)?;
    let mut command = Command::new(git);
    command
        .env_clear()
        .envs(git_environment())
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    // SAFETY: `prctl` is async-signal-safe and touches only the child's own flags.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
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
pub(crate) mod tests;
