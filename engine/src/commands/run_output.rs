//! What `plue run` and `plue logs` print: log lines prefixed by their step (coloured unless
//! `NO_COLOR`), step transitions as they happen, and the final summary table and JSON.
//!
//! Invariant: the printer reads lines from the store by cursor, so it prints every stored
//! line exactly once whatever notifications it missed.

use std::collections::HashMap;
use std::io::Write;

use engine::store::{StepRunRow, Store};
use serde::Serialize;

const COLORS: [&str; 6] = [
    "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[91m",
];
const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// Whether to colour output: never with `NO_COLOR`, else when stdout is a terminal.
pub(crate) fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

struct StepState {
    cursor: (i64, i64),
    status: String,
    attempts: i64,
    color: &'static str,
}

pub(crate) struct Printer {
    color: bool,
    width: usize,
    /// Print the step prefix (false when following a single step).
    prefix: bool,
    steps: HashMap<i64, StepState>,
    order: Vec<(i64, String)>,
}

impl Printer {
    pub(crate) fn new(steps: &[StepRunRow], color: bool, prefix: bool) -> Printer {
        let width = steps
            .iter()
            .map(|s| s.step_id.chars().count())
            .max()
            .unwrap_or(0)
            .min(24);
        let mut map = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            map.insert(
                step.id,
                StepState {
                    cursor: (0, 0),
                    status: "pending".into(),
                    attempts: 0,
                    color: COLORS[i % COLORS.len()],
                },
            );
        }
        Printer {
            color,
            width,
            prefix,
            steps: map,
            order: steps.iter().map(|s| (s.id, s.step_id.clone())).collect(),
        }
    }

    fn label(&self, step_run_id: i64, step_id: &str) -> String {
        if !self.prefix {
            return String::new();
        }
        let padded = format!("{step_id:<width$}", width = self.width);
        match (self.color, self.steps.get(&step_run_id)) {
            (true, Some(state)) => format!("{}{padded}{RESET} | ", state.color),
            _ => format!("{padded} | "),
        }
    }

    /// Prints every stored line not printed yet of the given step runs.
    pub(crate) async fn print_lines(
        &mut self,
        store: &Store,
        step_run_ids: &[i64],
    ) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        for &id in step_run_ids {
            let Some(step_id) = self
                .order
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, s)| s.clone())
            else {
                continue;
            };
            let label = self.label(id, &step_id);
            loop {
                let cursor = self.steps[&id].cursor;
                let lines = store.read_logs(id, cursor, 5000).await?;
                let Some(last) = lines.last() else { break };
                let next = (last.attempt, last.seq);
                let mut out = stdout.lock();
                for line in &lines {
                    let text = if self.color {
                        line.text.clone()
                    } else {
                        strip_ansi(&line.text)
                    };
                    if line.stream == "system" && self.color {
                        writeln!(out, "{label}{DIM}{text}{RESET}")?;
                    } else {
                        writeln!(out, "{label}{text}")?;
                    }
                }
                out.flush()?;
                if let Some(state) = self.steps.get_mut(&id) {
                    state.cursor = next;
                }
            }
        }
        Ok(())
    }

    /// Prints lines of every step, then transitions since the last call.
    pub(crate) async fn catch_up(
        &mut self,
        store: &Store,
        steps: &[StepRunRow],
    ) -> anyhow::Result<()> {
        let ids: Vec<i64> = self.order.iter().map(|(id, _)| *id).collect();
        self.print_lines(store, &ids).await?;
        self.transitions(steps)
    }

    /// The step runs whose status or attempt count differs from what was last printed.
    pub(crate) fn changed(&self, steps: &[StepRunRow]) -> Vec<i64> {
        steps
            .iter()
            .filter(|step| {
                self.steps.get(&step.id).is_some_and(|seen| {
                    seen.status != step.status || seen.attempts != step.attempts
                })
            })
            .map(|step| step.id)
            .collect()
    }

    /// Prints what changed in the steps' statuses.
    pub(crate) fn transitions(&mut self, steps: &[StepRunRow]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for step in steps {
            let label = self.label(step.id, &step.step_id);
            let Some(state) = self.steps.get_mut(&step.id) else {
                continue;
            };
            if state.status == step.status && state.attempts == step.attempts {
                continue;
            }
            let retried =
                step.status == "queued" && step.attempts > 0 && state.attempts == step.attempts;
            let message = match step.status.as_str() {
                "running" if state.status != "running" => Some(if step.attempts > 1 {
                    format!("▶ started (attempt {})", step.attempts)
                } else {
                    "▶ started".to_string()
                }),
                "queued" if retried || step.attempts > 0 => {
                    step.reason.as_ref().map(|r| format!("↻ {r}"))
                }
                "succeeded" => Some(format!("✓ succeeded{}", took(step))),
                "failed" => Some(format!(
                    "✗ failed: {}{}",
                    step.reason.as_deref().unwrap_or("failed"),
                    took(step)
                )),
                "skipped" => Some(format!(
                    "- skipped: {}",
                    step.reason.as_deref().unwrap_or("")
                )),
                "cancelled" => Some("■ cancelled".to_string()),
                _ => None,
            };
            state.status = step.status.clone();
            state.attempts = step.attempts;
            if let Some(message) = message {
                if self.color {
                    writeln!(out, "{label}{DIM}{message}{RESET}")?;
                } else {
                    writeln!(out, "{label}{message}")?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }
}

fn took(step: &StepRunRow) -> String {
    step.duration_ms()
        .map(|ms| format!(" in {}", human_ms(ms)))
        .unwrap_or_default()
}

pub(crate) fn human_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Removes ANSI escape sequences (CSI and OSC) for uncoloured output.
pub(crate) fn strip_ansi(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.peek() == Some(&'\\')) {
                        chars.next_if_eq(&'\\');
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The `--summary-json` document.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) run_id: i64,
    pub(crate) status: String,
    pub(crate) steps: Vec<StepSummary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StepSummary {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) exit_code: Option<i64>,
    pub(crate) duration_ms: Option<i64>,
}

impl Summary {
    pub(crate) fn new(run_id: i64, status: &str, steps: &[StepRunRow]) -> Summary {
        Summary {
            run_id,
            status: status.to_string(),
            steps: steps
                .iter()
                .map(|s| StepSummary {
                    id: s.step_id.clone(),
                    status: s.status.clone(),
                    attempts: s.attempts,
                    exit_code: s.exit_code,
                    duration_ms: s.duration_ms(),
                })
                .collect(),
        }
    }

    /// The table printed at the end of `plue run`.
    pub(crate) fn table(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|s| s.id.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut text = format!(
            "{:<width$}  {:<9}  {:>8}  {:>9}\n",
            "STEP", "STATUS", "ATTEMPTS", "DURATION"
        );
        for step in &self.steps {
            let duration = step.duration_ms.map(human_ms).unwrap_or_else(|| "-".into());
            text.push_str(&format!(
                "{:<width$}  {:<9}  {:>8}  {:>9}\n",
                step.id, step.status, step.attempts, duration
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(strip_ansi("\x1b[31mred\x1b[0m plain"), "red plain");
        assert_eq!(strip_ansi("\x1b]0;title\x07after"), "after");
        assert_eq!(strip_ansi("none"), "none");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(12), "12ms");
        assert_eq!(human_ms(1500), "1.5s");
        assert_eq!(human_ms(61_000), "1m01s");
    }
}
