//! Finding the interpreter behind a pyenv shim without running it.
//!
//! `python3` on `PATH` is often a pyenv shim: a bash script that costs 80–160 ms a start
//! only to exec the real interpreter. Plue asks once which interpreter that is
//! (`sys.executable`); this module answers the common case from pyenv's own files in
//! microseconds, the way pyenv decides: `PYENV_VERSION`, else the nearest
//! `.python-version` from the working directory up, else `$PYENV_ROOT/version`.
//!
//! Invariant: an answer is only given when it is certain — the first `python3` on `PATH`
//! is the shim of this `PYENV_ROOT`, the chosen version is one plain name (not `system`,
//! not several) and its `bin/python3` exists and is executable. Anything else returns
//! `None`, and the caller runs `python3` to ask it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the answer depends on, read from the process environment by [`Lookup::current`].
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub path: Option<String>,
    pub pyenv_root: Option<PathBuf>,
    pub pyenv_version: Option<String>,
    pub home: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
}

impl Lookup {
    pub fn current() -> Lookup {
        Lookup {
            path: std::env::var("PATH").ok(),
            pyenv_root: std::env::var_os("PYENV_ROOT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            pyenv_version: std::env::var("PYENV_VERSION")
                .ok()
                .filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME").map(PathBuf::from),
            cwd: std::env::current_dir().ok(),
        }
    }
}

/// The interpreter the pyenv shim `python3` would run, when certain (see the module doc).
pub fn pyenv_interpreter(lookup: &Lookup) -> Option<PathBuf> {
    let root = lookup
        .pyenv_root
        .clone()
        .or_else(|| lookup.home.as_ref().map(|h| h.join(".pyenv")))?;
    let first = first_on_path(lookup.path.as_deref()?, "python3")?;
    if first != root.join("shims").join("python3") {
        return None;
    }
    let version = match &lookup.pyenv_version {
        Some(version) => version.clone(),
        None => version_file(lookup.cwd.as_deref(), &root)?,
    };
    let version = single_version(&version)?;
    let interpreter = root
        .join("versions")
        .join(version)
        .join("bin")
        .join("python3");
    is_executable(&interpreter).then_some(interpreter)
}

fn first_on_path(path: &str, program: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The contents of the version file pyenv would read: the nearest `.python-version` from
/// `cwd` up, else `<root>/version`.
fn version_file(cwd: Option<&Path>, root: &Path) -> Option<String> {
    if let Some(cwd) = cwd {
        for dir in cwd.ancestors() {
            match std::fs::read_to_string(dir.join(".python-version")) {
                Ok(text) => return Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Unreadable: pyenv's answer is unknown.
                Err(_) => return None,
            }
        }
    }
    std::fs::read_to_string(root.join("version")).ok()
}

/// The one version a version string names, when it names exactly one plain version.
fn single_version(text: &str) -> Option<&str> {
    let mut names = text
        .split(|c: char| c.is_whitespace() || c == ':')
        .filter(|name| !name.is_empty() && !name.starts_with('#'));
    let version = names.next()?;
    let plain = version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    (names.next().is_none() && plain && version != "system").then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pyenv root with a shim and the given versions installed.
    fn pyenv(versions: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let exec = |path: &Path| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        exec(&root.path().join("shims/python3"));
        for version in versions {
            exec(&root.path().join(format!("versions/{version}/bin/python3")));
        }
        root
    }

    fn lookup(root: &Path, cwd: &Path) -> Lookup {
        Lookup {
            path: Some(format!("/nonexistent:{}/shims:/usr/bin", root.display())),
            pyenv_root: Some(root.to_path_buf()),
            pyenv_version: None,
            home: None,
            cwd: Some(cwd.to_path_buf()),
        }
    }

    #[test]
    fn the_version_comes_from_the_env_then_the_nearest_file_then_the_global_one() {
        let root = pyenv(&["3.11.7", "3.12.1", "3.9.18"]);
        std::fs::write(root.path().join("version"), "3.11.7\n").unwrap();
        let project = tempfile::tempdir().unwrap();
        let sub = project.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let found = |l: &Lookup| {
            pyenv_interpreter(l).map(|p| p.strip_prefix(root.path()).unwrap().to_path_buf())
        };
        let mut l = lookup(root.path(), &sub);
        assert_eq!(
            found(&l),
            Some(PathBuf::from("versions/3.11.7/bin/python3"))
        );
        std::fs::write(project.path().join(".python-version"), "3.12.1\n").unwrap();
        assert_eq!(
            found(&l),
            Some(PathBuf::from("versions/3.12.1/bin/python3"))
        );
        l.pyenv_version = Some("3.9.18".into());
        assert_eq!(
            found(&l),
            Some(PathBuf::from("versions/3.9.18/bin/python3"))
        );
    }

    #[test]
    fn anything_uncertain_is_left_to_the_shim() {
        let root = pyenv(&["3.11.7"]);
        let cwd = tempfile::tempdir().unwrap();
        let mut l = lookup(root.path(), cwd.path());
        for version in [
            "system",
            "3.11.7 3.12.1",
            "3.11.7:3.12.1",
            "3.13.0",
            "",
            "../../bin",
        ] {
            std::fs::write(root.path().join("version"), version).unwrap();
            assert_eq!(pyenv_interpreter(&l), None, "{version:?}");
        }
        std::fs::write(root.path().join("version"), "3.11.7").unwrap();
        assert!(pyenv_interpreter(&l).is_some());
        // Another python3 first on PATH: not pyenv's answer to give.
        l.path = Some(format!("/usr/bin:{}/shims", root.path().display()));
        if Path::new("/usr/bin/python3").exists() {
            assert_eq!(pyenv_interpreter(&l), None);
        }
        l.path = None;
        assert_eq!(pyenv_interpreter(&l), None);
    }

    /// On a machine whose `python3` is a pyenv shim, the fast answer is the shim's own.
    #[test]
    fn the_answer_matches_what_the_shim_runs() {
        let Some(fast) = pyenv_interpreter(&Lookup::current()) else {
            return;
        };
        let asked = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        let asked = PathBuf::from(String::from_utf8_lossy(&asked.stdout).trim());
        assert_eq!(
            std::fs::canonicalize(&fast).unwrap(),
            std::fs::canonicalize(&asked).unwrap()
        );
    }
}
