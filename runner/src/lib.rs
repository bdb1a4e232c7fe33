//! The Plue runner: the half of the system that executes step attempts.
//!
//! - The JSON types spoken with the engine over `/internal/...` HTTP live in
//!   `plue_types::protocol`.
//! - [`workspace`]: prepares a step's fresh working directory (a copy of a local tree, a git
//!   checkout, or nothing).
//! - [`process`]: runs one step process in its own process group, streams its output as
//!   lines, enforces the timeout and cancellation, and kills every process the step left
//!   behind (`containment`: its own session and cgroup; `reaper`: the sweep under it).
//! - [`llm`]: `llm` steps — a streaming Claude agent with tools confined to the workspace.
//! - `launch`: a step's leader started without copying the runner, which sets itself up
//!   (session, cgroup, and under a root runner a private `/proc` and the attempt's user).
//! - [`network`]: a step's network policy — its own namespace with loopback only, and
//!   for an allow-list an egress proxy served into it.
//! - [`step_env`]: a step's environment, built from an allow-list; [`step_user`]: the
//!   unprivileged user a root runner runs each step as.
//! - [`git_sandbox`]: the one way git runs on a workspace, with a git directory of the
//!   runner's own that keeps only allow-listed settings (no filter, hook or pager runs).
//! - [`engine_client`]: the runner's HTTP client to its engine, which never takes a proxy
//!   from the environment.
//! - [`caches`]: a step cache's key, archive, digest check and restore on disk.
//! - [`mask`]: replaces secret values in log lines; [`outputs`]: parses `$PLUE_OUTPUT`.
//! - [`work_tmpfs`]: a root runner's work directory on a tmpfs of its own mount namespace,
//!   so attempts' trees cost no disk inodes.
//! - [`python_path`]: the interpreter behind a pyenv shim, found without running it;
//!   [`program_path`]: a step's `bash` found on its `PATH` in the runner.
//!
//! Architecture invariant: the runner never touches the database; it speaks only the
//! engine's `/internal/...` HTTP API. The dependency direction is `engine → runner →
//! prompts`.

pub mod agent;
pub mod caches;
mod cgroup_state;
mod containment;
pub mod engine_client;
pub mod git_sandbox;
pub mod handoff;
mod held_connection;
mod launch;
pub mod llm;
pub mod mask;
pub mod network;
pub mod outputs;
pub mod process;
pub mod program_path;
pub mod python_path;
mod reaper;
mod rooms;
pub mod step_env;
pub mod step_user;
pub mod work_tmpfs;
pub mod workspace;
