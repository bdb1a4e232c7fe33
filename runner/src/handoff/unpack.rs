//! Reading a hostile tar: [`unpack`] into a directory, or [`list`] without writing.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use super::links::{OverBudget, Resolver, MAX_LOOKUPS};
use plue_types::handoff::{clean_relative, human, link_stays_inside, Limits};

use super::HandoffError;

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    /// The lookups resolving the links cost (at most [`MAX_LOOKUPS`]).
    pub link_lookups: u64,
}

/// One regular file of an archive, as [`list`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its relative, `/`-separated path.
    pub path: String,
    pub size: u64,
    /// `sha256:<hex>` of its content.
    pub digest: String,
}

/// An entry checked against every rule that does not need the target directory.
enum Checked {
    Directory(PathBuf),
    /// Its path, mode and modification time (seconds; 0 when the header has none).
    File(PathBuf, u32, u64),
    Symlink(PathBuf, PathBuf),
}

/// Walks the archive's entries, checking each (paths, types, sizes, counts) before `each`
/// sees it with its content still to be read.
fn walk(
    input: impl Read,
    limits: &Limits,
    mut each: impl FnMut(Checked, &mut dyn Read) -> Result<(), HandoffError>,
) -> Result<Unpacked, HandoffError> {
    // The whole stream is bounded too: headers, long names and PAX records are read into
    // memory by the tar reader, so a huge one must fail on the byte count, not allocate.
    let overhead = limits
        .max_entries
        .saturating_mul(2048)
        .saturating_add(1 << 20);
    let bounded = Bounded {
        inner: input,
        left: limits.max_bytes.saturating_add(overhead),
    };
    let mut archive = tar::Archive::new(bounded);
    let mut done = Unpacked::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        done.entries += 1;
        if done.entries > limits.max_entries {
            return Err(HandoffError::TooLarge(format!(
                "the archive has more than {} entries (the limit)",
                limits.max_entries
            )));
        }
        let raw = entry.path()?.into_owned();
        let Some(path) = clean_relative(&raw) else {
            return Err(HandoffError::refused(
                &raw,
                "an entry path must be relative, non-empty, without '..'",
            ));
        };
        let size = entry.size();
        done.bytes = done.bytes.saturating_add(size);
        if done.bytes > limits.max_bytes {
            return Err(HandoffError::TooLarge(format!(
                "the archive's files are larger than the limit of {}",
                human(limits.max_bytes)
            )));
        }
        let kind = entry.header().entry_type();
        let checked = match kind {
            tar::EntryType::Directory => Checked::Directory(path),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry.header().mode().unwrap_or(0o644);
                let mtime = entry.header().mtime().unwrap_or(0);
                Checked::File(path, if mode & 0o111 != 0 { 0o755 } else { 0o644 }, mtime)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&path, &target) {
                    return Err(HandoffError::refused(
                        &raw,
                        format!(
                            "a symbolic link to '{}' would point outside the workspace",
                            target.display()
                        ),
                    ));
                }
                Checked::Symlink(path, target)
            }
            other => {
                return Err(HandoffError::refused(
                    &raw,
                    format!(
                        "a {} entry; only files, directories and symbolic links are unpacked",
                        kind_name(other)
                    ),
                ))
            }
        };
        let mut content = (&mut entry).take(size);
        each(checked, &mut content)?;
    }
    Ok(done)
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special",
    }
}

/// Unpacks `input` into the existing directory `root` (see the module rules). On an error
/// some entries may have been written; the caller throws the directory away.
pub fn unpack(input: impl Read, root: &Path, limits: &Limits) -> Result<Unpacked, HandoffError> {
    unpack_within(input, root, limits, MAX_LOOKUPS)
}

/// [`unpack`] with `lookups` to spend on resolving links.
pub(super) fn unpack_within(
    input: impl Read,
    root: &Path,
    limits: &Limits,
    lookups: u64,
) -> Result<Unpacked, HandoffError> {
    let mut links = Vec::new();
    let unpacked = walk(input, limits, |entry, content| {
        write_entry(root, entry, content, &mut links, false)
    })?;
    let link_lookups = check_link_chains(root, &links, lookups)?;
    Ok(Unpacked {
        link_lookups,
        ..unpacked
    })
}

/// Unpacks an archive of several trees ([`super::pack_trees`]): an entry `<i>/<path>` goes
/// to `<path>` below `roots[i]` (each an existing directory), with every rule of
/// [`unpack`] held for each root on its own — a symbolic link must stay inside its own
/// tree, by its text and through the other links of that tree. Files get the modification
/// times the archive holds. An entry whose first name is not the index of a root is
/// refused. On an error some entries may have been written.
pub fn unpack_split(
    input: impl Read,
    roots: &[PathBuf],
    limits: &Limits,
) -> Result<Unpacked, HandoffError> {
    let mut links: Vec<Vec<(PathBuf, PathBuf)>> = vec![Vec::new(); roots.len()];
    let unpacked = walk(input, limits, |entry, content| {
        let path = match &entry {
            Checked::Directory(path) | Checked::File(path, _, _) | Checked::Symlink(path, _) => {
                path.clone()
            }
        };
        let mut names = path.components();
        let index = names
            .next()
            .and_then(|first| first.as_os_str().to_str()?.parse::<usize>().ok())
            .filter(|i| *i < roots.len())
            .ok_or_else(|| {
                HandoffError::refused(&path, "its first name is not one of the archive's trees")
            })?;
        let rest = names.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            // The tree's own directory: the caller made it.
            return match entry {
                Checked::Directory(_) => Ok(()),
                _ => Err(HandoffError::refused(&path, "a tree must be a directory")),
            };
        }
        let entry = match entry {
            Checked::Directory(_) => Checked::Directory(rest),
            Checked::File(_, mode, mtime) => Checked::File(rest, mode, mtime),
            Checked::Symlink(_, target) => {
                if !link_stays_inside(&rest, &target) {
                    return Err(HandoffError::refused(
                        &path,
                        format!(
                            "a symbolic link to '{}' would point outside its tree",
                            target.display()
                        ),
                    ));
                }
                Checked::Symlink(rest, target)
            }
        };
        write_entry(&roots[index], entry, content, &mut links[index], true)
    })?;
    let mut link_lookups = 0;
    for (root, links) in roots.iter().zip(&links) {
        let budget = MAX_LOOKUPS.saturating_sub(link_lookups);
        link_lookups += check_link_chains(root, links, budget)?;
    }
    Ok(Unpacked {
        link_lookups,
        ..unpacked
    })
}

/// Writes one checked entry below `root`; a link is remembered in `links` for the chain
/// check once the archive is whole. With `mtimes`, a file gets its header's modification
/// time (when it has one).
fn write_entry(
    root: &Path,
    entry: Checked,
    content: &mut dyn Read,
    links: &mut Vec<(PathBuf, PathBuf)>,
    mtimes: bool,
) -> Result<(), HandoffError> {
    match entry {
        Checked::Directory(path) => {
            let full = make_parents(root, &path)?;
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(HandoffError::refused(
                    &path,
                    "a directory in place of a file or link",
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&full)?;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Checked::File(path, mode, mtime) => {
            let full = make_parents(root, &path)?;
            clear(&full, &path)?;
            // `create_new` + `O_NOFOLLOW`: nothing appeared at the path in between.
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)?;
            io::copy(content, &mut file)?;
            if mtimes && mtime > 0 {
                // `checked_add`: a header's time past what the clock holds (base-256, up
                // to 2^64 s) would panic the restore; such a file keeps its restore's time.
                let time = std::time::Duration::from_secs(mtime);
                if let Some(time) = std::time::UNIX_EPOCH.checked_add(time) {
                    file.set_modified(time)?;
                }
            }
            Ok(())
        }
        Checked::Symlink(path, target) => {
            let full = make_parents(root, &path)?;
            clear(&full, &path)?;
            std::os::unix::fs::symlink(&target, &full)?;
            links.push((path, target));
            Ok(())
        }
    }
}

/// Refuses the archive when one of its `links`, resolved through every link now in the
/// workspace (the archive's, and a later entry may have replaced one), leads outside:
/// each passed the textual check alone, a chain need not (`a -> .`, `b -> a/..`). Then,
/// as the new links may re-point a link already in the workspace (an earlier archive's
/// `b -> x/..`, this one's `x -> a/a`), every other link whose text stays inside is
/// resolved again too. An archive without links (every artifacts archive) costs nothing.
/// Both passes share one budget of `lookups`: past it the archive is refused. Returns the
/// lookups spent.
fn check_link_chains(
    root: &Path,
    links: &[(PathBuf, PathBuf)],
    lookups: u64,
) -> Result<u64, HandoffError> {
    if links.is_empty() {
        return Ok(0);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(io::Error::from)?;
    let mut resolver = Resolver::with_budget(root_fd.as_fd(), lookups);
    let mut inside = |path: &Path, target: &Path| {
        resolver
            .resolves_inside(path, target)
            .map_err(|OverBudget| {
                HandoffError::TooLarge(format!(
                    "the archive's symbolic links take more than {lookups} lookups to resolve \
                 through each other (the limit for one archive); a tree made to be costly is \
                 refused"
                ))
            })
    };
    let escapes = |path: &Path, target: &Path| {
        HandoffError::refused(
            path,
            format!(
                "a symbolic link to '{}' would lead outside the workspace through other \
                 links",
                target.display()
            ),
        )
    };
    for (path, target) in links {
        if !inside(path, target)? {
            return Err(escapes(path, target));
        }
    }
    // The workspace is the runner's alone while it unpacks: nothing swaps it meanwhile.
    let walk = walkdir::WalkDir::new(root).follow_links(false).min_depth(1);
    for entry in walk {
        let entry = entry.map_err(|e| io::Error::other(e.to_string()))?;
        if !entry.file_type().is_symlink() {
            continue;
        }
        let path = entry
            .path()
            .strip_prefix(root)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let target = fs::read_link(entry.path())?;
        // A link whose text already leads outside was not the archive's (it would have
        // been refused); it is the workspace's own business.
        if link_stays_inside(path, &target) && !inside(path, &target)? {
            return Err(escapes(path, &target));
        }
    }
    Ok(resolver.lookups())
}

/// Lists the regular files of `input` with their sizes and digests, checking every entry
/// as [`unpack`] would.
pub fn list(input: impl Read, limits: &Limits) -> Result<Vec<Listed>, HandoffError> {
    let mut files = Vec::new();
    walk(input, limits, |entry, content| {
        if let Checked::File(path, _, _) = entry {
            let mut hasher = Sha256::new();
            let size = io::copy(content, &mut HashWriter(&mut hasher))?;
            files.push(Listed {
                path: path.to_string_lossy().into_owned(),
                size,
                digest: format!("sha256:{}", hex(&hasher.finalize())),
            });
        }
        Ok(())
    })?;
    Ok(files)
}

/// Creates the parent directories of `path` below `root` one by one, refusing to go
/// through anything but a real directory (a symbolic link, the archive's own or one already
/// in the workspace, would lead outside). Returns the full path of the entry.
fn make_parents(root: &Path, path: &Path) -> Result<PathBuf, HandoffError> {
    let mut current = root.to_path_buf();
    let parts: Vec<_> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(HandoffError::refused(
                    path,
                    "its parent is a symbolic link or a file, not a directory",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&current)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(root.join(path))
}

/// Removes a file or link already at `full` (never following it); a directory stays and
/// is an error.
fn clear(full: &Path, path: &Path) -> Result<(), HandoffError> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => Err(HandoffError::refused(
            path,
            "a file or link in place of a directory",
        )),
        Ok(_) => Ok(fs::remove_file(full)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A reader that fails once more than `left` bytes were asked of it.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends here from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("the archive is larger than its limit")),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
