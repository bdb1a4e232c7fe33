//! Crash backoff per pool (one per runner class): runners that end before they register
//! — a container whose entrypoint exits at once, a wrong `engine_url`, a work directory the
//! runner refuses — are start failures. After [`BackoffPolicy::after`] of them in a row the
//! pool starts nothing for a while (`first`, doubling per further failure up to `max`), then
//! one probe runner at a time; once the wait has reached `max` the pool has given up on
//! serving its queued steps and fails them with the reason (`fail_queued`) instead of
//! letting them wait forever.
//!
//! Invariants:
//! - Only a runner that never registered counts as a failure: a registered runner that is
//!   later stopped, preempted or lost is not a start failure (an idle class whose warm
//!   runners get preempted now and then never backs off), and any runner that registers
//!   resets the count.
//! - While backing off, the pool shows it (`backing_off`, the last reason) and starts at
//!   most one runner at a time once the wait is over; `StartFailures::budget` says how
//!   many may start now.
//! - A step is failed here only while the class has given up, only if no live runner
//!   (other than the engine's holders) announces its labels, and only through the state
//!   machine (a holder runner claims it, its attempt completes as failed).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::engine::Engine;

/// How a pool backs off after runners that fail at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Start failures in a row before the pool waits.
    pub after: u32,
    /// The first wait; each further failure doubles it.
    pub first: Duration,
    /// The longest wait; reaching it gives up on the queued steps.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> BackoffPolicy {
        BackoffPolicy {
            after: 3,
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// The policy with its longest wait `max` (the first wait never above it).
    pub fn capped_at(max: Duration) -> BackoffPolicy {
        let default = BackoffPolicy::default();
        BackoffPolicy {
            first: default.first.min(max),
            max,
            ..default
        }
    }

    /// The wait after `in_a_row` failures (zero below `after`).
    fn wait(&self, in_a_row: u32) -> Duration {
        if in_a_row < self.after {
            return Duration::ZERO;
        }
        let doublings = (in_a_row - self.after).min(20);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// How a runner ended, as far as its provider knows; `Copy` so the pool's status stays so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its process (or container) exited with this code.
    Code(i32),
    /// Its process was killed by this signal.
    Signal(i32),
    /// It did not register within the pool's start timeout (the pool stopped it).
    NotRegistered,
    /// It could not be started at all.
    NotStarted,
    /// It is gone and the provider cannot say how.
    Unknown,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Code(code) => write!(f, "exit code {code}"),
            Ending::Signal(signal) => write!(f, "signal {signal}"),
            Ending::NotRegistered => f.write_str("did not register in time"),
            Ending::NotStarted => f.write_str("could not be started"),
            Ending::Unknown => f.write_str("ended"),
        }
    }
}

/// A runner's end as its provider tells it: the kind, and a line for people (the pod's
/// name and its container's termination message, for instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The runner's name (its pod's).
    pub runner: String,
    pub ending: Ending,
    pub detail: String,
}

/// The pool's count of start failures in a row and its backoff.
#[derive(Debug)]
pub(super) struct StartFailures {
    policy: BackoffPolicy,
    in_a_row: u32,
    until: Option<Instant>,
    last: Option<Ended>,
}

impl StartFailures {
    pub(super) fn new(policy: BackoffPolicy) -> StartFailures {
        StartFailures {
            policy,
            in_a_row: 0,
            until: None,
            last: None,
        }
    }

    /// Counts one start failure at `now`; the wait it begins, if the pool now backs off.
    pub(super) fn failed(&mut self, ended: Ended, now: Instant) -> Option<Duration> {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.last = Some(ended);
        let wait = self.policy.wait(self.in_a_row);
        if wait.is_zero() {
            return None;
        }
        self.until = Some(now + wait);
        Some(wait)
    }

    /// A runner registered: the class works. Whether it was backing off.
    pub(super) fn succeeded(&mut self) -> bool {
        let was = self.backing_off();
        self.in_a_row = 0;
        self.until = None;
        was
    }

    pub(super) fn in_a_row(&self) -> u32 {
        self.in_a_row
    }

    pub(super) fn backing_off(&self) -> bool {
        self.in_a_row >= self.policy.after
    }

    /// Backing off at the longest wait: the queued steps are failed.
    pub(super) fn given_up(&self) -> bool {
        self.backing_off() && self.policy.wait(self.in_a_row) >= self.policy.max
    }

    pub(super) fn last(&self) -> Option<&Ended> {
        self.last.as_ref()
    }

    /// How many runners may start at `now` while `starting` are still starting: any
    /// number unless backing off; none during the wait; then one probe at a time.
    pub(super) fn budget(&self, now: Instant, starting: usize) -> usize {
        if !self.backing_off() {
            return usize::MAX;
        }
        match self.until {
            Some(until) if now < until => 0,
            _ => 1usize.saturating_sub(starting),
        }
    }

    /// Why the class's steps cannot run, for a failed step and the pool's log.
    pub(super) fn reason(&self, class: &str) -> String {
        let last = self
            .last
            .as_ref()
            .map(|l| l.detail.as_str())
            .unwrap_or("unknown");
        format!(
            "runner class {class} is backing off: {} runners in a row ended before \
             registering (the last: {last})",
            self.in_a_row
        )
    }
}

/// Fails every ready step asking for exactly `labels` (of forks' runs when `fork`, of the
/// others' otherwise) with `why`; how many attempts it failed.
pub(super) async fn fail_queued(
    executor: &dyn Engine,
    labels: &BTreeMap<String, String>,
    fork: bool,
    why: &str,
) -> anyhow::Result<usize> {
    // A holder accepting forks exactly when failing forks' steps: `claim` then takes only
    // the others' (a runner refusing forks is offered none), `claim_fork_step` only forks'.
    let holder = crate::forks::register_holder(executor.store(), fork).await?;
    crate::engine::fail_claimable(executor, holder, labels, fork, why).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> Ended {
        Ended {
            runner: "r".into(),
            ending: Ending::Code(code),
            detail: format!("runner r: exit code {code}"),
        }
    }

    #[test]
    fn the_wait_begins_after_a_few_failures_doubles_and_is_capped() {
        let policy = BackoffPolicy {
            after: 3,
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        };
        let waits: Vec<u64> = (0..12).map(|n| policy.wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            BackoffPolicy::capped_at(Duration::from_secs(2)).first,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn failures_in_a_row_back_off_give_up_at_the_cap_and_one_success_resets() {
        let policy = BackoffPolicy {
            after: 3,
            first: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
        let mut failures = StartFailures::new(policy);
        let t0 = Instant::now();
        assert_eq!(failures.failed(ended(1), t0), None);
        assert_eq!(failures.failed(ended(1), t0), None);
        assert_eq!(failures.budget(t0, 5), usize::MAX, "not yet");
        assert_eq!(failures.failed(ended(1), t0), Some(Duration::from_secs(1)));
        assert!(failures.backing_off() && !failures.given_up());
        assert_eq!(failures.budget(t0, 0), 0, "during the wait");
        let later = t0 + Duration::from_secs(2);
        assert_eq!(failures.budget(later, 0), 1, "one probe");
        assert_eq!(failures.budget(later, 1), 0, "one probe at a time");
        assert_eq!(failures.failed(ended(1), t0), Some(Duration::from_secs(2)));
        assert_eq!(failures.failed(ended(2), t0), Some(Duration::from_secs(4)));
        assert!(failures.given_up());
        let reason = failures.reason("small");
        assert_eq!(
            reason,
            "runner class small is backing off: 5 runners in a row ended before registering \
             (the last: runner r: exit code 2)"
        );
        assert!(failures.succeeded());
        assert!(!failures.backing_off() && !failures.given_up());
        assert_eq!(failures.budget(t0, 3), usize::MAX);
        assert!(!failures.succeeded(), "was not backing off any more");
    }

    #[test]
    fn endings_read_as_people_say_them() {
        assert_eq!(Ending::Code(1).to_string(), "exit code 1");
        assert_eq!(Ending::Signal(9).to_string(), "signal 9");
        assert_eq!(
            Ending::NotRegistered.to_string(),
            "did not register in time"
        );
    }
}
