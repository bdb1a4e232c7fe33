//! The tar of a finished step's workspace, or of its artifact files, written to a stream.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{link_stays_inside, HandoffError, Limits};

/// What goes into the archive.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The whole workspace: directories, regular files and symbolic links that stay inside
    /// (others are skipped).
    Everything,
    /// Regular files whose workspace-relative path (`/`-separated) matches a glob (`*`
    /// stops at `/`, `**` does not).
    Matching(GlobSet),
}

impl Selection {
    /// The selection of an `artifacts=` list; the error names the bad pattern.
    pub fn artifacts(globs: &[String]) -> Result<Selection, String> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("artifacts pattern '{glob}': {e}"))?;
            set.add(compiled);
        }
        set.build()
            .map(Selection::Matching)
            .map_err(|e| format!("artifacts patterns: {e}"))
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    /// Regular files archived, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Entries left out: FIFOs, sockets, devices, links pointing outside.
    pub skipped: u64,
}

/// Writes the tar of `root`'s selected entries to `out`, in a stable (sorted) order. Fails
/// before writing past `limits`, with a message saying what was too large.
pub fn pack(
    root: &Path,
    selection: &Selection,
    limits: &Limits,
    out: impl Write,
) -> Result<Packed, HandoffError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut packed = Packed::default();
    let mut entries = 0u64;
    let mut archive_bytes = 1024u64; // the two zero blocks at the end
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| io::Error::other(e.to_string()))?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .map_err(|e| io::Error::other(e.to_string()))?
            .to_owned();
        let kind = entry.file_type();
        let selected = match selection {
            Selection::Everything => true,
            Selection::Matching(globs) => kind.is_file() && globs.is_match(&relative),
        };
        if !selected {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            count(&mut entries, &mut archive_bytes, 0, limits)?;
            builder.append_data(&mut header, &relative, io::empty())?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            if !link_stays_inside(&relative, &target) {
                packed.skipped += 1;
                continue;
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            count(&mut entries, &mut archive_bytes, 0, limits)?;
            builder.append_link(&mut header, &relative, &target)?;
        } else if kind.is_file() {
            // Opened without following a link a step may have swapped in since the walk,
            // and without blocking on a FIFO; then checked to be the regular file it was.
            let file = match File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(entry.path())
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let metadata = file.metadata()?;
            if !metadata.is_file() {
                packed.skipped += 1;
                continue;
            }
            let size = metadata.len();
            count(&mut entries, &mut archive_bytes, size, limits)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if metadata.mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            header.set_size(size);
            // `take`: a file that grew since `metadata` is cut at the size in its header.
            builder.append_data(&mut header, &relative, io::Read::take(file, size))?;
            packed.files += 1;
            packed.bytes += size;
        } else {
            packed.skipped += 1;
        }
    }
    builder.into_inner()?.flush()?;
    Ok(packed)
}

/// Counts one more entry of `size` bytes against `limits`.
fn count(
    entries: &mut u64,
    archive_bytes: &mut u64,
    size: u64,
    limits: &Limits,
) -> Result<(), HandoffError> {
    *entries += 1;
    // A header block (plus, for long names, a few more) and the content padded to blocks.
    *archive_bytes = archive_bytes.saturating_add(1536 + size.div_ceil(512) * 512);
    if *entries > limits.max_entries {
        return Err(HandoffError::TooLarge(format!(
            "more than {} entries (the limit)",
            limits.max_entries
        )));
    }
    if *archive_bytes > limits.max_bytes {
        return Err(HandoffError::TooLarge(format!(
            "larger than the limit of {}",
            super::human(limits.max_bytes)
        )));
    }
    Ok(())
}
