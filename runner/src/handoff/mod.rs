//! Workspaces and artifacts handed from one step to a later one, as tar archives.
//!
//! [`pack`] writes the tar of a finished step's workspace (or of the files its `artifacts`
//! globs match); [`unpack`] puts a dependency's tar into a fresh workspace; [`list`] reads
//! one without writing anything (the engine lists artifacts with it).
//!
//! Invariants: the content of an archive is the previous step's, so it is hostile. Nothing
//! is ever written outside the target directory: entry paths are relative with no `..`,
//! parents are created here and never followed through a symbolic link, symbolic links may
//! only point inside — by their text and resolved through every other link of the tree
//! ([`links`], within one budget of lookups per archive: past it unpack refuses and pack
//! leaves the remaining links out) — and only files, directories and symbolic links are made (no devices,
//! FIFOs or hard links, no set-uid bits, no owners). Sizes and entry counts are bounded
//! while reading, before anything is allocated for them. Packing follows no symbolic link:
//! it walks from a descriptor of the root and opens every name below it with `O_NOFOLLOW`
//! (a directory swapped for a link mid-pack fails to open), reads only regular files, and
//! keeps a link only when its chain stays inside, so a step cannot make the runner read a
//! file outside its workspace.

pub mod links;
mod pack;
mod unpack;

use std::path::{Component, Path};

pub use pack::{pack, Packed, Selection};
pub use unpack::{list, unpack, Listed, Unpacked};

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

/// Why an archive was not written or read.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The archive holds something that must not be unpacked (it names the entry).
    #[error("refused archive entry '{path}': {why}")]
    Refused { path: String, why: String },
    /// The archive or the workspace is over a bound.
    #[error("{0}")]
    TooLarge(String),
    /// Reading, writing or parsing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl HandoffError {
    fn refused(path: &Path, why: impl Into<String>) -> HandoffError {
        HandoffError::Refused {
            path: path.display().to_string().escape_debug().to_string(),
            why: why.into(),
        }
    }
}

/// `path` as a relative path below the archive root: only plain components (`.` skipped);
/// `None` for an absolute path, `..`, an empty path or one over [`MAX_PATH_BYTES`].
pub fn clean_relative(path: &Path) -> Option<std::path::PathBuf> {
    if path.as_os_str().len() > MAX_PATH_BYTES {
        return None;
    }
    let mut clean = std::path::PathBuf::new();
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
mod tests;
