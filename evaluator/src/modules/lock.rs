//! The lock file, `.plue/lock.json`: the commit each `use(..., ref=...)` of a repository's
//! workflows is pinned to. Written by `plue lock`, committed with the workflows, read at
//! every evaluation; a ref it does not hold is refused, never resolved on the fly.
//!
//! Format (sorted, one entry per repository, path and ref; unknown fields refused):
//! `{"version": 1, "modules": [{"repository": "acme/plue-steps", "path": "rust.plue.py",
//! "ref": "v1", "commit": "<40 hex>"}]}`, and, when a workflow declares MCP servers, the
//! digests their allowed tools' definitions are pinned to (`crate::mcp`):
//! `"mcp": [{"server": "fs", "tool": "read_text_file", "digest": "sha256:<64 hex>"}]`.

use serde::{Deserialize, Serialize};

use super::{check_commit, check_path, check_ref, check_repository};

/// The only version this engine reads and writes.
pub const VERSION: u32 = 1;
/// The largest lock file read.
pub const MAX_LOCK_BYTES: usize = 256 * 1024;

/// One pinned ref.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub repository: String,
    pub path: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: String,
}

/// A whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    pub modules: Vec<LockEntry>,
    /// MCP tool definitions pinned (absent when there are none, so older lock files read
    /// and write alike).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<crate::mcp::McpPin>,
}

impl LockFile {
    /// Parses and checks a lock file's text: the version, every name and commit, no entry
    /// twice.
    pub fn parse(text: &str) -> Result<LockFile, String> {
        if text.len() > MAX_LOCK_BYTES {
            return Err(format!(
                "{}: {} bytes; the limit is {MAX_LOCK_BYTES}",
                super::LOCK_FILE,
                text.len()
            ));
        }
        let lock: LockFile =
            serde_json::from_str(text).map_err(|e| format!("{}: {e}", super::LOCK_FILE))?;
        if lock.version != VERSION {
            return Err(format!(
                "{}: version {} is not known (this engine reads version {VERSION})",
                super::LOCK_FILE,
                lock.version
            ));
        }
        for entry in &lock.modules {
            check_repository(&entry.repository)
                .and_then(|()| check_path(&entry.path))
                .and_then(|()| check_ref(&entry.git_ref))
                .and_then(|()| check_commit(&entry.commit))
                .map_err(|e| format!("{}: {e}", super::LOCK_FILE))?;
        }
        for pin in &lock.mcp {
            let hex = pin.digest.strip_prefix("sha256:").unwrap_or("");
            let digest_ok = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !digest_ok || pin.server.is_empty() || pin.tool.is_empty() {
                return Err(format!(
                    "{}: mcp pin of {}/{}: the digest must be sha256:<64 lowercase hex>",
                    super::LOCK_FILE,
                    pin.server,
                    pin.tool
                ));
            }
        }
        let mut pins: Vec<_> = lock.mcp.iter().map(|p| (&p.server, &p.tool)).collect();
        pins.sort_unstable();
        if let Some(twice) = pins.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "{}: mcp tool {} of server {} is pinned twice",
                super::LOCK_FILE,
                twice[0].1,
                twice[0].0
            ));
        }
        let mut keys: Vec<_> = lock.modules.iter().map(LockEntry::key).collect();
        keys.sort_unstable();
        if let Some(twice) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "{}: {} {} ref '{}' is listed twice",
                super::LOCK_FILE,
                twice[0].0,
                twice[0].1,
                twice[0].2
            ));
        }
        Ok(lock)
    }

    /// The commit `git_ref` of `repository` is pinned to for `path`.
    pub fn commit_of(&self, repository: &str, path: &str, git_ref: &str) -> Option<&str> {
        self.modules
            .iter()
            .find(|e| e.key() == (repository, path, git_ref))
            .map(|e| e.commit.as_str())
    }

    /// A lock file of exactly `entries` (sorted, duplicates dropped).
    pub fn of(mut entries: Vec<LockEntry>) -> LockFile {
        entries.sort();
        entries.dedup();
        LockFile {
            version: VERSION,
            modules: entries,
            mcp: Vec::new(),
        }
    }

    /// This lock with the MCP pins `pins` (sorted, duplicates dropped).
    pub fn with_mcp(mut self, mut pins: Vec<crate::mcp::McpPin>) -> LockFile {
        pins.sort();
        pins.dedup();
        self.mcp = pins;
        self
    }

    /// The lock file of the git repository holding `path` on this machine (its nearest
    /// ancestor with a `.git`, then [`super::LOCK_FILE`] there): `None` when there is no
    /// repository or no lock file. What `plue run`, `plue check` and a server's run of a
    /// local workflow read.
    pub fn beside(path: &std::path::Path) -> Result<Option<LockFile>, String> {
        let Ok(absolute) = std::fs::canonicalize(path) else {
            return Ok(None);
        };
        let Some(root) = absolute.ancestors().find(|dir| dir.join(".git").exists()) else {
            return Ok(None);
        };
        let lock = root.join(super::LOCK_FILE);
        match std::fs::read_to_string(&lock) {
            Ok(text) => LockFile::parse(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", lock.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", lock.display())),
        }
    }

    /// The text `plue lock` writes: pretty JSON and a final newline, so diffs read well.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a lock file serialises");
        text.push('\n');
        text
    }
}

impl LockEntry {
    fn key(&self) -> (&str, &str, &str) {
        (&self.repository, &self.path, &self.git_ref)
    }
}
