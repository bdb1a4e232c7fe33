//! Finding the PostgreSQL programs a throw-away server needs.
//!
//! Search order: the directory in `PLUE_PG_BIN` (if set, it must hold everything — an explicit
//! setting never silently falls through), then `/usr/lib/postgresql/<version>/bin` with the
//! highest version first (Debian's layout, not on `PATH`), then `PATH`.
//!
//! Invariant: `initdb`, `postgres` and `pg_ctl` come from one directory, so the server
//! programs always agree on the version (a data directory made by one major version cannot
//! be opened by another). `psql` is only a client: it is taken from that directory when
//! present, else from the first place in the search order that has one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The environment variable naming a directory that holds the PostgreSQL programs.
pub(crate) const BIN_ENV: &str = "PLUE_PG_BIN";

/// Where Debian's `postgresql-<version>` packages put their programs.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The server programs, which must come from one directory.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "postgres", "pg_ctl"];

/// Absolute paths of the programs a [`crate::TempPostgres`] runs.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) initdb: PathBuf,
    pub(crate) postgres: PathBuf,
    pub(crate) pg_ctl: PathBuf,
    pub(crate) psql: PathBuf,
}

/// Finds the programs, or explains where it looked and how to install them.
pub(crate) fn find() -> Result<Binaries> {
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = SERVER_PROGRAMS
            .into_iter()
            .chain(["psql"])
            .filter(|program| executable(&dir.join(program)).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{BIN_ENV}={} lacks {}: point it at a PostgreSQL bin directory \
                 (such as {DEBIAN_ROOT}/15/bin) or unset it",
                dir.display(),
                missing.join(", ")
            );
        }
        return Ok(in_dir(&dir));
    }

    let candidates: Vec<PathBuf> = debian_bin_dirs()
        .into_iter()
        .chain(std::env::var_os("PATH").map_or_else(Vec::new, |path| {
            std::env::split_paths(&path).collect::<Vec<_>>()
        }))
        .collect();
    let server_dir = candidates.iter().find(|dir| {
        SERVER_PROGRAMS
            .iter()
            .all(|program| executable(&dir.join(program)).is_some())
    });
    let Some(server_dir) = server_dir else {
        bail!(
            "no PostgreSQL server programs (initdb, postgres, pg_ctl) in {DEBIAN_ROOT}/*/bin or \
             on PATH: install them with `apt-get install postgresql` (.ci/run does this), or set \
             {BIN_ENV} to the directory that holds them"
        );
    };
    let mut binaries = in_dir(server_dir);
    if executable(&binaries.psql).is_none() {
        match candidates
            .iter()
            .find_map(|dir| executable(&dir.join("psql")))
        {
            Some(psql) => binaries.psql = psql,
            None => bail!(
                "found the PostgreSQL server in {} but no `psql` there, in {DEBIAN_ROOT}/*/bin or \
                 on PATH: install it with `apt-get install postgresql-client`",
                server_dir.display()
            ),
        }
    }
    Ok(binaries)
}

fn in_dir(dir: &Path) -> Binaries {
    Binaries {
        initdb: dir.join("initdb"),
        postgres: dir.join("postgres"),
        pg_ctl: dir.join("pg_ctl"),
        psql: dir.join("psql"),
    }
}

/// `/usr/lib/postgresql/*/bin`, highest version first (`16` before `9.6`, which a plain
/// string sort would get wrong).
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// `Some(path)` when `path` is a regular file (after following links) with an execute bit.
fn executable(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).ok()?;
    (metadata.is_file() && metadata.permissions().mode() & 0o111 != 0).then(|| path.to_owned())
}
