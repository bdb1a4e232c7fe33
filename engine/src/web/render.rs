//! The templates (embedded in the binary) and the one function that renders them.
//!
//! Invariants: HTML auto-escaping is on for every template, whatever its name, so every
//! string from a workflow, a log or a forge is text; nothing is marked safe by hand. The
//! template set is parsed once, on first use; a template that does not parse is a bug that
//! the tests catch (`every_template_parses`).

use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("runs_rows.html", include_str!("templates/runs_rows.html")),
    ("run.html", include_str!("templates/run.html")),
    ("run_live.html", include_str!("templates/run_live.html")),
    ("log.html", include_str!("templates/log.html")),
    ("runners.html", include_str!("templates/runners.html")),
    ("repos.html", include_str!("templates/repos.html")),
    ("repo.html", include_str!("templates/repo.html")),
];

fn environment() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.add_filter("datetime", datetime);
        env.add_filter("duration", duration);
        env.add_filter("usd", usd);
        env.add_filter("short_sha", short_sha);
        env.add_filter("branch", branch);
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
    format!("${}", runner::llm::budget::usd(micros))
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
