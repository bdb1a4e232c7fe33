//! The part of the run page that explains a run (`templates/run_failure.html`): for each
//! failed step a sentence saying what failed and why ("`test` failed: its command `cargo
//! test` exited with code 3 …") with the last lines of its command and of its log; the
//! run's annotations (`::error file=…::…` lines, `plue_core::annotations`); the steps'
//! outputs; and whether "Re-run failed steps" is offered. `POST /runs/{id}/rerun-failed`
//! is that button: the API's re-run with `failed=true`, called as the session's caller.
//!
//! Invariants:
//! - Bounded whatever the run printed: at most [`MAX_FAILURES`] failed steps are
//!   explained, each with its last [`TAIL_LINES`] log lines read by one cursor read of the
//!   store after its last line's position (never the whole log); at most
//!   [`MAX_ANNOTATIONS`] annotations; each output value cut to [`MAX_OUTPUT`] characters.
//! - Everything shown from a step (log lines, annotation text, outputs) is text for the
//!   template to escape; nothing is marked safe.

use evaluator::plan::{Action, Plan};
use plue_store::{RunRow, StepRunRow, Store};
use plue_types::status::StepStatus;
use serde::Serialize;

use super::encode;
use crate::api::annotations::{self, AnnotationView, DroppedView};

/// Failed steps explained on the page; the others are counted.
pub(super) const MAX_FAILURES: usize = 5;
/// Log lines shown of each failed step.
pub(super) const TAIL_LINES: i64 = 20;
/// Lines of a failed step's command shown.
const COMMAND_LINES: usize = 3;
/// Annotations shown on the page (the API lists more).
const MAX_ANNOTATIONS: i64 = 100;
/// Characters shown of an output value.
const MAX_OUTPUT: usize = 300;
/// Characters of a command line quoted in a sentence.
const QUOTED: usize = 80;

/// What the run page shows to explain a run.
#[derive(Debug, Default, Serialize)]
pub(super) struct Explained {
    pub failures: Vec<Failure>,
    /// Failed steps not explained (past [`MAX_FAILURES`]).
    pub more_failures: usize,
    pub annotations: Vec<AnnotationView>,
    /// More annotations exist than are shown.
    pub annotations_truncated: bool,
    pub dropped: Vec<DroppedView>,
    /// `/api/runs/{id}/annotations`.
    pub annotations_url: String,
    /// Steps with outputs, in plan order.
    pub outputs: Vec<StepOutputs>,
    /// The run ended with a failed or cancelled step and the caller may re-run it.
    pub can_rerun_failed: bool,
}

/// One failed step, explained.
#[derive(Debug, Serialize)]
pub(super) struct Failure {
    pub step: String,
    /// The step's page.
    pub url: String,
    /// "`test` failed: its command (last line `…`) exited with code 3.", in parts: the
    /// step's id and the quoted command are code.
    pub sentence: Vec<Part>,
    /// The last lines of its command or script (empty for other kinds).
    pub command_tail: Vec<String>,
    /// Its last log lines (of its last attempt), oldest first.
    pub lines: Vec<TailLine>,
    /// The attempt the lines are from.
    pub attempt: Option<i64>,
}

/// A piece of a sentence: text, or (`code`) a name or command shown as code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct Part {
    pub text: String,
    pub code: bool,
}

impl Part {
    fn text(text: impl Into<String>) -> Part {
        Part {
            text: text.into(),
            code: false,
        }
    }

    fn code(text: impl Into<String>) -> Part {
        Part {
            text: text.into(),
            code: true,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct TailLine {
    pub text: String,
    pub stderr: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct StepOutputs {
    pub step: String,
    pub url: String,
    pub values: Vec<OutputValue>,
}

#[derive(Debug, Serialize)]
pub(super) struct OutputValue {
    pub key: String,
    pub value: String,
    /// The value was longer than shown.
    pub cut: bool,
}

/// Explains run `run` (its steps with their outputs, in plan order).
/// `may_rerun`: the caller may re-run the run (or is offered to sign in to).
pub(super) async fn explain(
    store: &Store,
    run: &RunRow,
    steps: &[StepRunRow],
    plan: Option<&Plan>,
    may_rerun: bool,
) -> anyhow::Result<Explained> {
    let done = run.status.is_final();
    let failed: Vec<&StepRunRow> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .collect();
    let mut failures = Vec::new();
    let last_lines = if failed.is_empty() {
        Default::default()
    } else {
        store.last_lines(run.id).await?
    };
    for step in failed.iter().take(MAX_FAILURES) {
        let planned = plan.and_then(|p| p.steps.iter().find(|s| s.id == step.step_id));
        let command = planned.and_then(|p| match &p.action {
            Action::Bash { command } => Some(command.as_str()),
            Action::Python { script, .. } => Some(script.as_str()),
            _ => None,
        });
        let kind = planned.map_or("bash", |p| p.action.kind());
        let max_attempts = planned.map(|p| i64::from(p.retries) + 1);
        let mut lines = Vec::new();
        let mut attempt = None;
        if let Some(&(last_attempt, last_seq)) = last_lines.get(&step.id) {
            // One bounded read: the lines after (attempt, last - TAIL_LINES).
            let from = (last_attempt, (last_seq - TAIL_LINES).max(0));
            lines = store
                .read_logs(step.id, from, TAIL_LINES)
                .await?
                .into_iter()
                .map(|l| TailLine {
                    stderr: l.stream == "stderr",
                    text: l.text,
                })
                .collect();
            attempt = Some(last_attempt);
        }
        failures.push(Failure {
            url: format!("/runs/{}/steps/{}", run.id, encode(&step.step_id)),
            sentence: sentence(step, kind, command, max_attempts),
            command_tail: command.map(command_tail).unwrap_or_default(),
            step: step.step_id.clone(),
            lines,
            attempt,
        });
    }
    let mut shown = annotations::read(store, run.id, None, MAX_ANNOTATIONS).await?;
    // Errors first, then warnings, then notices; each in plan order (the sort is stable).
    shown.annotations.sort_by_key(|a| match a.level.as_str() {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    });
    let outputs = steps
        .iter()
        .filter_map(|s| {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&s.outputs).ok()?;
            (!map.is_empty()).then(|| StepOutputs {
                step: s.step_id.clone(),
                url: format!("/runs/{}/steps/{}", run.id, encode(&s.step_id)),
                values: output_values(&map),
            })
        })
        .collect();
    let rerunnable = steps
        .iter()
        .any(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled));
    Ok(Explained {
        more_failures: failed.len().saturating_sub(MAX_FAILURES),
        failures,
        annotations: shown.annotations,
        annotations_truncated: shown.truncated,
        dropped: shown.dropped,
        annotations_url: format!("/api/runs/{}/annotations", run.id),
        outputs,
        can_rerun_failed: may_rerun && done && !run.plan_hash.is_empty() && rerunnable,
    })
}

/// A step's outputs as shown: each value cut to [`MAX_OUTPUT`] characters.
pub(super) fn output_values(map: &serde_json::Map<String, serde_json::Value>) -> Vec<OutputValue> {
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let cut = text.chars().count() > MAX_OUTPUT;
            OutputValue {
                key: key.clone(),
                value: if cut {
                    text.chars().take(MAX_OUTPUT).collect()
                } else {
                    text
                },
                cut,
            }
        })
        .collect()
}

/// The last non-empty lines of a command (at most [`COMMAND_LINES`]).
fn command_tail(command: &str) -> Vec<String> {
    let lines: Vec<&str> = command
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(COMMAND_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// `text` cut to [`QUOTED`] characters.
fn quoted(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() > QUOTED {
        format!("{}…", text.chars().take(QUOTED).collect::<String>())
    } else {
        text.to_string()
    }
}

/// The name of the signal an exit code above 128 stands for, when it is a common one.
fn signal(code: i64) -> Option<&'static str> {
    Some(match code - 128 {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// One sentence saying which step failed and why.
fn sentence(step: &StepRunRow, kind: &str, command: Option<&str>, max: Option<i64>) -> Vec<Part> {
    let reason = step
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let tries = match (step.attempts, max) {
        (n, Some(max)) if n > 1 => format!(" on attempt {n} of {max}"),
        (n, None) if n > 1 => format!(" on attempt {n}"),
        _ => String::new(),
    };
    let mut parts = vec![
        Part::code(&step.step_id),
        Part::text(format!(" failed{tries}: ")),
    ];
    match step.exit_code {
        Some(code) => {
            match (kind, command.and_then(|c| command_tail(c).pop())) {
                ("python", _) => parts.push(Part::text("its Python script")),
                (_, Some(last)) => {
                    parts.push(Part::text("its command (last line "));
                    parts.push(Part::code(quoted(&last)));
                    parts.push(Part::text(")"));
                }
                _ => parts.push(Part::text("it")),
            }
            parts.push(Part::text(match signal(code) {
                Some(name) => format!(" was killed by {name} (exit code {code})"),
                None => format!(" exited with code {code}"),
            }));
            // A reason beyond the exit code itself (a timeout, a quota) is said too.
            if let Some(reason) = reason.filter(|r| !r.starts_with("exit code")) {
                parts.push(Part::text(format!(" ({reason})")));
            }
        }
        None => parts.push(Part::text(reason.unwrap_or("no reason was recorded"))),
    }
    parts.push(Part::text("."));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(exit_code: Option<i64>, reason: Option<&str>, attempts: i64) -> StepRunRow {
        StepRunRow {
            id: 1,
            run_id: 1,
            step_id: "test".into(),
            position: 0,
            status: StepStatus::Failed,
            attempts,
            exit_code,
            reason: reason.map(Into::into),
            outputs: String::new(),
            ready_at: None,
            started_at: None,
            finished_at: None,
            usage: None,
            iteration: 1,
            review_passed_at: None,
        }
    }

    /// The sentence with its code parts in backticks.
    fn said(parts: Vec<Part>) -> String {
        parts
            .into_iter()
            .map(|p| {
                if p.code {
                    format!("`{}`", p.text)
                } else {
                    p.text
                }
            })
            .collect()
    }

    #[test]
    fn an_exit_code_becomes_a_sentence_naming_the_step_and_its_command() {
        let command = "cd crate\ncargo build\ncargo test --all\n\n";
        assert_eq!(
            said(sentence(
                &step(Some(3), Some("exit code 3"), 1),
                "bash",
                Some(command),
                Some(1)
            )),
            "`test` failed: its command (last line `cargo test --all`) exited with code 3."
        );
        assert_eq!(
            command_tail(command),
            ["cd crate", "cargo build", "cargo test --all"]
        );
        assert_eq!(
            said(sentence(
                &step(Some(137), Some("timed out after 10s"), 2),
                "bash",
                Some("sleep 99"),
                Some(2)
            )),
            "`test` failed on attempt 2 of 2: its command (last line `sleep 99`) was killed by \
             SIGKILL (exit code 137) (timed out after 10s)."
        );
    }

    #[test]
    fn a_failure_without_an_exit_code_says_its_reason() {
        assert_eq!(
            said(sentence(
                &step(None, Some("rejected by alice"), 0),
                "approval",
                None,
                Some(1)
            )),
            "`test` failed: rejected by alice."
        );
        assert_eq!(
            said(sentence(&step(None, None, 1), "llm", None, None)),
            "`test` failed: no reason was recorded."
        );
    }

    #[test]
    fn long_outputs_and_command_lines_are_cut() {
        let mut map = serde_json::Map::new();
        map.insert("big".into(), serde_json::Value::String("x".repeat(1000)));
        map.insert("n".into(), serde_json::json!(3));
        let values = output_values(&map);
        assert_eq!(values[0].value.chars().count(), MAX_OUTPUT);
        assert!(values[0].cut);
        assert_eq!((values[1].value.as_str(), values[1].cut), ("3", false));
        assert!(quoted(&"y".repeat(200)).ends_with('…'));
    }
}
