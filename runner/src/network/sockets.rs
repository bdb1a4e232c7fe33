//! The host's resolver sockets a confined step must not reach: Unix sockets bound to a
//! path lead to a daemon in the host's network namespace whatever namespace the client is
//! in, so `getaddrinfo` through nscd, systemd-resolved's varlink socket, or a D-Bus call to
//! `org.freedesktop.resolve1` (or avahi) would make the host look up a name the step chose
//! — `<secret>.attacker.example` reaches the attacker's DNS server.
//!
//! A step whose network is not `open` therefore gets an empty, read-only tmpfs over each of
//! [`RESOLVER_DIRS`] that exists on the host, in its private mount namespace (`launch`),
//! before it drops to its user — without a step user (a runner with `CAP_SYS_ADMIN` that
//! is not root), in a mount namespace it unshares for this alone. Its resolver then has only what the namespace gives: no
//! route under `"none"`, the runner's DNS stub under an allow-list.
//!
//! Invariants: the directories are root's, resolved (real path, directories only, each
//! once) in the runner at each launch, never from anything a step wrote; a child that must
//! hide some but has no private mount namespace fails to start (fail closed). Other Unix
//! sockets (a database's, the Docker socket) are out of scope: the step's user and file
//! permissions decide there.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the usual resolvers and the system bus keep their sockets.
pub(crate) const RESOLVER_DIRS: &[&str] = &[
    "/run/systemd/resolve",
    "/run/nscd",
    "/var/run/nscd",
    "/run/dbus",
    "/var/run/dbus",
    "/run/avahi-daemon",
    "/var/run/avahi-daemon",
];

/// [`RESOLVER_DIRS`] that exist here: real paths of directories, each once.
pub(crate) fn resolver_dirs() -> Vec<CString> {
    existing(RESOLVER_DIRS.iter().map(Path::new))
}

fn existing<'a>(candidates: impl Iterator<Item = &'a Path>) -> Vec<CString> {
    let mut found: Vec<PathBuf> = Vec::new();
    for candidate in candidates {
        let Ok(real) = std::fs::canonicalize(candidate) else {
            continue;
        };
        if real.is_dir() && real != Path::new("/") && !found.contains(&real) {
            found.push(real);
        }
    }
    found
        .into_iter()
        .filter_map(|path| CString::new(path.as_os_str().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_existing_directory_once_by_its_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("nscd");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("run-nscd");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let candidates = [
            real.clone(),
            link,
            dir.path().join("missing"),
            dir.path().join("file"),
        ];
        let found = existing(candidates.iter().map(PathBuf::as_path));
        let real = std::fs::canonicalize(real).unwrap();
        assert_eq!(found, [CString::new(real.as_os_str().as_bytes()).unwrap()]);
    }
}
