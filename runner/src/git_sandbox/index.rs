//! The shadow's index: a checked copy of the workspace's, never a link to it.
//!
//! Git reads the working-tree file of every index entry, at the entry's path as written.
//! A step can write any bytes into `.git/index`, and git does not check the paths of an
//! index it reads (only of what it adds): an entry `../../etc/hostname`, `/etc/os-release`
//! or `.git/config` made `git diff` print a file outside the workspace.
//!
//! So the shadow never links the workspace's index. `copy` copies `index` and its
//! `sharedindex.*` files (a split index) into the shadow — regular files opened without
//! following a link, with one link count (no hard link to another file), at most
//! [`MAX_INDEX_BYTES`] together, each starting with an index header listing at most
//! [`MAX_INDEX_ENTRIES`]. Then `check_listing` has git list that copy (`ls-files -z
//! --stage`, so the paths are the ones git itself parsed, shared and sparse entries
//! included) and refuses the workspace when an entry's path is not plain (see
//! [`plain_entry_path`]), reading at most [`MAX_INDEX_ENTRIES`] entries and
//! [`MAX_LISTING_BYTES`]. The diff reads the same copy: a step writing the workspace's
//! index between the check and the diff changes nothing (a link would have been read
//! again). A copy keeps its file's modification time, which git's check for files changed
//! within the second the index was written reads.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Child, Stdio};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::{git_command, ShadowError, HARDENING_ARGS};
use crate::step_user::StepUser;

/// The most bytes of `index` and its shared index files together (an index of the Linux
/// kernel's ~90,000 files is ~10 MiB).
pub const MAX_INDEX_BYTES: u64 = 128 * 1024 * 1024;

/// The most entries an index may hold, by its header and by git's listing.
pub const MAX_INDEX_ENTRIES: u64 = 1_000_000;

/// The most bytes of git's listing read (an index of version 4 compresses its paths, so
/// the listing can be far larger than the file).
pub const MAX_LISTING_BYTES: u64 = 256 * 1024 * 1024;

/// The longest path an entry may have.
pub const MAX_ENTRY_PATH: usize = 4096;

/// The most `sharedindex.*` files copied (git keeps a few old ones for a while).
const MAX_SHARED_INDEXES: usize = 8;

/// Copies the index files of the workspace's `.git` (`git`) into `shadow`: `index` and
/// the `sharedindex.*` among `names`. Nothing is copied when there is no `index`.
pub(super) fn copy(
    git: &OwnedFd,
    names: &[std::ffi::OsString],
    shadow: &Path,
) -> Result<(), ShadowError> {
    let mut left = MAX_INDEX_BYTES;
    if !copy_one(git, OsStr::new("index"), shadow, &mut left)? {
        return Ok(());
    }
    let shared: Vec<&std::ffi::OsString> = names
        .iter()
        .filter(|n| n.to_str().is_some_and(shared_index_name))
        .collect();
    if shared.len() > MAX_SHARED_INDEXES {
        return Err(ShadowError::BadFile {
            name: "sharedindex.*".into(),
            why: format!(
                "files are more than {MAX_SHARED_INDEXES} (run 'git update-index \
                 --no-split-index' in the checkout)"
            ),
        });
    }
    for name in shared {
        copy_one(git, name, shadow, &mut left)?;
    }
    Ok(())
}

/// `sharedindex.<object id>`.
fn shared_index_name(name: &str) -> bool {
    name.strip_prefix("sharedindex.")
        .is_some_and(|id| matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Copies `name` of `git` into `shadow` if it is there; `left` is the byte budget of all
/// copies. `false` when it is missing.
fn copy_one(
    git: &OwnedFd,
    name: &OsStr,
    shadow: &Path,
    left: &mut u64,
) -> Result<bool, ShadowError> {
    let shown = || name.to_string_lossy().into_owned();
    let bad = |why: &str| ShadowError::BadFile {
        name: shown(),
        why: why.to_owned(),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(git, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(nix::errno::Errno::ELOOP) => return Err(bad("is a symbolic link")),
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(bad("has other hard links (git never makes one)"));
    }
    if meta.len() > *left {
        return Err(ShadowError::BadFile {
            name: shown(),
            why: format!(
                "is too large: the index files may hold {} MiB together",
                MAX_INDEX_BYTES >> 20
            ),
        });
    }
    let mut content = file.take(*left + 1);
    let mut header = [0u8; 12];
    content
        .read_exact(&mut header)
        .map_err(|_| bad("is too short to be an index"))?;
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let entries = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if &header[..4] != b"DIRC" || !(2..=4).contains(&version) {
        return Err(bad(
            "is not a git index (no 'DIRC' header of version 2 to 4)",
        ));
    }
    if u64::from(entries) > MAX_INDEX_ENTRIES {
        return Err(ShadowError::BadFile {
            name: shown(),
            why: format!("lists {entries} entries, more than the {MAX_INDEX_ENTRIES} read"),
        });
    }
    let mut copy = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(shadow.join(name))?;
    copy.write_all(&header)?;
    let copied = 12 + std::io::copy(&mut content, &mut copy)?;
    if copied > *left {
        return Err(bad(
            "grew past the size of the index files while being read",
        ));
    }
    *left -= copied;
    // Git trusts an entry's cached stat (whole seconds, on most builds) only when the
    // entry is older than the index file; an entry as new as the index ("racily clean") has
    // its file's content compared. A copy made a second later would turn such an entry
    // trusted, and an edit of the same size within that second would vanish from the diff.
    copy.set_modified(meta.modified()?)?;
    Ok(true)
}

/// Has git list the shadow's index copy and refuses the workspace when an entry's path is
/// not plain, or the listing is over a bound. Git runs as `user` (the tool's user).
pub(super) fn check_listing(shadow: &Path, user: Option<StepUser>) -> Result<(), ShadowError> {
    if !shadow.join("index").exists() {
        return Ok(());
    }
    let mut git_dir = std::ffi::OsString::from("--git-dir=");
    git_dir.push(shadow);
    let mut command = git_command(user)?;
    command
        .args(HARDENING_ARGS)
        .arg(git_dir)
        .arg("--work-tree=.")
        .args(["ls-files", "-z", "--stage"])
        .current_dir(shadow)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .map_err(|e| ShadowError::Index(format!("cannot start git to list it: {e}")))?;
    let mut child = Reaped(child);
    let stderr = child.0.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut first = Vec::new();
            let _ = (&mut stderr).take(4096).read_to_end(&mut first);
            // The rest is drained so git never blocks on a full pipe.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            first
        })
    });
    let stdout = child.0.stdout.take().expect("stdout is piped");
    check_records(BufReader::new(stdout))?;
    let status = child.0.wait()?;
    let stderr = stderr
        .and_then(|thread| thread.join().ok())
        .unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(ShadowError::Index(format!("git cannot read it: {first}")));
    }
    Ok(())
}

/// A child killed and waited for when dropped before it ended.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Checks every `<mode> <object> <stage>\t<path>` record of an `ls-files -z --stage`
/// listing, reading at most [`MAX_INDEX_ENTRIES`] records and [`MAX_LISTING_BYTES`].
pub(super) fn check_records(mut listing: impl BufRead) -> Result<(), ShadowError> {
    let too_long = || {
        ShadowError::Index(format!(
            "it lists more than {MAX_INDEX_ENTRIES} entries or {} MiB of paths",
            MAX_LISTING_BYTES >> 20
        ))
    };
    // A record is the mode, the object id (up to 64), the stage and the path.
    let max_record = MAX_ENTRY_PATH + 96;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut record = Vec::new();
    loop {
        record.clear();
        loop {
            let buf = listing.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (taken, ended) = match buf.iter().position(|&b| b == 0) {
                Some(at) => (at + 1, true),
                None => (buf.len(), false),
            };
            if record.len() + taken > max_record + 1 {
                return Err(ShadowError::Index(format!(
                    "an entry's path is longer than {MAX_ENTRY_PATH} bytes"
                )));
            }
            record.extend_from_slice(&buf[..taken]);
            listing.consume(taken);
            if ended {
                break;
            }
        }
        if record.is_empty() {
            return Ok(());
        }
        records += 1;
        bytes += record.len() as u64;
        if records > MAX_INDEX_ENTRIES || bytes > MAX_LISTING_BYTES {
            return Err(too_long());
        }
        let Some(b'\0') = record.last() else {
            return Err(ShadowError::Index(
                "git's listing of it was cut short".into(),
            ));
        };
        let line = &record[..record.len() - 1];
        let Some(tab) = line.iter().position(|&b| b == b'\t') else {
            return Err(ShadowError::Index(
                "git's listing of it is not 'mode object stage<TAB>path'".into(),
            ));
        };
        let path = &line[tab + 1..];
        if let Err(why) = plain_entry_path(path) {
            return Err(ShadowError::Index(format!(
                "it lists '{}', {why}; a checkout's entries are plain paths inside it",
                String::from_utf8_lossy(path).escape_debug()
            )));
        }
    }
}

/// Whether an index entry's path names a file inside the working tree, as git's own
/// `verify_path` would have it when adding: `Err` says why not.
pub fn plain_entry_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("an empty path");
    }
    if path.len() > MAX_ENTRY_PATH {
        return Err("a path too long");
    }
    if path.starts_with(b"/") {
        return Err("an absolute path");
    }
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("a path with a control character");
    }
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" => return Err("a path with an empty component ('//' or a trailing '/')"),
            b"." | b".." => return Err("a path with a '.' or '..' component"),
            _ if is_dot_git(component) => return Err("a path inside a .git directory"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a path component is `.git` to some file system git protects against: any case,
/// HFS+'s ignored code points inside (`.g\u{200c}it`), NTFS's trailing dots and spaces,
/// streams (`.git::$INDEX_ALLOCATION`), short name (`git~1`) and `\` separator.
pub fn is_dot_git(component: &[u8]) -> bool {
    let folded: Vec<u8> = match std::str::from_utf8(component) {
        Ok(text) => text
            .chars()
            .filter(|&c| !hfs_ignorable(c))
            .collect::<String>()
            .into_bytes(),
        Err(_) => component.to_vec(),
    };
    if folded.eq_ignore_ascii_case(b".git") {
        return true;
    }
    component.split(|&b| b == b'\\').any(|part| {
        let part = part.split(|&b| b == b':').next().unwrap_or(part);
        let end = part
            .iter()
            .rposition(|&b| b != b'.' && b != b' ')
            .map_or(0, |i| i + 1);
        let part = &part[..end];
        part.eq_ignore_ascii_case(b".git") || part.eq_ignore_ascii_case(b"git~1")
    })
}

/// The code points HFS+ ignores in names (git's `next_hfs_char`).
fn hfs_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
    )
}
