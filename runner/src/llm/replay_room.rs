//! The room a replayed `llm` step's tools run in (`plue rerun --replay`): the same one a
//! runner gives an attempt of the step, outside any runner.
//!
//! A replay runs the tool calls a transcript recorded — calls a model chose, maybe steered
//! by a prompt injection, or written into a crafted transcript — on the machine of whoever
//! replays it. So they get what the original attempt's tools got, and no more:
//! - the step's user: a uid claimed from the step users' range when this process is root
//!   (`step_user`, the claim held until the room is closed), which owns the room's tree
//!   and nothing else; the tools then also get the private places, IPC namespace and
//!   `/proc` of every step process (`launch`, `rooms`). Not root: this process's user, as a
//!   runner that is not root runs its steps;
//! - the step's network policy, set up as a runner does (`crate::network::confine`): a
//!   namespace with only loopback for `none`, the egress proxy for an allow-list, the host's
//!   network only for `open`; a policy that cannot be set up fails the replay, which never
//!   runs the tools with the host's network instead;
//! - a tree of its own, `workspace/`, `home/`, `tmp/` and an empty `output`, created private
//!   to this process (0700) under a fresh name, filled by the caller, then handed to the step
//!   user ([`ReplayRoom::hand_over`]) exactly as a runner hands an attempt's.
//!
//! Which environment and secrets the tools get is the caller's to build (`step_env`); this
//! module gives none. Invariants: the tree is never one someone else made (a fresh name,
//! `create`, never `create_dir_all`) and is reachable by the step user only once handed
//! over; [`ReplayRoom::close`] ends the network, then removes the tree, then releases the
//! claim — in that order, as a runner ends an attempt — and dropping a room that was not
//! closed removes the tree before the claim goes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio::sync::mpsc::Sender;

use crate::network::{self, StepNetwork};
use crate::step_env::AttemptPaths;
use crate::step_user::{self, Claim, StepUser, StepUsers};
use plue_types::protocol::{NetworkPolicy, Stream};

/// A replayed step's user, tree and network (see the module doc).
pub struct ReplayRoom {
    /// `None` once closed.
    dir: Option<PathBuf>,
    workspace: PathBuf,
    output_file: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    network: Option<StepNetwork>,
    /// Declared last: released after the tree is gone (see [`Drop`]).
    claim: Option<Claim>,
}

impl ReplayRoom {
    /// Claims the step user `users` gives (none for [`StepUsers::Same`]) and creates a
    /// fresh private tree named `plue-replay-<random>` in `parent`, which a step user must
    /// be able to reach. Blocking.
    pub fn make(parent: &Path, users: StepUsers) -> anyhow::Result<ReplayRoom> {
        use std::os::unix::fs::DirBuilderExt;
        if users != StepUsers::Same && !step_user::usable_by_others(parent) {
            bail!(
                "{} cannot be reached by the step users the replay's tools run as (a \
                 directory on its path is private): set TMPDIR to another directory",
                parent.display()
            );
        }
        let claim = users.claim().context("claiming a step user")?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = parent.join(format!("plue-replay-{suffix}"));
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        builder
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // From here on a failure removes what was made (`Drop`).
        let room = ReplayRoom {
            workspace: dir.join("workspace"),
            output_file: dir.join("output"),
            home: dir.join("home"),
            tmp: dir.join("tmp"),
            dir: Some(dir),
            network: None,
            claim,
        };
        for path in [&room.workspace, &room.home, &room.tmp] {
            builder
                .create(path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        std::fs::write(&room.output_file, b"").context("creating the output file")?;
        Ok(room)
    }

    /// The workspace (the tools' root), to be filled before [`ReplayRoom::hand_over`].
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// `$PLUE_OUTPUT`.
    pub fn output_file(&self) -> &Path {
        &self.output_file
    }

    /// The paths of the tools' environment (`step_env::build`).
    pub fn paths(&self) -> AttemptPaths<'_> {
        AttemptPaths {
            workspace: &self.workspace,
            output_file: &self.output_file,
            home: &self.home,
            tmp: &self.tmp,
        }
    }

    /// The user the tools run as (`None`: this process's own).
    pub fn user(&self) -> Option<StepUser> {
        self.claim.as_ref().map(Claim::user)
    }

    /// Gives the tree, filled, to the step user (nothing to do without one). Blocking.
    pub fn hand_over(&self) -> anyhow::Result<()> {
        match (self.user(), &self.dir) {
            (Some(user), Some(dir)) => step_user::hand_over(dir, user),
            _ => Ok(()),
        }
    }

    /// Sets up `policy` for the tools, as a runner does for a step; the error says why it
    /// cannot be (the replay must not run then). `log` receives the proxy's refusals.
    pub async fn confine(
        &mut self,
        policy: &NetworkPolicy,
        log: &Sender<(Stream, String)>,
    ) -> Result<(), String> {
        self.network = network::confine(policy, log).await?;
        Ok(())
    }

    /// The network every tool process joins (`None`: the host's, for `open`).
    pub fn network(&self) -> Option<&StepNetwork> {
        self.network.as_ref()
    }

    /// Ends the room once every tool process is gone: the network (returns how many
    /// connections its proxy refused), then the tree, then the claim.
    pub async fn close(mut self) -> u64 {
        let refused = match self.network.take() {
            Some(network) => network.finish().await,
            None => 0,
        };
        // The tree's removal and the claim's release (which may sweep) block.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
        refused
    }
}

impl Drop for ReplayRoom {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%err, dir = %dir.display(), "could not remove the replay's directory");
                }
            }
        }
        // `claim` is dropped after this: the uid is released with its tree gone.
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_room_is_a_fresh_private_tree_removed_when_it_goes() {
        let parent = tempfile::tempdir().unwrap();
        let room = ReplayRoom::make(parent.path(), StepUsers::Same).unwrap();
        let dir = room.workspace().parent().unwrap().to_owned();
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("plue-replay-"));
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert!(room.workspace().is_dir());
        assert!(room.output_file().is_file());
        assert_eq!(room.user(), None);
        assert!(room.network().is_none());
        room.hand_over().unwrap();
        drop(room);
        assert!(!dir.exists());
    }
}
