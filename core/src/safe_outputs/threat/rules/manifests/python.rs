//! Python's manifests: requirements files, `pyproject.toml` (PEP 621, Poetry, build
//! backends), `Pipfile`, `setup.py` and `setup.cfg`, each dependency read as PEP 508 names
//! it.

use std::sync::LazyLock;

use regex::Regex;

use super::{dependency, push, registry_line, source_line, Ecosystem};
use crate::safe_outputs::threat::diff::FileChange;
use crate::safe_outputs::threat::rules::excerpt;
use crate::safe_outputs::threat::verdict::{Finding, Severity};

static PEP508: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*['"]?([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:[<>=!~]=?|@|;|['"],?\s*$|$)"#)
        .expect("the PEP 508 pattern")
});

pub(super) fn requirements(file: &FileChange, found: &mut Vec<Finding>) {
    for line in &file.added {
        let text = line.text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        registry_line(file, line.number, text, found);
        if text.starts_with('-') {
            if text.starts_with("-e") || text.starts_with("--editable") {
                source_line(
                    file,
                    line.number,
                    text.trim_start_matches("-e").trim(),
                    found,
                );
            }
            continue;
        }
        source_line(file, line.number, text, found);
        let name = PEP508
            .captures(text)
            .map(|c| c[1].to_owned())
            .unwrap_or_else(|| text.to_owned());
        dependency(found, file, Ecosystem::PyPi, line.number, &name, text);
    }
}

pub(super) fn pyproject(file: &FileChange, found: &mut Vec<Finding>) {
    let mut section = String::new();
    for line in &file.added {
        let text = line.text.trim();
        if text.starts_with('[') {
            section = text.to_ascii_lowercase();
            if section == "[build-system]" {
                push(
                    found,
                    file,
                    "build-backend",
                    Severity::Warning,
                    line.number,
                    format!(
                        "changes the build system (code run on install): {}",
                        excerpt(text)
                    ),
                );
            }
            registry_line(file, line.number, text, found);
            continue;
        }
        if text.starts_with("build-backend")
            || text.starts_with("backend-path")
            || (section == "[build-system]" && text.starts_with("requires"))
        {
            push(
                found,
                file,
                "build-backend",
                Severity::Warning,
                line.number,
                format!(
                    "changes the build backend (code run on install): {}",
                    excerpt(text)
                ),
            );
            continue;
        }
        registry_line(file, line.number, text, found);
        let in_deps = section.contains("dependencies")
            || section.contains("optional-dependencies")
            || section.contains("dependency-groups");
        let quoted = text.starts_with('"') || text.starts_with('\'');
        if quoted || text.starts_with("dependencies") && text.contains('"') {
            for spec in text.split(['"', '\'']).skip(1).step_by(2) {
                if let Some(c) = PEP508.captures(spec) {
                    source_line(file, line.number, spec, found);
                    dependency(found, file, Ecosystem::PyPi, line.number, &c[1], text);
                }
            }
        } else if in_deps {
            if let Some((name, spec)) = text.split_once('=') {
                let name = name.trim();
                if name != "python" && !name.is_empty() && !name.contains(' ') {
                    source_line(file, line.number, spec, found);
                    dependency(found, file, Ecosystem::PyPi, line.number, name, text);
                }
            }
        }
    }
}

pub(super) fn pipfile(file: &FileChange, found: &mut Vec<Finding>) {
    let mut section = String::new();
    for line in &file.added {
        let text = line.text.trim();
        if text.starts_with('[') {
            section = text.to_ascii_lowercase();
            registry_line(file, line.number, text, found);
            continue;
        }
        if section.contains("source") && text.starts_with("url") {
            push(
                found,
                file,
                "new-registry",
                Severity::Warning,
                line.number,
                format!("adds a package index: {}", excerpt(text)),
            );
        }
        if section.contains("packages") {
            if let Some((name, spec)) = text.split_once('=') {
                source_line(file, line.number, spec, found);
                dependency(
                    found,
                    file,
                    Ecosystem::PyPi,
                    line.number,
                    name.trim().trim_matches('"'),
                    text,
                );
            }
        }
    }
}

pub(super) fn python_setup(file: &FileChange, found: &mut Vec<Finding>) {
    for line in &file.added {
        registry_line(file, line.number, &line.text, found);
        for spec in line.text.split(['"', '\'']).skip(1).step_by(2) {
            if let Some(c) = PEP508.captures(spec) {
                if spec.contains(['>', '<', '=', '~', '@']) {
                    dependency(found, file, Ecosystem::PyPi, line.number, &c[1], &line.text);
                }
            }
        }
    }
}
