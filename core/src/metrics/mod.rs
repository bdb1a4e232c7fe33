//! What the engine counts for its operators: one process-wide Prometheus registry, recorded
//! into by every layer and encoded for the server's `/metrics` (`plue_server::ops`).
//!
//! The rest of the engine reports through one call, [`record`] with an [`Event`] (each hook
//! is one line where the thing happens). Gauges of shared state (steps waiting per runner
//! class, live runners) are replaced from the store at scrape time through
//! [`replace_queued_steps`] and [`replace_runners`], so every replica reports the same
//! truth; counters and histograms count what this process did.
//!
//! Invariants: recording never fails, blocks on IO or allocates per call beyond the label
//! values; what is encoded is counts only, never names of runs, repositories or secrets.

mod families;
mod transitions;

use std::time::Instant;

use plue_types::status::{RunStatus, StepStatus};

use families::{Labels, FAMILIES};

pub use transitions::{attempt_ended, Decided, Ended};

/// Something worth counting, reported where it happens.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A run reached its final status.
    RunFinished { status: RunStatus },
    /// A step run reached its final status; `seconds` from its first start, if it started.
    StepFinished {
        status: StepStatus,
        kind: &'a str,
        seconds: Option<f64>,
    },
    /// A runner started a step that had been ready for `waited` seconds.
    StepStarted { waited: f64 },
    /// A workflow file was evaluated.
    Evaluation { result: &'a str, seconds: f64 },
    /// A forge delivered a webhook; `result` is `accepted`, `duplicate`, `rejected` or
    /// `failed`.
    Webhook { forge: &'a str, result: &'a str },
    /// Log lines newly stored.
    LogLines(u64),
    /// An `llm` attempt's usage and cost; `model` is already a bounded label
    /// (`crate::pricing::Prices::label`).
    LlmUsage {
        model: &'a str,
        usage: plue_types::protocol::Usage,
        cost_micros: Option<u64>,
    },
    /// Connections a step's egress proxy refused, as its runner reported them.
    NetworkRefused(u64),
    /// Claims returned to the queue unacknowledged by their runners (after the commit).
    ClaimsUnacknowledged(u64),
    /// Proposals of a step's safe outputs: `kind` (`pull_request`, `comment`, `labels`,
    /// `issue`) and `result` (`refused`, `waiting`, `ready`; the outbox: `applied`,
    /// `failed`).
    Proposal { kind: &'a str, result: &'a str },
    /// The threat check judged a proposal: `verdict` is `pass`, `needs_approval` or
    /// `refused` (`safe_outputs::threat::Verdict::as_str`).
    ThreatCheck { verdict: &'a str },
    /// A pool runner of `class` failed (could not start, or died) for `reason`.
    PodFailed { class: &'a str, reason: &'a str },
    /// A pool runner of `class` ended before it registered (a start failure).
    StartFailed { class: &'a str },
    /// Whether a pool `class` backs off after start failures now.
    BackingOff { class: &'a str, on: bool },
    /// This engine took (`true`) or lost the pool's leader lease.
    Leader(bool),
    /// Runners of a pool class in a state, as the pool counts them.
    PoolRunners {
        class: &'a str,
        state: &'a str,
        count: i64,
    },
    /// Whether this engine drains (a SIGTERM was received).
    Draining(bool),
    /// An HTTP request answered: `route` is the matched template (`/api/runs/{id}`) or
    /// `unmatched`, never the raw path, so ids and probes cannot grow the series.
    HttpRequest {
        method: &'a str,
        route: &'a str,
        status: u16,
        seconds: f64,
    },
}

/// Counts `event`.
pub fn record(event: Event<'_>) {
    let f = &*FAMILIES;
    match event {
        Event::RunFinished { status } => {
            f.runs_finished
                .get_or_create(&labels([("status", status.as_str())]))
                .inc();
        }
        Event::StepFinished {
            status,
            kind,
            seconds,
        } => {
            let set = labels([("status", status.as_str()), ("kind", kind)]);
            f.steps_finished.get_or_create(&set).inc();
            if let Some(seconds) = seconds {
                f.step_duration
                    .get_or_create(&set)
                    .observe(seconds.max(0.0));
            }
        }
        Event::StepStarted { waited } => f.step_start_latency.observe(waited.max(0.0)),
        Event::Evaluation { result, seconds } => {
            let set = labels([("result", result)]);
            f.evaluations.get_or_create(&set).inc();
            f.evaluation_duration.get_or_create(&set).observe(seconds);
        }
        Event::Webhook { forge, result } => {
            let set = labels([("forge", forge), ("result", result)]);
            f.webhook_deliveries.get_or_create(&set).inc();
        }
        Event::LogLines(count) => {
            f.log_lines.inc_by(count);
        }
        Event::LlmUsage {
            model,
            usage,
            cost_micros,
        } => {
            for (kind, tokens) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_write", usage.cache_creation_input_tokens),
                ("cache_read", usage.cache_read_input_tokens),
            ] {
                let set = labels([("model", model), ("kind", kind)]);
                f.llm_tokens.get_or_create(&set).inc_by(tokens);
            }
            if let Some(micros) = cost_micros {
                let set = labels([("model", model)]);
                f.llm_cost
                    .get_or_create(&set)
                    .inc_by(crate::pricing::usd(micros));
            }
        }
        Event::NetworkRefused(count) => {
            f.network_refused.inc_by(count);
        }
        Event::ClaimsUnacknowledged(count) => {
            f.claims_unacknowledged.inc_by(count);
        }
        Event::Proposal { kind, result } => {
            let set = labels([("kind", kind), ("result", result)]);
            f.proposals.get_or_create(&set).inc();
        }
        Event::ThreatCheck { verdict } => {
            let set = labels([("verdict", verdict)]);
            f.threat_checks.get_or_create(&set).inc();
        }
        Event::PodFailed { class, reason } => {
            let set = labels([("class", class), ("reason", reason)]);
            f.pod_failures.get_or_create(&set).inc();
        }
        Event::StartFailed { class } => {
            f.start_failures
                .get_or_create(&labels([("class", class)]))
                .inc();
        }
        Event::BackingOff { class, on } => {
            f.backing_off
                .get_or_create(&labels([("class", class)]))
                .set(i64::from(on));
        }
        Event::Leader(leading) => {
            f.leader.set(i64::from(leading));
        }
        Event::PoolRunners {
            class,
            state,
            count,
        } => {
            let set = labels([("class", class), ("state", state)]);
            f.pool_runners.get_or_create(&set).set(count);
        }
        Event::Draining(draining) => {
            f.draining.set(i64::from(draining));
        }
        Event::HttpRequest {
            method,
            route,
            status,
            seconds,
        } => {
            let status = status.to_string();
            f.http_requests
                .get_or_create(&labels([
                    ("method", method),
                    ("route", route),
                    ("status", &status),
                ]))
                .inc();
            f.http_duration
                .get_or_create(&labels([("method", method), ("route", route)]))
                .observe(seconds);
        }
    }
}

/// Replaces the steps-waiting gauge with `rows` of (needed labels, class that serves
/// them, count): series of labels no longer waiting disappear.
pub fn replace_queued_steps<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, i64)>) {
    let f = &*FAMILIES;
    f.queued_steps.clear();
    for (needed, class, count) in rows {
        f.queued_steps
            .get_or_create(&labels([("labels", needed), ("class", class)]))
            .set(count);
    }
}

/// Replaces the live-runners gauge with `rows` of (state, labels, count).
pub fn replace_runners<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, i64)>) {
    let f = &*FAMILIES;
    f.runners.clear();
    for (state, runner_labels, count) in rows {
        f.runners
            .get_or_create(&labels([("state", state), ("labels", runner_labels)]))
            .set(count);
    }
}

/// Every family in the OpenMetrics text format, which Prometheus scrapes natively.
pub fn encode() -> Result<String, std::fmt::Error> {
    forge_token_refusals();
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &FAMILIES.registry)?;
    Ok(body)
}

/// Brings the forge's counts of refused installation tokens
/// ([`plue_forge::auth::renewal_counts`], every use and result, zeros included) into
/// their family: the counters only grow, so each takes what it lacks. One copy at a time,
/// so that two scrapes at once add nothing twice.
fn forge_token_refusals() {
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _copying = COPYING.lock().unwrap_or_else(|p| p.into_inner());
    let f = &*FAMILIES;
    for (use_, renewal, count) in plue_forge::auth::renewal_counts() {
        let counter = f.forge_token_refusals.get_or_create(&labels([
            ("use", use_.as_str()),
            ("result", renewal.as_str()),
        ]));
        counter.inc_by(count.saturating_sub(counter.get()));
    }
}

/// The result label of an evaluation, and its time since `started`.
pub fn evaluation<T>(result: &Result<T, evaluator::EvalError>, started: Instant) -> Event<'static> {
    let result = match result {
        Ok(_) => "ok",
        Err(evaluator::EvalError::Invalid(_)) => "invalid",
        Err(evaluator::EvalError::Unavailable(_)) => "unavailable",
    };
    Event::Evaluation {
        result,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Records a step's start by a runner when the store says it started it now (`ready_at`,
/// ms, is `None` for a repeated report).
pub fn step_started(ready_at: Option<i64>, now_ms: i64) {
    if let Some(at) = ready_at {
        record(Event::StepStarted {
            waited: seconds_between(at, now_ms),
        });
    }
}

/// Milliseconds between two store timestamps, in seconds.
pub fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms.saturating_sub(from_ms)) as f64 / 1000.0
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests;
