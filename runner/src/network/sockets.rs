//! The host's Unix sockets a confined step must not reach. A socket bound to a path leads
//! to its daemon in the host's network namespace whatever namespace the client is in, so
//! through the file system a step without network would reach a database (PostgreSQL's
//! `/run/postgresql/.s.PGSQL.5432`), the Docker socket (`/run/docker.sock`), the system
//! bus, or the host's resolvers (nscd, systemd-resolved's varlink socket, D-Bus to
//! `org.freedesktop.resolve1`: `<secret>.attacker.example` would reach the attacker's DNS
//! server). Abstract sockets need nothing here: they belong to a network namespace.
//!
//! No rule of the kernel's covers every path: a seccomp filter cannot read the path a
//! `connect` names, and Landlock scopes pathname sockets only from its ABI 9 (`uname -r`
//! here: 6.18, ABI 7). So the rule is by directory, in the step's private mount namespace
//! (`launch`), before it drops to its user — without a step user (a runner with
//! `CAP_SYS_ADMIN` that is not root), in a mount namespace it unshares for this alone:
//! - `/run` (and `/var/run` where it is not a link to it) — where the FHS puts every
//!   daemon's runtime sockets — and the few well-known socket directories elsewhere
//!   ([`SOCKET_DIRS`]) are each an empty, read-only tmpfs;
//! - `/tmp`, `/var/tmp`, `/dev/shm`, ... are the step's own (`rooms`: a fresh tmpfs each,
//!   with or without a step user), so a socket there (X11's, a PostgreSQL built to use
//!   `/tmp`) is out of sight too;
//! - what a step needs inside a hidden directory comes back, made in the tmpfs before it
//!   turns read-only ([`Hidden`]): the mount points of its rooms (`/run/lock`), the entry
//!   of one holding its working directory (bound back, as `rooms` keeps it), and an
//!   allow-list step's `resolv.conf` where `/etc/resolv.conf` is a link into one.
//!
//! So what a confined step can still reach by path is what lies elsewhere on the host's
//! file system and its user may write to (a socket in a home directory, a database told
//! to use another directory), and its own: sockets it binds in its workspace or its rooms.
//! No option names a host socket directory for a step: one that needs a host daemon runs
//! with `network="open"`.
//!
//! Invariants: the directories are resolved in the runner at each launch, never from
//! anything a step wrote, and taken only as real directories (or links root owns — never
//! one another user could have planted); a child that must hide some but has no private
//! mount namespace fails to start (fail closed).

use std::ffi::{c_ulong, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Where the host's daemons keep their sockets: `/run` and its old name, and well-known
/// directories elsewhere (MySQL's and MariaDB's on the Red Hat family; sssd's, which looks
/// users up in a directory server as the resolvers look names up).
pub(crate) const SOCKET_DIRS: &[&str] =
    &["/run", "/var/run", "/var/lib/mysql", "/var/lib/sss/pipes"];

/// The host's socket directories one confined step hides, and what comes back in them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hidden {
    /// Real paths of directories, each to get an empty tmpfs; none inside another.
    pub dirs: Vec<CString>,
    /// Directories to make in those tmpfs before they turn read-only, parents first.
    pub mkdirs: Vec<CString>,
    /// Empty files to make there (an allow-list step's `resolv.conf` target).
    pub files: Vec<CString>,
    /// The entry of a hidden directory that holds the step's working directory: opened
    /// before the tmpfs hides it and bound back, with its mount's flags.
    pub keep: Option<(CString, c_ulong)>,
}

impl Hidden {
    /// What a step in `cwd` hides, given its rooms' `places` (real paths) and, for an
    /// allow-list step, where its `resolv.conf` is bound (`/etc/resolv.conf`).
    pub(crate) fn for_step(cwd: &Path, places: &[CString], resolv_conf: Option<&Path>) -> Hidden {
        hidden(
            &existing(SOCKET_DIRS.iter().map(Path::new)),
            cwd,
            places,
            resolv_conf,
        )
    }
}

fn hidden(dirs: &[PathBuf], cwd: &Path, places: &[CString], resolv_conf: Option<&Path>) -> Hidden {
    let under = |path: &Path| {
        dirs.iter()
            .find(|dir| path.starts_with(dir) && path != *dir)
    };
    let mut mkdirs: Vec<PathBuf> = Vec::new();
    let mut make_way = |dir: &Path, to: &Path| {
        let mut at = dir.to_path_buf();
        for part in to.strip_prefix(dir).into_iter().flat_map(Path::components) {
            at.push(part);
            if !mkdirs.contains(&at) {
                mkdirs.push(at.clone());
            }
        }
    };
    for place in places {
        let place = Path::new(std::ffi::OsStr::from_bytes(place.as_bytes()));
        if let Some(dir) = under(place) {
            make_way(dir, place);
        }
    }
    let keep = std::fs::canonicalize(cwd).ok().and_then(|real| {
        let dir = under(&real)?;
        let first = real.strip_prefix(dir).ok()?.components().next()?;
        let entry = dir.join(first);
        make_way(dir, &entry);
        Some((c_path(&entry)?, crate::rooms::kept_flags(&entry)))
    });
    let mut files = Vec::new();
    if let Some(target) = resolv_conf.and_then(real_file) {
        if let (Some(dir), Some(parent)) = (under(&target), target.parent()) {
            make_way(dir, parent);
            files.extend(c_path(&target));
        }
    }
    Hidden {
        dirs: dirs.iter().filter_map(|dir| c_path(dir)).collect(),
        mkdirs: mkdirs.iter().filter_map(|dir| c_path(dir)).collect(),
        files,
        keep,
    }
}

/// The candidates that exist here as directories: real paths, each once, none inside
/// another, never `/`. A candidate that is a link counts only when root owns the link
/// (`/var/run` -> `/run`), never one another user could have made (in `/tmp`, say).
fn existing<'a>(candidates: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for candidate in candidates {
        let Ok(own) = std::fs::symlink_metadata(candidate) else {
            continue;
        };
        if own.file_type().is_symlink() && own.uid() != 0 {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(candidate) else {
            continue;
        };
        if real.is_dir() && real != Path::new("/") && !found.contains(&real) {
            found.push(real);
        }
    }
    // One inside another: the outer one hides both.
    let outer: Vec<PathBuf> = found
        .iter()
        .filter(|dir| {
            !found
                .iter()
                .any(|other| other != *dir && dir.starts_with(other))
        })
        .cloned()
        .collect();
    outer
}

/// Where a bind onto `path` lands: its real directory and name, through links of the file
/// itself too (`/etc/resolv.conf` -> `../run/systemd/resolve/stub-resolv.conf`), whether
/// or not the file exists. `None` after 8 links or without a real parent.
fn real_file(path: &Path) -> Option<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..8 {
        match std::fs::read_link(&path) {
            Ok(target) => {
                let parent = path.parent()?.to_path_buf();
                path = parent.join(target);
            }
            Err(_) => {
                let name = path.file_name()?.to_owned();
                let parent = normal(path.parent()?);
                return Some(std::fs::canonicalize(parent).ok()?.join(name));
            }
        }
    }
    None
}

/// `path` without `.` components (`..` is left to `canonicalize`).
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|part| *part != Component::CurDir)
        .collect()
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(path: &Path) -> CString {
        c_path(path).unwrap()
    }

    #[test]
    fn each_existing_directory_once_by_its_real_path_the_outer_one_first() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("run");
        std::fs::create_dir_all(real.join("nscd")).unwrap();
        let link = dir.path().join("var-run");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let candidates = [
            real.join("nscd"),
            link,
            dir.path().join("missing"),
            dir.path().join("file"),
            real.clone(),
        ];
        let found = existing(candidates.iter().map(PathBuf::as_path));
        assert_eq!(found, [std::fs::canonicalize(real).unwrap()]);
    }

    #[test]
    fn a_link_another_user_owns_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etc");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join(".X11-unix");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // Another user's link (a runner that is not root owns its own, not root's).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(&link, Some(4_000_123), None).unwrap();
        }
        assert!(existing([link.as_path()].into_iter()).is_empty());
    }

    #[test]
    fn the_rooms_the_work_directory_and_resolv_conf_come_back_in_a_hidden_directory() {
        let host = tempfile::tempdir().unwrap();
        let host = std::fs::canonicalize(host.path()).unwrap();
        let run = host.join("run");
        let work = run.join("plue-runner/attempt-1/workspace");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(run.join("systemd/resolve")).unwrap();
        std::fs::create_dir_all(host.join("etc")).unwrap();
        let resolv = host.join("etc/resolv.conf");
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv).unwrap();
        let places = [c(&run.join("lock")), c(&host.join("tmp"))];
        let hidden = hidden(std::slice::from_ref(&run), &work, &places, Some(&resolv));
        assert_eq!(hidden.dirs, [c(&run)]);
        assert_eq!(
            hidden.mkdirs,
            [
                c(&run.join("lock")),
                c(&run.join("plue-runner")),
                c(&run.join("systemd")),
                c(&run.join("systemd/resolve")),
            ]
        );
        assert_eq!(
            hidden.files,
            [c(&run.join("systemd/resolve/stub-resolv.conf"))]
        );
        assert_eq!(hidden.keep.unwrap().0, c(&run.join("plue-runner")));

        // Elsewhere (the usual case) nothing comes back but the rooms' mount points.
        let hidden = hidden_elsewhere(&run, &host);
        assert_eq!(hidden.mkdirs, [c(&run.join("lock"))]);
        assert_eq!((hidden.files.len(), hidden.keep), (0, None));
    }

    fn hidden_elsewhere(run: &Path, host: &Path) -> Hidden {
        let resolv = host.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        hidden(
            &[run.to_path_buf()],
            host,
            &[c(&run.join("lock"))],
            Some(&resolv),
        )
    }
}
