//! Supply-chain rules over dependency manifests and lockfiles of npm, Cargo, pip/PyPI, Go,
//! RubyGems, Composer, Gradle and Maven: a dependency added (`new-dependency`; one the file
//! already named, on a line it removes, is an update and no finding),
//! fetched from a URL, git or a path (`dependency-source`), a registry or index added
//! (`new-registry`), a build dependency, build script or build backend (`build-backend`),
//! an npm install hook (`install-hook`, critical when it fetches or evaluates), a
//! lockfile resolving from another host or adding packages (`lockfile-source`,
//! `lockfile-dependency`), and a dependency named like a popular one (`typosquat`).
//!
//! Invariants: files are known by their folded name ([`super::super::fold::path`]); only
//! added lines are read; a manifest's own name and version are not dependencies; a
//! lockfile adds a package only when a name is added that no removed line had (a version
//! bump rewrites lines, it adds no name); a typosquat is a name one edit (or a
//! transposition, or separators) away from a popular package of the same ecosystem that
//! is not itself popular — critical for the classic forms (transposed letters, a doubled
//! or dropped letter, separators, `l`/`1` and `o`/`0`), a warning otherwise.
//!
//! Lockfiles are read in `lockfiles.rs`, Python's manifests in `python.rs`; the popular
//! packages and the typosquat check are `typosquat.rs`.

use std::sync::LazyLock;

use regex::Regex;

use super::super::diff::FileChange;
use super::super::fold;
use super::super::verdict::{Finding, Severity};
use super::{excerpt, Subject};
use lockfiles::lockfile;
use python::{pipfile, pyproject, python_setup, requirements};
use typosquat::typosquat;

mod lockfiles;
mod python;
mod typosquat;

/// Which package ecosystem a manifest belongs to (for typosquats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ecosystem {
    Npm,
    Cargo,
    PyPi,
    Go,
    Gems,
    Other,
}

/// Lockfile names.
const LOCKFILES: [&str; 13] = [
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "cargo.lock",
    "poetry.lock",
    "uv.lock",
    "pipfile.lock",
    "pdm.lock",
    "go.sum",
    "gemfile.lock",
    "composer.lock",
    "bun.lock",
];

/// Whether `name` (folded) is a lockfile.
pub(crate) fn is_lockfile(name: &str) -> bool {
    LOCKFILES.contains(&name)
}

/// The registries lockfiles resolve from by default.
const DEFAULT_REGISTRIES: [&str; 14] = [
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "registry.npmmirror.com",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "github.com",
    "pypi.org",
    "files.pythonhosted.org",
    "pypi.python.org",
    "proxy.golang.org",
    "rubygems.org",
    "repo.packagist.org",
    "codeload.github.com",
];

pub(crate) fn check(subject: &Subject<'_>, found: &mut Vec<Finding>) {
    for file in &subject.files {
        let folded = fold::path(&file.path);
        let name = folded.rsplit('/').next().unwrap_or(&folded);
        if is_lockfile(name) {
            lockfile(file, name, found);
            continue;
        }
        match name {
            "package.json" => package_json(file, found),
            "composer.json" => json_manifest(file, Ecosystem::Other, found),
            "cargo.toml" => cargo_toml(file, found),
            "pyproject.toml" => pyproject(file, found),
            "pipfile" => pipfile(file, found),
            "go.mod" => go_mod(file, found),
            "gemfile" => gemfile(file, found),
            "setup.py" | "setup.cfg" => python_setup(file, found),
            "build.gradle"
            | "build.gradle.kts"
            | "settings.gradle"
            | "settings.gradle.kts"
            | "pom.xml" => jvm(file, found),
            "environment.yml" | "environment.yaml" => conda(file, found),
            _ if is_requirements(&folded, name) => requirements(file, found),
            _ if name.ends_with(".gemspec") => gemfile(file, found),
            _ => {}
        }
    }
}

fn is_requirements(path: &str, name: &str) -> bool {
    (name.starts_with("requirements") || name.starts_with("constraints"))
        && (name.ends_with(".txt") || name.ends_with(".in"))
        || path.contains("requirements/") && name.ends_with(".txt")
}

/// Pushes `rule` at `severity` on `line` of `file`.
fn push(
    found: &mut Vec<Finding>,
    file: &FileChange,
    rule: &str,
    severity: Severity,
    line: u32,
    reason: String,
) {
    found.push(Finding::new(
        rule,
        severity,
        Some(&file.path),
        (line > 0).then_some(line),
        reason,
    ));
}

/// Reports `dependency` (added on `line`) and checks its name for a typosquat.
fn dependency(
    found: &mut Vec<Finding>,
    file: &FileChange,
    ecosystem: Ecosystem,
    line: u32,
    dependency: &str,
    text: &str,
) {
    // A dependency the file already named (a removed line names it) is updated, not new:
    // its source, if it changes, is `dependency-source`'s.
    if was_named(file, dependency) {
        return;
    }
    push(
        found,
        file,
        "new-dependency",
        Severity::Warning,
        line,
        format!("adds the dependency {dependency:?}: {}", excerpt(text)),
    );
    if let Some((popular, severity)) = typosquat(ecosystem, dependency) {
        push(
            found,
            file,
            "typosquat",
            severity,
            line,
            format!("the dependency {dependency:?} is named like the popular {popular:?}"),
        );
    }
}

/// Whether a line `file` removes names the dependency `name` (as a manifest names one:
/// first on its line, or quoted).
fn was_named(file: &FileChange, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    file.removed.iter().any(|line| {
        let lower = line.text.to_ascii_lowercase();
        let first = lower.trim_start().trim_start_matches(['"', '\'', '-', ' ']);
        let first = first
            .strip_prefix("gem ")
            .or_else(|| first.strip_prefix("require "))
            .map(|r| r.trim_start().trim_start_matches(['"', '\'']))
            .unwrap_or(first);
        let starts = first.strip_prefix(name.as_str()).is_some_and(|rest| {
            !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        starts
            || lower.contains(&format!("\"{name}\""))
            || lower.contains(&format!("'{name}'"))
            || lower.contains(&format!(":{name}:"))
    })
}

static NPM_DEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*"((?:@[a-z0-9._~-]+/)?[a-z0-9._~-]+)"\s*:\s*"([~^<>=]*\s*v?\d[^"]*|\*|latest|next|x|(?:git\+|git:|https?:|github:|gitlab:|bitbucket:|file:|link:|npm:|workspace:)[^"]*|[a-z0-9._-]+/[a-z0-9._-]+(?:#[^"]*)?)"\s*,?\s*$"#)
        .expect("the npm dependency pattern")
});
static NPM_HOOK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*"(preinstall|install|postinstall|prepare|preprepare|postprepare|prepack|postpack|prepublish|preuninstall|postuninstall|dependencies)"\s*:\s*"([^"]*)""#)
        .expect("the npm hook pattern")
});
static FETCHES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:curl|wget|https?://|node\s+-e|eval|base64|powershell|\|\s*(?:ba)?sh\b|nc\s|bash\s+-c)")
        .expect("the fetches pattern")
});

/// Keys of a manifest that look like `"name": "1.0"` but name no dependency.
const NPM_FIELDS: [&str; 10] = [
    "version",
    "node",
    "npm",
    "yarn",
    "pnpm",
    "typescript-version",
    "packagemanager",
    "engines",
    "name",
    "license",
];

fn package_json(file: &FileChange, found: &mut Vec<Finding>) {
    for line in &file.added {
        if let Some(hook) = NPM_HOOK.captures(&line.text) {
            let (name, command) = (&hook[1], &hook[2]);
            let severity = if FETCHES.is_match(command) {
                Severity::Critical
            } else {
                Severity::Warning
            };
            push(
                found,
                file,
                "install-hook",
                severity,
                line.number,
                format!(
                    "adds the npm {name:?} script, run on every install: {}",
                    excerpt(command)
                ),
            );
            continue;
        }
        registry_line(file, line.number, &line.text, found);
        if let Some(dep) = NPM_DEP.captures(&line.text) {
            let name = dep[1].to_owned();
            if NPM_FIELDS.contains(&name.as_str()) {
                continue;
            }
            source_line(file, line.number, &dep[2], found);
            dependency(found, file, Ecosystem::Npm, line.number, &name, &line.text);
        }
    }
}

fn json_manifest(file: &FileChange, ecosystem: Ecosystem, found: &mut Vec<Finding>) {
    for line in &file.added {
        registry_line(file, line.number, &line.text, found);
        if let Some(dep) = NPM_DEP.captures(&line.text) {
            if !NPM_FIELDS.contains(&&dep[1]) && dep[1].contains('/') {
                dependency(found, file, ecosystem, line.number, &dep[1], &line.text);
            }
        }
    }
}

/// A line adding a registry or index, in any manifest.
fn registry_line(file: &FileChange, number: u32, text: &str, found: &mut Vec<Finding>) {
    static REGISTRY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?i)"?(?:registry|publishconfig|repositories|registries|index-url|extra-index-url|find-links|trusted-host|registry-index)"?\s*[:=]|^\s*\[\[?(?:registries|source|tool\.poetry\.source|tool\.uv\.index|tool\.pdm\.source|\[source\])|^\s*(?:-i|--index-url|--extra-index-url|-f|--find-links|--trusted-host)\b|\breplace-with\s*=|^\s*source\s+['"]|maven\s*\{|\bmaven\s*\(\s*(?:url\s*=\s*)?(?:uri\s*\()?['"]|<repository>|<pluginrepository>|\bflatdir\b|^\s*channels\s*:"#)
            .expect("the registry pattern")
    });
    if REGISTRY.is_match(text) {
        push(
            found,
            file,
            "new-registry",
            Severity::Warning,
            number,
            format!("adds a package registry or index: {}", excerpt(text)),
        );
    }
}

/// A dependency fetched from somewhere other than its registry.
fn source_line(file: &FileChange, number: u32, spec: &str, found: &mut Vec<Finding>) {
    let lower = spec.to_ascii_lowercase();
    let direct = [
        "git+",
        "git:",
        "git@",
        "http:",
        "https:",
        "github:",
        "gitlab:",
        "bitbucket:",
        "file:",
        "link:",
    ]
    .iter()
    .any(|p| lower.starts_with(p) || lower.contains(&format!(" {p}")))
        || lower.contains("git = ")
        || lower.contains("path = ")
        || lower.contains(" @ ")
        || (lower.contains('/')
            && !lower.contains(':')
            && !lower.contains(' ')
            && !lower.starts_with('.'));
    if direct {
        push(
            found,
            file,
            "dependency-source",
            Severity::Warning,
            number,
            format!(
                "fetches a dependency from a URL, git or a path rather than its registry: {}",
                excerpt(spec)
            ),
        );
    }
}

static CARGO_DEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*([A-Za-z0-9_-]+)(\.workspace)?\s*=\s*(\{.*|"[~^<>=*]*\s*\d[^"]*"|true)\s*$"#)
        .expect("the cargo dependency pattern")
});
const CARGO_FIELDS: [&str; 12] = [
    "version",
    "edition",
    "rust-version",
    "name",
    "resolver",
    "opt-level",
    "debug",
    "lto",
    "codegen-units",
    "incremental",
    "strip",
    "panic",
];

fn cargo_toml(file: &FileChange, found: &mut Vec<Finding>) {
    let mut section = String::new();
    for line in &file.added {
        let text = line.text.trim();
        if text.starts_with('[') {
            section = text.to_ascii_lowercase();
            if section.contains("build-dependencies") {
                push(
                    found,
                    file,
                    "build-backend",
                    Severity::Warning,
                    line.number,
                    format!(
                        "adds build dependencies (code run at build time): {}",
                        excerpt(text)
                    ),
                );
            }
            if section.contains("patch")
                || section.contains("replace")
                || section.starts_with("[registries")
                || section.starts_with("[source")
            {
                push(
                    found,
                    file,
                    "new-registry",
                    Severity::Warning,
                    line.number,
                    format!("redirects where crates come from: {}", excerpt(text)),
                );
            }
            continue;
        }
        if text.starts_with("build =") || text.starts_with("build=") || text.starts_with("links =")
        {
            push(
                found,
                file,
                "build-backend",
                Severity::Warning,
                line.number,
                format!("sets the crate's build script: {}", excerpt(text)),
            );
        }
        registry_line(file, line.number, text, found);
        if let Some(dep) = CARGO_DEP.captures(text) {
            let name = &dep[1];
            let boolean = &dep[3] == "true";
            if CARGO_FIELDS.contains(&name)
                || (boolean && dep.get(2).is_none())
                || section.starts_with("[profile")
                || section.starts_with("[features")
                || section.starts_with("[lints")
                || section.starts_with("[package")
            {
                continue;
            }
            source_line(file, line.number, &dep[3], found);
            dependency(found, file, Ecosystem::Cargo, line.number, name, text);
        }
    }
}

fn go_mod(file: &FileChange, found: &mut Vec<Finding>) {
    static GO_DEP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\s*(?:require\s+)?([a-zA-Z0-9.-]+\.[a-z]{2,}(?:/[^\s]+)+)\s+v\d")
            .expect("the go pattern")
    });
    for line in &file.added {
        let text = line.text.trim();
        if text.starts_with("replace") || text.contains("=>") {
            push(
                found,
                file,
                "dependency-source",
                Severity::Warning,
                line.number,
                format!("replaces where a module comes from: {}", excerpt(text)),
            );
            continue;
        }
        if let Some(dep) = GO_DEP.captures(text) {
            dependency(found, file, Ecosystem::Go, line.number, &dep[1], text);
        }
    }
}

fn gemfile(file: &FileChange, found: &mut Vec<Finding>) {
    static GEM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"^\s*(?:gem|(?:\w+\.)?add_(?:runtime_|development_)?dependency)\s*\(?\s*['"]([A-Za-z0-9._-]+)['"]"#).expect("the gem pattern")
    });
    for line in &file.added {
        registry_line(file, line.number, &line.text, found);
        if let Some(gem) = GEM.captures(&line.text) {
            if line.text.contains("git:")
                || line.text.contains("github:")
                || line.text.contains("path:")
            {
                source_line(file, line.number, "git: ", found);
            }
            dependency(
                found,
                file,
                Ecosystem::Gems,
                line.number,
                &gem[1],
                &line.text,
            );
        }
    }
}

fn jvm(file: &FileChange, found: &mut Vec<Finding>) {
    static JVM_DEP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?:implementation|api|compileOnly|runtimeOnly|classpath|testImplementation|annotationProcessor|kapt|ksp)\s*\(?\s*['"]([^'"]+:[^'"]+)['"]|<artifactId>([^<]+)</artifactId>"#).expect("the jvm pattern")
    });
    for line in &file.added {
        registry_line(file, line.number, &line.text, found);
        if let Some(dep) = JVM_DEP.captures(&line.text) {
            let name = dep
                .get(1)
                .or(dep.get(2))
                .map(|m| m.as_str())
                .unwrap_or_default();
            dependency(found, file, Ecosystem::Other, line.number, name, &line.text);
        }
    }
}

fn conda(file: &FileChange, found: &mut Vec<Finding>) {
    for line in &file.added {
        registry_line(file, line.number, &line.text, found);
        let text = line.text.trim();
        if let Some(spec) = text.strip_prefix("- ") {
            let name = spec.split(['=', '<', '>', ' ']).next().unwrap_or(spec);
            dependency(found, file, Ecosystem::PyPi, line.number, name, text);
        }
    }
}
