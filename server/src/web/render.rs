//! The templates (embedded in the binary) and the one function that renders them.
//!
//! Invariants: HTML auto-escaping is on for every template, whatever its name, so every
//! string from a workflow, a log or a forge is text; nothing is marked safe by hand. The
//! template set is parsed once, on first use; a template that does not parse is a bug that
//! the tests catch (`every_template_parses`).

use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use plue_types::status::{
    AttemptStatus, ProposalState, RunState, RunnerState, StatementState, StepStatus,
};
use serde::Serialize;

use super::icons;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("runs_rows.html", include_str!("templates/runs_rows.html")),
    ("run.html", include_str!("templates/run.html")),
    ("run_live.html", include_str!("templates/run_live.html")),
    (
        "run_failure.html",
        include_str!("templates/run_failure.html"),
    ),
    ("run_dag.html", include_str!("templates/run_dag.html")),
    ("log.html", include_str!("templates/log.html")),
    ("log_steps.html", include_str!("templates/log_steps.html")),
    (
        "log_conversation.html",
        include_str!("templates/log_conversation.html"),
    ),
    ("timeline.html", include_str!("templates/timeline.html")),
    (
        "run_timeline.html",
        include_str!("templates/run_timeline.html"),
    ),
    (
        "log_skipped.html",
        include_str!("templates/log_skipped.html"),
    ),
    ("runners.html", include_str!("templates/runners.html")),
    ("repos.html", include_str!("templates/repos.html")),
    ("repo.html", include_str!("templates/repo.html")),
    ("run_facts.html", include_str!("templates/run_facts.html")),
    (
        "run_approval.html",
        include_str!("templates/run_approval.html"),
    ),
    (
        "log_approval.html",
        include_str!("templates/log_approval.html"),
    ),
];

fn environment() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.add_filter("datetime", datetime);
        env.add_filter("when", when);
        env.add_filter("elapsed", elapsed);
        env.add_filter("thousands", |n: u64| plue_types::budget::thousands(n));
        env.add_filter("duration", duration);
        env.add_filter("usd", usd);
        env.add_filter("short_sha", short_sha);
        env.add_filter("branch", branch);
        env.add_filter("step_icon", icons::filter::<StepStatus>);
        env.add_filter("run_icon", icons::filter::<RunState>);
        env.add_filter("attempt_icon", icons::filter::<AttemptStatus>);
        env.add_filter("runner_icon", icons::filter::<RunnerState>);
        env.add_filter("statement_icon", icons::filter::<StatementState>);
        env.add_filter("proposal_icon", icons::filter::<ProposalState>);
        env.add_filter("segment", |text: String| super::encode(&text));
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| format!("template {name}: {e:#}"))?;
        }
        Ok(env)
    })
}

/// Renders `template` with `context`.
pub(super) fn page<C: Serialize>(template: &str, context: &C) -> anyhow::Result<String> {
    let env = environment()
        .as_ref()
        .map_err(|e| anyhow::anyhow!("dashboard templates: {e}"))?;
    let template = env.get_template(template)?;
    template
        .render(context)
        .map_err(|e| anyhow::anyhow!("rendering {}: {e:#}", template.name()))
}

/// Milliseconds since the epoch as `2026-11-22 19:11:02Z` (UTC).
fn datetime(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A point in time (milliseconds since the epoch) as
/// `<time datetime="RFC3339" data-ms="…" title="… UTC">5 min ago</time>`; empty for
/// `None`. The markup is built here from integers only (nothing user-controlled reaches
/// it), hence safe. `assets/time.js` keeps the relative text current and puts the local
/// absolute time in the title.
fn when(ms: Option<i64>) -> minijinja::Value {
    let Some(at) = ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis) else {
        return minijinja::Value::from("");
    };
    let now = chrono::Utc::now().timestamp_millis();
    minijinja::Value::from_safe_string(format!(
        r#"<time datetime="{}" data-ms="{}" title="{}">{}</time>"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at.timestamp_millis(),
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        relative(at.timestamp_millis() - now),
    ))
}

/// How long ago (negative `delta_ms`) or how far ahead (positive) a time is, short:
/// `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 days ago`, `in 10 min`. Each amount
/// is rounded to the nearest unit, not cut: a deadline 2 h away, read a few milliseconds
/// later, is `in 2 h`, never `in 1 h`; the unit is the largest whose rounded amount is at
/// least 1 (59.6 s is `1 min`, 23.6 h is `1 day`). `time.js` writes the same words.
fn relative(delta_ms: i64) -> String {
    let ms = delta_ms.unsigned_abs();
    let nearest = |unit: u64| (ms + unit / 2) / unit;
    let seconds = nearest(1_000);
    let minutes = nearest(60_000);
    let hours = nearest(3_600_000);
    let days = nearest(86_400_000);
    let amount = if seconds < 5 {
        return "just now".to_string();
    } else if seconds < 60 {
        format!("{seconds} s")
    } else if minutes < 60 {
        format!("{minutes} min")
    } else if hours < 24 {
        format!("{hours} h")
    } else if days == 1 {
        "1 day".to_string()
    } else {
        format!("{days} days")
    };
    if delta_ms < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A live duration: `<span class="elapsed" data-since="ms">3m 04s</span>`, which
/// `time.js` ticks every second. With `until` (the end, when there is one) the span
/// carries `data-until` and stands still. Empty when `since` is `None`. Built from
/// integers only, hence safe.
fn elapsed(since: Option<i64>, until: Option<i64>) -> minijinja::Value {
    let Some(since) = since else {
        return minijinja::Value::from("");
    };
    let html = match until {
        Some(until) => format!(
            r#"<span class="elapsed" data-since="{since}" data-until="{until}">{}</span>"#,
            duration(Some(until - since))
        ),
        None => format!(
            r#"<span class="elapsed" data-since="{since}">{}</span>"#,
            duration(Some((chrono::Utc::now().timestamp_millis() - since).max(0)))
        ),
    };
    minijinja::Value::from_safe_string(html)
}

/// A duration in milliseconds, short: `850 ms`, `12.3 s`, `3m 04s`, `2h 05m`.
pub(super) fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|ms| *ms >= 0) else {
        return String::new();
    };
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// US dollars as the budget messages write them: `$0.50`, `$0.031005` (whole
/// micro-dollars, at least 2 decimals).
fn usd(dollars: f64) -> String {
    let micros = (dollars * 1_000_000.0).round().max(0.0) as u64;
    format!("${}", plue_types::budget::usd(micros))
}

/// The first 8 characters of a commit.
fn short_sha(sha: String) -> String {
    sha.chars().take(8).collect()
}

/// `refs/heads/main` as `main`; other refs as they are.
fn branch(git_ref: String) -> String {
    match git_ref.strip_prefix("refs/heads/") {
        Some(branch) => branch.to_string(),
        None => git_ref,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        if let Err(e) = environment() {
            panic!("{e}");
        }
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(usd(0.5), "$0.50");
        assert_eq!(usd(0.031005), "$0.031005");
        assert_eq!(duration(None), "");
        assert_eq!(duration(Some(850)), "850 ms");
        assert_eq!(duration(Some(12_345)), "12.3 s");
        assert_eq!(duration(Some(184_000)), "3m 04s");
        assert_eq!(duration(Some(7_500_000)), "2h 05m");
    }

    #[test]
    fn times_carry_their_machine_readable_form() {
        let env = environment().as_ref().expect("templates");
        let at = 1_795_000_000_123_i64;
        let html = env
            .render_str("{{ t|when }}", minijinja::context! { t => at })
            .expect("renders");
        assert!(
            html.starts_with(&format!(
                r#"<time datetime="2026-11-18T11:06:40.123Z" data-ms="{at}" title="2026-11-18 11:06:40 UTC">"#
            )),
            "{html}"
        );
        assert!(html.ends_with(" ago</time>"), "{html}");
        let none = env
            .render_str("{{ t|when }}", minijinja::context! { t => None::<i64> })
            .expect("renders");
        assert_eq!(none, "");
    }

    #[test]
    fn relative_times_read_like_a_person_would_say_them() {
        assert_eq!(relative(-1_000), "just now");
        assert_eq!(relative(-42_000), "42 s ago");
        assert_eq!(relative(-300_000), "5 min ago");
        assert_eq!(relative(-3 * 3_600_000), "3 h ago");
        assert_eq!(relative(-86_400_000), "1 day ago");
        assert_eq!(relative(-3 * 86_400_000), "3 days ago");
        assert_eq!(relative(600_000), "in 10 min");
    }

    // Issue 54: a 2-hour approval deadline, rendered a moment after it was set, read
    // "in 1 h" (amounts were cut, not rounded).
    #[test]
    fn relative_times_round_to_the_nearest_unit() {
        let hour = 3_600_000;
        assert_eq!(relative(2 * hour - 20), "in 2 h");
        assert_eq!(relative(2 * hour - 5 * 60_000), "in 2 h");
        assert_eq!(relative(hour + 29 * 60_000), "in 1 h");
        assert_eq!(relative(hour + 31 * 60_000), "in 2 h");
        assert_eq!(relative(-(2 * hour - 1_000)), "2 h ago");
        assert_eq!(relative(10 * 60_000 - 20), "in 10 min");
        assert_eq!(relative(59_600), "in 1 min");
        assert_eq!(relative(60 * 60_000 - 20_000), "in 1 h");
        assert_eq!(relative(24 * hour - 20), "in 1 day");
        assert_eq!(relative(2 * 86_400_000 - 20), "in 2 days");
        assert_eq!(relative(4_400), "just now");
        assert_eq!(relative(4_600), "in 5 s");
        // time.js writes the same words by the same rule.
        let script = include_str!("assets/time.js");
        assert!(
            script.contains("Math.round(ms / 3600000)"),
            "time.js rounds hours"
        );
    }

    #[test]
    fn elapsed_ticks_only_while_unfinished() {
        let env = environment().as_ref().expect("templates");
        let since = chrono::Utc::now().timestamp_millis() - 65_000;
        let running = env
            .render_str("{{ s|elapsed }}", minijinja::context! { s => since })
            .expect("renders");
        assert!(
            running.starts_with(&format!(
                r#"<span class="elapsed" data-since="{since}">1m 0"#
            )),
            "{running}"
        );
        let done = env
            .render_str(
                "{{ s|elapsed(u) }}",
                minijinja::context! { s => 1_000, u => 13_345 },
            )
            .expect("renders");
        assert_eq!(
            done,
            r#"<span class="elapsed" data-since="1000" data-until="13345">12.3 s</span>"#
        );
    }

    #[test]
    fn strings_are_escaped_in_every_template() {
        let env = environment().as_ref().expect("templates");
        let text = env
            .render_str(
                "{{ x }}",
                minijinja::context! { x => "<script>alert(1)</script>" },
            )
            .expect("renders");
        assert_eq!(text, "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;");
    }
}
