//! The contracts of the `Dockerfile` that no test here can run (these machines have no
//! container engine): what the image must hold for the `plue` binary built from this tree
//! to start (every shared library it links, from the same Debian release), what steps and
//! the registry run (python3, git, bash, CA certificates), and that its user, port, binary
//! path and entrypoint are the ones the chart and the Kubernetes pool use; and (`chroot`)
//! `plue` started and running a step in the runtime stage's file system, assembled from
//! Debian's archive as the stage would be.

use crate::python;
#[path = "image/chroot.rs"]
mod chroot;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One build stage: its `FROM` line and instructions (continuation lines joined).
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

/// The Dockerfile's `ARG` defaults and stages, with `${ARG}` expanded.
fn dockerfile() -> (Vec<Stage>, std::collections::BTreeMap<String, String>) {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("the Dockerfile");
    let mut args: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let full = std::mem::take(&mut logical);
        let (keyword, rest) = full.split_once(' ').unwrap_or((&full, ""));
        let mut rest = rest.trim().to_string();
        for (name, value) in &args {
            rest = rest.replace(&format!("${{{name}}}"), value);
        }
        match keyword.to_ascii_uppercase().as_str() {
            "ARG" if stages.is_empty() => {
                let (name, value) = rest.split_once('=').expect("ARG NAME=default");
                args.insert(name.to_string(), value.to_string());
            }
            "FROM" => stages.push(Stage {
                from: rest,
                instructions: Vec::new(),
            }),
            other => stages
                .last_mut()
                .expect("an instruction before FROM")
                .instructions
                .push((other.to_string(), rest)),
        }
    }
    (stages, args)
}

fn last_stage() -> Stage {
    dockerfile().0.pop().expect("a final stage")
}

fn instruction(stage: &Stage, keyword: &str) -> Vec<String> {
    stage
        .instructions
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The packages `apt-get install` names in a stage.
fn installed(stage: &Stage) -> BTreeSet<String> {
    let mut packages = BTreeSet::new();
    for run in instruction(stage, "RUN") {
        for command in run.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            if words.starts_with(&["apt-get", "install"]) {
                packages.extend(
                    words[2..]
                        .iter()
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                );
            }
        }
    }
    packages
}

fn dpkg_query(format: &str, package: &str) -> String {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", format, package])
        .output()
        .expect("dpkg-query (this machine is Debian, like the image)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The Debian package that ships `path` on this machine.
fn package_of(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or(path.to_path_buf());
    let mut candidates = vec![path.to_path_buf(), canonical.clone()];
    for p in [path, canonical.as_path()] {
        let text = p.to_string_lossy();
        if let Some(rest) = text.strip_prefix("/usr") {
            candidates.push(PathBuf::from(rest));
        } else {
            candidates.push(PathBuf::from(format!("/usr{text}")));
        }
    }
    for candidate in &candidates {
        let output = Command::new("dpkg")
            .arg("-S")
            .arg(candidate)
            .output()
            .unwrap();
        if output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout);
            let package = text.split(':').next().unwrap().trim();
            return package.to_string();
        }
    }
    panic!("no Debian package ships {}", path.display());
}

/// What `debian:<release>-slim` itself holds of the libraries a Rust binary links.
const IN_THE_SLIM_BASE: &[&str] = &["libc6", "libgcc-s1", "zlib1g"];

#[test]
fn the_image_installs_every_shared_library_plue_links() {
    let (stages, args) = dockerfile();
    let release = &args["DEBIAN_RELEASE"];
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    assert!(
        os.lines()
            .any(|l| l == format!("VERSION_CODENAME={release}")),
        "the image's Debian release {release} is not this machine's, so this check of its \
         libraries says nothing:\n{os}"
    );
    let build = &stages[0];
    assert!(
        build.from.ends_with(&format!("-slim-{release} AS build")),
        "{}",
        build.from
    );
    assert!(
        installed(build).contains("python3-dev"),
        "pyo3 builds against Debian's CPython"
    );
    let last = stages.last().unwrap();
    assert_eq!(last.from, format!("debian:{release}-slim"));
    let explicit = installed(last);
    let mut provided: BTreeSet<String> = explicit.clone();
    for package in &explicit {
        let depends = dpkg_query("${Pre-Depends}, ${Depends}", package);
        for alternative in depends.split([',', '|']) {
            if let Some(name) = alternative.split_whitespace().next() {
                provided.insert(name.split(':').next().unwrap().to_string());
            }
        }
    }
    provided.extend(IN_THE_SLIM_BASE.iter().map(|p| p.to_string()));

    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_plue"))
        .output()
        .unwrap();
    assert!(ldd.status.success());
    let text = String::from_utf8_lossy(&ldd.stdout);
    let mut linked = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.trim().split_once("=>") else {
            continue; // the vDSO and the dynamic loader (libc6)
        };
        let path = rest.split_whitespace().next().unwrap_or("");
        assert!(path.starts_with('/'), "{name} is not found: {line}");
        let package = package_of(Path::new(path));
        assert!(
            provided.contains(&package),
            "plue links {} from package {package}, which the image neither installs nor gets \
             with {explicit:?} or the slim base",
            name.trim()
        );
        linked.push(package);
    }
    assert!(
        linked.iter().any(|p| p.starts_with("libpython3.")),
        "plue links CPython: {linked:?}"
    );
    assert!(
        linked
            .iter()
            .filter(|p| p.starts_with("libpython3."))
            .all(|p| explicit.contains(p)),
        "the exact libpython the binary was built against is installed by name: {linked:?}"
    );
}

#[test]
fn the_image_holds_what_steps_the_evaluator_and_the_registry_run() {
    let packages = installed(&last_stage());
    // python steps and the evaluator's workers (python3 and its standard library), bash
    // steps, repository mirrors and checkouts (git, over https with the CA bundle).
    for needed in ["python3", "bash", "git", "ca-certificates"] {
        assert!(
            packages.contains(needed),
            "the image lacks {needed}: {packages:?}"
        );
    }
}

#[test]
fn the_image_user_port_and_entrypoint_agree_with_the_chart_and_the_pool() {
    let last = last_stage();
    let rendered = python::run_script(
        "chart.py",
        &["render", root().join("charts/plue").to_str().unwrap(), "ci"],
        json!({}).to_string().as_bytes(),
    );
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let out: Value = serde_json::from_slice(&rendered.stdout).unwrap();
    let deployment = out["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["object"])
        .find(|o| o["kind"] == "Deployment")
        .unwrap()
        .clone();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The user: non-root, the uid/gid the chart runs the engine as and the pool's runner
    // pods default to (pool/kubernetes/pod.rs RUNNER_UID).
    assert_eq!(instruction(&last, "USER"), ["65532:65532"]);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    let run = instruction(&last, "RUN").join(" ");
    assert!(run.contains("useradd --uid 65532 --gid 65532"), "{run}");

    // The binary: where `command: [plue]` finds it on Debian's default PATH.
    let copies = instruction(&last, "COPY");
    assert!(
        copies.iter().any(|c| c.ends_with(" /usr/local/bin/plue")),
        "{copies:?}"
    );
    assert_eq!(container["command"], json!(["plue"]));
    assert_eq!(instruction(&last, "ENTRYPOINT"), [r#"["plue"]"#]);

    // The port.
    assert_eq!(instruction(&last, "EXPOSE"), ["8600"]);
    assert_eq!(container["ports"][0]["containerPort"], 8600);
    let env = instruction(&last, "ENV").join(" ");
    assert!(env.contains("PLUE_LISTEN=0.0.0.0:8600"), "{env}");
    // The data directory sits in a directory the user owns (the chart mounts an emptyDir
    // there; a plain `docker run` uses the image's).
    assert!(env.contains("PLUE_DATA_DIR=/var/lib/plue/data"), "{env}");
    assert!(
        run.contains("install -d -o 65532 -g 65532 -m 0700 /var/lib/plue"),
        "{run}"
    );
    let mounts = container["volumeMounts"].to_string();
    assert!(
        mounts.contains("\"mountPath\":\"/var/lib/plue\""),
        "{mounts}"
    );

    // The default command is a command line `plue` accepts.
    let cmd: Vec<String> =
        serde_json::from_str(&instruction(&last, "CMD")[0]).expect("CMD in exec form");
    let mut check = Command::new(env!("CARGO_BIN_EXE_plue"));
    check.args(&cmd).arg("--help");
    let output = check.output().unwrap();
    assert!(output.status.success(), "plue {cmd:?}: {output:?}");
}

#[test]
fn the_build_context_keeps_the_workspace_and_drops_build_output() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for dropped in ["target/", ".git/"] {
        assert!(
            patterns.contains(&dropped),
            "{dropped} is sent to the builder"
        );
    }
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    let mut needed: Vec<String> = members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|m| format!("{m}/"))
        .collect();
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            ".cargo/config.toml",
            "migrations/",
        ]
        .map(String::from),
    );
    for path in &needed {
        assert!(root().join(path).exists(), "{path} is not in the tree");
        for pattern in &patterns {
            let prefix = pattern.trim_start_matches("**/").trim_end_matches('/');
            assert!(
                prefix.is_empty() || !path.starts_with(prefix),
                ".dockerignore pattern {pattern} drops {path}, which the build needs"
            );
        }
    }
    // The Dockerfile builds with the lock file as committed.
    let build = &dockerfile().0[0];
    let run = instruction(build, "RUN").join(" ");
    assert!(
        run.contains("cargo build --release --locked -p engine --bin plue"),
        "{run}"
    );
}
