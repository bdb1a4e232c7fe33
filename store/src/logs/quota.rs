//! Log quotas: how many bytes of line text one attempt and one run may store, the engine
//! counting (the runner that sends the lines is not trusted to).
//!
//! Invariants:
//! - Each attempt row keeps the bytes of text its stored lines hold (`log_bytes`), the
//!   highest seq stored (`log_last_seq`) and whether its log was cut (`log_truncated`);
//!   each run row keeps the bytes of all its attempts' lines. The attempt's figures change
//!   in the statement that stores the lines (PostgreSQL: a data-modifying `WITH`; SQLite:
//!   a trigger on each chunk insert, which updates the run's too), so two engine replicas
//!   sharing a database count every line once, and a batch sent again (seqs at or below
//!   `log_last_seq`, or a copy racing its first) adds nothing.
//! - A batch is cut where the next line would pass either quota: the lines before are
//!   stored, then one marker line (on the `system` stream, with the seq of the first line
//!   dropped) saying which quota was passed, and the attempt is marked truncated, after
//!   which every line of it is dropped (on SQLite the mark follows the marker's insert
//!   in a statement of its own: an engine dying in between leaves a log that the next
//!   batch cuts again, with a second marker). An attempt's stored text therefore stays
//!   within its quota plus the marker. The caller then fails the attempt engine-side with the marker
//!   as its reason and answers the runner's batch with `cancel` (what the runner does for
//!   a cancelled run: it kills the step; its own completion is then a repeat that records
//!   nothing, the attempt being final already; a batch a completion carries fails the
//!   attempt the same way, and that completion is then such a repeat). A cut log whose
//!   attempt is not over yet (the failing did not happen: the engine failed or died
//!   between the two, and the runner sends the batch again) fails the attempt at its next
//!   batch, with the quota read back from the counters ([`plan`]). That needs no change to runners, old or new, and does not rely
//!   on them: a runner ignoring `cancel` keeps its step running, but nothing it prints is
//!   stored, and the step is failed.
//! - On PostgreSQL a run's total is added right after the attempt's, in a statement of
//!   its own (each statement locks one row: no lock order to keep with the run's other
//!   writers; a crash in between forgets one batch of the run's total). Steps of one run
//!   logging at the same moment each read the total before adding to it, so the run's
//!   quota may be passed by at most one batch (4 MiB) per step logging at that moment;
//!   each of them is then cut at its next batch. (SQLite has one writer at a time.)
//! - A run of a pull request from a fork (`secrets_allowed` false, as the artifact quotas
//!   decide) gets the smaller fork quotas.

use plue_types::protocol::{LogLine, Stream};

/// The most bytes of line text an attempt and a run may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuotas {
    /// One attempt of a step.
    pub step: u64,
    /// All attempts of all steps of one run.
    pub run: u64,
    /// `step` for a run of a pull request from a fork.
    pub fork_step: u64,
    /// `run` for a run of a pull request from a fork.
    pub fork_run: u64,
}

impl Default for LogQuotas {
    fn default() -> LogQuotas {
        LogQuotas {
            step: 64 << 20,
            run: 256 << 20,
            fork_step: 16 << 20,
            fork_run: 64 << 20,
        }
    }
}

/// Where an attempt's log stands, read before a batch of it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct LogBudget {
    /// The runner should stop the attempt (the run is being cancelled, or the attempt
    /// ended): what the batch's answer says.
    pub stop: bool,
    pub attempt_bytes: i64,
    pub last_seq: i64,
    pub truncated: bool,
    pub run_bytes: i64,
    /// The run may get secrets (it is not a pull request's from a fork).
    pub secrets_allowed: bool,
}

/// The quota a batch passed, for the marker line and the step's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLogQuota {
    /// The run's quota, not the step's.
    pub run: bool,
    pub fork: bool,
    pub limit: u64,
}

impl std::fmt::Display for OverLogQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (holder, flag) = match (self.run, self.fork) {
            (false, false) => ("this step", "--quota-step-log-bytes"),
            (true, false) => ("this run", "--quota-run-log-bytes"),
            (false, true) => (
                "this step (of a pull request from a fork)",
                "--quota-fork-step-log-bytes",
            ),
            (true, true) => (
                "this run (of a pull request from a fork)",
                "--quota-fork-run-log-bytes",
            ),
        };
        write!(
            f,
            "log truncated: {holder} passed its log quota of {} bytes (plue serve {flag})",
            self.limit
        )
    }
}

/// What of a batch to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The batch's new lines that fit, then the marker line when it was cut.
    pub lines: Vec<LogLine>,
    /// The batch was cut: the quota it passed.
    pub over: Option<OverLogQuota>,
}

/// What of `lines` (a runner's batch, seqs increasing) to store given `budget`: its lines
/// past the last stored one, cut where they would pass a quota (see the module doc);
/// `now_ms` stamps the marker. Nothing if the attempt's log was cut already — and then,
/// while the attempt is not over (`stop` unset), the quota it passed again, so the caller
/// fails it: a cut whose failing did not happen (the engine failed or died in between,
/// and the runner sent the batch again) still fails the attempt with its reason.
pub fn plan(quotas: &LogQuotas, budget: &LogBudget, lines: &[LogLine], now_ms: i64) -> Planned {
    let fork = !budget.secrets_allowed;
    let (step_limit, run_limit) = if fork {
        (quotas.fork_step, quotas.fork_run)
    } else {
        (quotas.step, quotas.run)
    };
    let used = |n: i64| u64::try_from(n).unwrap_or(0);
    let step_room = step_limit.saturating_sub(used(budget.attempt_bytes));
    let run_room = run_limit.saturating_sub(used(budget.run_bytes));
    // The quota with less room left: the one a cut passed (the lines it stored and its
    // marker took the same bytes from both).
    let passed = OverLogQuota {
        run: run_room < step_room,
        fork,
        limit: if run_room < step_room {
            run_limit
        } else {
            step_limit
        },
    };
    if budget.truncated {
        return Planned {
            lines: Vec::new(),
            over: (!budget.stop).then_some(passed),
        };
    }
    let room = step_room.min(run_room);
    let last = used(budget.last_seq);
    let new = &lines[lines.partition_point(|l| l.seq <= last)..];
    let mut bytes = 0u64;
    let mut fit = 0;
    for line in new {
        bytes += line.text.len() as u64;
        if bytes > room {
            break;
        }
        fit += 1;
    }
    let mut kept = new[..fit].to_vec();
    let over = new.get(fit).map(|first_dropped| {
        kept.push(LogLine {
            seq: first_dropped.seq,
            stream: Stream::System,
            text: passed.to_string(),
            ts_ms: now_ms,
        });
        passed
    });
    Planned { lines: kept, over }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(seqs: std::ops::RangeInclusive<u64>, bytes: usize) -> Vec<LogLine> {
        seqs.map(|seq| LogLine {
            seq,
            stream: Stream::Stdout,
            text: "a".repeat(bytes),
            ts_ms: 1,
        })
        .collect()
    }

    const QUOTAS: LogQuotas = LogQuotas {
        step: 100,
        run: 250,
        fork_step: 30,
        fork_run: 40,
    };

    fn budget(attempt_bytes: i64, last_seq: i64, run_bytes: i64) -> LogBudget {
        LogBudget {
            stop: false,
            attempt_bytes,
            last_seq,
            truncated: false,
            run_bytes,
            secrets_allowed: true,
        }
    }

    #[test]
    fn lines_within_the_quotas_are_stored_whole() {
        let batch = lines(1..=10, 10);
        let planned = plan(&QUOTAS, &budget(0, 0, 0), &batch, 5);
        assert_eq!(planned.lines, batch);
        assert_eq!(planned.over, None);
    }

    #[test]
    fn a_batch_past_the_step_quota_is_cut_and_ends_with_the_marker() {
        let batch = lines(5..=20, 10);
        let planned = plan(&QUOTAS, &budget(60, 4, 60), &batch, 5);
        let seqs: Vec<u64> = planned.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [5, 6, 7, 8, 9], "4 lines fit in the 40 bytes left");
        let marker = planned.lines.last().unwrap();
        assert_eq!(marker.stream, Stream::System);
        assert_eq!(
            marker.text,
            "log truncated: this step passed its log quota of 100 bytes \
             (plue serve --quota-step-log-bytes)"
        );
        assert_eq!(marker.ts_ms, 5);
        assert!(!planned.over.unwrap().run);
    }

    #[test]
    fn the_run_quota_cuts_when_it_has_less_room() {
        let planned = plan(&QUOTAS, &budget(0, 0, 245), &lines(1..=3, 10), 0);
        assert_eq!(planned.lines.len(), 1, "only the marker");
        assert!(planned.lines[0]
            .text
            .contains("this run passed its log quota of 250"));
        assert!(planned.over.unwrap().run);
    }

    #[test]
    fn fork_runs_get_the_fork_quotas() {
        let fork = LogBudget {
            secrets_allowed: false,
            ..budget(0, 0, 0)
        };
        let planned = plan(&QUOTAS, &fork, &lines(1..=5, 10), 0);
        assert_eq!(planned.lines.len(), 4, "3 lines and the marker");
        assert!(planned.lines[3]
            .text
            .contains("fork) passed its log quota of 30 bytes (plue serve --quota-fork-step"));
    }

    #[test]
    fn a_batch_sent_again_counts_only_its_new_lines() {
        // Lines 1..=9 (90 bytes) are stored: a copy of their batch with one more line fits.
        let planned = plan(&QUOTAS, &budget(90, 9, 90), &lines(1..=10, 10), 0);
        assert_eq!(planned.lines, lines(10..=10, 10));
        assert_eq!(planned.over, None);
    }

    #[test]
    fn nothing_more_is_stored_once_the_log_was_cut() {
        // Cut at the step's quota (its marker, 84 bytes, counted), the attempt failed.
        let ended = LogBudget {
            truncated: true,
            stop: true,
            ..budget(95 + 84, 10, 95 + 84)
        };
        let planned = plan(&QUOTAS, &ended, &lines(1..=12, 1), 0);
        assert!(planned.lines.is_empty());
        assert_eq!(planned.over, None);
    }

    #[test]
    fn a_cut_log_of_an_attempt_not_yet_failed_names_the_quota_it_passed_again() {
        // The engine cut the log and then failed before it failed the attempt: the batch
        // sent again stores nothing and fails the attempt with the same reason.
        let step_cut = LogBudget {
            truncated: true,
            ..budget(95 + 84, 10, 95 + 84)
        };
        let planned = plan(&QUOTAS, &step_cut, &lines(1..=12, 1), 0);
        assert!(planned.lines.is_empty());
        let over = planned.over.expect("the quota passed");
        assert_eq!(
            over.to_string(),
            "log truncated: this step passed its log quota of 100 bytes \
             (plue serve --quota-step-log-bytes)"
        );
        // Cut at the run's quota (another step's lines took most of it).
        let run_cut = LogBudget {
            truncated: true,
            ..budget(5 + 83, 1, 245 + 83)
        };
        let over = plan(&QUOTAS, &run_cut, &lines(2..=3, 1), 0).over.unwrap();
        assert!(over.run && over.limit == 250, "{over:?}");
    }
}
