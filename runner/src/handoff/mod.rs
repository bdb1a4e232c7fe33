//! Workspaces and artifacts handed from one step to a later one, as tar archives (their
//! bounds and path rules are `plue_types::handoff`'s).
//!
//! [`pack`] writes the tar of a finished step's workspace (or of the files its `artifacts`
//! globs match); [`unpack`] puts a dependency's tar into a fresh workspace; [`list`] reads
//! one without writing anything (the engine lists artifacts with it).
//! [`pack_trees`] and [`unpack_split`] do the same for one archive of several trees, each
//! under its own index (a step cache's paths, `crate::caches`), every rule held per tree.
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

use std::path::Path;

pub use pack::{pack, pack_trees, Packed, Selection};
pub use unpack::{list, unpack, unpack_split, Listed, Unpacked};

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

#[cfg(test)]
mod tests;
