//! Rules on *which* files a pull request touches: CI and workflow files of every forge and
//! tool (`ci-config`), git hooks and hook managers (`git-hooks`), build and install scripts
//! (`build-script`), package registries' settings (`registry-config`), shell start-up and
//! credential files (`sensitive-file`), and paths spelt with lookalike or invisible
//! characters (`disguised-path`).
//!
//! Invariants: every path a file's part names is judged (both sides of a rename or copy,
//! so renaming a workflow away or into place is seen, and a deletion too), folded first
//! ([`super::super::fold::path`]: case, `./`, `//`, `\`, lookalikes, trailing dots); each
//! rule reports a file once.

use super::super::diff::FileChange;
use super::super::fold;
use super::super::verdict::{Finding, Severity};
use super::Subject;

/// A rule on folded paths: its id, its severity, and what it says.
struct PathRule {
    id: &'static str,
    severity: Severity,
    what: &'static str,
    matches: fn(&str, &str) -> bool,
}

const RULES: [PathRule; 5] = [
    PathRule {
        id: "ci-config",
        severity: Severity::Warning,
        what: "a CI or workflow file (it decides what runs with the repository's secrets)",
        matches: is_ci,
    },
    PathRule {
        id: "git-hooks",
        severity: Severity::Warning,
        what: "a git hook or hook manager's settings (run on every developer's machine)",
        matches: is_hook,
    },
    PathRule {
        id: "build-script",
        severity: Severity::Warning,
        what: "a build, install or tooling script (run by builds, installs or editors)",
        matches: is_build,
    },
    PathRule {
        id: "registry-config",
        severity: Severity::Warning,
        what:
            "a package manager's settings (where packages are fetched from, what runs on install)",
        matches: is_registry_config,
    },
    PathRule {
        id: "sensitive-file",
        severity: Severity::Warning,
        what: "a credential, key or shell start-up file",
        matches: is_sensitive,
    },
];

pub(crate) fn check(subject: &Subject<'_>, found: &mut Vec<Finding>) {
    for file in &subject.files {
        check_file(file, found);
    }
}

fn check_file(file: &FileChange, found: &mut Vec<Finding>) {
    let paths: Vec<&String> = file.paths.iter().chain([&file.path]).collect();
    let verb = if file.deleted {
        "deletes"
    } else if file.created {
        "adds"
    } else {
        "changes"
    };
    for rule in &RULES {
        let hit = paths.iter().find(|path| {
            let folded = fold::path(path);
            let name = folded.rsplit('/').next().unwrap_or(&folded).to_owned();
            (rule.matches)(&folded, &name)
        });
        if let Some(path) = hit {
            found.push(Finding::new(
                rule.id,
                rule.severity,
                Some(&file.path),
                None,
                format!("{verb} {path:?}, {}", rule.what),
            ));
        }
    }
    for path in &paths {
        if fold::disguised(path) {
            found.push(Finding::new(
                "disguised-path",
                Severity::Critical,
                Some(&file.path),
                None,
                format!(
                    "the path {path:?} is spelt with lookalike or invisible characters; it reads as {:?}",
                    fold::path(path)
                ),
            ));
            break;
        }
        if path.chars().any(fold::is_bidi_control) {
            found.push(Finding::new(
                "disguised-path",
                Severity::Critical,
                Some(&file.path),
                None,
                "the path holds a direction-changing character".to_owned(),
            ));
            break;
        }
    }
}

fn is_ci(path: &str, name: &str) -> bool {
    const DIRS: [&str; 14] = [
        ".github/workflows/",
        ".github/actions/",
        ".gitea/workflows/",
        ".gitea/actions/",
        ".forgejo/workflows/",
        ".circleci/",
        ".buildkite/",
        ".woodpecker/",
        ".teamcity/",
        ".semaphore/",
        ".gitlab/",
        ".plue/",
        ".drone/",
        ".tekton/",
    ];
    const NAMES: [&str; 18] = [
        "jenkinsfile",
        ".travis.yml",
        ".drone.yml",
        ".drone.yaml",
        ".woodpecker.yml",
        ".woodpecker.yaml",
        "azure-pipelines.yml",
        "azure-pipelines.yaml",
        "bitbucket-pipelines.yml",
        "appveyor.yml",
        ".appveyor.yml",
        ".cirrus.yml",
        "cloudbuild.yaml",
        "cloudbuild.yml",
        "buildspec.yml",
        "codemagic.yaml",
        ".gitpod.yml",
        "action.yml",
    ];
    let top = |dir: &str| path.starts_with(dir) || path.contains(&format!("/{dir}"));
    DIRS.iter().any(|d| top(d))
        || path.starts_with(".github/")
        || path.starts_with(".gitea/")
        || path.starts_with(".forgejo/")
        || NAMES.contains(&name)
        || name == "action.yaml"
        || name.starts_with("jenkinsfile")
        || name.ends_with(".jenkinsfile")
        || (name.starts_with(".gitlab-ci") && (name.ends_with(".yml") || name.ends_with(".yaml")))
        || name.ends_with(".plue.py")
}

fn is_hook(path: &str, name: &str) -> bool {
    const DIRS: [&str; 5] = [".git/", ".husky/", ".githooks/", ".git-hooks/", ".hooks/"];
    const NAMES: [&str; 10] = [
        ".pre-commit-config.yaml",
        ".pre-commit-config.yml",
        ".pre-commit-hooks.yaml",
        "lefthook.yml",
        "lefthook.yaml",
        ".lefthook.yml",
        ".lintstagedrc",
        ".lintstagedrc.json",
        ".simple-git-hooks.json",
        ".huskyrc",
    ];
    DIRS.iter()
        .any(|d| path.starts_with(d) || path.contains(&format!("/{d}")))
        || path.contains("/hooks/") && path.starts_with(".git")
        || NAMES.contains(&name)
        || name.starts_with(".lintstagedrc")
        || name.starts_with("lint-staged.config")
}

fn is_build(path: &str, name: &str) -> bool {
    const NAMES: [&str; 42] = [
        "build.rs",
        "makefile",
        "gnumakefile",
        "cmakelists.txt",
        "setup.py",
        "setup.cfg",
        "noxfile.py",
        "tox.ini",
        "fabfile.py",
        "tasks.py",
        "rakefile",
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
        "gradlew",
        "gradlew.bat",
        "gradle-wrapper.properties",
        "pom.xml",
        "mvnw",
        "build.xml",
        "meson.build",
        "build",
        "build.bazel",
        "workspace",
        "workspace.bazel",
        "module.bazel",
        ".bazelrc",
        "justfile",
        "taskfile.yml",
        "taskfile.yaml",
        "vagrantfile",
        ".envrc",
        "configure",
        "configure.ac",
        "makefile.am",
        "makefile.in",
        "procfile",
        "build.sbt",
        "sconstruct",
        "sitecustomize.py",
        "usercustomize.py",
    ];
    const PREFIXES: [&str; 6] = [
        "dockerfile",
        "containerfile",
        "docker-compose",
        "compose.y",
        "install",
        "bootstrap",
    ];
    // `.pth`: Python runs its `import` lines at every start.
    const EXTENSIONS: [&str; 7] = [
        ".mk",
        ".cmake",
        ".bzl",
        ".dockerfile",
        ".gemspec",
        ".nix",
        ".pth",
    ];
    NAMES.contains(&name)
        || PREFIXES.iter().any(|p| {
            name.starts_with(p) && (*p != "install" && *p != "bootstrap" || is_script(name))
        })
        || EXTENSIONS.iter().any(|e| name.ends_with(e))
        || path.starts_with(".vscode/")
        || path.starts_with(".devcontainer/")
        || path.contains("/.devcontainer/")
        || path.starts_with(".idea/runconfigurations/")
        || path.starts_with(".cargo/")
        || path.contains("/.cargo/")
        || path.starts_with(".mvn/")
        || path.starts_with("gradle/wrapper/")
}

/// A script by its name: `install.sh`, `bootstrap.ps1`, `install` with no extension.
fn is_script(name: &str) -> bool {
    [".sh", ".bash", ".ps1", ".bat", ".cmd", ".py", ".pl", ".rb"]
        .iter()
        .any(|e| name.ends_with(e))
        || !name.contains('.')
}

fn is_registry_config(path: &str, name: &str) -> bool {
    const NAMES: [&str; 16] = [
        ".npmrc",
        ".yarnrc",
        ".yarnrc.yml",
        ".pnpmfile.cjs",
        ".pnpmfile.js",
        "bunfig.toml",
        ".bunfig.toml",
        ".pypirc",
        "pip.conf",
        "pip.ini",
        ".condarc",
        "nuget.config",
        ".gemrc",
        "settings.xml",
        ".pdmrc",
        "uv.toml",
    ];
    NAMES.contains(&name)
        || path.starts_with(".pip/")
        || path.contains("/.pip/")
        || path.starts_with(".bundle/")
        || (path.contains(".cargo/") && name.starts_with("config"))
        || path.starts_with(".yarn/plugins/")
}

fn is_sensitive(path: &str, name: &str) -> bool {
    const NAMES: [&str; 17] = [
        ".bashrc",
        ".bash_profile",
        ".bash_login",
        ".profile",
        ".zshrc",
        ".zprofile",
        ".zshenv",
        ".bash_logout",
        "authorized_keys",
        "known_hosts",
        "id_rsa",
        "id_ed25519",
        "id_ecdsa",
        ".git-credentials",
        ".netrc",
        "credentials",
        ".pgpass",
    ];
    NAMES.contains(&name)
        || path.starts_with(".ssh/")
        || path.contains("/.ssh/")
        || path.starts_with(".aws/")
        || path.starts_with(".docker/")
        || name == ".env"
        || (name.starts_with(".env.") && !name.ends_with(".example") && !name.ends_with(".sample"))
        || name.ends_with(".pem") && name.contains("key")
        || name.ends_with(".key")
        || name.ends_with(".p12")
        || name.ends_with(".pfx")
}
