//! Secrets: any secret of the run, in any spelling its outbound wall knows (`run-secret`,
//! critical — the validator refuses it first; the rule stands so that the check alone
//! never passes one), and well-known credential formats that are no secret of the run but
//! should not land in a repository (`credential`, a warning: a private key, a cloud key, a
//! forge or registry token).
//!
//! Invariants: a finding never quotes what it found (the reason names the format or the
//! spelling, never the value).

use std::sync::LazyLock;

use regex::RegexSet;

use super::super::verdict::{Finding, Severity};
use super::super::Scope;
use super::{Doc, Kind};

static FORMATS: LazyLock<(RegexSet, Vec<&'static str>)> = LazyLock::new(|| {
    let formats: [(&str, &str); 12] = [
        (
            r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY",
            "a private key",
        ),
        (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "an AWS access key id"),
        (r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", "a GitHub token"),
        (r"\bgithub_pat_[A-Za-z0-9_]{40,}\b", "a GitHub token"),
        (r"\bglpat-[A-Za-z0-9_-]{20,}\b", "a GitLab token"),
        (r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", "a Slack token"),
        (r"\bsk-ant-[A-Za-z0-9_-]{20,}\b", "an Anthropic API key"),
        (r"\bsk-(?:proj-)?[A-Za-z0-9]{32,}\b", "an OpenAI API key"),
        (r"\bAIza[0-9A-Za-z_-]{35}\b", "a Google API key"),
        (r"\bnpm_[A-Za-z0-9]{36}\b", "an npm token"),
        (r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", "a PyPI token"),
        (
            r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+",
            "a Slack webhook",
        ),
    ];
    let set = RegexSet::new(formats.iter().map(|f| f.0)).expect("the credential formats compile");
    (set, formats.iter().map(|f| f.1).collect())
});

pub(crate) fn check(doc: &Doc<'_>, scope: &Scope<'_>, found: &mut Vec<Finding>) {
    if doc.lines.is_empty() {
        return;
    }
    if let Some(wall) = scope.wall.filter(|w| w.has_secrets()) {
        let mut text = String::new();
        for line in &doc.lines {
            text.push_str(&line.text);
            text.push('\n');
        }
        let spelling = match doc.kind {
            Kind::Text => wall.secret_in(&text),
            _ => wall.secret_in_diff(&text),
        };
        if let Some(spelling) = spelling {
            found.push(doc.finding(
                "run-secret",
                Severity::Critical,
                0,
                format!("holds a secret of the run ({spelling})"),
            ));
        }
    }
    let (set, names) = &*FORMATS;
    for (index, line) in doc.lines.iter().enumerate() {
        let at = if line.number > 0 {
            line.number
        } else {
            index as u32 + 1
        };
        if let Some(hit) = set.matches(&line.text).iter().next() {
            found.push(doc.finding(
                "credential",
                Severity::Warning,
                at,
                format!("holds what looks like {}", names[hit]),
            ));
        }
    }
}
