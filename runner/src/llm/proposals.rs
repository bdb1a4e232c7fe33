//! The diff of a proposed pull request: the step's final workspace against the attempt's
//! starting point, computed by the runner with its own git, never by the step's tools.
//!
//! The workspace (and its `.git`) is the step's: hostile. So git never runs with the
//! workspace's git directory as it is. Everything happens in a *private* git directory of
//! the runner's (`plue-proposal-<random>` under its temporary directory, removed on
//! drop), with [`git_sandbox::HARDENING_ARGS`], no system or global config, the runner's
//! git by its absolute path, an environment built from nothing and `no_new_privs`, run as
//! the tool's user (`git_sandbox::git_command`):
//! - the final tree is written by `git add -A` of the workspace into the private directory
//!   with its own index (`.git` entries are never added by git; a `.gitattributes` names
//!   drivers that no config defines, so none runs; a symbolic link is stored as a link,
//!   never followed; an embedded repository becomes a gitlink — all of which the engine
//!   refuses by mode);
//! - the starting point ([`Start`]) is, for a checkout (`WorkspaceSource::Git`), the
//!   assignment's commit, read through a [`Shadow`] of the checkout's objects (its
//!   fan-out directories and packs only, as `git_diff` reads them — never its config,
//!   hooks or alternates); for any other workspace (`plue run`'s copy, an empty one), the
//!   tree the runner recorded in the private directory *before* the conversation began.
//!   Either way nothing the step wrote can move the base: `HEAD` and refs are not read. A
//!   step that rewrites the checkout's object files can at most make the diff wrong or
//!   unappliable — the engine validates the diff text itself, whatever it is.
//! - the diff is `git diff --binary --full-index --no-renames` (binary-safe, untracked
//!   files included since the final tree holds them, what the workspace's `.gitignore`
//!   files ignore left out, as `git status` would), read no further than its bound.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::git_sandbox::{self, Shadow, ShadowError};
use crate::step_user::StepUser;

/// Why the start could not be recorded or the diff computed.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    /// The checkout's object directories could not be shadowed.
    #[error("reading the checkout's objects: {0}")]
    Shadow(#[source] ShadowError),
    /// No git to run (or no sandbox for it).
    #[error(transparent)]
    Sandbox(ShadowError),
    /// No randomness for the private directory's name.
    #[error("{0}")]
    Random(getrandom::Error),
    /// The private directory could not be made or written.
    #[error("preparing git's directory: {0}")]
    Prepare(#[source] std::io::Error),
    /// Handing the private directory to the step's user failed.
    #[error("{0}")]
    Walk(#[from] walkdir::Error),
    #[error("handing git's directory to the step user: {0}")]
    Chown(#[source] std::io::Error),
    #[error("cannot start git: {0}")]
    Start(#[source] std::io::Error),
    #[error("waiting for git: {0}")]
    Wait(#[source] std::io::Error),
    /// git exited unsuccessfully: its subcommand and the first line of its stderr.
    #[error("git {verb} failed: {first_line}")]
    Failed { verb: String, first_line: String },
    /// `git write-tree` answered something that is not an object id.
    #[error("git write-tree answered {0:?}")]
    NotATree(String),
    #[error("git answered bytes that are not UTF-8")]
    NotUtf8,
    /// The diff is larger than the step's `max_diff_bytes`.
    #[error("the change is larger than max_diff_bytes ({cap} bytes); propose a smaller one")]
    TooLarge { cap: u64 },
    /// The diff holds text that is not UTF-8, in the change to `file` (its `diff --git`
    /// line's paths, as git wrote them).
    #[error(
        "the change to {file} holds bytes that are not UTF-8 text; only UTF-8 text files can be proposed"
    )]
    DiffNotUtf8 { file: String },
}

/// What the pull request's diff is computed against.
#[derive(Debug)]
enum Base {
    /// The checkout's starting commit (the assignment's sha).
    Commit(String),
    /// The tree recorded in the private directory before the step.
    Tree(String),
}

/// The attempt's starting point and the private git directory the diff is computed in.
#[derive(Debug)]
pub struct Start {
    workspace: PathBuf,
    user: Option<StepUser>,
    private: Private,
    base: Base,
}

/// A changed workspace, as the pull request will carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub text: String,
    pub files: usize,
}

impl Start {
    /// Records the starting point of `workspace` (blocking): `commit` when the workspace
    /// is a checkout of it, else a snapshot of the workspace's tree as it is now.
    pub fn record(
        workspace: &Path,
        commit: Option<&str>,
        user: Option<StepUser>,
    ) -> Result<Start, ProposalError> {
        let private = Private::create(user)?;
        let is_checkout = workspace
            .join(".git")
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir());
        let base = match commit.filter(|c| is_object_id(c)) {
            Some(commit) if is_checkout => Base::Commit(commit.to_owned()),
            _ => Base::Tree(private.write_tree(workspace, user, "index.start")?),
        };
        Ok(Start {
            workspace: workspace.to_owned(),
            user,
            private,
            base,
        })
    }

    /// The diff of the workspace now against the start (blocking), `Err` when it is larger
    /// than `max_bytes` or git fails.
    pub fn diff(&self, max_bytes: u64) -> Result<Diff, ProposalError> {
        // The shadow lives while git reads the base commit's objects through it.
        let (base, _shadow) = match &self.base {
            Base::Tree(tree) => (tree.clone(), None),
            Base::Commit(commit) => {
                let shadow = Shadow::of_checkout(&self.workspace, self.user)
                    .map_err(ProposalError::Shadow)?;
                let alternates = self.private.dir.join("objects/info/alternates");
                std::fs::write(
                    &alternates,
                    format!("{}\n", shadow.path().join("objects").display()),
                )
                .map_err(ProposalError::Prepare)?;
                (format!("{commit}^{{tree}}"), Some(shadow))
            }
        };
        let tree = self
            .private
            .write_tree(&self.workspace, self.user, "index.end")?;
        let args = [
            "diff",
            "--binary",
            "--full-index",
            "--no-renames",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--ignore-submodules=none",
            &base,
            &tree,
        ];
        let text = self.private.git_capped(self.user, &args, max_bytes)?;
        let files = text
            .lines()
            .filter(|l| l.starts_with("diff --git "))
            .count();
        Ok(Diff { text, files })
    }
}

/// The runner's private git directory, removed on drop.
#[derive(Debug)]
struct Private {
    dir: PathBuf,
}

impl Private {
    fn create(user: Option<StepUser>) -> Result<Private, ProposalError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(ProposalError::Random)?;
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("plue-proposal-{name}"));
        // `create_dir` fails if anything is already there: nothing is followed.
        std::fs::create_dir(&dir).map_err(ProposalError::Prepare)?;
        let private = Private { dir };
        private.git(None, &["init", "--quiet", "--template="], None)?;
        if let Some(user) = user {
            // The tool's user writes the objects; the runner made the directory.
            chown_tree(&private.dir, user)?;
        }
        Ok(private)
    }

    /// `git add -A` of `workspace` into a fresh index `index`, then `write-tree`.
    fn write_tree(
        &self,
        workspace: &Path,
        user: Option<StepUser>,
        index: &str,
    ) -> Result<String, ProposalError> {
        let index = self.dir.join(index);
        let _ = std::fs::remove_file(&index);
        let work_tree = format!("--work-tree={}", workspace.display());
        self.git(
            user,
            &[&work_tree, "add", "--all", "--", "."],
            Some((&index, workspace)),
        )?;
        let tree = self.git(user, &[&work_tree, "write-tree"], Some((&index, workspace)))?;
        let tree = tree.trim().to_owned();
        if !is_object_id(&tree) {
            return Err(ProposalError::NotATree(tree));
        }
        Ok(tree)
    }

    fn command(
        &self,
        user: Option<StepUser>,
        args: &[&str],
    ) -> Result<std::process::Command, ProposalError> {
        let mut command = git_sandbox::git_command(user).map_err(ProposalError::Sandbox)?;
        command
            .args(git_sandbox::HARDENING_ARGS)
            .arg(format!("--git-dir={}", self.dir.display()))
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CEILING_DIRECTORIES", &self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(command)
    }

    /// Runs git, its whole stdout as text.
    fn git(
        &self,
        user: Option<StepUser>,
        args: &[&str],
        index: Option<(&Path, &Path)>,
    ) -> Result<String, ProposalError> {
        let mut command = self.command(user, args)?;
        if let Some((index, workspace)) = index {
            // `add` walks the work tree from where it runs.
            command.env("GIT_INDEX_FILE", index).current_dir(workspace);
        }
        let output = command.output().map_err(ProposalError::Start)?;
        if !output.status.success() {
            return Err(git_failure(args, &output.stderr));
        }
        String::from_utf8(output.stdout).map_err(|_| ProposalError::NotUtf8)
    }

    /// Runs git reading at most `cap` bytes of stdout; more is an error.
    fn git_capped(
        &self,
        user: Option<StepUser>,
        args: &[&str],
        cap: u64,
    ) -> Result<String, ProposalError> {
        let mut child = self
            .command(user, args)?
            .spawn()
            .map_err(ProposalError::Start)?;
        let mut stdout = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .take(cap + 1)
            .read_to_end(&mut stdout);
        if read.is_err() || stdout.len() as u64 > cap {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProposalError::TooLarge { cap });
        }
        let mut stderr = Vec::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = (&mut err).take(4096).read_to_end(&mut stderr);
        }
        let status = child.wait().map_err(ProposalError::Wait)?;
        if !status.success() {
            return Err(git_failure(args, &stderr));
        }
        // `--binary` patches are ASCII (base85); text files are whatever they hold.
        String::from_utf8(stdout).map_err(|e| ProposalError::DiffNotUtf8 {
            file: file_at(e.as_bytes(), e.utf8_error().valid_up_to()),
        })
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%err, dir = %self.dir.display(), "removing the proposal's git directory");
        }
    }
}

/// The file of `diff` whose part holds byte `at`: its `diff --git` line's path, once when
/// both sides name the same (`a/x b/x`), else the line's paths as they are.
fn file_at(diff: &[u8], at: usize) -> String {
    let before = &diff[..at.min(diff.len())];
    let header = b"diff --git ";
    let start = before
        .windows(header.len() + 1)
        .rposition(|w| w[0] == b'\n' && &w[1..] == header)
        .map(|newline| newline + 1)
        .or_else(|| before.starts_with(header).then_some(0));
    let Some(start) = start else {
        return "a file".to_owned();
    };
    let line = diff[start + header.len()..]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    // `a/X b/X`: X once.
    let half = line.len().saturating_sub(5) / 2;
    match (line.get(..2), line.get(2..2 + half), line.get(2 + half..)) {
        (Some("a/"), Some(path), Some(rest)) if rest == format!(" b/{path}") => path.to_owned(),
        _ => line.into_owned(),
    }
}

fn git_failure(args: &[&str], stderr: &[u8]) -> ProposalError {
    let stderr = String::from_utf8_lossy(stderr);
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let verb = args.iter().find(|a| !a.starts_with('-')).unwrap_or(&"git");
    ProposalError::Failed {
        verb: (*verb).to_owned(),
        first_line: first.to_owned(),
    }
}

fn chown_tree(dir: &Path, user: StepUser) -> Result<(), ProposalError> {
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry?;
        std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid))
            .map_err(ProposalError::Chown)?;
    }
    Ok(())
}

fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(dir: &Path, script: &str) {
        let status = Command::new("bash")
            .args(["-ec", script])
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }

    fn head(dir: &Path) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn a_checkout_diffs_against_its_commit_whatever_head_says() {
        let ws = tempfile::tempdir().unwrap();
        sh(
            ws.path(),
            "git init -q . && echo one > a.txt && git add a.txt && git commit -qm one",
        );
        let start = Start::record(ws.path(), Some(&head(ws.path())), None).unwrap();
        // The step commits, moves HEAD, adds an untracked file, a binary and a config
        // that would run a command for git.
        sh(
            ws.path(),
            "echo two > a.txt && git commit -qam two && echo new > b.txt \
             && printf '\\x00\\x01' > bin.dat \
             && git config core.fsmonitor 'touch /tmp/plue-pwned-proposal' \
             && git config diff.external 'touch /tmp/plue-pwned-proposal'",
        );
        let diff = start.diff(1 << 20).unwrap();
        assert_eq!(diff.files, 3, "{}", diff.text);
        assert!(
            diff.text.contains("+two") && diff.text.contains("+new"),
            "{}",
            diff.text
        );
        assert!(diff.text.contains("GIT binary patch"), "{}", diff.text);
        assert!(!Path::new("/tmp/plue-pwned-proposal").exists());
        let err = start.diff(10).unwrap_err();
        assert!(matches!(err, ProposalError::TooLarge { cap: 10 }), "{err}");
        assert!(err.to_string().contains("max_diff_bytes"), "{err}");
    }

    // The attack (the outbound wall, round two): an existing text file gets a UTF-16BE
    // copy of a secret, byte-order mark first, appended after 12 KiB of text; git calls the
    // file text by its first 8,000 bytes and prints the bytes, which are no UTF-8. The change
    // is refused, and the reason names the file.
    #[test]
    fn a_change_that_is_not_utf8_is_refused_naming_its_file() {
        let ws = tempfile::tempdir().unwrap();
        sh(
            ws.path(),
            "git init -q . && echo one > a.txt && head -c 12288 /dev/zero | tr '\\0' x > notes.txt \
             && git add . && git commit -qm one",
        );
        let start = Start::record(ws.path(), Some(&head(ws.path())), None).unwrap();
        let mut wide = vec![0xfe, 0xff];
        wide.extend(
            "ghp_s3cretOfTheRun"
                .encode_utf16()
                .flat_map(u16::to_be_bytes),
        );
        let mut notes = std::fs::OpenOptions::new()
            .append(true)
            .open(ws.path().join("notes.txt"))
            .unwrap();
        std::io::Write::write_all(&mut notes, &wide).unwrap();
        sh(ws.path(), "echo two > a.txt");
        let err = start.diff(1 << 20).unwrap_err();
        assert!(
            matches!(&err, ProposalError::DiffNotUtf8 { file } if file == "notes.txt"),
            "{err}"
        );
        assert!(err.to_string().contains("the change to notes.txt"), "{err}");
    }

    #[test]
    fn a_copy_diffs_against_the_tree_recorded_at_the_start() {
        let ws = tempfile::tempdir().unwrap();
        sh(
            ws.path(),
            "echo one > a.txt && mkdir d && echo x > d/x && echo build/ > .gitignore",
        );
        let start = Start::record(ws.path(), Some(&"a".repeat(40)), None).unwrap();
        // What the workspace's .gitignore ignores (build output) is not part of the change.
        sh(
            ws.path(),
            "echo two > a.txt && rm d/x && ln -s /etc/passwd link && mkdir build && echo o > build/o",
        );
        let diff = start.diff(1 << 20).unwrap();
        assert_eq!(diff.files, 3, "{}", diff.text);
        assert!(
            diff.text.contains("deleted file mode 100644"),
            "{}",
            diff.text
        );
        assert!(diff.text.contains("new file mode 120000"), "{}", diff.text);
        assert!(
            !diff.text.contains("root:"),
            "a link is never followed: {}",
            diff.text
        );
        let unchanged = Start::record(ws.path(), None, None).unwrap();
        assert_eq!(unchanged.diff(1 << 20).unwrap().files, 0);
    }
}
