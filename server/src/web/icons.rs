//! The glyph shown beside a status word, so a status never rests on colour alone (the
//! badge markup is `<span class="badge S"><span aria-hidden="true">ICON</span> S</span>`):
//! [`Icon`] for each status vocabulary, and one template filter each, so a template says
//! which vocabulary it shows (`{{ step.status|step_icon }}`, `{{ run.status|run_icon }}`).
//! `assets/status.js` holds the same glyphs for scripts (`window.PlueStatus`).
//!
//! Invariants: every status of every vocabulary has its glyph (the matches are
//! exhaustive); no two step statuses share one (a group's counts tell them apart, issue
//! 54); a word of one vocabulary that looks like another's borrows its glyph (a runner
//! `busy` is `running`'s); a filter given a word its vocabulary lacks fails the render — a
//! template naming the wrong vocabulary is a bug the tests catch, never a silent dot.

use std::fmt::Display;
use std::str::FromStr;

use minijinja::{Error, ErrorKind};
use plue_types::status::{
    AttemptStatus, ProposalState, RunState, RunnerState, StatementState, StepStatus,
};

const SUCCEEDED: &str = "\u{2713}"; // ✓
const FAILED: &str = "\u{2717}"; // ✗
const RUNNING: &str = "\u{25F7}"; // ◷
const QUEUED: &str = "\u{22EF}"; // ⋯
const CLAIMED: &str = "\u{25D4}"; // ◔ (taken, starting)
const PENDING: &str = "\u{25CB}"; // ○
const WAITING: &str = "\u{2016}"; // ‖ (in common fonts; ⏸ is not)
const SKIPPED: &str = "\u{293C}"; // ⤼
const CANCELLED: &str = "\u{2298}"; // ⊘
const UNACKNOWLEDGED: &str = "\u{21A9}"; // ↩ (back to the queue)
/// A proposal state without a look of its own.
const OTHER: &str = "\u{2022}"; // •

/// A status vocabulary's glyphs.
pub(super) trait Icon: Copy + FromStr<Err: Display> {
    /// The glyph beside this status.
    fn icon(self) -> &'static str;
}

impl Icon for StepStatus {
    fn icon(self) -> &'static str {
        match self {
            StepStatus::Pending => PENDING,
            StepStatus::Queued => QUEUED,
            StepStatus::Claimed => CLAIMED,
            StepStatus::Waiting => WAITING,
            StepStatus::Running => RUNNING,
            StepStatus::Succeeded => SUCCEEDED,
            StepStatus::Failed => FAILED,
            StepStatus::Cancelled => CANCELLED,
            StepStatus::Skipped => SKIPPED,
        }
    }
}

impl Icon for RunState {
    fn icon(self) -> &'static str {
        match self {
            RunState::Pending => PENDING,
            RunState::Queued => QUEUED,
            RunState::Running => RUNNING,
            RunState::Waiting => WAITING,
            RunState::Succeeded => SUCCEEDED,
            RunState::Failed => FAILED,
            RunState::Cancelled => CANCELLED,
        }
    }
}

impl Icon for AttemptStatus {
    fn icon(self) -> &'static str {
        match self {
            AttemptStatus::Claimed => CLAIMED,
            AttemptStatus::Running => RUNNING,
            AttemptStatus::Succeeded => SUCCEEDED,
            AttemptStatus::Failed => FAILED,
            AttemptStatus::Cancelled => CANCELLED,
            AttemptStatus::Unacknowledged => UNACKNOWLEDGED,
        }
    }
}

impl Icon for RunnerState {
    fn icon(self) -> &'static str {
        match self {
            RunnerState::Idle => PENDING,
            RunnerState::Busy => RUNNING,
            RunnerState::Lost => FAILED,
            RunnerState::Gone => CANCELLED,
        }
    }
}

impl Icon for StatementState {
    fn icon(self) -> &'static str {
        match self {
            StatementState::Pending => PENDING,
            StatementState::Applied => SUCCEEDED,
            StatementState::Failed => FAILED,
        }
    }
}

impl Icon for ProposalState {
    fn icon(self) -> &'static str {
        match self {
            ProposalState::Applied => SUCCEEDED,
            ProposalState::Failed | ProposalState::Rejected => FAILED,
            ProposalState::Applying => RUNNING,
            ProposalState::Ready => QUEUED,
            ProposalState::Waiting => WAITING,
            ProposalState::Refused => OTHER,
        }
    }
}

/// The template filter of vocabulary `T`: the glyph of the status a view serialized as
/// `text`; an error for a word `T` does not have.
pub(super) fn filter<T: Icon>(text: &str) -> Result<&'static str, Error> {
    text.parse::<T>()
        .map(T::icon)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_step_status_has_its_own_glyph() {
        // Every status a group's counts name (dag::STATUS_ORDER), `claimed` too: it
        // shared `queued`'s glyph, so "2 ⋯  1 ⋯" counted two statuses alike (issue 54).
        let glyphs: HashSet<_> = StepStatus::ALL.iter().map(|s| s.icon()).collect();
        assert_eq!(
            glyphs.len(),
            StepStatus::ALL.len(),
            "two statuses share a glyph"
        );
        assert_eq!(StepStatus::Succeeded.icon(), "\u{2713}");
        assert_eq!(ProposalState::Ready.icon(), StepStatus::Queued.icon());
        assert_eq!(ProposalState::Refused.icon(), "\u{2022}");
        // The same map as assets/status.js.
        let script = include_str!("assets/status.js");
        let entries = StepStatus::ALL
            .iter()
            .map(|s| (s.as_str(), s.icon()))
            .chain(
                ProposalState::ALL
                    .iter()
                    .filter(|p| p.icon() != OTHER)
                    .map(|p| (p.as_str(), p.icon())),
            );
        for (status, glyph) in entries {
            let entry = format!("{status}: \"{glyph}\"");
            assert!(script.contains(&entry), "status.js lacks {entry}");
        }
    }

    #[test]
    fn a_word_that_looks_like_a_step_status_borrows_its_glyph() {
        for run in RunState::ALL {
            let step: StepStatus = run.as_str().parse().expect("a run state is a step's");
            assert_eq!(run.icon(), step.icon(), "{run}");
        }
        for attempt in AttemptStatus::ALL {
            if let Ok(step) = attempt.as_str().parse::<StepStatus>() {
                assert_eq!(attempt.icon(), step.icon(), "{attempt}");
            }
        }
        assert_eq!(StatementState::Applied.icon(), StepStatus::Succeeded.icon());
        assert_eq!(RunnerState::Busy.icon(), StepStatus::Running.icon());
        for proposal in ProposalState::ALL {
            if let Ok(step) = proposal.as_str().parse::<StepStatus>() {
                assert_eq!(proposal.icon(), step.icon(), "{proposal}");
            }
        }
    }

    #[test]
    fn a_filter_reads_only_its_own_vocabulary() {
        assert_eq!(filter::<StepStatus>("skipped").unwrap(), "\u{293C}");
        assert_eq!(filter::<RunnerState>("idle").unwrap(), "\u{25CB}");
        let wrong = filter::<RunState>("skipped").unwrap_err();
        assert!(wrong.to_string().contains("unknown run status"), "{wrong}");
        assert!(filter::<StepStatus>("<b>").is_err());
    }
}
