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

use std::sync::LazyLock;

use regex::Regex;

use super::super::diff::FileChange;
use super::super::fold;
use super::super::verdict::{Finding, Severity};
use super::{excerpt, Subject};

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

static PEP508: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*['"]?([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:[<>=!~]=?|@|;|['"],?\s*$|$)"#)
        .expect("the PEP 508 pattern")
});

fn requirements(file: &FileChange, found: &mut Vec<Finding>) {
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

fn pyproject(file: &FileChange, found: &mut Vec<Finding>) {
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

fn pipfile(file: &FileChange, found: &mut Vec<Finding>) {
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

fn python_setup(file: &FileChange, found: &mut Vec<Finding>) {
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

fn lockfile(file: &FileChange, name: &str, found: &mut Vec<Finding>) {
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
                .any(|d| super::network::within(&host, d))
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
    let names = |lines: &[super::super::diff::Line]| -> Vec<String> {
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

/// Popular packages per ecosystem, the targets of typosquats.
fn popular(ecosystem: Ecosystem) -> &'static [&'static str] {
    match ecosystem {
        Ecosystem::Npm => &[
            "react",
            "react-dom",
            "lodash",
            "express",
            "axios",
            "chalk",
            "commander",
            "debug",
            "request",
            "moment",
            "webpack",
            "typescript",
            "eslint",
            "prettier",
            "jest",
            "mocha",
            "vue",
            "angular",
            "jquery",
            "underscore",
            "async",
            "bluebird",
            "uuid",
            "dotenv",
            "cross-env",
            "colors",
            "yargs",
            "minimist",
            "glob",
            "rimraf",
            "mkdirp",
            "semver",
            "body-parser",
            "cookie-parser",
            "cors",
            "mongoose",
            "redis",
            "socket.io",
            "next",
            "babel-cli",
            "electron",
            "node-fetch",
            "ws",
            "classnames",
            "prop-types",
            "rxjs",
            "tslib",
            "core-js",
            "inquirer",
            "nodemon",
            "fs-extra",
            "cheerio",
            "puppeteer",
            "discord.js",
            "ethers",
            "web3",
            "bootstrap",
            "jsonwebtoken",
            "bcrypt",
            "sqlite3",
        ],
        Ecosystem::Cargo => &[
            "serde",
            "serde_json",
            "tokio",
            "rand",
            "clap",
            "regex",
            "log",
            "syn",
            "quote",
            "proc-macro2",
            "anyhow",
            "thiserror",
            "reqwest",
            "hyper",
            "futures",
            "chrono",
            "lazy_static",
            "once_cell",
            "bytes",
            "libc",
            "itertools",
            "base64",
            "tracing",
            "axum",
            "actix-web",
            "uuid",
            "sha2",
            "hex",
            "url",
            "time",
            "bitflags",
            "crossbeam",
            "rayon",
            "parking_lot",
            "env_logger",
            "tempfile",
            "walkdir",
            "num",
            "openssl",
            "rustls",
            "sqlx",
            "diesel",
            "tonic",
            "prost",
        ],
        Ecosystem::PyPi => &[
            "requests",
            "numpy",
            "pandas",
            "django",
            "flask",
            "urllib3",
            "setuptools",
            "six",
            "python-dateutil",
            "pyyaml",
            "boto3",
            "botocore",
            "certifi",
            "idna",
            "charset-normalizer",
            "colorama",
            "jinja2",
            "click",
            "pytest",
            "matplotlib",
            "scipy",
            "pillow",
            "cryptography",
            "pip",
            "wheel",
            "sqlalchemy",
            "beautifulsoup4",
            "selenium",
            "tensorflow",
            "torch",
            "scikit-learn",
            "fastapi",
            "pydantic",
            "httpx",
            "aiohttp",
            "openai",
            "anthropic",
            "jsonschema",
            "psycopg2",
            "pymongo",
            "redis",
            "celery",
            "gunicorn",
            "uvicorn",
            "tqdm",
            "rich",
            "typer",
            "attrs",
            "packaging",
            "virtualenv",
            "docutils",
            "pyjwt",
            "paramiko",
            "lxml",
            "opencv-python",
            "keras",
            "tornado",
            "jellyfish",
            "dateparser",
        ],
        Ecosystem::Gems => &[
            "rails",
            "rake",
            "rack",
            "bundler",
            "rspec",
            "nokogiri",
            "devise",
            "puma",
            "sinatra",
            "json",
            "activesupport",
            "thor",
            "pry",
            "rubocop",
            "sidekiq",
            "faraday",
            "httparty",
        ],
        Ecosystem::Go => &[
            "github.com/gin-gonic/gin",
            "github.com/spf13/cobra",
            "github.com/sirupsen/logrus",
            "github.com/stretchr/testify",
            "github.com/gorilla/mux",
            "github.com/pkg/errors",
            "github.com/google/uuid",
            "golang.org/x/crypto",
            "golang.org/x/net",
            "gopkg.in/yaml.v3",
        ],
        Ecosystem::Other => &[],
    }
}

/// The popular package `name` imitates, with how bad the imitation is.
fn typosquat(ecosystem: Ecosystem, name: &str) -> Option<(&'static str, Severity)> {
    let lower = name.to_ascii_lowercase();
    let list = popular(ecosystem);
    if list.iter().any(|p| *p == lower) || lower.len() < 4 {
        return None;
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.'))
            .map(|c| match c {
                '1' => 'l',
                '0' => 'o',
                c => c,
            })
            .collect()
    };
    for popular in list {
        if popular.len() < 4 {
            continue;
        }
        if squash(&lower) == squash(popular) {
            return Some((popular, Severity::Critical));
        }
        let distance = osa_distance(&lower, popular);
        if distance == 1 {
            let classic = transposed(&lower, popular) || doubled_or_dropped(&lower, popular);
            let severity = if classic && popular.len() >= 5 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            return Some((popular, severity));
        }
        if distance == 2 && popular.len() >= 8 {
            return Some((popular, Severity::Warning));
        }
    }
    None
}

/// Whether `a` is `b` with two neighbouring letters swapped.
fn transposed(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() != b.len() {
        return false;
    }
    let diffs: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    diffs.len() == 2
        && diffs[1] == diffs[0] + 1
        && a[diffs[0]] == b[diffs[1]]
        && a[diffs[1]] == b[diffs[0]]
}

/// Whether `a` is `b` with one letter doubled or one of a double dropped.
fn doubled_or_dropped(a: &str, b: &str) -> bool {
    let dedup = |s: &str| {
        let mut out: Vec<char> = s.chars().collect();
        out.dedup();
        out
    };
    a.len().abs_diff(b.len()) == 1 && dedup(a) == dedup(b)
}

/// The optimal-string-alignment distance of `a` and `b` (edits and adjacent swaps).
fn osa_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return 3;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typosquats_are_named_like_popular_packages() {
        assert_eq!(
            typosquat(Ecosystem::PyPi, "reqeusts"),
            Some(("requests", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Npm, "crossenv"),
            Some(("cross-env", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Npm, "lodahs"),
            Some(("lodash", Severity::Critical))
        );
        assert_eq!(
            typosquat(Ecosystem::Cargo, "serdee"),
            Some(("serde", Severity::Critical))
        );
        assert!(typosquat(Ecosystem::PyPi, "requests").is_none());
        assert!(typosquat(Ecosystem::Cargo, "plue-core").is_none());
        assert!(typosquat(Ecosystem::Npm, "left-pad").is_none());
    }
}
