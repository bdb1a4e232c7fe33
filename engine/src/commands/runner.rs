//! `plue runner`: the runner agent as a process — until SIGINT/SIGTERM, the engine
//! forgetting it, its parent's death (`--die-with-parent`), or (ephemeral) one step.
//!
//! The registration token comes from stdin (`--token-stdin`, how the engine's pool hands
//! over its one-time tokens), a file only this user can read (`--token-file`), or — visible
//! in `/proc/<pid>/cmdline` or `environ` to whoever may read them — `--token` or
//! `PLUE_RUNNER_TOKEN`.
//!
//! The runner announces, besides its `--labels`, the reserved labels of the network
//! policies it can enforce (`runner::network::capability`; allow-lists also with
//! `--egress-proxy`, the cluster's egress proxy its pod's NetworkPolicy confines it to),
//! so it claims no step it would have to fail closed; and it reaches the engine directly,
//! or through `--engine-proxy` only — never through a proxy of its environment's
//! (`runner::engine_client`). It tells the engine the machine it runs on: its Kubernetes
//! node (`PLUE_NODE_NAME`, which the pool's pods get from `spec.nodeName`) or its host name
//! ([`host`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use ::runner::agent::{self, AgentConfig};
use ::runner::engine_client::EngineProxy;
use ::runner::network::capability;
use ::runner::step_env;
use ::runner::step_user::StepUsers;
use tokio_util::sync::CancellationToken;

use super::Interrupts;
use crate::cli::RunnerArgs;

/// The longest registration token read from stdin or a file.
const MAX_TOKEN_BYTES: u64 = 4096;

pub(crate) async fn run(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let parent_exit = match args.die_with_parent {
        Some(parent) => Some(die_with_parent(parent)?),
        None => None,
    };
    let registration_token = registration_token(&args)?;
    let work_dir = work_dir(&args);
    let host = host();
    let name = args.name.unwrap_or_else(|| {
        let prefix = hostname().unwrap_or_else(|| "runner".into());
        format!("{prefix}-{}", std::process::id())
    });
    let egress_proxy = match &args.egress_proxy {
        Some(url) => Some(
            ::runner::network::egress_proxy_url(url)
                .map_err(|e| anyhow::anyhow!("--egress-proxy: {e}"))?,
        ),
        None => None,
    };
    let labels = labels_with_capability(
        args.labels,
        args.network_confined_by_pod,
        egress_proxy.is_some(),
    )?;
    let engine_proxy = match &args.engine_proxy {
        Some(url) => {
            Some(EngineProxy::parse(url).map_err(|e| anyhow::anyhow!("--engine-proxy: {e}"))?)
        }
        None => None,
    };
    let config = AgentConfig {
        engine: args.engine,
        registration_token,
        name,
        labels,
        ephemeral: args.ephemeral,
        accept_forks: match (args.accept_forks, args.refuse_forks) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        work_dir,
        give_up_after: Duration::from_secs(args.give_up_after),
        base_env: step_env::Base::of_this_process(args.inherit_env, &args.pass_env),
        step_users: match args.step_users {
            Some((first, last)) if nix::unistd::geteuid().is_root() => {
                StepUsers::range(first, last)?
            }
            Some(_) => anyhow::bail!("--step-users needs a runner that runs as root"),
            None => StepUsers::default_for_this_process(),
        },
        anthropic_base_url: args.anthropic_base_url.filter(|url| !url.is_empty()),
        network_confined_by_pod: args.network_confined_by_pod,
        egress_proxy,
        warm_python: args.warm_python,
        engine_proxy,
        engine_socket: args.engine_socket,
        host,
        held_connection: !args.no_held_connection,
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    let parent = args.die_with_parent;
    let orphaned = CancellationToken::new();
    if let Some(exit) = parent_exit {
        let parent_gone = orphaned.clone();
        tokio::spawn(async move {
            exit.await;
            parent_gone.cancel();
        });
    }
    // Every SIGINT or SIGTERM: a stop asked of a runner whose parent lives (the pool's),
    // or, with the fallback parent-death signal, the parent's end.
    let mut interrupts = Interrupts::new()?;
    let parent_gone = orphaned.clone();
    tokio::spawn(async move {
        loop {
            interrupts.recv().await;
            if parent.is_some_and(|p| !child_of(p)) {
                parent_gone.cancel();
            } else {
                signal.cancel();
            }
        }
    });
    tokio::select! {
        ended = agent::run(config, shutdown) => ended?,
        // No one is left to report to: dropping the agent kills the step's processes
        // (their containment ends with its future) without waiting for a report.
        () = orphaned.cancelled() => {
            tracing::warn!("the engine that started this runner is gone: stopping its step");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator's `--labels` and the reserved labels of the network policies this runner
/// can enforce ([`capability`]), which claims route by: found here, never given by hand.
fn labels_with_capability(
    mut labels: BTreeMap<String, String>,
    confined_by_pod: bool,
    egress_proxy: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    if let Some(key) = labels.keys().find(|k| capability::is_reserved(k)) {
        bail!(
            "--labels: the key '{key}' is reserved (labels starting with '{}' say which \
             network policies the runner can enforce; the runner finds them itself)",
            capability::PREFIX
        );
    }
    let mut can = capability::Capability::probe(confined_by_pod);
    // Allow-lists through the cluster's egress proxy (`--egress-proxy`), whichever the
    // probe found: such a runner runs every allow-list step that way.
    can.allow |= egress_proxy;
    tracing::info!(
        "network policies this runner can enforce: {}",
        can.describe()
    );
    labels.extend(can.labels());
    Ok(labels)
}

/// Where the Kubernetes pool's pods find their node's name (the downward API's
/// `spec.nodeName`, set by `plue_pool`'s pod spec).
pub(crate) const NODE_NAME_ENV: &str = "PLUE_NODE_NAME";

/// The machine this runner runs on, as it tells the engine: its node's name when
/// [`NODE_NAME_ENV`] gives one (in a pod, the host name is the pod's), else its host name;
/// `None` when neither has a character the engine accepts.
fn host() -> Option<String> {
    std::env::var(NODE_NAME_ENV)
        .ok()
        .map(|name| host_name_chars(&name))
        .filter(|name| !name.is_empty())
        .or_else(hostname)
}

/// This machine's host name, as far as the engine accepts its characters.
fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    Some(host_name_chars(&name)).filter(|name| !name.is_empty())
}

/// `name` with only the characters (and at most the length) a runner's host may have.
fn host_name_chars(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(plue_types::protocol::MAX_HOST_BYTES)
        .collect()
}

/// The parent of the runner's attempt directories (`--work-dir`, else `$TMPDIR/plue-runner`).
fn work_dir(args: &RunnerArgs) -> std::path::PathBuf {
    args.work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("plue-runner"))
}

/// Called by `main` while the process has one thread, before the async runtime starts:
/// `--work-dir-in-memory` mounts the work directory's tmpfs (`runner::work_tmpfs`), making
/// the directory first (0711, as `plue runner` would) when it is missing; refused, it stays
/// on disk. A failure once the mount namespace was unshared ends the process.
pub(crate) fn before_threads(args: &RunnerArgs) {
    use std::os::unix::fs::DirBuilderExt;
    if !args.work_dir_in_memory {
        return;
    }
    let dir = work_dir(args);
    if !dir.exists() {
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            });
        if let Err(e) = made {
            tracing::info!(dir = %dir.display(), "the work directory stays on disk: {e}");
            return;
        }
    }
    match ::runner::work_tmpfs::mount(&dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "the work directory is in memory"),
        Err(::runner::work_tmpfs::Refused::Before(e)) => tracing::info!(
            dir = %dir.display(),
            "the work directory stays on disk: {e:#}"
        ),
        Err(::runner::work_tmpfs::Refused::After(e)) => {
            eprintln!(
                "error: putting the work directory {} in memory: {e:#}",
                dir.display()
            );
            std::process::exit(1);
        }
    }
}

/// The registration token from the source the arguments name (stdin, a file, then
/// `--token`/`PLUE_RUNNER_TOKEN`).
fn registration_token(args: &RunnerArgs) -> anyhow::Result<String> {
    let text = if args.token_stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_TOKEN_BYTES)
            .read_to_string(&mut text)
            .context("reading the registration token from stdin")?;
        text
    } else if let Some(path) = &args.token_file {
        read_token_file(path)?
    } else if let Some(token) = &args.token {
        token.clone()
    } else {
        bail!("no registration token: give --token-stdin, --token-file PATH or PLUE_RUNNER_TOKEN");
    };
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        bail!("the registration token is empty");
    }
    Ok(token.to_string())
}

/// Reads a token file, refusing one that other users may read (the token would not be
/// this runner's alone; [`super::private_file`]).
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    super::private_file::read_private(path, "the registration token file", MAX_TOKEN_BYTES)
}

/// Checks this process's parent is still `parent` (it may have died before we looked), and
/// answers what resolves once that process has exited: its pidfd, which follows the
/// process itself. A parent-death signal (`PR_SET_PDEATHSIG`) is only the fallback of a
/// kernel without pidfds (before 5.3): it follows the *thread* that forked this process,
/// which may end before the process does (the first of a killed process's threads to go,
/// a runtime's worker retired), and would then come while the parent lives on.
fn die_with_parent(parent: i32) -> anyhow::Result<ParentExit> {
    if !child_of(parent) {
        bail!("the parent process {parent} is gone");
    }
    // Opened once the parent is known to be ours: its pid cannot have been reused.
    match parent_exit(parent) {
        Ok(exit) => Ok(Box::pin(exit)),
        Err(err) => {
            tracing::debug!("no pidfd for the parent ({err:#}): a parent-death signal instead");
            // SIGTERM, not SIGKILL: the runner must kill its step's processes on the way out.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .context("asking for a parent-death signal")?;
            if !child_of(parent) {
                bail!("the parent process {parent} is gone");
            }
            Ok(Box::pin(std::future::pending()))
        }
    }
}

/// What resolves once the runner's parent has exited ([`die_with_parent`]).
type ParentExit = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Resolves once process `parent`, this process's parent, has exited (its pidfd becomes
/// readable; should waiting on it fail, once this process has another parent).
fn parent_exit(parent: i32) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let pidfd = ::runner::process::exit_notice(nix::unistd::Pid::from_raw(parent))?;
    Ok(async move {
        if pidfd.readable().await.is_ok() {
            return;
        }
        while child_of(parent) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Whether this process's parent is still `parent`.
fn child_of(parent: i32) -> bool {
    nix::unistd::getppid().as_raw() == parent
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// The watch follows the process, not a thread of it: it resolves once the process
    /// has exited, and not before.
    #[tokio::test]
    async fn the_parents_exit_is_seen_when_the_process_ends() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        let mut exit = Box::pin(parent_exit(pid).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!((&mut exit).now_or_never().is_none(), "alive");
        child.start_kill().unwrap();
        tokio::time::timeout(Duration::from_secs(20), exit)
            .await
            .expect("the exit is seen");
        let _ = child.wait().await;
    }
}
