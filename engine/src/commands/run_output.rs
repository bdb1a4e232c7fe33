//! What `plue run` and `plue logs` print: log lines prefixed by their step (coloured unless
//! `NO_COLOR`), step transitions as they happen, and the final summary table and JSON.
//!
//! Invariant: the printer prints lines by cursor, so it prints every stored line exactly
//! once whatever notifications it missed. Lines come from the store, or, in `plue run`,
//! from the engine's tap of the lines it just stored (no read back): a tapped batch is used
//! only from the line right after the cursor, anything else is read from the store.
//!
//! `llm` steps' typed lines read as a conversation: `token` lines are written as they come,
//! concatenated into running text under the step's prefix (a `\n` in a token starts a new
//! prefixed line); any other line, of this step or another, first ends an open token line.
//! Tool calls print as `→ read_file {"path":..}`, results as `← ok (123 bytes)` or
//! `← error: ...`, usage as one summary line.
//!
//! Past 600 lines, a fifth of them tests: the live printer, its typed lines and the final
//! summary are one output contract, kept together so that they format alike.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Write;

use plue_store::events::{LineTap, TappedLines};
use plue_store::{StepRunRow, Store, StoredLine};
use plue_types::protocol::LogLine;
use plue_types::status::{RunState, StepStatus};
use serde::Serialize;

use super::format::human_ms;

const COLORS: [&str; 6] = [
    "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[91m",
];
const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// What the tap holds next for a step run ([`Printer::take_tapped`]).
enum Kept {
    /// Lines that continue the step's cursor.
    Page(Page),
    /// Nothing: every batch kept was printed.
    Nothing,
    /// A batch that does not continue the cursor: lines before it are only in the store.
    Gap,
}

/// A page of one step run's lines to print: a batch from the engine's tap (the runner's
/// lines as they came, all of one attempt) or lines read from the store.
enum Page {
    Tapped { attempt: i64, lines: Vec<LogLine> },
    Stored(Vec<StoredLine>),
}

impl Page {
    fn len(&self) -> usize {
        match self {
            Page::Tapped { lines, .. } => lines.len(),
            Page::Stored(lines) => lines.len(),
        }
    }

    /// `(attempt, seq)` of line `i`.
    fn position(&self, i: usize) -> (i64, i64) {
        match self {
            Page::Tapped { attempt, lines } => (*attempt, seq_of(&lines[i])),
            Page::Stored(lines) => (lines[i].attempt, lines[i].seq),
        }
    }

    /// When line `i` was read (ms since the epoch).
    fn ts(&self, i: usize) -> i64 {
        match self {
            Page::Tapped { lines, .. } => lines[i].ts_ms,
            Page::Stored(lines) => lines[i].ts,
        }
    }

    /// `(stream, text)` of line `i`.
    fn line(&self, i: usize) -> (&str, &str) {
        match self {
            Page::Tapped { lines, .. } => (lines[i].stream.as_str(), &lines[i].text),
            Page::Stored(lines) => (&lines[i].stream, &lines[i].text),
        }
    }
}

/// A runner's line's seq as the store keeps it (the engine refuses a seq past `i64`).
fn seq_of(line: &LogLine) -> i64 {
    i64::try_from(line.seq).unwrap_or(i64::MAX)
}

/// Whether to colour output: never with `NO_COLOR`, else when stdout is a terminal.
pub(crate) fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

struct StepState {
    cursor: (i64, i64),
    status: StepStatus,
    attempts: i64,
    iteration: i64,
    /// The attempt whose start (or separator) was printed last: 0 before any.
    announced: i64,
    /// The step's attempts when a review loop last sent it back: a "queued" with no
    /// attempt since is the loop's, not a retry.
    looped_at: i64,
    color: &'static str,
}

pub(crate) struct Printer {
    color: bool,
    width: usize,
    /// Print the step prefix (false when following a single step).
    prefix: bool,
    steps: HashMap<i64, StepState>,
    order: Vec<(i64, String)>,
    /// The token line being written, if any.
    tokens: TokenLine,
    /// Batches from the engine's line tap not printed yet, by step run.
    tapped: HashMap<i64, VecDeque<TappedLines>>,
    /// The engine's line tap, drained into `tapped` before the store is read.
    tap: Option<LineTap>,
    /// Also write each line and transition as a JSON event on stderr (`--log-format json`).
    events: bool,
    /// Print "▶ started" before an attempt's first line (`plue run`); without it only a
    /// separator line goes between attempts (`plue logs`).
    announce: bool,
}

/// Where the running text of `token` lines stands on stdout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TokenLine {
    /// The step run whose tokens are being written, and whether its current output line
    /// already has text (`false`: the next token starts a new prefixed line).
    open: Option<(i64, bool)>,
}

impl TokenLine {
    /// What to write for `text`, a token of `step` whose prefix is `label`.
    fn token(&mut self, step: i64, label: &str, text: &str) -> String {
        let mut out = String::new();
        if matches!(self.open, Some((other, _)) if other != step) {
            out.push_str(&self.close());
        }
        let mut started = self.open.map(|(_, started)| started).unwrap_or(false);
        for piece in text.split_inclusive('\n') {
            if !started {
                out.push_str(label);
                started = true;
            }
            out.push_str(piece);
            if piece.ends_with('\n') {
                started = false;
            }
        }
        self.open = Some((step, started));
        out
    }

    /// What ends the open token line before another line is printed.
    fn close(&mut self) -> String {
        match self.open.take() {
            Some((_, true)) => "\n".to_owned(),
            _ => String::new(),
        }
    }
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
                    status: StepStatus::Pending,
                    attempts: 0,
                    iteration: 1,
                    announced: 0,
                    looped_at: 0,
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
            tokens: TokenLine::default(),
            tapped: HashMap::new(),
            tap: None,
            events: false,
            announce: false,
        }
    }

    /// This printer announcing each attempt's start before its lines, as `plue run` does:
    /// a step's "▶ started" comes before its first line, a separator line and
    /// "▶ started (attempt N)" before a later attempt's first line.
    pub(crate) fn announcing(mut self) -> Printer {
        self.announce = true;
        self
    }

    /// The lines that open attempt `attempt` of `step_run_id` before its first line (or
    /// when it starts), and notes it announced; none when it already was.
    fn open_attempt(&mut self, step_run_id: i64, attempt: i64) -> Vec<String> {
        let announce = self.announce;
        let Some(state) = self.steps.get_mut(&step_run_id) else {
            return Vec::new();
        };
        if attempt <= state.announced {
            return Vec::new();
        }
        state.announced = attempt;
        let mut lines = Vec::new();
        if attempt > 1 {
            lines.push(separator(attempt));
        }
        if announce {
            lines.push(started(state.iteration, attempt));
        }
        lines
    }

    /// This printer also writing every step line (target `plue::step`: `step`, `attempt`,
    /// `stream`, `seq`, `ts`, `text`) and status change (`plue::status`) as events of the
    /// JSON log on stderr.
    pub(crate) fn with_events(mut self, events: bool) -> Printer {
        self.events = events;
        self
    }

    /// Keeps a batch from the engine's line tap for when its step's lines print.
    pub(crate) fn offer(&mut self, batch: TappedLines) {
        if self.steps.contains_key(&batch.step_run_id) {
            self.tapped
                .entry(batch.step_run_id)
                .or_default()
                .push_back(batch);
        }
    }

    /// Prints from `tap` (the engine's tap of this run's lines) wherever it can.
    pub(crate) fn listen(&mut self, tap: LineTap) {
        self.tap = Some(tap);
    }

    /// Keeps the batches the tap holds now.
    pub(crate) fn drain_tap(&mut self) {
        let Some(mut tap) = self.tap.take() else {
            return;
        };
        while let Some(batch) = tap.try_recv() {
            self.offer(batch);
        }
        self.tap = Some(tap);
    }

    /// The tapped lines of `step_run_id` that continue its cursor, if the next batch does;
    /// the tap is drained first when none kept does. The engine offers a batch right after
    /// storing it, so lines stored while the printer printed are usually in the tap by now;
    /// the store is read for the rest (a batch the tap left out, or one offered a moment
    /// after this looked), and a tapped batch is only ever used from the line right after
    /// the cursor.
    fn take_tapped(&mut self, step_run_id: i64) -> Kept {
        if let Kept::Page(page) = self.take_kept(step_run_id) {
            return Kept::Page(page);
        }
        self.drain_tap();
        self.take_kept(step_run_id)
    }

    /// [`Printer::take_tapped`] from the batches kept (those the cursor already passed are
    /// dropped on the way).
    fn take_kept(&mut self, step_run_id: i64) -> Kept {
        let Some(cursor) = self.steps.get(&step_run_id).map(|s| s.cursor) else {
            return Kept::Nothing;
        };
        let Some(queue) = self.tapped.get_mut(&step_run_id) else {
            return Kept::Nothing;
        };
        while let Some(batch) = queue.front() {
            let printed = batch
                .lines
                .partition_point(|l| (batch.attempt, seq_of(l)) <= cursor);
            let Some(first) = batch.lines.get(printed) else {
                queue.pop_front();
                continue;
            };
            let next = (batch.attempt, seq_of(first));
            // The very first line of a step run, or the line right after the cursor.
            if next != (cursor.0, cursor.1 + 1) && !(cursor == (0, 0) && next == (1, 1)) {
                return Kept::Gap;
            }
            let Some(mut batch) = queue.pop_front() else {
                return Kept::Nothing;
            };
            batch.lines.drain(..printed);
            return Kept::Page(Page::Tapped {
                attempt: batch.attempt,
                lines: std::mem::take(&mut batch.lines),
            });
        }
        Kept::Nothing
    }

    /// Whether the tap said a batch of `step_run_id` was left out since the last look
    /// (always false without a tap); clears the mark.
    fn take_left_out(&self, step_run_id: i64) -> bool {
        self.tap
            .as_ref()
            .is_some_and(|tap| tap.take_left_out(step_run_id))
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

    /// Whether the printer has shown `step_run_id` running or ended. Lines of a step not
    /// shown started wait for the next read of the step states, so that they never print
    /// before the end of a step they depend on (a dependent starts as soon as that ends).
    pub(crate) fn shown_started(&self, step_run_id: i64) -> bool {
        self.steps.get(&step_run_id).is_some_and(|s| {
            !matches!(
                s.status,
                StepStatus::Pending | StepStatus::Queued | StepStatus::Waiting
            )
        })
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
            // The last page came from the tap: when it holds nothing more for this step and
            // said nothing was left out, every line whose event was seen is printed (each
            // batch is offered or said left out before its event), and the store is not
            // read to find nothing.
            let mut from_tap = false;
            loop {
                let cursor = self.steps[&id].cursor;
                let page = match self.take_tapped(id) {
                    Kept::Page(page) => {
                        from_tap = true;
                        page
                    }
                    Kept::Nothing if from_tap && !self.take_left_out(id) => break,
                    Kept::Nothing | Kept::Gap => {
                        from_tap = false;
                        // What the mark said is in the store, and read now.
                        self.take_left_out(id);
                        Page::Stored(store.read_logs(id, cursor, 5000).await?)
                    }
                };
                let Some(next) = page.len().checked_sub(1).map(|i| page.position(i)) else {
                    break;
                };
                // Stdout is line-buffered: one write for the page, not one per line. Plain
                // lines (nearly all) are copied into the buffer as they are: no formatting
                // and no allocation per line.
                let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
                for i in 0..page.len() {
                    let (stream, text) = page.line(i);
                    let attempt = page.position(i).0;
                    if attempt > self.steps.get(&id).map_or(i64::MAX, |s| s.announced) {
                        for header in self.open_attempt(id, attempt) {
                            out.write_all(self.tokens.close().as_bytes())?;
                            self.write_transition(&mut out, &label, &header)?;
                        }
                    }
                    if self.events {
                        let (attempt, seq) = page.position(i);
                        tracing::info!(
                            target: "plue::step",
                            step = %step_id,
                            attempt,
                            stream,
                            seq,
                            ts = page.ts(i),
                            text = %strip_ansi(text),
                            "step line"
                        );
                    }
                    let text = if self.color {
                        Cow::Borrowed(text)
                    } else {
                        strip_ansi(text)
                    };
                    if stream == "token" {
                        out.write_all(self.tokens.token(id, &label, &text).as_bytes())?;
                        continue;
                    }
                    out.write_all(self.tokens.close().as_bytes())?;
                    let dim = matches!(stream, "system" | "tool_call" | "tool_result" | "usage");
                    let typed = typed_line(stream, &text);
                    let text = typed.as_deref().unwrap_or(&text);
                    out.write_all(label.as_bytes())?;
                    if dim && self.color {
                        write!(out, "{DIM}{text}{RESET}")?;
                    } else {
                        out.write_all(text.as_bytes())?;
                    }
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                if let Some(state) = self.steps.get_mut(&id) {
                    state.cursor = next;
                }
            }
        }
        Ok(())
    }

    /// Prints the lines of every step and the transitions since the last call, in the
    /// order the steps started, and ends an open token line.
    pub(crate) async fn catch_up(
        &mut self,
        store: &Store,
        run_id: i64,
        steps: &[StepRunRow],
    ) -> anyhow::Result<()> {
        // One query tells which steps have lines not printed yet (their events may have
        // been missed): only those are read, not every step of a large run.
        let last = store.last_lines(run_id).await?;
        let behind: Vec<i64> = self
            .order
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| {
                last.get(id)
                    .is_some_and(|&end| self.steps.get(id).is_some_and(|s| s.cursor < end))
            })
            .collect();
        self.print_in_order(store, steps, behind).await?;
        // The last token line of a step that printed no transition after it.
        let mut out = std::io::stdout().lock();
        write!(out, "{}", self.tokens.close())?;
        out.flush()?;
        Ok(())
    }

    /// Prints the lines of the `dirty` step runs and what changed in the statuses of
    /// `steps`, step by step in the order they started: a review loop's "↺ iteration",
    /// then each attempt's "▶ started" (after a separator line from the second attempt on)
    /// and its lines, then the retry notice or the "✓" / "✗" that ended it. So what a step
    /// prints never comes before the end of a step it depends on, however many steps
    /// started and ended since the last read of the states, and an attempt's retry notice
    /// comes after its own output.
    pub(crate) async fn print_in_order(
        &mut self,
        store: &Store,
        steps: &[StepRunRow],
        dirty: impl IntoIterator<Item = i64>,
    ) -> anyhow::Result<()> {
        let mut dirty: std::collections::BTreeSet<i64> = dirty.into_iter().collect();
        let mut order: Vec<&StepRunRow> = steps.iter().collect();
        // A dependent starts no earlier than its dependency ended, which is no earlier
        // than that started (milliseconds: ties fall back to the end, then the plan).
        order.sort_by_key(|s| {
            (
                s.started_at.unwrap_or(i64::MAX),
                s.finished_at.unwrap_or(i64::MAX),
                s.position,
            )
        });
        for step in order {
            self.loop_back(step)?;
            if dirty.remove(&step.id) {
                self.print_lines(store, &[step.id]).await?;
            }
            self.transition(step)?;
        }
        let rest: Vec<i64> = dirty.into_iter().collect();
        self.print_lines(store, &rest).await
    }

    /// Prints "↺ iteration N" when a review loop sent `step` back since the last call
    /// (before the new iteration's lines).
    fn loop_back(&mut self, step: &StepRunRow) -> anyhow::Result<()> {
        let label = self.label(step.id, &step.step_id);
        let Some(state) = self.steps.get_mut(&step.id) else {
            return Ok(());
        };
        if step.iteration <= state.iteration {
            return Ok(());
        }
        state.iteration = step.iteration;
        state.looped_at = step.attempts;
        let message = match step.reason.as_deref() {
            Some(reason) if matches!(step.status, StepStatus::Pending | StepStatus::Queued) => {
                format!("↺ iteration {}: {reason}", step.iteration)
            }
            _ => format!("↺ iteration {}", step.iteration),
        };
        if self.events {
            tracing::info!(
                target: "plue::status",
                step = %step.step_id,
                status = %step.status,
                attempt = step.attempts,
                iteration = step.iteration,
                reason = step.reason.as_deref().unwrap_or(""),
                "{message}"
            );
        }
        let mut out = std::io::stdout().lock();
        write!(out, "{}", self.tokens.close())?;
        self.write_transition(&mut out, &label, &message)?;
        out.flush()?;
        Ok(())
    }

    /// Prints what changed in one step's status since the last call: its start (unless its
    /// first line already announced it), a retry notice, or how it ended.
    fn transition(&mut self, step: &StepRunRow) -> anyhow::Result<()> {
        let label = self.label(step.id, &step.step_id);
        let Some(state) = self.steps.get_mut(&step.id) else {
            return Ok(());
        };
        if state.status == step.status && state.attempts == step.attempts {
            return Ok(());
        }
        let retried = step.status == StepStatus::Queued
            && step.attempts > state.looped_at
            && state.attempts == step.attempts;
        let message = match step.status {
            StepStatus::Running
                if state.status != StepStatus::Running || state.attempts != step.attempts =>
            {
                Some(started(step.iteration, step.attempts))
            }
            StepStatus::Queued if retried || step.attempts > state.looped_at => {
                step.reason.as_ref().map(|r| format!("↻ {r}"))
            }
            StepStatus::Succeeded => Some(format!("✓ succeeded{}", took(step))),
            StepStatus::Failed => Some(format!(
                "✗ failed: {}{}",
                step.reason.as_deref().unwrap_or("failed"),
                took(step)
            )),
            StepStatus::Skipped => Some(format!(
                "- skipped: {}",
                step.reason.as_deref().unwrap_or("")
            )),
            StepStatus::Cancelled => Some("■ cancelled".to_string()),
            StepStatus::Waiting => Some("⏸ waiting for approval".to_string()),
            StepStatus::Pending
            | StepStatus::Queued
            | StepStatus::Claimed
            | StepStatus::Running => None,
        };
        state.status = step.status;
        state.attempts = step.attempts;
        state.iteration = step.iteration;
        if self.events {
            if let Some(message) = &message {
                tracing::info!(
                    target: "plue::status",
                    step = %step.step_id,
                    status = %step.status,
                    attempt = step.attempts,
                    iteration = step.iteration,
                    reason = step.reason.as_deref().unwrap_or(""),
                    "{message}"
                );
            }
        }
        // A start prints once per attempt: its first line may have announced it already.
        let lines = match message {
            Some(_) if step.status == StepStatus::Running => {
                self.open_attempt(step.id, step.attempts)
            }
            Some(message) => vec![message],
            None => Vec::new(),
        };
        let mut out = std::io::stdout().lock();
        for line in lines {
            write!(out, "{}", self.tokens.close())?;
            self.write_transition(&mut out, &label, &line)?;
        }
        out.flush()?;
        Ok(())
    }

    /// Writes one of the printer's own lines (a transition, a separator), dimmed in colour.
    fn write_transition(
        &self,
        out: &mut impl Write,
        label: &str,
        text: &str,
    ) -> std::io::Result<()> {
        if self.color {
            writeln!(out, "{label}{DIM}{text}{RESET}")
        } else {
            writeln!(out, "{label}{text}")
        }
    }
}

/// "▶ started" for attempt `attempt` in review-loop iteration `iteration`.
fn started(iteration: i64, attempt: i64) -> String {
    match iteration {
        1 if attempt > 1 => format!("▶ started (attempt {attempt})"),
        1 => "▶ started".to_string(),
        n => format!("▶ started (iteration {n}, attempt {attempt})"),
    }
}

/// The line between two attempts of a step.
fn separator(attempt: i64) -> String {
    format!("── attempt {attempt} ──")
}

/// How a typed `llm` line reads; `None` for other streams (and unreadable JSON), which
/// print as they are.
fn typed_line(stream: &str, text: &str) -> Option<String> {
    const SHOWN: usize = 200;
    let value: serde_json::Value = match stream {
        "tool_call" | "tool_result" | "usage" => serde_json::from_str(text).ok()?,
        _ => return None,
    };
    let count = |key: &str| value[key].as_u64().unwrap_or(0);
    Some(match stream {
        "tool_call" => {
            let input = match &value["input"] {
                serde_json::Value::Null => format!("({} bytes of input)", count("input_bytes")),
                input => shorten(&input.to_string(), SHOWN),
            };
            format!("→ {} {input}", value["name"].as_str().unwrap_or("?"))
        }
        "tool_result" if value["is_error"] == true => {
            let content = value["content"].as_str().unwrap_or_default();
            let first = content.lines().next().unwrap_or_default();
            format!("← error: {}", shorten(first, SHOWN))
        }
        "tool_result" => format!("← ok ({} bytes)", count("bytes")),
        _ => {
            let mut text = format!(
                "· turn {}: {} input + {} output tokens",
                count("turn"),
                count("input_tokens"),
                count("output_tokens")
            );
            let (written, read) = (
                count("cache_creation_input_tokens"),
                count("cache_read_input_tokens"),
            );
            if written + read > 0 {
                text.push_str(&format!(" (cache: {written} written, {read} read)"));
            }
            text
        }
    })
}

/// `text` cut to about `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn took(step: &StepRunRow) -> String {
    step.duration_ms()
        .map(|ms| format!(" in {}", human_ms(ms)))
        .unwrap_or_default()
}

/// Removes ANSI escape sequences (CSI and OSC) for uncoloured output.
/// Borrows `text` when it has none (almost every line): no copy per printed line.
pub(crate) fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return Cow::Borrowed(text);
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
    Cow::Owned(out)
}

/// The `--summary-json` document.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) run_id: i64,
    pub(crate) status: RunState,
    /// Why the run failed or was cancelled (e.g. "review failed after 2 loops back to
    /// build").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    pub(crate) steps: Vec<StepSummary>,
    /// The files the run's steps kept (`artifacts=`).
    pub(crate) artifacts: Vec<super::run_lines::ArtifactLine>,
    /// Decisions on the run's approval steps.
    pub(crate) approvals: Vec<super::run_lines::ApprovalLine>,
    /// Tokens the run's `llm` steps used together (absent without any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<plue_types::protocol::Usage>,
    /// What they cost together in USD, by the engine's price table (absent when no attempt
    /// was priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_usd: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StepSummary {
    pub(crate) id: String,
    pub(crate) status: StepStatus,
    pub(crate) attempts: i64,
    /// The review-loop iteration the step ended in (1 outside loops).
    pub(crate) iteration: i64,
    pub(crate) exit_code: Option<i64>,
    pub(crate) duration_ms: Option<i64>,
    /// The environment the step names (`environment="prod"`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) environment: Option<String>,
    /// An `llm` step's tokens over all its attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<plue_types::protocol::Usage>,
    /// An `llm` step's cost in USD over all its attempts (absent when none was priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_usd: Option<f64>,
}

impl Summary {
    pub(crate) fn new(run_id: i64, status: RunState, steps: &[StepRunRow]) -> Summary {
        Summary {
            run_id,
            status,
            reason: None,
            steps: steps
                .iter()
                .map(|s| StepSummary {
                    id: s.step_id.clone(),
                    status: s.status,
                    attempts: s.attempts,
                    iteration: s.iteration,
                    exit_code: s.exit_code,
                    duration_ms: s.duration_ms(),
                    environment: None,
                    usage: s
                        .usage
                        .as_deref()
                        .and_then(|u| serde_json::from_str(u).ok()),
                    cost_usd: None,
                })
                .collect(),
            artifacts: Vec::new(),
            approvals: Vec::new(),
            usage: None,
            cost_usd: None,
        }
    }

    /// This summary with each `llm` step's cost and the run's totals, from the run's
    /// steps (in summary order) and attempts (sums in micro-dollars, as the API's).
    pub(crate) fn with_costs(
        mut self,
        steps: &[StepRunRow],
        attempts: &[plue_store::AttemptRow],
    ) -> Summary {
        let mut total_micros = None::<i64>;
        for (summary, row) in self.steps.iter_mut().zip(steps) {
            let micros = attempts
                .iter()
                .filter(|a| a.step_run_id == row.id)
                .filter_map(|a| a.cost_usd_micros)
                .reduce(|a, b| a.saturating_add(b));
            if let Some(micros) = micros {
                total_micros = Some(total_micros.unwrap_or(0).saturating_add(micros));
            }
            summary.cost_usd =
                micros.map(|m| plue_core::pricing::usd(u64::try_from(m).unwrap_or(0)));
        }
        self.usage = self
            .steps
            .iter()
            .filter_map(|s| s.usage)
            .reduce(|a, b| a + b);
        self.cost_usd =
            total_micros.map(|m| plue_core::pricing::usd(u64::try_from(m).unwrap_or(0)));
        self
    }

    /// This summary with each step's environment, as `plan` names it.
    pub(crate) fn with_environments(mut self, plan: &evaluator::plan::Plan) -> Summary {
        for step in &mut self.steps {
            step.environment = plan
                .steps
                .iter()
                .find(|s| s.id == step.id)
                .and_then(|s| s.environment.clone());
        }
        self
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
        // The ITERATION column only for runs whose review loops went back.
        let looped = self.steps.iter().any(|s| s.iteration > 1);
        let mut text = format!(
            "{:<width$}  {:<9}  {:>8}  {:>9}",
            "STEP", "STATUS", "ATTEMPTS", "DURATION"
        );
        if looped {
            text.push_str("  ITERATION");
        }
        // The ENVIRONMENT column only for runs with a step naming one.
        let environments = self.steps.iter().any(|s| s.environment.is_some());
        if environments {
            text.push_str("  ENVIRONMENT");
        }
        text.push('\n');
        for step in &self.steps {
            let duration = step.duration_ms.map(human_ms).unwrap_or_else(|| "-".into());
            text.push_str(&format!(
                "{:<width$}  {:<9}  {:>8}  {:>9}",
                step.id, step.status, step.attempts, duration
            ));
            if looped {
                text.push_str(&format!("  {:>9}", step.iteration));
            }
            if environments {
                text.push_str(&format!("  {}", step.environment.as_deref().unwrap_or("-")));
            }
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printer_row(step_id: &str) -> StepRunRow {
        StepRunRow {
            step_id: step_id.into(),
            ..one_step(1)
        }
    }

    fn printer_of_one_step(id: i64) -> Printer {
        Printer::new(&[one_step(id)], false, true)
    }

    fn one_step(id: i64) -> StepRunRow {
        StepRunRow {
            id,
            run_id: 1,
            step_id: "build".into(),
            position: 0,
            status: StepStatus::Running,
            attempts: 1,
            exit_code: None,
            reason: None,
            outputs: "{}".into(),
            ready_at: None,
            started_at: None,
            finished_at: None,
            usage: None,
            iteration: 1,
            review_passed_at: None,
        }
    }

    /// Offers lines of one attempt, as `(attempt, seq)`.
    fn offer(events: &plue_store::events::Events, lines: &[(i64, i64)]) {
        let attempt = lines[0].0;
        let lines = lines
            .iter()
            .map(|&(a, seq)| {
                assert_eq!(a, attempt, "a batch is of one attempt");
                LogLine {
                    seq: seq as u64,
                    stream: plue_types::protocol::Stream::Stdout,
                    text: format!("{attempt}:{seq}"),
                    ts_ms: 0,
                }
            })
            .collect();
        events.offer_lines(1, 5, attempt, lines);
    }

    /// The positions of the page the tap gives next, or why none: "nothing" kept, or a
    /// "gap" before the next batch.
    fn taken(printer: &mut Printer) -> Result<Vec<(i64, i64)>, &'static str> {
        let page = match printer.take_tapped(5) {
            Kept::Page(page) => page,
            Kept::Nothing => return Err("nothing"),
            Kept::Gap => return Err("gap"),
        };
        let positions: Vec<(i64, i64)> = (0..page.len()).map(|i| page.position(i)).collect();
        for (i, &(attempt, seq)) in positions.iter().enumerate() {
            assert_eq!(
                page.line(i),
                ("stdout", format!("{attempt}:{seq}").as_str())
            );
        }
        printer.steps.get_mut(&5).unwrap().cursor = *positions.last().ok_or("empty")?;
        Ok(positions)
    }

    #[test]
    fn a_batch_still_in_the_tap_is_printed_from_it_not_read_back() {
        let events = plue_store::events::Events::default();
        let mut printer = printer_of_one_step(5);
        printer.listen(events.tap_lines(1));
        assert_eq!(taken(&mut printer), Err("nothing"), "nothing tapped yet");
        // Stored while the printer printed: in the tap, not yet drained.
        offer(&events, &[(1, 1), (1, 2)]);
        offer(&events, &[(1, 3)]);
        assert_eq!(taken(&mut printer), Ok(vec![(1, 1), (1, 2)]));
        assert_eq!(taken(&mut printer), Ok(vec![(1, 3)]));
        assert_eq!(taken(&mut printer), Err("nothing"));
    }

    #[tokio::test]
    async fn after_a_tapped_page_the_store_is_read_only_for_lines_left_out() {
        let (store, _dir) = plue_store::testing::sqlite().await;
        let plan =
            evaluator::plan::Plan::new("p", vec![evaluator::plan::Step::bash("build", "true")]);
        let json = serde_json::to_string(&plan).unwrap();
        let run_id = store
            .create_run(&plue_store::testing::local_run(&plan, &json), 1)
            .await
            .unwrap()
            .id;
        let id = store.step_states(run_id).await.unwrap()[0].id;
        let events = plue_store::events::Events::default();
        let mut printer = Printer::new(&[one_step(id)], false, true);
        printer.listen(events.tap_lines(run_id));
        let line = |seq: u64| LogLine {
            seq,
            stream: plue_types::protocol::Stream::Stdout,
            text: format!("line {seq}"),
            ts_ms: 0,
        };
        let cursor = |printer: &Printer| printer.steps[&id].cursor;
        // Stored and offered, as the engine does with every batch.
        let stored_and_offered = |seqs: std::ops::RangeInclusive<u64>| {
            let lines: Vec<LogLine> = seqs.map(line).collect();
            let (store, events) = (&store, &events);
            async move {
                store.append_logs(id, 1, &lines).await.unwrap();
                events.offer_lines(run_id, id, 1, lines);
            }
        };
        stored_and_offered(1..=2).await;
        printer.print_lines(&store, &[id]).await.unwrap();
        assert_eq!(cursor(&printer), (1, 2));
        // A batch neither offered nor said left out (the engine never stores one so) is
        // not read after a tapped page: the store was not asked.
        stored_and_offered(3..=3).await;
        store.append_logs(id, 1, &[line(4)]).await.unwrap();
        printer.print_lines(&store, &[id]).await.unwrap();
        assert_eq!(cursor(&printer), (1, 3));
        // Said left out, it is read after the tapped page that comes before it.
        events.left_out(run_id, id);
        stored_and_offered(5..=5).await;
        store.append_logs(id, 1, &[line(6)]).await.unwrap();
        events.left_out(run_id, id);
        printer.print_lines(&store, &[id]).await.unwrap();
        assert_eq!(cursor(&printer), (1, 6));
    }

    #[test]
    fn tapped_lines_print_only_where_they_continue_the_cursor() {
        let events = plue_store::events::Events::default();
        let mut tap = events.tap_lines(1);
        let mut printer = printer_of_one_step(5);
        let mut deliver = |printer: &mut Printer, lines: &[(i64, i64)]| {
            offer(&events, lines);
            printer.offer(tap.try_recv().unwrap());
        };
        // The step's very first lines.
        deliver(&mut printer, &[(1, 1), (1, 2)]);
        assert_eq!(taken(&mut printer), Ok(vec![(1, 1), (1, 2)]));
        // A gap (a batch the tap left out): the store is read instead, and the batch waits.
        deliver(&mut printer, &[(1, 5), (1, 6), (1, 7)]);
        assert_eq!(taken(&mut printer), Err("gap"));
        // The store read printed up to 6: only what follows is taken from the batch.
        printer.steps.get_mut(&5).unwrap().cursor = (1, 6);
        assert_eq!(taken(&mut printer), Ok(vec![(1, 7)]));
        // A batch the cursor passed is dropped; a later attempt's first lines are read
        // from the store (lines of the attempt before may not all be printed).
        deliver(&mut printer, &[(1, 3), (1, 4)]);
        deliver(&mut printer, &[(2, 1)]);
        assert_eq!(taken(&mut printer), Err("gap"));
        assert_eq!(printer.tapped[&5].len(), 1, "the stale batch went");
        // Nothing of a step the printer does not know.
        offer(&events, &[(1, 1)]);
        let mut stray = tap.try_recv().unwrap();
        stray.step_run_id = 99;
        printer.offer(stray);
        assert!(!printer.tapped.contains_key(&99));
    }

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(strip_ansi("\x1b[31mred\x1b[0m plain"), "red plain");
        assert_eq!(strip_ansi("\x1b]0;title\x07after"), "after");
        assert_eq!(strip_ansi("none"), "none");
    }

    #[test]
    fn tokens_run_together_under_their_prefix() {
        let mut line = TokenLine::default();
        let mut out = String::new();
        out += &line.token(1, "a | ", "Hel");
        out += &line.token(1, "a | ", "lo\nwor");
        out += &line.token(1, "a | ", "ld\n");
        out += &line.token(1, "a | ", "next");
        // Another step's token ends the open line first.
        out += &line.token(2, "b | ", "other");
        out += &line.close();
        assert_eq!(out, "a | Hello\na | world\na | next\nb | other\n");
        // Closing after a complete line adds nothing.
        let mut line = TokenLine::default();
        assert_eq!(line.token(1, "", "done\n"), "done\n");
        assert_eq!(line.close(), "");
    }

    #[test]
    fn typed_lines_read_as_a_conversation() {
        let call = r#"{"id":"t1","name":"read_file","input":{"path":"src/main.rs"}}"#;
        assert_eq!(
            typed_line("tool_call", call).unwrap(),
            r#"→ read_file {"path":"src/main.rs"}"#
        );
        let ok = r#"{"id":"t1","is_error":false,"bytes":123,"content":"fn main"}"#;
        assert_eq!(typed_line("tool_result", ok).unwrap(), "← ok (123 bytes)");
        let err = r#"{"id":"t1","is_error":true,"bytes":30,"content":"x leads outside\nmore"}"#;
        assert_eq!(
            typed_line("tool_result", err).unwrap(),
            "← error: x leads outside"
        );
        let usage = r#"{"input_tokens":1200,"output_tokens":56,"cache_creation_input_tokens":0,"cache_read_input_tokens":7,"turn":2}"#;
        assert_eq!(
            typed_line("usage", usage).unwrap(),
            "· turn 2: 1200 input + 56 output tokens (cache: 0 written, 7 read)"
        );
        assert_eq!(typed_line("stdout", "{}"), None);
        assert_eq!(typed_line("usage", "not json"), None);
    }

    #[test]
    fn the_summary_shows_each_steps_environment() {
        let mut row = printer_row("deploy");
        row.status = StepStatus::Succeeded;
        let mut deploy = evaluator::plan::Step::bash("deploy", "true");
        deploy.environment = Some("prod".into());
        let plan = evaluator::plan::Plan {
            name: "p".into(),
            triggers: vec![],
            env: Default::default(),
            steps: vec![deploy],
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        };
        let plain = Summary::new(1, RunState::Succeeded, std::slice::from_ref(&row));
        assert!(!plain.table().contains("ENVIRONMENT"));
        let summary = Summary::new(1, RunState::Succeeded, &[row]).with_environments(&plan);
        let table = summary.table();
        assert!(
            table.lines().next().unwrap().ends_with("  ENVIRONMENT"),
            "{table}"
        );
        assert!(table.lines().nth(1).unwrap().ends_with("  prod"), "{table}");
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["steps"][0]["environment"], "prod");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(12), "12ms");
        assert_eq!(human_ms(1500), "1.5s");
        assert_eq!(human_ms(61_000), "1m01s");
    }
}
