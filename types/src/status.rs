//! Where a step run, a run, an attempt, a runner, a provenance statement, a safe-output
//! proposal, a debug session and a GitHub App installation are in their lives, and what a
//! run reports to its forge as its commit status ([`CommitState`]).
//!
//! Invariants: each status's text (`as_str`, `Display`, serde, the database's `status`
//! column) is the same lowercase word, and `FromStr` reads back exactly those words and
//! nothing else (an unknown word is a [`UnknownStatus`] error, never a default). Only the
//! store converts between the enums and the text it stores.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A status text no variant has: the kind of status and the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {text:?}")]
pub struct UnknownStatus {
    /// `"step"`, `"run"`, `"attempt"`, `"runner"`, `"statement"`, `"commit"`,
    /// `"proposal"`, `"debug session"` or `"installation"`.
    pub kind: &'static str,
    pub text: String,
}

/// Defines a status enum with its text (the same for `as_str`, `Display`, serde and
/// `FromStr`), so the four can never disagree.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every status, in the order of the life it describes.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<$name, UnknownStatus> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownStatus { kind: $kind, text: text.to_owned() }),
                }
            }
        }

        /// For rows decoded with `#[sqlx(try_from = "String")]`.
        impl TryFrom<String> for $name {
            type Error = UnknownStatus;

            fn try_from(text: String) -> Result<$name, UnknownStatus> {
                text.parse()
            }
        }
    };
}

status_enum! {
    /// Where a step run is in its life.
    StepStatus ("step") {
        /// Waiting for its dependencies.
        Pending = "pending",
        /// Ready, waiting for a runner (also between retries).
        Queued = "queued",
        /// A runner took it and is preparing the workspace.
        Claimed = "claimed",
        /// An approval step waiting for a person's decision (holds no runner).
        Waiting = "waiting",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Skipped = "skipped",
    }
}

impl StepStatus {
    /// Nothing changes it any more (but a rerun, which makes new step runs).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Cancelled
                | StepStatus::Skipped
        )
    }
}

status_enum! {
    /// The outcome of a whole run.
    RunStatus ("run") {
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// The commit state a run that ended so reports to its forge: the one mapping from a
    /// run's end to its commit status (a cancelled run's is `error`: a commit status has
    /// no `cancelled`).
    pub fn commit_state(self) -> CommitState {
        match self {
            RunStatus::Succeeded => CommitState::Success,
            RunStatus::Failed => CommitState::Failure,
            RunStatus::Cancelled => CommitState::Error,
        }
    }

    /// The commit status a run that ended so reports: its state and its description
    /// (`reason`: the run's, which a failure names).
    pub fn commit_status(self, reason: Option<&str>) -> (CommitState, String) {
        let description = match self {
            RunStatus::Succeeded => "Plue run succeeded".to_owned(),
            RunStatus::Failed => format!("Plue run failed: {}", reason.unwrap_or("a step failed")),
            RunStatus::Cancelled => format!("Plue run {self}"),
        };
        (self.commit_state(), description)
    }
}

status_enum! {
    /// Where a run is in its life (its `runs.status`); a final one is its [`RunStatus`].
    RunState ("run") {
        /// Waiting for its concurrency group's active run to end.
        Pending = "pending",
        Queued = "queued",
        /// A step of it was claimed.
        Running = "running",
        /// Shown only, never stored: a queued or running run that only steps waiting for
        /// a person's decision hold, as lists and filters read it (the store's
        /// `SHOWN_STATUS`); its stored status stays `running`.
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl RunState {
    /// Nothing changes it any more.
    pub fn is_final(self) -> bool {
        self.outcome().is_some()
    }

    /// How the run ended, once it has.
    pub fn outcome(self) -> Option<RunStatus> {
        match self {
            RunState::Succeeded => Some(RunStatus::Succeeded),
            RunState::Failed => Some(RunStatus::Failed),
            RunState::Cancelled => Some(RunStatus::Cancelled),
            RunState::Pending | RunState::Queued | RunState::Running | RunState::Waiting => None,
        }
    }
}

impl From<RunStatus> for RunState {
    fn from(status: RunStatus) -> RunState {
        match status {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }
}

status_enum! {
    /// The state of a run's commit status, as its forge takes it (a `status_reports.state`,
    /// the `state` of the body GitHub and Gitea accept): what a run tells the forge about
    /// the commit it ran at. A final one is [`RunStatus::commit_state`].
    CommitState ("commit") {
        /// The run is queued, waits for its concurrency group, or runs.
        Pending = "pending",
        /// The run succeeded.
        Success = "success",
        /// The run failed.
        Failure = "failure",
        /// The run was cancelled, or its workflow file did not evaluate.
        Error = "error",
    }
}

impl CommitState {
    /// The run has ended (every state but `pending`).
    pub fn is_final(self) -> bool {
        self != CommitState::Pending
    }
}

status_enum! {
    /// Where one attempt of a step run is: held by a runner (`claimed`, then `running`),
    /// then ended with the runner's outcome.
    AttemptStatus ("attempt") {
        /// A runner took it and is preparing the workspace.
        Claimed = "claimed",
        /// Its process started.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Its runner never acknowledged the claim within the engine's window: the step
        /// went back to the queue without using a retry, and the runner is suspect.
        Unacknowledged = "unacknowledged",
    }
}

impl AttemptStatus {
    /// Ended: the runner holds it no longer, and a repeated completion changes nothing.
    pub fn is_final(self) -> bool {
        !matches!(self, AttemptStatus::Claimed | AttemptStatus::Running)
    }
}

status_enum! {
    /// Where a runner is in its life (its `runners.state`).
    RunnerState ("runner") {
        /// Registered, running nothing.
        Idle = "idle",
        /// Holds an attempt or a debug session.
        Busy = "busy",
        /// Missed its heartbeats; never live again.
        Lost = "lost",
        /// Left (deregistered or stopped by its pool); never live again.
        Gone = "gone",
    }
}

impl RunnerState {
    /// It may be handed work (idle or busy).
    pub fn is_live(self) -> bool {
        matches!(self, RunnerState::Idle | RunnerState::Busy)
    }
}

status_enum! {
    /// Where a provenance statement is (its `provenance.state`): signed and recorded before
    /// its change is written, then settled in the transaction that settles its proposal.
    /// Only an `applied` statement is served; a `failed` one keeps the write's reason.
    StatementState ("statement") {
        /// Recorded; its change is being written, or its write will be tried again.
        Pending = "pending",
        /// The forge accepted the write (a pull request's push and the pull request itself,
        /// a comment, the labels, an issue).
        Applied = "applied",
        /// The write failed for good (the forge refused it, or it failed once too often).
        Failed = "failed",
    }
}

status_enum! {
    /// Where a safe-output proposal is (its `proposals.state`): recorded checked with its
    /// attempt, decided by a person when it waits for one, then taken by the engine's
    /// outbox. Every change is guarded by the state it leaves.
    ProposalState ("proposal") {
        /// Validation or the threat check refused it (`reason`); never applied.
        Refused = "refused",
        /// A person must approve it first (`approve_outputs=True`, or the threat check).
        Waiting = "waiting",
        /// A person said no.
        Rejected = "rejected",
        /// To apply.
        Ready = "ready",
        /// An applier holds it (leased until its `retry_at`).
        Applying = "applying",
        /// The forge accepted the write (`applied_url`).
        Applied = "applied",
        /// The write failed (`reason`); tried again from `retry_at` when it has one.
        Failed = "failed",
    }
}

status_enum! {
    /// Where a debug session is (its `debug_sessions.status`): it only moves forward, and
    /// any state may end.
    DebugSessionStatus ("debug session") {
        /// Waiting for a runner.
        Queued = "queued",
        /// A runner took it and runs the step again.
        Claimed = "claimed",
        /// The shell is up.
        Ready = "ready",
        /// Over (`end_reason`); final.
        Ended = "ended",
    }
}

status_enum! {
    /// Where a GitHub App installation is (its `github_installations.state`), as the App's
    /// webhooks described it.
    InstallationState ("installation") {
        Active = "active",
        Suspended = "suspended",
        /// Uninstalled: the row is kept, its repositories are not.
        Deleted = "deleted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str`, `Display`, serde and `FromStr` are one text, for every variant of each.
    fn round_trips<T>(all: &[T])
    where
        T: Copy + fmt::Display + FromStr<Err = UnknownStatus> + Serialize + PartialEq + fmt::Debug,
        T: for<'de> Deserialize<'de>,
    {
        for &status in all {
            let text = status.to_string();
            assert_eq!(text.parse::<T>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<T>(&format!("\"{text}\"")).unwrap(),
                status
            );
            assert_eq!(text, text.to_lowercase());
        }
    }

    #[test]
    fn every_status_has_one_lowercase_text() {
        round_trips(StepStatus::ALL);
        round_trips(RunStatus::ALL);
        round_trips(AttemptStatus::ALL);
        round_trips(RunnerState::ALL);
        round_trips(StatementState::ALL);
        round_trips(CommitState::ALL);
        round_trips(ProposalState::ALL);
        round_trips(DebugSessionStatus::ALL);
        round_trips(InstallationState::ALL);
        assert_eq!(StepStatus::Cancelled.as_str(), "cancelled");
        assert_eq!(AttemptStatus::Running.as_str(), "running");
    }

    #[test]
    fn unknown_or_differently_cased_text_is_an_error_naming_the_kind() {
        let err = "Succeeded".parse::<StepStatus>().unwrap_err();
        assert_eq!(
            err,
            UnknownStatus {
                kind: "step",
                text: "Succeeded".into()
            }
        );
        assert_eq!(
            "skipped".parse::<AttemptStatus>().unwrap_err().to_string(),
            "unknown attempt status \"skipped\""
        );
        assert!("queued".parse::<RunStatus>().is_err());
        assert!(serde_json::from_str::<StepStatus>("\"done\"").is_err());
        assert_eq!(
            "withheld".parse::<ProposalState>().unwrap_err().to_string(),
            "unknown proposal status \"withheld\""
        );
        assert_eq!(
            "open"
                .parse::<DebugSessionStatus>()
                .unwrap_err()
                .to_string(),
            "unknown debug session status \"open\""
        );
        assert!("Active".parse::<InstallationState>().is_err());
    }

    #[test]
    fn final_statuses() {
        let final_steps: Vec<_> = StepStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            final_steps,
            [
                &StepStatus::Succeeded,
                &StepStatus::Failed,
                &StepStatus::Cancelled,
                &StepStatus::Skipped
            ]
        );
        assert!(!AttemptStatus::Claimed.is_final() && !AttemptStatus::Running.is_final());
        assert!(AttemptStatus::Failed.is_final());
    }

    #[test]
    fn a_run_s_end_is_its_commit_state() {
        let reported: Vec<_> = RunStatus::ALL
            .iter()
            .map(|s| s.commit_status(Some("step x failed")))
            .collect();
        assert_eq!(
            reported,
            [
                (CommitState::Success, "Plue run succeeded".to_owned()),
                (
                    CommitState::Failure,
                    "Plue run failed: step x failed".to_owned()
                ),
                (CommitState::Error, "Plue run cancelled".to_owned()),
            ]
        );
        assert_eq!(
            RunStatus::Failed.commit_status(None).1,
            "Plue run failed: a step failed"
        );
        assert!(RunStatus::ALL.iter().all(|s| s.commit_state().is_final()));
        for &status in RunStatus::ALL {
            assert_eq!(RunState::from(status).outcome(), Some(status));
        }
        assert_eq!(RunState::Waiting.outcome(), None);
        assert!(!CommitState::Pending.is_final());
    }
}
