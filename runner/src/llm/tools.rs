//! The workspace tools an `llm` step offers the model: `read_file`, `write_file`,
//! `list_files`, `grep`, `bash` and `git_diff`, with the JSON schemas sent in the request.
//!
//! Invariants:
//! - Every path the model names is confined to the step's workspace. Absolute paths and
//!   `..` components are refused as written; what remains is resolved with the deepest
//!   existing ancestor canonicalised, so a symlink that leads out is refused too. A write
//!   also refuses a target that is itself a symlink (and opens with `O_NOFOLLOW`), and
//!   checks the parent directory, not just the name.
//! - `write_file` never writes under a `.git` directory (any case): git's config and hooks
//!   there would run commands. `git_diff` runs git with hooks, fsmonitor, textconv and
//!   external diff drivers off and no system or global config, and only on a workspace that
//!   is a checkout itself (`<root>/.git`); git never looks above the workspace for one.
//! - `read_file` and `write_file` only touch regular files: the file is opened without
//!   blocking (`O_NONBLOCK | O_NOFOLLOW`) and checked with `fstat`, so a FIFO or device
//!   is an error result, never a hang. Every call also races the step's stop.
//! - A tool never fails the step: bad input, a refused path, a missing file, a command
//!   that fails or times out all come back as a [`ToolOutput`] with `is_error: true`,
//!   which the model reads.
//! - Only the tools the step lists are offered, and a call of any other gets an error
//!   result.
//! - Outputs are capped at [`OUTPUT_CAP`] bytes (cut on a character boundary, with a note
//!   saying so). `grep` and `git` are read no further than the cap: past it the process is
//!   killed and the output ends with a note.
//! - `bash` runs through [`crate::process`]: its own process group, killed with everything
//!   it started when it ends, times out (default [`DEFAULT_BASH_TIMEOUT`]) or the step
//!   stops. `grep` and `git_diff` are short child processes killed when the step stops.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::process::{self, Ending, ProcessSpec};
use crate::step_user::StepUser;

/// Every tool, in the order they are offered (the prompts crate's list, which prompt
/// files are checked against).
pub use prompts::TOOLS as ALL;

/// The most bytes of a tool's output the model gets.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How long a `bash` call may run unless it asks for another limit.
pub const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `timeout_secs` a `bash` call may ask for.
const MAX_BASH_TIMEOUT_SECS: u64 = 1800;
/// How long `grep` and `git` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The biggest file `read_file` reads (the model sees at most [`OUTPUT_CAP`] of it).
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
/// The most entries `list_files` returns.
const MAX_LIST_ENTRIES: usize = 2000;

/// The most bytes of a command's stdout read (the note saying so must fit the cap too).
const STDOUT_CAP: usize = OUTPUT_CAP - 1024;
/// The most bytes of a command's stderr read.
const STDERR_CAP: usize = 4096;

/// Variables that would point git at another repository than the workspace, or configure
/// it from outside.
const GIT_VARS_REMOVED: &[&str] = &[
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// What a tool call returns to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: cap(content.into(), OUTPUT_CAP),
            is_error: false,
        }
    }

    fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: cap(content.into(), OUTPUT_CAP),
            is_error: true,
        }
    }
}

/// The tools of one step, bound to its workspace.
#[derive(Debug, Clone)]
pub struct Toolbox {
    /// Canonical.
    root: PathBuf,
    offered: Vec<&'static str>,
    /// For `bash`: the whole environment (see `step_env`).
    env: BTreeMap<String, String>,
    /// For `bash`: the user it runs as (see `step_user`).
    user: Option<StepUser>,
    /// For the runner's own `git` commands: removed from the runner's environment.
    env_remove: Vec<String>,
    /// Fires when the step stops (cancelled, timed out).
    stop: CancellationToken,
}

impl Toolbox {
    /// The tools named in `tools` (unknown names are an error naming them) over the
    /// workspace `root`.
    pub fn new(
        root: &Path,
        tools: &[String],
        env: BTreeMap<String, String>,
        env_remove: Vec<String>,
        stop: CancellationToken,
    ) -> Result<Toolbox, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("resolving the workspace {}: {e}", root.display()))?;
        let mut offered = Vec::new();
        for tool in tools {
            let Some(known) = ALL.iter().find(|t| **t == tool.as_str()) else {
                return Err(format!(
                    "unknown tool '{tool}'; available: {}",
                    ALL.join(", ")
                ));
            };
            if !offered.contains(known) {
                offered.push(*known);
            }
        }
        Ok(Toolbox {
            root,
            offered,
            env,
            user: None,
            env_remove,
            stop,
        })
    }

    /// Runs `bash` calls as `user` (a root runner's step user).
    pub fn with_user(mut self, user: Option<StepUser>) -> Toolbox {
        self.user = user;
        self
    }

    /// The workspace, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names offered, in the step's order.
    pub fn offered(&self) -> &[&'static str] {
        &self.offered
    }

    /// The request's `tools` array: name, description, input_schema of each offered tool.
    pub fn definitions(&self) -> Vec<Value> {
        self.offered.iter().map(|name| definition(name)).collect()
    }

    /// Runs one call; every failure is an error result (see the module invariants).
    pub async fn call(&self, name: &str, input: &Value) -> ToolOutput {
        if !self.offered.contains(&name) {
            return ToolOutput::error(format!(
                "tool '{name}' is not available in this step; available: {}",
                self.offered.join(", ")
            ));
        }
        let result = match name {
            "read_file" => self.read_file(input).await,
            "write_file" => self.write_file(input).await,
            "list_files" => self.list_files(input).await,
            "grep" => self.grep(input).await,
            "bash" => self.bash(input).await,
            "git_diff" => self.git_diff(input).await,
            other => Err(format!("tool '{other}' is not implemented")),
        };
        result.unwrap_or_else(ToolOutput::error)
    }

    async fn read_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = string_arg(input, "read_file", "path")?;
        let path = self.resolve_existing(requested)?;
        let start_line = count_arg(input, "start_line")?;
        let line_count = count_arg(input, "line_count")?;
        let requested = requested.to_owned();
        blocking(move || {
            // `path` is canonical, so O_NOFOLLOW only refuses a link swapped in since.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| format!("{requested}: {e}"))?;
            let meta = file.metadata().map_err(|e| format!("{requested}: {e}"))?;
            if meta.is_dir() {
                return Err(format!(
                    "{requested} is a directory; use list_files to see its entries"
                ));
            }
            if !meta.is_file() {
                return Err(not_regular(&requested));
            }
            let mut bytes = Vec::new();
            file.take(MAX_READ_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{requested}: {e}"))?;
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if meta.len() > MAX_READ_BYTES {
                text.push_str(&format!(
                    "\n[only the first {MAX_READ_BYTES} of {} bytes were read]",
                    meta.len()
                ));
            }
            if start_line.is_some() || line_count.is_some() {
                let first = start_line.unwrap_or(1).max(1);
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                let total = lines.len();
                let take = line_count.unwrap_or(total);
                let selected: String = lines.into_iter().skip(first - 1).take(take).collect();
                text = if selected.is_empty() {
                    format!("[{requested} has {total} lines; none from line {first}]")
                } else {
                    selected
                };
            }
            Ok(ToolOutput::ok(text))
        })
        .await
    }

    async fn write_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = string_arg(input, "write_file", "path")?.to_owned();
        let content = string_arg(input, "write_file", "content")?.to_owned();
        let path = self.resolve_for_write(&requested)?;
        let root = self.root.clone();
        let user = self.user;
        blocking(move || {
            let parent = path.parent().unwrap_or(&root).to_path_buf();
            std::fs::create_dir_all(&parent)
                .map_err(|e| format!("creating the directories of {requested}: {e}"))?;
            // What a root runner creates belongs to the step's user, like its workspace.
            if let Some(user) = user {
                for dir in parent
                    .ancestors()
                    .take_while(|d| d.starts_with(&root) && *d != root)
                {
                    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))
                        .map_err(|e| format!("{requested}: {e}"))?;
                }
            }
            // Re-checked after creating: nothing may have swapped a directory for a link.
            let real_parent = parent
                .canonicalize()
                .map_err(|e| format!("{requested}: {e}"))?;
            if !real_parent.starts_with(&root) {
                return Err(outside(&requested));
            }
            // A link into `.git` on the way (the name alone looked harmless).
            if real_parent.strip_prefix(&root).is_ok_and(has_git) {
                return Err(git_refused(&requested));
            }
            // Not truncated on open: a FIFO or device must be refused before anything else.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => symlink_refused(&requested),
                    // A FIFO without a reader.
                    Some(libc::ENXIO) => not_regular(&requested),
                    _ => format!("{requested}: {e}"),
                })?;
            let meta = file.metadata().map_err(|e| format!("{requested}: {e}"))?;
            if !meta.is_file() {
                return Err(not_regular(&requested));
            }
            if let Some(user) = user {
                std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("{requested}: {e}"))?;
            }
            file.set_len(0)
                .and_then(|()| std::io::Write::write_all(&mut file, content.as_bytes()))
                .map_err(|e| format!("{requested}: {e}"))?;
            Ok(ToolOutput::ok(format!(
                "wrote {} bytes to {requested}",
                content.len()
            )))
        })
        .await
    }

    async fn list_files(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = optional_string_arg(input, "path")?
            .unwrap_or(".")
            .to_owned();
        let recursive = bool_arg(input, "recursive")?.unwrap_or(false);
        let dir = self.resolve_existing(&requested)?;
        let root = self.root.clone();
        blocking(move || {
            if !dir.is_dir() {
                return Err(format!("{requested} is not a directory"));
            }
            let mut entries = Vec::new();
            let mut more = false;
            let walk = ignore::WalkBuilder::new(&dir)
                .hidden(false)
                // Only rules inside the listed directory: what lies above the workspace
                // (the runner's directories) must not decide what the model sees.
                .parents(false)
                .git_global(false)
                .require_git(false)
                .follow_links(false)
                .max_depth(if recursive { None } else { Some(1) })
                .filter_entry(|entry| entry.file_name() != ".git")
                .sort_by_file_name(|a, b| a.cmp(b))
                .build();
            for entry in walk.flatten() {
                if entry.depth() == 0 {
                    continue;
                }
                if entries.len() >= MAX_LIST_ENTRIES {
                    more = true;
                    break;
                }
                let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path());
                let mut line = relative.display().to_string();
                match entry.file_type() {
                    Some(kind) if kind.is_dir() => line.push('/'),
                    Some(kind) if kind.is_symlink() => line.push('@'),
                    _ => {}
                }
                entries.push(line);
            }
            if entries.is_empty() {
                return Ok(ToolOutput::ok(format!("{requested} is empty")));
            }
            let mut text = entries.join("\n");
            if more {
                text.push_str(&format!(
                    "\n[only the first {MAX_LIST_ENTRIES} entries are listed]"
                ));
            }
            Ok(ToolOutput::ok(text))
        })
        .await
    }

    async fn grep(&self, input: &Value) -> Result<ToolOutput, String> {
        let pattern = string_arg(input, "grep", "pattern")?;
        let requested = optional_string_arg(input, "path")?.unwrap_or(".");
        let ignore_case = bool_arg(input, "ignore_case")?.unwrap_or(false);
        let target = self.resolve_existing(requested)?;
        let relative = relative_arg(&self.root, &target);
        // Devices and FIFOs are skipped even when named: reading one could block.
        let mut args = vec!["-rnI", "-E", "--devices=skip", "--exclude-dir=.git"];
        if ignore_case {
            args.push("-i");
        }
        args.extend(["-e", pattern, "--", &relative]);
        let done = self.command("grep", &args, COMMAND_TIMEOUT).await?;
        if done.truncated {
            return Ok(ToolOutput::ok(done.stdout));
        }
        match done.code {
            Some(0) => Ok(ToolOutput::ok(done.stdout)),
            Some(1) => Ok(ToolOutput::ok(format!("no matches for {pattern:?}"))),
            _ => Err(format!("grep failed: {}", done.stderr.trim())),
        }
    }

    async fn bash(&self, input: &Value) -> Result<ToolOutput, String> {
        let command = string_arg(input, "bash", "command")?;
        let timeout = match count_arg(input, "timeout_secs")? {
            Some(secs) => Duration::from_secs((secs as u64).clamp(1, MAX_BASH_TIMEOUT_SECS)),
            None => DEFAULT_BASH_TIMEOUT,
        };
        let spec = ProcessSpec {
            program: PathBuf::from("bash"),
            args: vec![
                "--noprofile".into(),
                "--norc".into(),
                "-o".into(),
                "pipefail".into(),
                "-c".into(),
                command.to_owned(),
            ],
            cwd: self.root.clone(),
            env: self.env.clone(),
            user: self.user,
            timeout,
            // The model sees what its command printed; the agent masks what is logged.
            masker: Default::default(),
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let collect = tokio::spawn(async move {
            let mut text = String::new();
            let mut dropped = 0usize;
            while let Some((_, line)) = rx.recv().await {
                let line: String = line;
                if text.len() + line.len() < OUTPUT_CAP {
                    text.push_str(&line);
                    text.push('\n');
                } else {
                    dropped += line.len() + 1;
                }
            }
            (text, dropped)
        });
        let result = process::run(spec, tx, self.stop.clone())
            .await
            .map_err(|e| format!("cannot start bash: {e}"))?;
        let (mut text, dropped) = collect.await.unwrap_or_default();
        if dropped > 0 {
            text.push_str(&format!("[output truncated: {dropped} more bytes]\n"));
        }
        Ok(match result.ending {
            Ending::Exited(0) => {
                if text.is_empty() {
                    text.push_str("(no output)\n");
                }
                text.push_str("[exit code 0]");
                ToolOutput::ok(text)
            }
            Ending::Exited(code) => {
                text.push_str(&format!("[exit code {code}]"));
                ToolOutput::error(text)
            }
            Ending::Signalled(signal) => {
                text.push_str(&format!("[killed by signal {signal}]"));
                ToolOutput::error(text)
            }
            Ending::TimedOut => {
                text.push_str(&format!(
                    "[timed out after {}s; the command and its processes were killed]",
                    timeout.as_secs()
                ));
                ToolOutput::error(text)
            }
            Ending::Cancelled => {
                text.push_str("[the step was stopped; the command was killed]");
                ToolOutput::error(text)
            }
        })
    }

    async fn git_diff(&self, input: &Value) -> Result<ToolOutput, String> {
        let requested = optional_string_arg(input, "path")?;
        let staged = bool_arg(input, "staged")?.unwrap_or(false);
        let relative = match requested {
            Some(path) => {
                let rel = lexical(path)?;
                // A deleted file has no canonical path; its parent must still be inside.
                let full = self.root.join(&rel);
                if full.symlink_metadata().is_ok() {
                    self.resolve_existing(path)?;
                } else {
                    self.check_ancestors(path, &full)?;
                }
                rel_or_dot(&rel)
            }
            None => ".".to_owned(),
        };
        // A copied workspace has no .git, and lives inside the host's repository: git must
        // not find that one.
        if self.root.join(".git").symlink_metadata().is_err() {
            return Err(
                "the workspace is not a git checkout (it has no .git at its root), so there \
                 is no diff to show"
                    .into(),
            );
        }
        let mut args = GIT_SAFE_ARGS.to_vec();
        args.extend(["diff", "--no-color", "--no-ext-diff", "--no-textconv"]);
        if staged {
            args.push("--cached");
        }
        args.extend(["--", &relative]);
        let diff = self.command("git", &args, COMMAND_TIMEOUT).await?;
        if diff.code != Some(0) && !diff.truncated {
            return Err(format!("git diff failed: {}", diff.stderr.trim()));
        }
        let mut args = GIT_SAFE_ARGS.to_vec();
        args.extend([
            "ls-files",
            "--others",
            "--exclude-standard",
            "--",
            &relative,
        ]);
        let untracked = self.command("git", &args, COMMAND_TIMEOUT).await?;
        let mut text = diff.stdout;
        if untracked.code == Some(0) && !untracked.stdout.trim().is_empty() {
            text.push_str("\n# untracked files (not in the diff):\n");
            text.push_str(&untracked.stdout);
        }
        if text.trim().is_empty() {
            text = "no changes".into();
        }
        Ok(ToolOutput::ok(text))
    }

    /// Runs a short command in the workspace; errors when it cannot start, times out or
    /// the step stops. Reads at most [`STDOUT_CAP`] of stdout and [`STDERR_CAP`] of stderr;
    /// past either the command is killed and the result marked `truncated`.
    async fn command(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Finished, String> {
        let mut command = tokio::process::Command::new(program);
        // Built, not inherited, and as the step's user: `git` reads the workspace's
        // `.git/config`, which the step wrote — as root it could be made to run anything.
        command.env_clear();
        if let Some(path) = self.env.get("PATH") {
            command.env("PATH", path);
        }
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("LC_ALL", "C.UTF-8")
            .kill_on_drop(true);
        // Discovery stops at the workspace: never the repository of a directory above it.
        if let Some(parent) = self.root.parent() {
            command.env("GIT_CEILING_DIRECTORIES", parent);
        }
        for name in self
            .env_remove
            .iter()
            .map(String::as_str)
            .chain(GIT_VARS_REMOVED.iter().copied())
        {
            command.env_remove(name);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(format!("{program}: its output could not be read"));
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let out = read_capped(stdout, STDOUT_CAP);
        let err = read_capped(stderr, STDERR_CAP);
        tokio::pin!(out, err);
        let (mut stdout, mut stderr) = (None, None);
        while stdout.is_none() || stderr.is_none() {
            tokio::select! {
                read = &mut out, if stdout.is_none() => {
                    let read = read.map_err(|e| format!("{program}: {e}"))?;
                    if read.1 {
                        let _ = child.start_kill();
                    }
                    stdout = Some(read);
                }
                read = &mut err, if stderr.is_none() => {
                    let read = read.map_err(|e| format!("{program}: {e}"))?;
                    if read.1 {
                        let _ = child.start_kill();
                    }
                    stderr = Some(read);
                }
                () = &mut deadline => {
                    return Err(format!("{program} timed out after {}s", timeout.as_secs()))
                }
                () = self.stop.cancelled() => return Err("the step was stopped".into()),
            }
        }
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| format!("{program}: {e}"))?,
            () = &mut deadline => {
                return Err(format!("{program} timed out after {}s", timeout.as_secs()))
            }
            () = self.stop.cancelled() => return Err("the step was stopped".into()),
        };
        let ((out, out_over), (err, _)) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
        let mut stdout = String::from_utf8_lossy(&out).into_owned();
        if out_over {
            stdout.push_str(&format!(
                "\n[output truncated at {STDOUT_CAP} bytes; {program} was stopped there]"
            ));
        }
        Ok(Finished {
            code: status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&err).into_owned(),
            truncated: out_over,
        })
    }

    /// `requested` resolved to an existing path inside the workspace (links followed).
    fn resolve_existing(&self, requested: &str) -> Result<PathBuf, String> {
        let rel = lexical(requested)?;
        let full = self.root.join(&rel);
        let real = match full.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Say "outside" rather than "missing" for a dangling link that leads out.
                self.check_ancestors(requested, &full)?;
                if full.symlink_metadata().is_ok() {
                    return Err(format!("{requested} is a broken symbolic link"));
                }
                return Err(format!("{requested} does not exist"));
            }
            Err(e) => return Err(format!("{requested}: {e}")),
        };
        if !real.starts_with(&self.root) {
            return Err(outside(requested));
        }
        Ok(real)
    }

    /// Where `requested` may be written: inside the workspace, not a symlink, with its
    /// deepest existing ancestor inside too.
    fn resolve_for_write(&self, requested: &str) -> Result<PathBuf, String> {
        let rel = lexical(requested)?;
        if rel.as_os_str().is_empty() {
            return Err("write_file needs the path of a file".into());
        }
        if has_git(&rel) {
            return Err(git_refused(requested));
        }
        let full = self.root.join(&rel);
        if let Ok(meta) = full.symlink_metadata() {
            if meta.file_type().is_symlink() {
                return Err(symlink_refused(requested));
            }
            if meta.is_dir() {
                return Err(format!("{requested} is a directory"));
            }
            if !meta.is_file() {
                return Err(not_regular(requested));
            }
        }
        let parent = full.parent().unwrap_or(&self.root);
        self.check_ancestors(requested, parent)?;
        Ok(full)
    }

    /// Refuses `path` when its deepest existing ancestor (itself included) resolves
    /// outside the workspace.
    fn check_ancestors(&self, requested: &str, path: &Path) -> Result<(), String> {
        for ancestor in path.ancestors() {
            if ancestor.symlink_metadata().is_err() {
                continue;
            }
            return match ancestor.canonicalize() {
                Ok(real) if real.starts_with(&self.root) => Ok(()),
                Ok(_) => Err(outside(requested)),
                // A dangling link: where it points is unknown, so it is not followed.
                Err(_) if ancestor == path => Err(outside(requested)),
                Err(e) => Err(format!("{requested}: {e}")),
            };
        }
        Err(outside(requested))
    }
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Stdout passed its cap and the command was killed (`code` is then meaningless). Past
    /// the stderr cap it is killed too, which reads as a failure.
    truncated: bool,
}

/// What every `git` call starts with: no pager, quoted paths off, and none of the config
/// that runs commands (hooks, fsmonitor) — a workspace's own `.git/config` is not trusted.
const GIT_SAFE_ARGS: [&str; 7] = [
    "--no-pager",
    "-c",
    "core.quotepath=off",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
];

/// At most `cap` bytes of `pipe`, and whether it had more.
async fn read_capped(
    pipe: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    pipe.take(cap as u64 + 1).read_to_end(&mut bytes).await?;
    let over = bytes.len() > cap;
    bytes.truncate(cap);
    Ok((bytes, over))
}

/// `requested` as a relative path without `.` components; absolute paths, `..` and NUL
/// are refused as written.
fn lexical(requested: &str) -> Result<PathBuf, String> {
    if requested.contains('\0') {
        return Err("a path must not contain NUL characters".into());
    }
    let path = Path::new(requested);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{requested}: '..' is not allowed; paths are relative to the workspace root"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{requested}: absolute paths are not allowed; paths are relative to the \
                     workspace root"
                ))
            }
        }
    }
    Ok(clean)
}

fn outside(requested: &str) -> String {
    format!("{requested} leads outside the workspace; only paths inside it can be used")
}

fn not_regular(requested: &str) -> String {
    format!("{requested} is not a regular file (a FIFO, socket or device); it is not opened")
}

/// Whether `rel` has a `.git` component, in any case (case-insensitive file systems).
fn has_git(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(part) => part.eq_ignore_ascii_case(".git"),
        _ => false,
    })
}

fn git_refused(requested: &str) -> String {
    format!(
        "{requested} is inside .git; write_file does not write there (git's config and hooks \
         would run commands)"
    )
}

fn symlink_refused(requested: &str) -> String {
    format!("{requested} is a symbolic link; write_file does not write through links")
}

/// `target` (inside `root`) as the relative argument a command run in `root` needs.
fn relative_arg(root: &Path, target: &Path) -> String {
    rel_or_dot(target.strip_prefix(root).unwrap_or(Path::new(".")))
}

fn rel_or_dot(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        format!("./{}", rel.display())
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, with a note when cut.
pub fn cap(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "\n[truncated: showing the first {cut} of {total} bytes]"
    ));
    text
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the tool failed: {e}"))?
}

fn string_arg<'a>(input: &'a Value, tool: &str, name: &str) -> Result<&'a str, String> {
    input[name]
        .as_str()
        .ok_or_else(|| format!("{tool} needs a string '{name}'"))
}

fn optional_string_arg<'a>(input: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        other => Err(format!("'{name}' must be a string, not {other}")),
    }
}

fn bool_arg(input: &Value, name: &str) -> Result<Option<bool>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        Value::Bool(value) => Ok(Some(*value)),
        other => Err(format!("'{name}' must be true or false, not {other}")),
    }
}

fn count_arg(input: &Value, name: &str) -> Result<Option<usize>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        value => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("'{name}' must be a non-negative integer, not {value}")),
    }
}

/// The definition the API gets for tool `name`.
fn definition(name: &str) -> Value {
    let path = |what: &str| json!({"type": "string", "description": what});
    let (description, schema) = match name {
        "read_file" => (
            "Read a text file of the workspace. Paths are relative to the workspace root. \
             Output is capped at 64 KiB; use start_line and line_count for parts of big files.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("File path relative to the workspace root"),
                    "start_line": {"type": "integer", "minimum": 1, "description": "First line to return (1-based)"},
                    "line_count": {"type": "integer", "minimum": 1, "description": "How many lines to return"}
                },
                "required": ["path"]
            }),
        ),
        "write_file" => (
            "Create or overwrite a file of the workspace with the given content (parent \
             directories are created). Paths are relative to the workspace root.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("File path relative to the workspace root"),
                    "content": {"type": "string", "description": "The complete new content of the file"}
                },
                "required": ["path", "content"]
            }),
        ),
        "list_files" => (
            "List the entries of a directory of the workspace (directories end with '/', \
             symbolic links with '@'), honouring .gitignore.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Directory relative to the workspace root (default: the root)"),
                    "recursive": {"type": "boolean", "description": "List everything below it (default false)"}
                }
            }),
        ),
        "grep" => (
            "Search files of the workspace for an extended regular expression (grep -E); \
             prints path:line:text for each match.",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Extended regular expression"},
                    "path": path("File or directory to search (default: the whole workspace)"),
                    "ignore_case": {"type": "boolean", "description": "Match case-insensitively"}
                },
                "required": ["pattern"]
            }),
        ),
        "bash" => (
            "Run a bash command in the workspace root and return its output (stdout and \
             stderr) and exit code. Commands are killed after timeout_secs (default 120).",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The bash command"},
                    "timeout_secs": {"type": "integer", "minimum": 1, "maximum": MAX_BASH_TIMEOUT_SECS}
                },
                "required": ["command"]
            }),
        ),
        _ => (
            "Show the uncommitted changes of the workspace's git checkout (git diff) and \
             list untracked files.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Limit the diff to this file or directory"),
                    "staged": {"type": "boolean", "description": "Show staged changes (git diff --cached)"}
                }
            }),
        ),
    };
    json!({"name": name, "description": description, "input_schema": schema})
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn toolbox(root: &Path) -> Toolbox {
        let all: Vec<String> = ALL.iter().map(|t| t.to_string()).collect();
        Toolbox::new(
            root,
            &all,
            BTreeMap::new(),
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    /// `work/` (the workspace, with `a.txt`, `sub/b.txt`, links in and out) next to
    /// `outside/secret.txt`.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("work");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a.txt"), "alpha\nbeta\ngamma\n").unwrap();
        std::fs::write(root.join("sub/b.txt"), "inner").unwrap();
        std::fs::write(outside.join("secret.txt"), "do not touch").unwrap();
        symlink("sub/b.txt", root.join("inside-link")).unwrap();
        symlink(outside.join("secret.txt"), root.join("out-file")).unwrap();
        symlink(&outside, root.join("out-dir")).unwrap();
        symlink(outside.join("missing"), root.join("dangling-out")).unwrap();
        Fixture {
            _dir: dir,
            root,
            outside,
        }
    }

    async fn call(tools: &Toolbox, name: &str, input: Value) -> ToolOutput {
        tools.call(name, &input).await
    }

    #[tokio::test]
    async fn reads_inside_and_through_inner_links() {
        let f = fixture();
        let tools = toolbox(&f.root);
        let out = call(&tools, "read_file", json!({"path": "a.txt"})).await;
        assert_eq!(out, ToolOutput::ok("alpha\nbeta\ngamma\n"));
        let out = call(&tools, "read_file", json!({"path": "./inside-link"})).await;
        assert_eq!(out.content, "inner");
        let out = call(
            &tools,
            "read_file",
            json!({"path": "a.txt", "start_line": 2, "line_count": 1}),
        )
        .await;
        assert_eq!(out.content, "beta\n");
    }

    #[tokio::test]
    async fn paths_leading_out_are_error_results() {
        let f = fixture();
        let tools = toolbox(&f.root);
        for path in [
            "../outside/secret.txt",
            "../../etc/passwd",
            "/etc/passwd",
            "sub/../../outside/secret.txt",
            "out-file",
            "out-dir/secret.txt",
            "dangling-out",
        ] {
            let out = call(&tools, "read_file", json!({ "path": path })).await;
            assert!(out.is_error, "{path}: {out:?}");
            assert!(!out.content.contains("do not touch"), "{path}: {out:?}");
        }
        let out = call(&tools, "list_files", json!({"path": "out-dir"})).await;
        assert!(out.is_error && out.content.contains("outside"), "{out:?}");
        let out = call(
            &tools,
            "grep",
            json!({"pattern": "touch", "path": "out-dir"}),
        )
        .await;
        assert!(out.is_error, "{out:?}");
    }

    #[tokio::test]
    async fn writes_stay_inside_and_never_follow_links() {
        let f = fixture();
        let tools = toolbox(&f.root);
        let out = call(
            &tools,
            "write_file",
            json!({"path": "new/dir/c.txt", "content": "gamma ✓"}),
        )
        .await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(
            std::fs::read_to_string(f.root.join("new/dir/c.txt")).unwrap(),
            "gamma ✓"
        );
        for path in [
            "out-file",
            "out-dir/new.txt",
            "inside-link",
            "dangling-out",
            "../outside/secret.txt",
            "/tmp/plue-escape.txt",
        ] {
            let out = call(&tools, "write_file", json!({"path": path, "content": "x"})).await;
            assert!(out.is_error, "{path}: {out:?}");
        }
        assert_eq!(
            std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
            "do not touch"
        );
        assert!(!f.outside.join("new.txt").exists());
        assert!(!f.outside.join("missing").exists());
        assert_eq!(
            std::fs::read_to_string(f.root.join("sub/b.txt")).unwrap(),
            "inner"
        );
    }

    #[tokio::test]
    async fn lists_and_greps() {
        let f = fixture();
        let tools = toolbox(&f.root);
        let out = call(&tools, "list_files", json!({})).await;
        assert_eq!(
            out.content,
            "a.txt\ndangling-out@\ninside-link@\nout-dir@\nout-file@\nsub/"
        );
        let out = call(
            &tools,
            "list_files",
            json!({"path": "sub", "recursive": true}),
        )
        .await;
        assert_eq!(out.content, "sub/b.txt");
        let out = call(&tools, "grep", json!({"pattern": "^be"})).await;
        assert_eq!(out, ToolOutput::ok("./a.txt:2:beta\n"));
        let out = call(&tools, "grep", json!({"pattern": "nothing-here"})).await;
        assert!(!out.is_error && out.content.starts_with("no matches"));
        let out = call(&tools, "grep", json!({"pattern": "("})).await;
        assert!(out.is_error, "{out:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bash_reports_output_and_exit_codes_and_times_out() {
        let f = fixture();
        let tools = toolbox(&f.root);
        let out = call(&tools, "bash", json!({"command": "cat a.txt | wc -l"})).await;
        assert_eq!(out, ToolOutput::ok("3\n[exit code 0]"));
        let out = call(&tools, "bash", json!({"command": "echo oops >&2; exit 4"})).await;
        assert_eq!(out, ToolOutput::error("oops\n[exit code 4]"));
        let started = std::time::Instant::now();
        let out = call(
            &tools,
            "bash",
            json!({"command": "echo begun; sleep 30", "timeout_secs": 1}),
        )
        .await;
        assert!(out.is_error);
        assert!(
            out.content.starts_with("begun\n[timed out after 1s"),
            "{out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn unoffered_tools_and_bad_input_are_error_results() {
        let f = fixture();
        let tools = Toolbox::new(
            &f.root,
            &["read_file".to_string()],
            BTreeMap::new(),
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(tools.definitions().len(), 1);
        assert_eq!(tools.definitions()[0]["name"], "read_file");
        let out = call(&tools, "bash", json!({"command": "true"})).await;
        assert!(
            out.is_error && out.content.contains("not available"),
            "{out:?}"
        );
        let out = call(&tools, "read_file", json!({"path": 3})).await;
        assert!(out.is_error && out.content.contains("needs a string 'path'"));
        let err = Toolbox::new(
            &f.root,
            &["rm_rf".to_string()],
            BTreeMap::new(),
            Vec::new(),
            CancellationToken::new(),
        )
        .unwrap_err();
        assert!(err.contains("unknown tool 'rm_rf'"), "{err}");
    }

    #[tokio::test]
    async fn git_diff_shows_changes_and_untracked_files() {
        let f = fixture();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(["-c", "user.name=P", "-c", "user.email=p@example.com"])
                .arg("-C")
                .arg(&f.root)
                .args(args)
                .output()
                .unwrap();
            assert!(status.status.success(), "{status:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "a.txt"]);
        git(&["commit", "-q", "-m", "one"]);
        std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
        let tools = toolbox(&f.root);
        let out = call(&tools, "git_diff", json!({})).await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
        assert!(out.content.contains("# untracked files"), "{}", out.content);
        let out = call(&tools, "git_diff", json!({"path": "../x"})).await;
        assert!(out.is_error);
    }

    fn git_in(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=P", "-c", "user.email=p@example.com"])
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }

    #[tokio::test]
    async fn writes_under_dot_git_are_refused() {
        // regression: write_file .git/config + git_diff ran commands through git's config.
        let f = fixture();
        git_in(&f.root, &["init", "-q"]);
        symlink(".git", f.root.join("innocent")).unwrap();
        std::fs::create_dir(f.root.join("sub/.GIT")).unwrap();
        let config = std::fs::read_to_string(f.root.join(".git/config")).unwrap();
        let tools = toolbox(&f.root);
        for path in [
            ".git/config",
            "./.git/hooks/pre-commit",
            ".GIT/config",
            "sub/.Git/x",
            ".git",
            "innocent/config",
        ] {
            let out = call(&tools, "write_file", json!({"path": path, "content": "x"})).await;
            assert!(out.is_error, "{path}: {out:?}");
            assert!(out.content.contains("inside .git"), "{path}: {out:?}");
        }
        assert_eq!(
            std::fs::read_to_string(f.root.join(".git/config")).unwrap(),
            config
        );
        assert!(!f.root.join("sub/.GIT/x").exists());
        let out = call(
            &tools,
            "write_file",
            json!({"path": "gitignore.git", "content": "x"}),
        )
        .await;
        assert!(!out.is_error, "{out:?}");
    }

    #[tokio::test]
    async fn git_diff_runs_no_command_from_the_repository_config() {
        let f = fixture();
        git_in(&f.root, &["init", "-q"]);
        git_in(&f.root, &["add", "a.txt"]);
        git_in(&f.root, &["commit", "-q", "-m", "one"]);
        // A workspace whose repository asks git to run commands (as a prepared checkout, or
        // a bash call, could arrange).
        let marker = f.outside.join("ran");
        let run = format!("touch {}; cat", marker.display());
        for (key, value) in [
            ("core.fsmonitor", run.as_str()),
            ("diff.evil.textconv", run.as_str()),
            ("diff.external", run.as_str()),
            ("core.pager", run.as_str()),
        ] {
            git_in(&f.root, &["config", key, value]);
        }
        std::fs::write(f.root.join(".gitattributes"), "*.txt diff=evil\n").unwrap();
        std::fs::write(f.root.join("a.txt"), "alpha\nBETA\ngamma\n").unwrap();
        let tools = toolbox(&f.root);
        let out = call(&tools, "git_diff", json!({})).await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.contains("-beta\n+BETA"), "{}", out.content);
        assert!(
            !marker.exists(),
            "git ran a command from the workspace's config"
        );
    }

    #[tokio::test]
    async fn git_diff_never_shows_the_repository_above_the_workspace() {
        // regression: a copied workspace (no .git) under <repo>/.plue/... diffed the host.
        let f = fixture();
        let host = f.root.parent().unwrap();
        git_in(host, &["init", "-q"]);
        std::fs::write(host.join("host.txt"), "host secret\n").unwrap();
        git_in(host, &["add", "host.txt"]);
        git_in(host, &["commit", "-q", "-m", "host"]);
        std::fs::write(host.join("host.txt"), "host changed\n").unwrap();
        let tools = toolbox(&f.root);
        let out = call(&tools, "git_diff", json!({})).await;
        assert!(out.is_error, "{out:?}");
        assert!(out.content.contains("not a git checkout"), "{out:?}");
        assert!(!out.content.contains("host"), "{out:?}");
    }

    #[tokio::test]
    async fn grep_output_past_the_cap_stops_grep() {
        let f = fixture();
        let line = format!("{}\n", "match ".repeat(20));
        std::fs::write(f.root.join("big.txt"), line.repeat(200_000)).unwrap();
        let tools = toolbox(&f.root);
        let out = call(
            &tools,
            "grep",
            json!({"pattern": "match", "path": "big.txt"}),
        )
        .await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.len() <= OUTPUT_CAP, "{}", out.content.len());
        assert!(
            out.content.ends_with("; grep was stopped there]"),
            "{}",
            &out.content[out.content.len() - 200..]
        );
    }

    #[tokio::test]
    async fn fifos_are_refused_without_blocking() {
        let f = fixture();
        let made = std::process::Command::new("mkfifo")
            .arg(f.root.join("pipe"))
            .status()
            .unwrap();
        assert!(made.success());
        let tools = toolbox(&f.root);
        for (name, input) in [
            ("read_file", json!({"path": "pipe"})),
            ("write_file", json!({"path": "pipe", "content": "x"})),
        ] {
            let out = tokio::time::timeout(Duration::from_secs(5), call(&tools, name, input))
                .await
                .unwrap_or_else(|_| panic!("{name} blocked on a FIFO"));
            assert!(
                out.is_error && out.content.contains("not a regular file"),
                "{out:?}"
            );
        }
    }

    #[test]
    fn caps_cut_on_char_boundaries() {
        let text = "é".repeat(10);
        let capped = cap(text, 5);
        assert!(capped.starts_with("éé\n[truncated: showing the first 4 of 20 bytes]"));
        assert_eq!(cap("short".into(), 5), "short");
    }
}
