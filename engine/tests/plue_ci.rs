//! Plue's own CI, `.plue/ci.plue.py`, through the real binary: it passes `plue check`, its
//! plan holds the steps `.ci/run` runs and the caches the benchmark (`bench/ci-cache`)
//! measures, the `crates` input narrows clippy and the tests, `caches=false` gives the same
//! steps without caches, and a `crates` input that is not a list of package names is
//! refused before anything runs (it would reach cargo's command line).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{plain_plue, printed, stderr};
use serde_json::{json, Value};

const FILE: &str = ".plue/ci.plue.py";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn plue(args: &[&str]) -> Output {
    plain_plue()
        .current_dir(root())
        .args(args)
        .output()
        .expect("plue runs")
}

/// The plan of `.plue/ci.plue.py` for `extra` (`--event`, `--input`).
fn plan(extra: &[&str]) -> Value {
    let mut args = vec!["eval", FILE];
    args.extend_from_slice(extra);
    let output = plue(&args);
    assert!(output.status.success(), "{}", printed(&output));
    serde_json::from_slice(&output.stdout).expect("a plan as JSON")
}

fn step<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {plan}"))
}

/// A cargo step's two caches as the file declares them for the cache name `prefix`.
fn rust_caches(prefix: &str) -> Value {
    let key = json!(["Cargo.lock", "rust-toolchain.toml"]);
    json!([
        {
            "name": format!("{prefix}-cargo"),
            "paths": ["~/.cargo/registry", "~/.cargo/git"],
            "key": key,
            "restore_prefixes": [format!("{prefix}-cargo-")],
        },
        {
            "name": format!("{prefix}-target"),
            "paths": ["target"],
            "key": key,
            "restore_prefixes": [format!("{prefix}-target-")],
        },
    ])
}

#[test]
fn plue_check_passes() {
    let output = plue(&["check", FILE]);
    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        stderr(&output).contains("1 valid, 0 invalid"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_push_checks_the_whole_workspace_with_caches_on_each_cargo_step() {
    let plan = plan(&[]);
    let kinds: Vec<&str> = plan["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .map(|t| t["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(kinds, ["push", "pull_request", "manual"]);
    assert_eq!(plan["env"], json!({"CI_PACKAGES": "--workspace"}));
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["fmt", "module-circles", "clippy", "test"]);
    let commands = [
        ("fmt", "cargo fmt --all -- --check"),
        ("module-circles", "python3 .ci/module-circles.py"),
        (
            "clippy",
            "cargo clippy $CI_PACKAGES --all-targets -- -D warnings",
        ),
        ("test", "cargo test $CI_PACKAGES"),
    ];
    for (id, command) in commands {
        let text = step(&plan, id)["command"].as_str().expect("a command");
        assert!(text.ends_with(command), "{id}: {text}");
    }
    // The build tree is the step's workspace's, never one inherited from the caller.
    let clippy = step(&plan, "clippy")["command"]
        .as_str()
        .expect("a command");
    assert!(
        clippy.contains(r#"CARGO_TARGET_DIR="$PLUE_WORKSPACE/target""#),
        "{clippy}"
    );
    // Cargo's downloads are in the step's home (cached), reached through a path that is
    // the same in every attempt (cargo's fingerprints hold it).
    assert!(
        clippy.contains(r#"ln -sfn "$HOME/.cargo" "/tmp/plue-ci-cargo-$PLUE_STEP_ID""#)
            && clippy.contains(r#"CARGO_HOME="/tmp/plue-ci-cargo-$PLUE_STEP_ID""#),
        "{clippy}"
    );
    // Cached steps give the restored trees one old time and the checkout's sources the
    // present (restored files carry their restore's time, in no useful order): cargo never
    // takes an older commit's build as up to date, nor rebuilds restored dependencies.
    for id in ["clippy", "test"] {
        let text = step(&plan, id)["command"].as_str().expect("a command");
        let old = text
            .find(r#"find "$tree" -exec touch -h -d @1000000000 {} +"#)
            .unwrap_or_else(|| panic!("{id} does not age its restored trees: {text}"));
        let touch = text
            .find("find . -path ./target -prune -o -type f -exec touch -c {} +")
            .unwrap_or_else(|| panic!("{id} does not touch its sources: {text}"));
        assert!(old < touch, "{text}");
        assert!(
            touch
                < text
                    .find("cargo clippy")
                    .or(text.find("cargo test"))
                    .unwrap()
        );
    }
    // Formatting and the circle check build nothing: no caches.
    assert_eq!(step(&plan, "fmt").get("caches"), None);
    assert_eq!(step(&plan, "module-circles").get("caches"), None);
    assert_eq!(step(&plan, "clippy")["caches"], rust_caches("clippy-all"));
    assert_eq!(step(&plan, "test")["caches"], rust_caches("test-all"));
}

#[test]
fn the_crates_input_narrows_clippy_and_the_tests_and_names_their_caches() {
    let picked = plan(&[
        "--event",
        "manual",
        "--input",
        "crates=plue-vault plue-types  plue-outbound",
    ]);
    assert_eq!(
        picked["env"]["CI_PACKAGES"],
        "-p plue-outbound -p plue-types -p plue-vault"
    );
    let clippy = &step(&picked, "clippy")["caches"];
    let name = clippy[0]["name"].as_str().expect("a name");
    let tag = name
        .strip_prefix("clippy-")
        .and_then(|n| n.strip_suffix("-cargo"))
        .expect("clippy-<tag>-cargo");
    assert!(
        tag.len() == 8 && tag.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(*clippy, rust_caches(&format!("clippy-{tag}")));
    assert_eq!(
        step(&picked, "test")["caches"],
        rust_caches(&format!("test-{tag}"))
    );
    // The same packages in another order are the same caches; others are other caches.
    let again = plan(&["--input", "crates=plue-outbound plue-vault plue-types"]);
    assert_eq!(
        step(&again, "test")["caches"],
        step(&picked, "test")["caches"]
    );
    let other = plan(&["--input", "crates=plue-types"]);
    assert_ne!(
        step(&other, "test")["caches"],
        step(&picked, "test")["caches"]
    );
    assert_ne!(step(&other, "test")["caches"], rust_caches("test-all"));
}

#[test]
fn caches_false_is_the_same_steps_without_caches() {
    let crates = "crates=plue-types plue-vault plue-outbound";
    let cached = plan(&["--input", crates]);
    let baseline = plan(&["--input", crates, "--input", "caches=false"]);
    for id in ["fmt", "module-circles", "clippy", "test"] {
        let mut with = step(&cached, id).clone();
        let without = step(&baseline, id);
        assert_eq!(without.get("caches"), None, "{id}: {without}");
        with.as_object_mut().expect("a step").remove("caches");
        assert_eq!(&with, without, "{id}");
    }
    assert_eq!(cached["env"], baseline["env"]);
}

/// The attacker is whoever dispatches the workflow: a `crates` value that is not package
/// names (shell, a cargo option, a path) fails the evaluation, so no plan and no step ever
/// carries it.
#[test]
fn a_crates_input_that_is_not_package_names_is_refused() {
    for evil in [
        "plue-types;touch /tmp/owned",
        "$(id)",
        "`id`",
        "--config=build.rustc-wrapper='/bin/sh'",
        "-q",
        "../outside",
        "plue-types|id",
        "a'b",
    ] {
        let input = format!("crates={evil}");
        let output = plue(&["eval", FILE, "--input", &input]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{evil}: {}",
            printed(&output)
        );
        assert!(
            stderr(&output).contains("is not a cargo package name"),
            "{evil}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{evil}: a plan was printed");
    }
}
