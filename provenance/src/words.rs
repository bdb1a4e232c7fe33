//! A statement told in words, one fact a line, for `plue verify` to print once the
//! signature and the commit checked out.
//!
//! Invariant: every value shown comes from the statement as parsed; nothing is looked up
//! elsewhere, so what is printed is what the key signed. A value a reader's terminal would
//! act on (a control character) is shown escaped.

use crate::statement::Statement;

/// The chain from the trigger to the change, as `(label, value)` lines.
pub fn chain(statement: &Statement) -> Vec<(&'static str, String)> {
    let build = &statement.predicate.build_definition;
    let external = &build.external_parameters;
    let internal = &build.internal_parameters;
    let trigger = &external.trigger;
    let digest = |found: Option<&crate::statement::ResourceDescriptor>| {
        found
            .and_then(|d| d.digest.get("sha256"))
            .map(|hex| format!("sha256:{hex}"))
            .unwrap_or_else(|| "(not recorded)".into())
    };
    let mut on = Vec::new();
    if let Some(n) = trigger.issue {
        on.push(format!("issue #{n}"));
    }
    if let Some(n) = trigger.pull_request {
        on.push(format!("pull request #{n}"));
    }
    if let Some(id) = trigger.comment {
        on.push(format!("comment {id}"));
    }
    let summoned = match &trigger.summoned_by {
        Some(who) => format!(
            "{who}{}",
            trigger
                .association
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        ),
        None => "(nobody named)".into(),
    };
    let usage = statement
        .byproduct("usage")
        .and_then(|u| u.annotations.as_ref());
    let cost = usage
        .and_then(|a| a.get("costUsd"))
        .and_then(serde_json::Value::as_f64)
        .map(|usd| format!("${usd:.4}"))
        .unwrap_or_else(|| "(not priced)".into());
    let budgets = &internal.budgets;
    let mut limits = Vec::new();
    if let Some(t) = budgets.max_tokens {
        limits.push(format!("max_tokens {t}"));
    }
    if let Some(usd) = budgets.max_cost_usd {
        limits.push(format!("max_cost_usd {usd}"));
    }
    if let Some(usd) = budgets.run_budget_usd {
        limits.push(format!("run budget_usd {usd}"));
    }
    let approved = match &external.approval {
        Some(a) => format!("{} at {}", a.by, a.at),
        None => "no approval was required".into(),
    };
    let threat = match &external.proposal.threat_check {
        None => "not run".to_owned(),
        Some(check) => {
            let rules: Vec<&str> = check.findings.iter().map(|f| f.rule.as_str()).collect();
            let mut said = check.verdict.clone();
            if !rules.is_empty() {
                said.push_str(&format!(" ({})", rules.join(", ")));
            }
            if let Some(review) = &check.review {
                said.push_str(&format!(
                    "; model review {}: {}",
                    review.model, review.verdict
                ));
            }
            said
        }
    };
    let lines = vec![
        ("repository", external.repository.clone()),
        (
            "workflow",
            format!(
                "{} at {} ({})",
                external.workflow.path, external.workflow.commit, external.workflow.git_ref
            ),
        ),
        (
            "trigger",
            format!("{} {}", trigger.event, on.join(", "))
                .trim()
                .to_owned(),
        ),
        ("summoned by", summoned),
        ("permission", trigger.permission.clone()),
        (
            "step",
            format!(
                "{} (proposal {} of run {}, {})",
                external.step, external.proposal.id, external.proposal.run, external.proposal.kind
            ),
        ),
        (
            "model",
            format!(
                "{}{}",
                internal
                    .model
                    .as_deref()
                    .unwrap_or("(the runner's default)"),
                internal
                    .max_turns
                    .map(|t| format!(", max_turns {t}"))
                    .unwrap_or_default()
            ),
        ),
        (
            "system prompt",
            digest(statement.dependency("system-prompt")),
        ),
        ("prompt", digest(statement.dependency("prompt"))),
        ("transcript", digest(statement.byproduct("transcript"))),
        (
            "tools",
            if internal.tools.is_empty() {
                "(none)".into()
            } else {
                internal.tools.join(", ")
            },
        ),
        (
            "network",
            match &internal.network {
                serde_json::Value::Null => "the runner's default".into(),
                other => other.to_string(),
            },
        ),
        (
            "budgets",
            if limits.is_empty() {
                "(none)".into()
            } else {
                limits.join(", ")
            },
        ),
        ("cost", cost),
        ("diff", digest(statement.byproduct("diff"))),
        ("threat check", threat),
        ("approved by", approved),
        (
            "applied",
            format!(
                "{} by {}",
                statement.predicate.run_details.metadata.finished_on,
                statement.predicate.run_details.builder.id
            ),
        ),
    ];
    lines
        .into_iter()
        .map(|(label, value)| (label, value.escape_debug().to_string()))
        .collect()
}
