//! Where a step run, a run, an attempt, a runner and a provenance statement are in their
//! lives.
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
    /// `"step"`, `"run"`, `"attempt"`, `"runner"` or `"statement"`.
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

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
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
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
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
        assert_eq!(StepStatus::Cancelled.as_str(), "cancelled");
        assert_eq!(AttemptStatus::Running, "running");
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
}
