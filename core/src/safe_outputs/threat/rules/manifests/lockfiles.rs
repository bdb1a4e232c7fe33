//! Lockfiles: a package resolved from another host than the default registries
//! (`lockfile-source`), locked to a git source (`dependency-source`), packages added
//! (`lockfile-dependency`) and among them one named like a popular one (`typosquat`).
//!
//! Invariant: a lockfile adds a package only when a name is added that no removed line
//! had (a version bump rewrites lines, it adds no name).

use std::sync::LazyLock;

use regex::Regex;

use super::typosquat::typosquat;
use super::{push, Ecosystem, DEFAULT_REGISTRIES};
use crate::safe_outputs::threat::diff::{FileChange, Line};
use crate::safe_outputs::threat::rules::excerpt;
use crate::safe_outputs::threat::verdict::{Finding, Severity};

pub(super) fn lockfile(file: &FileChange, name: &str, found: &mut Vec<Finding>) {
    static URL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i)(?:registry\+|git\+|sparse\+)?(?:https?|git|ssh)://[^\s"',)]+"#)
            .expect("the lock URL pattern")
    });
    let mut reported_hosts: Vec<String> = Vec::new();
    for line in &file.added {
        for url in URL.find_iter(&line.text) {
            let url = url.as_str();
            let bare = url
                .split_once('+')
                .filter(|(p, _)| !p.contains(':'))
                .map_or(url, |(_, rest)| rest);
            let Some(host) = plue_outbound::host_of(bare) else {
                continue;
            };
            if DEFAULT_REGISTRIES
                .iter()
                .any(|d| crate::safe_outputs::threat::rules::network::within(&host, d))
                || reported_hosts.contains(&host)
            {
                continue;
            }
            push(
                found,
                file,
                "lockfile-source",
                Severity::Warning,
                line.number,
                format!(
                    "resolves a package from {host}, not the default registry: {}",
                    excerpt(url)
                ),
            );
            reported_hosts.push(host);
        }
        if line.text.contains("git+") || line.text.contains("\"git\"") {
            push(
                found,
                file,
                "dependency-source",
                Severity::Warning,
                line.number,
                format!("locks a package to a git source: {}", excerpt(&line.text)),
            );
        }
    }
    let names = |lines: &[Line]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| locked_name(name, &l.text))
            .collect()
    };
    let removed = names(&file.removed);
    let added: Vec<String> = names(&file.added)
        .into_iter()
        .filter(|n| !removed.contains(n))
        .collect();
    let mut added_unique: Vec<String> = Vec::new();
    for n in added {
        if !added_unique.contains(&n) {
            added_unique.push(n);
        }
    }
    if !added_unique.is_empty() {
        let shown: Vec<&str> = added_unique.iter().take(5).map(String::as_str).collect();
        push(
            found,
            file,
            "lockfile-dependency",
            Severity::Warning,
            0,
            format!(
                "the lockfile adds {} package(s): {}",
                added_unique.len(),
                shown.join(", ")
            ),
        );
        let ecosystem = match name {
            "cargo.lock" => Ecosystem::Cargo,
            "package-lock.json"
            | "npm-shrinkwrap.json"
            | "yarn.lock"
            | "pnpm-lock.yaml"
            | "bun.lock" => Ecosystem::Npm,
            "poetry.lock" | "uv.lock" | "pipfile.lock" | "pdm.lock" => Ecosystem::PyPi,
            "gemfile.lock" => Ecosystem::Gems,
            _ => Ecosystem::Other,
        };
        for dep in &added_unique {
            if let Some((popular, severity)) = typosquat(ecosystem, dep) {
                push(
                    found,
                    file,
                    "typosquat",
                    severity,
                    0,
                    format!("the lockfile adds {dep:?}, named like the popular {popular:?}"),
                );
            }
        }
    }
}

/// The package a lockfile line names, when it names one.
fn locked_name(lockfile: &str, text: &str) -> Option<String> {
    let text = text.trim();
    match lockfile {
        "cargo.lock" | "poetry.lock" | "uv.lock" | "pdm.lock" => text
            .strip_prefix("name = \"")
            .and_then(|r| r.strip_suffix('"'))
            .map(str::to_owned),
        "package-lock.json" | "npm-shrinkwrap.json" => text
            .strip_prefix("\"node_modules/")
            .and_then(|r| r.split('"').next())
            .map(|r| r.rsplit("node_modules/").next().unwrap_or(r).to_owned()),
        "yarn.lock" | "pnpm-lock.yaml" => {
            let t = text.trim_start_matches(['"', '/', '\'']);
            if text.ends_with(':') && t.contains('@') && !t.starts_with("resolution") {
                let at = if let Some(scoped) = t.strip_prefix('@') {
                    scoped.find('@').map(|i| i + 1)
                } else {
                    t.find('@')
                };
                at.map(|i| t[..i].to_owned())
            } else {
                None
            }
        }
        "go.sum" => text.split_whitespace().next().map(str::to_owned),
        "gemfile.lock" => {
            let t = text.split_whitespace().collect::<Vec<_>>();
            (t.len() == 2 && t[1].starts_with('(')).then(|| t[0].to_owned())
        }
        _ => None,
    }
}
