//! The tar of a finished step's workspace, or of its artifact files, written to a stream.
//!
//! The walk holds a descriptor of each directory it is in and opens every name relative
//! to it with `O_NOFOLLOW` (directories with `O_DIRECTORY` too), so a step that swaps a
//! directory for a symbolic link while the runner packs (to `/etc`, to another attempt's
//! files) only makes that name fail to open: nothing outside the root is listed or read.
//! This is `openat2`'s `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` done one name at a time,
//! which every kernel has. Deep trees keep at most [`MAX_OPEN_DIRS`] descriptors: an
//! ancestor's is closed and reopened from the root (again a name at a time) when the walk
//! returns to it. Links are resolved by one [`Resolver`] for the whole walk, within its
//! budget of lookups; links left when it is spent are left out (see [`Packed`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

use super::links::{open_below, open_dir, OverBudget, Resolver, MAX_LOOKUPS};
use plue_types::handoff::{human, link_stays_inside, Limits};

use super::HandoffError;

/// The most directory descriptors one walk keeps open.
pub(super) const MAX_OPEN_DIRS: usize = 64;

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

/// An `artifacts=` list that does not compile.
#[derive(Debug, thiserror::Error)]
pub enum BadArtifacts {
    /// One pattern is not a glob.
    #[error("artifacts pattern '{glob}': {error}")]
    Pattern { glob: String, error: globset::Error },
    /// The patterns together are too large to match.
    #[error("artifacts patterns: {0}")]
    Set(globset::Error),
}

impl Selection {
    /// The selection of an `artifacts=` list; the error names the bad pattern.
    pub fn artifacts(globs: &[String]) -> Result<Selection, BadArtifacts> {
        let mut set = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|error| BadArtifacts::Pattern {
                    glob: glob.clone(),
                    error,
                })?;
            set.add(compiled);
        }
        set.build()
            .map(Selection::Matching)
            .map_err(BadArtifacts::Set)
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    /// Regular files archived, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Entries left out: FIFOs, sockets, devices, links pointing outside, and the links
    /// of `links_unresolved`.
    pub skipped: u64,
    /// Links left out because the archive's budget for resolving links was spent
    /// ([`MAX_LOOKUPS`]) before their turn: a tree built to make resolving costly.
    pub links_unresolved: u64,
    /// The lookups resolving the links cost.
    pub link_lookups: u64,
}

/// Writes the tar of `root`'s selected entries to `out`, in a stable (sorted) order. Fails
/// before writing past `limits`, with a message saying what was too large.
pub fn pack(
    root: &Path,
    selection: &Selection,
    limits: &Limits,
    out: impl Write,
) -> Result<Packed, HandoffError> {
    pack_within(root, selection, limits, out, MAX_LOOKUPS)
}

/// [`pack`] with `lookups` to spend on resolving links.
pub(super) fn pack_within(
    root: &Path,
    selection: &Selection,
    limits: &Limits,
    out: impl Write,
    lookups: u64,
) -> Result<Packed, HandoffError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(io::Error::from)?;
    let mut counts = Counts::new();
    let packed = append_tree(
        &mut builder,
        root_fd,
        Path::new(""),
        selection,
        limits,
        &mut counts,
        lookups,
        false,
    )?;
    builder.into_inner()?.flush()?;
    warn_unresolved(root, &packed);
    Ok(packed)
}

/// Writes one tar of several trees to `out`: each `(root, prefix)` (a directory opened by
/// the caller, never through a link) with every entry's path below `prefix`, so a reader
/// can tell the trees apart ([`super::unpack_split`]). A symbolic link is kept only when
/// it stays inside its own tree. Files keep their modification times (a build tool
/// compares them; hand-off archives hold none). The bounds are the whole archive's.
pub fn pack_trees(
    trees: Vec<(OwnedFd, PathBuf)>,
    limits: &Limits,
    out: impl Write,
) -> Result<Packed, HandoffError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut counts = Counts::new();
    let mut total = Packed::default();
    let mut lookups = MAX_LOOKUPS;
    for (root, prefix) in trees {
        let packed = append_tree(
            &mut builder,
            root,
            &prefix,
            &Selection::Everything,
            limits,
            &mut counts,
            lookups,
            true,
        )?;
        lookups = lookups.saturating_sub(packed.link_lookups);
        total.files += packed.files;
        total.bytes += packed.bytes;
        total.skipped += packed.skipped;
        total.links_unresolved += packed.links_unresolved;
        total.link_lookups += packed.link_lookups;
    }
    builder.into_inner()?.flush()?;
    Ok(total)
}

fn warn_unresolved(root: &Path, packed: &Packed) {
    if packed.links_unresolved > 0 {
        tracing::warn!(
            root = %root.display(),
            left_out = packed.links_unresolved,
            "{} symbolic links were left out of the archive: resolving the workspace's links \
             through each other took more than {MAX_LOOKUPS} lookups",
            packed.links_unresolved
        );
    }
}

/// The entries and bytes an archive holds so far, against its bounds.
struct Counts {
    entries: u64,
    archive_bytes: u64,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            entries: 0,
            archive_bytes: 1024, // the two zero blocks at the end
        }
    }
}

/// Appends the selected entries of the tree at `root_fd` to `builder`, each path below
/// `prefix` (empty: at the archive's root), walking as the module says; with `mtimes`,
/// each file's modification time goes into its header.
#[allow(clippy::too_many_arguments)]
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root_fd: OwnedFd,
    prefix: &Path,
    selection: &Selection,
    limits: &Limits,
    counts: &mut Counts,
    lookups: u64,
    mtimes: bool,
) -> Result<Packed, HandoffError> {
    let mut packed = Packed::default();
    let (entries, archive_bytes) = (&mut counts.entries, &mut counts.archive_bytes);
    // A hard link's other names may be anywhere on its filesystem: a step that links in a
    // file it may not read (where `fs.protected_hardlinks` is off) would have the runner,
    // which reads everything, pack it. A file of more than one link is packed only when it
    // belongs to the tree's owner (cargo's own hard links in `target` do).
    let owner = nix::sys::stat::fstat(root_fd.as_fd())
        .map_err(io::Error::from)?
        .st_uid;
    let mut resolver = Resolver::with_budget(root_fd.as_fd(), lookups);
    let mut stack = vec![Frame::open(root_fd.as_fd(), Vec::new())?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        if frame.dir.is_none() {
            // Closed while the walk was deeper; a directory swapped since ends here.
            match open_below(root_fd.as_fd(), &frame.path) {
                Ok(fd) => frame.dir = Some(fd),
                Err(_) => {
                    stack.pop();
                    continue;
                }
            }
        }
        let (dir, parent) = (frame.dir.as_ref().expect("opened above"), &frame.path);
        let relative: PathBuf = parent.iter().chain([&name]).collect();
        let Some(kind) = kind_at(dir.as_fd(), &name)? else {
            continue; // gone since the listing
        };
        let selected = match selection {
            Selection::Everything => true,
            Selection::Matching(globs) => kind == SFlag::S_IFREG && globs.is_match(&relative),
        };
        if kind == SFlag::S_IFDIR {
            let child = match open_dir(dir.as_fd(), &name) {
                Ok(child) => child,
                // Swapped for a link or a file, or gone, since it was looked at.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                    packed.skipped += 1;
                    continue;
                }
                Err(e) => return Err(io::Error::from(e).into()),
            };
            if selected {
                let mut header = directory_header();
                count(entries, archive_bytes, 0, limits)?;
                builder.append_data(&mut header, prefix.join(&relative), io::empty())?;
            }
            let mut path = parent.clone();
            path.push(name);
            let child = Frame::listed(child, path)?;
            if stack.len() >= MAX_OPEN_DIRS {
                if let Some(open) = stack.iter_mut().find(|f| f.dir.is_some()) {
                    open.dir = None;
                }
            }
            stack.push(child);
        } else if !selected {
            continue;
        } else if kind == SFlag::S_IFLNK {
            let target = match readlinkat(dir.as_fd(), name.as_os_str()) {
                Ok(target) => PathBuf::from(target),
                Err(Errno::ENOENT | Errno::EINVAL) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            };
            // The text first (cheap), then the chain through the tree's other links.
            let inside = link_stays_inside(&relative, &target)
                && match resolver.resolves_inside(&relative, &target) {
                    Ok(inside) => inside,
                    Err(OverBudget) => {
                        packed.links_unresolved += 1;
                        false
                    }
                };
            if !inside {
                packed.skipped += 1;
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            count(entries, archive_bytes, 0, limits)?;
            builder.append_link(&mut header, prefix.join(&relative), &target)?;
        } else if kind == SFlag::S_IFREG {
            // Opened without following a link a step may have swapped in since the look,
            // and without blocking on a FIFO; then checked to be the regular file it was.
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
            let file = match openat(dir.as_fd(), name.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => File::from(fd),
                Err(Errno::ENOENT) => continue,
                Err(Errno::ELOOP) => {
                    packed.skipped += 1;
                    continue;
                }
                Err(e) => return Err(io::Error::from(e).into()),
            };
            let metadata = file.metadata()?;
            if !metadata.is_file() || (metadata.nlink() > 1 && metadata.uid() != owner) {
                packed.skipped += 1;
                continue;
            }
            let size = metadata.len();
            count(entries, archive_bytes, size, limits)?;
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if metadata.mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            header.set_size(size);
            if mtimes {
                header.set_mtime(u64::try_from(metadata.mtime()).unwrap_or(0));
            }
            // `take`: a file that grew since `metadata` is cut at the size in its header.
            builder.append_data(
                &mut header,
                prefix.join(&relative),
                io::Read::take(file, size),
            )?;
            packed.files += 1;
            packed.bytes += size;
        } else {
            packed.skipped += 1;
        }
    }
    packed.link_lookups = resolver.lookups();
    Ok(packed)
}

/// A directory being walked: its descriptor (`None` while closed to bound the open
/// descriptors), its path below the root, and its names still to visit, sorted.
struct Frame {
    dir: Option<OwnedFd>,
    path: Vec<OsString>,
    names: std::vec::IntoIter<OsString>,
}

impl Frame {
    /// The root's frame (`path` empty), or any directory's, opened below `root`.
    fn open(root: BorrowedFd<'_>, path: Vec<OsString>) -> Result<Frame, HandoffError> {
        let dir = open_below(root, &path).map_err(io::Error::from)?;
        Frame::listed(dir, path)
    }

    /// The frame of the open directory `dir`, its names read now.
    fn listed(dir: OwnedFd, path: Vec<OsString>) -> Result<Frame, HandoffError> {
        // The listing reads through its own descriptor of the same directory.
        let listing = openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let mut listing = nix::dir::Dir::from_fd(listing).map_err(io::Error::from)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(Frame {
            dir: Some(dir),
            path,
            names: names.into_iter(),
        })
    }
}

/// The type of `name` in `dir`, not following a link; `None` when it is gone.
fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<SFlag>, HandoffError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(SFlag::from_bits_truncate(
            stat.st_mode & SFlag::S_IFMT.bits(),
        ))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

fn directory_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header
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
            human(limits.max_bytes)
        )));
    }
    Ok(())
}
