//! Hand-off archives' bounds and path rules: what the runner packing or unpacking a step's
//! tar and the engine reading one agree on. The archives themselves (pack, unpack, list)
//! are the runner's `handoff`; here are only the plain values and pure path functions.
//!
//! Invariants: [`clean_relative`] returns only relative paths of plain components (no `..`,
//! no root, not empty, at most [`MAX_PATH_BYTES`]); [`link_stays_inside`] judges a link by
//! its text alone and says yes only when it never climbs above the root.

use std::path::{Component, Path, PathBuf};

/// Bounds on one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of file content, and (with headers) of the archive itself.
    pub max_bytes: u64,
    /// The most entries (files, directories, links).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The default per-archive bound (the engine's `--artifacts-max-bytes` replaces it).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// The most entries of one archive.
pub const DEFAULT_MAX_ENTRIES: u64 = 200_000;
/// The longest entry path or link target, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// `path` as a relative path below the archive root: only plain components (`.` skipped);
/// `None` for an absolute path, `..`, an empty path or one over [`MAX_PATH_BYTES`].
pub fn clean_relative(path: &Path) -> Option<PathBuf> {
    if path.as_os_str().len() > MAX_PATH_BYTES {
        return None;
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

/// Whether a symbolic link at `link` (relative to the root) with `target` resolves, by its
/// text alone, inside the root: relative, and never above the root on the way.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.as_os_str().len() > MAX_PATH_BYTES {
        return false;
    }
    // The depth of the directory holding the link.
    let mut depth = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// `bytes` for a message: `512 MiB`, `3 KiB`, `17 bytes`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes / size * size == bytes {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rules_are_lexical() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("")));
        assert_eq!(
            clean_relative(Path::new("./a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert!(clean_relative(Path::new("")).is_none());
        assert!(clean_relative(Path::new("a/../b")).is_none());
        assert!(clean_relative(Path::new(&"x".repeat(MAX_PATH_BYTES + 1))).is_none());
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(human(DEFAULT_MAX_BYTES), "1 GiB");
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(3 << 10), "3 KiB");
        assert_eq!(human(1025), "1025 bytes");
        assert_eq!(human(17), "17 bytes");
    }
}
