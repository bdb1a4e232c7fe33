//! The used modules (`use(...)`) of the local verbs — `plue run`, `plue eval`, `plue check`
//! and `plue lock`: module repositories are `--modules-from BASE/owner/name` (a URL or a
//! directory of repositories), mirrored in a scratch directory removed when the command
//! ends; the lock file is `.plue/lock.json` at the root of
//! the git repository holding the workflow file (its nearest ancestor with a `.git`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use evaluator::modules::lock::LockFile;
use evaluator::modules::Modules;
use plue_core::registry::modules::ModuleMirrors;

use crate::cli::ModulesArgs;

/// Module mirrors for one command.
pub(crate) struct LocalModules {
    mirrors: ModuleMirrors,
    /// The scratch directory holding the mirrors.
    _scratch: tempfile::TempDir,
}

impl LocalModules {
    /// Mirrors in a scratch directory removed when this is dropped.
    pub(crate) fn new(args: &ModulesArgs) -> anyhow::Result<Self> {
        // A local directory is made absolute: git runs in the mirror, not here.
        let base = match std::fs::canonicalize(&args.modules_from) {
            Ok(dir) if dir.is_dir() => dir.display().to_string(),
            _ => args.modules_from.clone(),
        };
        let scratch = tempfile::Builder::new()
            .prefix("plue-modules-")
            .tempdir()
            .context("making a directory for module mirrors")?;
        Ok(LocalModules {
            mirrors: ModuleMirrors::new(base, scratch.path().to_path_buf()),
            _scratch: scratch,
        })
    }

    /// How an evaluation with `lock` uses modules.
    pub(crate) fn modules<'a>(&'a self, lock: Option<&'a LockFile>) -> Modules<'a> {
        Modules {
            lock,
            fetcher: Some(&self.mirrors),
            resolve_refs: false,
        }
    }

    /// For `plue lock`: refs are resolved, no lock read.
    pub(crate) fn resolving(&self) -> Modules<'_> {
        Modules {
            lock: None,
            fetcher: Some(&self.mirrors),
            resolve_refs: true,
        }
    }
}

/// The root of the git repository holding `path`: its nearest ancestor (or itself) with a
/// `.git`.
pub(crate) fn repository_root(path: &Path) -> Option<PathBuf> {
    let absolute = std::fs::canonicalize(path).ok()?;
    absolute
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The lock file of the repository holding `path`: `None` when it has none.
pub(crate) fn lock_for(path: &Path) -> anyhow::Result<Option<LockFile>> {
    LockFile::beside(path).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use evaluator::modules::LOCK_FILE;

    use super::*;

    #[test]
    fn the_lock_file_is_found_at_the_repository_root_and_checked() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".git")).unwrap();
        std::fs::create_dir_all(root.path().join(".plue/sub")).unwrap();
        let workflow = root.path().join(".plue/sub/ci.plue.py");
        std::fs::write(&workflow, "").unwrap();
        assert!(lock_for(&workflow).unwrap().is_none(), "no lock file yet");
        let lock = LockFile::of(vec![evaluator::modules::lock::LockEntry {
            repository: "acme/steps".into(),
            path: "rust.plue.py".into(),
            git_ref: "v1".into(),
            commit: "a".repeat(40),
        }]);
        std::fs::write(root.path().join(LOCK_FILE), lock.to_text()).unwrap();
        assert_eq!(lock_for(&workflow).unwrap(), Some(lock));
        std::fs::write(root.path().join(LOCK_FILE), "{\"version\": 1}").unwrap();
        let wrong = lock_for(&workflow).unwrap_err().to_string();
        assert!(wrong.contains("lock.json"), "{wrong}");
    }
}
