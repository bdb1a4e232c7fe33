//! Throw-away directories for the benchmarks that run workflows, and the workflow files
//! they run.
//!
//! Layout of a [`Workdir`]: `ws/` is the tiny directory every step gets a copy of (`plue
//! run` copies its current directory into each step's workspace, so running it from a big
//! directory would measure `cp`); workflow files and data directories sit beside it, never
//! inside it. Everything is deleted on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

pub(crate) struct Workdir {
    dir: tempfile::TempDir,
    next: AtomicUsize,
}

impl Workdir {
    pub(crate) fn new(prefix: &str) -> Result<Workdir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temporary directory")?;
        std::fs::create_dir(dir.path().join("ws"))?;
        std::fs::write(dir.path().join("ws/README"), "a tiny workspace\n")?;
        Ok(Workdir {
            dir,
            next: AtomicUsize::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory copied into every step (and the cwd of `plue run`).
    pub(crate) fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// A new, not yet existing path `{name}-{n}` (a data directory for one run or server).
    pub(crate) fn fresh(&self, name: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("{name}-{n}"))
    }

    /// Writes `{name}.plue.py` and returns its absolute path.
    pub(crate) fn write_workflow(&self, name: &str, source: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.plue.py"));
        std::fs::write(&path, source).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// `text` as a Python string literal (JSON string syntax is valid Python for this use).
fn py(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// `n` bash steps running `command`, each depending on the one before.
pub(crate) fn chain(n: usize, command: &str) -> String {
    chain_of("bash", n, command)
}

/// `n` steps of the given kind (`bash` or `python`) running `body`, each depending on the
/// one before.
pub(crate) fn chain_of(kind: &str, n: usize, body: &str) -> String {
    format!(
        "def workflow():\n    \
             ids = [\"s\" + str(i) for i in range({n})]\n    \
             return Plan(\n        \
                 name=\"{kind}-chain-{n}\",\n        \
                 triggers=[Trigger.manual()],\n        \
                 steps=[Step.{kind}(ids[i], {body}, depends_on=ids[max(i - 1, 0):i]) for i in range({n})],\n    \
             )\n",
        body = py(body)
    )
}

/// One root, `n - 2` steps depending on it, one final step depending on all of those; every
/// step runs `command`.
pub(crate) fn fan(n: usize, command: &str) -> String {
    format!(
        "def workflow():\n    \
             middle = [\"m\" + str(i) for i in range({middle})]\n    \
             return Plan(\n        \
                 name=\"fan-{n}\",\n        \
                 triggers=[Trigger.manual()],\n        \
                 steps=[Step.bash(\"root\", {cmd})]\n        \
                 + [Step.bash(m, {cmd}, depends_on=[\"root\"]) for m in middle]\n        \
                 + [Step.bash(\"join\", {cmd}, depends_on=middle)],\n    \
             )\n",
        middle = n - 2,
        cmd = py(command)
    )
}

/// One step `id` of the given kind (`bash` or `python`) running `body`.
pub(crate) fn single(kind: &str, id: &str, body: &str) -> String {
    format!(
        "def workflow():\n    \
             return Plan(name={name}, triggers=[Trigger.manual()], steps=[Step.{kind}({id}, {body})])\n",
        name = py(id),
        id = py(id),
        body = py(body)
    )
}
