//! A step's caches on the runner's disk: the key of a cache ([`key`]), its archive
//! ([`trees`] and [`pack_trees`]: a zstd-compressed tar of its paths, streamed), an entry received from the
//! engine and checked against its recorded digest ([`receive`]), and an entry restored
//! into the workspace and the home ([`restore`]). The conversation with the engine and the
//! step's log lines are `agent::caches`'.
//!
//! Invariants:
//! - Every path comes from a plan, so it is checked again here ([`split`]): relative to the
//!   workspace, or to the home with `~/`; never absolute, never `..`. The runner trusts no
//!   plan.
//! - Nothing is read or written through a symbolic link that is not the cache's own: key
//!   files and cached directories are opened one name at a time with `O_NOFOLLOW` below
//!   the workspace or home (a checked-in `target -> /etc` is refused, never followed), and
//!   a restore makes each path's directories itself, refusing a link or file in the way.
//! - An archive is the hand-off archives' format and rules: [`handoff::pack_trees`] (a link
//!   is kept only when it stays inside its own cached path) and [`handoff::unpack_split`]
//!   (nothing outside each path, no link out, bounded size and entry count, so a
//!   decompression bomb stops at the bound). The bound is the engine's
//!   ([`CacheSpec::max_bytes`]) and counts what is written: a file at its full length (a
//!   sparse file at its apparent size), never the compressed size. An entry whose length
//!   or SHA-256 is not what the engine recorded at save is never unpacked
//!   ([`CacheError::Digest`]).
//! - A restore that fails removes the directories it made, so a refused archive leaves
//!   nothing of its own behind where it did not find a directory.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

use crate::handoff::{self, links::open_below, HandoffError};
use plue_types::handoff::Limits;
use plue_types::protocol::caches::CacheSpec;

/// The zstd level archives are written at: fast, and most of zstd's gain on build trees.
const LEVEL: i32 = 3;
/// The largest zstd window an entry may ask its reader to hold (16 MiB; `LEVEL` writes
/// 2 MiB at most): a hostile frame cannot make a restore allocate more.
pub const WINDOW_LOG_MAX: u32 = 24;

/// Why a cache was not restored or saved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The entry's bytes (their length or their SHA-256) are not the ones the engine
    /// recorded.
    #[error("does not match its digest")]
    Digest,
    /// The archive or the paths break a rule or a bound.
    #[error(transparent)]
    Archive(#[from] HandoffError),
    /// A path of the plan is not one the runner accepts.
    #[error("path '{path}' {why}")]
    Path { path: String, why: &'static str },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The workspace and the home of an attempt: where cached paths are.
#[derive(Debug, Clone, Copy)]
pub struct Dirs<'a> {
    pub workspace: &'a Path,
    pub home: &'a Path,
}

impl Dirs<'_> {
    /// The directory a cached path is relative to, and its names.
    fn place<'p>(&self, path: &'p str) -> Result<(&Path, Vec<&'p str>), CacheError> {
        let (home, names) = split(path).map_err(|why| CacheError::Path {
            path: path.escape_debug().to_string(),
            why,
        })?;
        Ok((if home { self.home } else { self.workspace }, names))
    }
}

/// A cached path (`~/` for the home) as its names, whether it is in the home, or why it is
/// refused: absolute, `..`, control characters, or naming nothing.
pub fn split(path: &str) -> Result<(bool, Vec<&str>), &'static str> {
    let (home, rest) = match path.strip_prefix("~/") {
        Some(rest) => (true, rest),
        None if path.starts_with('~') => return Err("must start with '~/' or be relative"),
        None => (false, path),
    };
    if rest.starts_with('/') {
        return Err("must be relative, never absolute");
    }
    if rest.len() > 1024 || rest.chars().any(char::is_control) {
        return Err("is too long or holds control characters");
    }
    let mut names = Vec::new();
    for name in rest.split('/') {
        match name {
            "" | "." => {}
            ".." => return Err("must not hold '..'"),
            name => names.push(name),
        }
    }
    if names.is_empty() {
        return Err("names nothing");
    }
    Ok((home, names))
}

/// A cache's key, and the key files that counted as absent (with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `<name>-<sha256 hex>`.
    pub key: String,
    pub absent: Vec<(String, &'static str)>,
}

/// The key of `spec` from the workspace: the SHA-256 over each key file, in the plan's
/// order, of its path's length (8 bytes, big-endian) and bytes, then `1`, the content's
/// length and the content — or `0` for a file that is missing, is a link, or is not a
/// regular file (each said in [`Key::absent`]). Length prefixes keep `("ab", "c")` and
/// `("a", "bc")` apart.
pub fn key(workspace: &Path, spec: &CacheSpec) -> Result<Key, CacheError> {
    let root = open_dir(workspace)?;
    let mut hasher = Sha256::new();
    let mut absent = Vec::new();
    for file in &spec.key_files {
        hasher.update((file.len() as u64).to_be_bytes());
        hasher.update(file.as_bytes());
        let (home, names) = split(file).map_err(|why| CacheError::Path {
            path: file.escape_debug().to_string(),
            why,
        })?;
        if home {
            return Err(CacheError::Path {
                path: file.escape_debug().to_string(),
                why: "must be a workspace file",
            });
        }
        match open_file_below(&root, &names)? {
            Ok(mut opened) => {
                let size = opened.metadata()?.len();
                hasher.update([1]);
                hasher.update(size.to_be_bytes());
                // `take`: a file that grew since is read to the size hashed above.
                let copied = io::copy(&mut (&mut opened).take(size), &mut HashWriter(&mut hasher))?;
                if copied != size {
                    return Err(
                        io::Error::other(format!("key file '{file}' changed while read")).into(),
                    );
                }
            }
            Err(why) => {
                hasher.update([0]);
                absent.push((file.clone(), why));
            }
        }
    }
    Ok(Key {
        key: format!("{}-{}", spec.name, hex(&hasher.finalize())),
        absent,
    })
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    pub archive: handoff::Packed,
    /// Paths not saved, with why (missing, not a directory, a link in the way).
    pub left_out: Vec<(String, &'static str)>,
}

/// A cache's paths opened for packing (each never through a link), and those left out.
pub struct Trees {
    opened: Vec<(OwnedFd, PathBuf)>,
    /// Paths not saved, with why (missing, not a directory, a link in the way).
    pub left_out: Vec<(String, &'static str)>,
}

impl Trees {
    /// Whether not one of the paths is there to save.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
    }
}

/// Opens `spec`'s paths for [`pack_trees`]: path `i` becomes the archive's tree `i`.
pub fn trees(dirs: Dirs<'_>, spec: &CacheSpec) -> Result<Trees, CacheError> {
    let mut opened = Vec::new();
    let mut left_out = Vec::new();
    for (i, path) in spec.paths.iter().enumerate() {
        let (base, names) = dirs.place(path)?;
        let base = open_dir(base)?;
        let names: Vec<OsString> = names.iter().map(OsString::from).collect();
        match open_below(base.as_fd(), &names) {
            Ok(dir) => opened.push((dir, PathBuf::from(i.to_string()))),
            Err(Errno::ENOENT) => left_out.push((path.clone(), "does not exist")),
            Err(Errno::ENOTDIR | Errno::ELOOP) => {
                left_out.push((path.clone(), "is not a directory (or a link is in the way)"))
            }
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
    Ok(Trees { opened, left_out })
}

/// Writes the zstd-compressed tar of `trees` to `out`.
pub fn pack_trees(trees: Trees, limits: &Limits, out: impl Write) -> Result<Packed, CacheError> {
    let mut encoder = zstd::Encoder::new(out, LEVEL)?;
    let archive = handoff::pack_trees(trees.opened, limits, &mut encoder)?;
    encoder.finish()?.flush()?;
    Ok(Packed {
        archive,
        left_out: trees.left_out,
    })
}

/// [`trees`] then [`pack_trees`]; `None` when not one of the paths is there to save
/// (nothing is written then).
pub fn pack(
    dirs: Dirs<'_>,
    spec: &CacheSpec,
    limits: &Limits,
    out: impl Write,
) -> Result<Option<Packed>, CacheError> {
    let trees = trees(dirs, spec)?;
    if trees.is_empty() {
        return Ok(None);
    }
    pack_trees(trees, limits, out).map(Some)
}

/// What the engine recorded of an entry when it was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded<'a> {
    /// `sha256:<hex>`.
    pub digest: &'a str,
    pub size: u64,
}

/// Copies an entry's bytes from `input` to `into` while hashing them, and checks them:
/// the recorded length (never more than `max_bytes`: an entry recorded larger is refused
/// before a byte is read) and `sha256:<hex>` equal to the recorded digest. Returns the
/// size.
pub fn receive(
    mut input: impl Read,
    into: &mut File,
    recorded: Recorded<'_>,
    max_bytes: u64,
) -> Result<u64, CacheError> {
    if recorded.size > max_bytes {
        return Err(too_large(max_bytes));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > recorded.size {
            // Longer than what was saved: not the saved entry.
            return Err(CacheError::Digest);
        }
        hasher.update(&buf[..n]);
        into.write_all(&buf[..n])?;
    }
    into.flush()?;
    if size != recorded.size || format!("sha256:{}", hex(&hasher.finalize())) != recorded.digest {
        return Err(CacheError::Digest);
    }
    Ok(size)
}

fn too_large(max_bytes: u64) -> CacheError {
    HandoffError::TooLarge(format!(
        "the entry is larger than {}",
        plue_types::handoff::human(max_bytes)
    ))
    .into()
}

/// Unpacks a received entry (`archive`, read from its start) into `spec`'s paths: each
/// path's directories are made (never through a link or a file in the way), then tree `i`
/// goes below path `i`. On an error, the directories this restore made are removed.
pub fn restore(
    archive: File,
    dirs: Dirs<'_>,
    spec: &CacheSpec,
    limits: &Limits,
) -> Result<handoff::Unpacked, CacheError> {
    let mut roots = Vec::new();
    let mut made = Vec::new();
    let result = (|| {
        for path in &spec.paths {
            let (base, names) = dirs.place(path)?;
            roots.push(
                make_dirs(base, &names, &mut made).map_err(|why| CacheError::Path {
                    path: path.escape_debug().to_string(),
                    why,
                })?,
            );
        }
        let mut decoder = zstd::Decoder::new(archive)?;
        decoder.window_log_max(WINDOW_LOG_MAX)?;
        Ok(handoff::unpack_split(decoder, &roots, limits)?)
    })();
    if result.is_err() {
        for dir in made {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
}

/// Makes `base/names...` a chain of real directories, creating what is missing (the first
/// directory created is pushed to `made`); refuses a link or a file in the way.
fn make_dirs(
    base: &Path,
    names: &[&str],
    made: &mut Vec<PathBuf>,
) -> Result<PathBuf, &'static str> {
    let mut current = base.to_path_buf();
    let mut created = false;
    for name in names {
        current.push(name);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err("has a link or a file in the way; not restored"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .map_err(|_| "cannot be made")?;
                if !created {
                    made.push(current.clone());
                    created = true;
                }
            }
            Err(_) => return Err("cannot be read"),
        }
    }
    Ok(current)
}

/// Opens the directory `dir` itself, not through a link at its last name.
fn open_dir(dir: &Path) -> Result<OwnedFd, CacheError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::open(dir, flags, Mode::empty()).map_err(|e| io::Error::from(e).into())
}

/// The regular file `names` below `root`, never through a link; `Ok(Err(why))` when it is
/// not one (missing, a link, a directory, a FIFO).
fn open_file_below(
    root: &OwnedFd,
    names: &[&str],
) -> Result<Result<File, &'static str>, CacheError> {
    let (last, parents) = names.split_last().expect("split() names something");
    let parents: Vec<OsString> = parents.iter().map(OsString::from).collect();
    let dir = match open_below(root.as_fd(), &parents) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) => return Ok(Err("is missing")),
        Err(Errno::ENOTDIR | Errno::ELOOP) => return Ok(Err("is below a link or a file")),
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(dir.as_fd(), *last, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Ok(Err("is missing")),
        Err(Errno::ELOOP) => return Ok(Err("is a symbolic link")),
        Err(e) => return Err(io::Error::from(e).into()),
    };
    if !file.metadata()?.is_file() {
        return Ok(Err("is not a regular file"));
    }
    Ok(Ok(file))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
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

/// `bytes` for a log line, with one decimal: `12.3 MiB`, `512 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return format!("{:.1} {name}", bytes as f64 / unit as f64);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests;
