//! The Python tools the deployment tests check with: virtual environments, each built once
//! per target directory (`target/tmp/<name>`) from PyPI with pinned versions. The deploy
//! one holds `helm-python-sdk` (the Helm SDK, offline), `kubernetes-validate` (the
//! Kubernetes API schemas) and `prometheus-client` (its OpenMetrics parser). Other tests
//! build their own named environment the same way ([`venv`], [`try_venv`]:
//! schemathesis for `tests/openapi.rs`, `moto`'s S3 server for the artifacts test), so one
//! tool's dependencies never constrain another's.
//!
//! Invariants: a missing tool fails the deployment tests with what pip said — they never
//! skip (a caller of [`try_venv`] decides); an environment is built in a private directory
//! and renamed into place, so concurrent test binaries never see half of one; a changed
//! pin list builds a new one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The packages, pinned: their APIs are what the scripts next to this file call.
const REQUIREMENTS: &[&str] = &[
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "prometheus-client==0.26.0",
];

/// The Python the project builds against (Debian's; `python3-venv` provides `venv`).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The environment's interpreter, built on first use.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| try_venv("deploy-venv", REQUIREMENTS).unwrap_or_else(|e| panic!("{e}")))
}

/// Runs `script` (a file of `engine/tests/deploy/`) with `args`, feeding `stdin`.
pub(crate) fn run_script(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/deploy")
        .join(script);
    run_with(python(), &path, args, stdin)
}

/// Runs the Python file `script` with the interpreter `python` and `args`, feeding `stdin`.
pub(crate) fn run_with(python: &Path, script: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writing the script's input");
    child.wait_with_output().expect("waiting for the script")
}

/// The virtual environment `target/tmp/<name>` holding `requirements` (pinned), built
/// unless a complete one with the same pins is there; its directory. Fails the test with
/// what pip said.
pub(crate) fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let python = try_venv(name, requirements).unwrap_or_else(|e| panic!("{e}"));
    python
        .parent()
        .and_then(Path::parent)
        .expect("<venv>/bin/python")
        .to_path_buf()
}

/// The interpreter of the virtual environment `name` (below the target directory) holding
/// `requirements`, built with pip when missing or outdated; the error is what failed.
pub(crate) fn try_venv(name: &str, requirements: &[&str]) -> Result<PathBuf, String> {
    let stamp = requirements.join(" ");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join(name);
    let python = venv.join("bin/python");
    if std::fs::read_to_string(venv.join("plue-requirements"))
        .ok()
        .as_deref()
        == Some(&stamp)
    {
        return Ok(python);
    }
    let building = root.join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    run(
        Command::new(SYSTEM_PYTHON)
            .args(["-m", "venv"])
            .arg(&building),
        "creating the virtual environment (Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(building.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements),
        &format!("installing {stamp} from PyPI"),
    )?;
    std::fs::write(building.join("plue-requirements"), &stamp).expect("writing the stamp");
    // An outdated environment goes; a concurrent builder that won keeps its own.
    if venv.exists()
        && std::fs::read_to_string(venv.join("plue-requirements"))
            .ok()
            .as_deref()
            != Some(&stamp)
    {
        let _ = std::fs::remove_dir_all(&venv);
    }
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(python.exists(), "no interpreter at {}", python.display());
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot start {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
