//! Path confinement for every tool: what the model names is relative to the workspace;
//! absolute paths, `..` and NUL are refused as written, and what remains is resolved with
//! the deepest existing ancestor canonicalised, so a symbolic link that leads out is
//! refused too.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

use super::Toolbox;

impl Toolbox {
    /// `requested` resolved to an existing path inside the workspace (links followed).
    pub(super) fn resolve_existing(&self, requested: &str) -> Result<PathBuf, String> {
        let rel = lexical(requested)?;
        let full = self.root.join(&rel);
        let real = match full.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Say "outside" rather than "missing" for a dangling link that leads out.
                self.check_ancestors(requested, &full)?;
                if full.symlink_metadata().is_ok() {
                    return Err(format!("{requested} is a broken symbolic link"));
                }
                return Err(format!("{requested} does not exist"));
            }
            Err(e) => return Err(format!("{requested}: {e}")),
        };
        if !real.starts_with(&self.root) {
            return Err(outside(requested));
        }
        Ok(real)
    }

    /// Where `requested` may be written: inside the workspace, not a symlink, with its
    /// deepest existing ancestor inside too.
    pub(super) fn resolve_for_write(&self, requested: &str) -> Result<PathBuf, String> {
        let rel = lexical(requested)?;
        if rel.as_os_str().is_empty() {
            return Err("write_file needs the path of a file".into());
        }
        if has_git(&rel) {
            return Err(git_refused(requested));
        }
        let full = self.root.join(&rel);
        if let Ok(meta) = full.symlink_metadata() {
            if meta.file_type().is_symlink() {
                return Err(symlink_refused(requested));
            }
            if meta.is_dir() {
                return Err(format!("{requested} is a directory"));
            }
            if !meta.is_file() {
                return Err(not_regular(requested));
            }
        }
        let parent = full.parent().unwrap_or(&self.root);
        self.check_ancestors(requested, parent)?;
        Ok(full)
    }

    /// Refuses `path` when its deepest existing ancestor (itself included) resolves
    /// outside the workspace.
    pub(super) fn check_ancestors(&self, requested: &str, path: &Path) -> Result<(), String> {
        for ancestor in path.ancestors() {
            if ancestor.symlink_metadata().is_err() {
                continue;
            }
            return match ancestor.canonicalize() {
                Ok(real) if real.starts_with(&self.root) => Ok(()),
                Ok(_) => Err(outside(requested)),
                // A dangling link: where it points is unknown, so it is not followed.
                Err(_) if ancestor == path => Err(outside(requested)),
                Err(e) => Err(format!("{requested}: {e}")),
            };
        }
        Err(outside(requested))
    }
}

/// `requested` as a relative path without `.` components; absolute paths, `..` and NUL
/// are refused as written.
pub(super) fn lexical(requested: &str) -> Result<PathBuf, String> {
    if requested.contains('\0') {
        return Err("a path must not contain NUL characters".into());
    }
    let path = Path::new(requested);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{requested}: '..' is not allowed; paths are relative to the workspace root"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{requested}: absolute paths are not allowed; paths are relative to the \
                     workspace root"
                ))
            }
        }
    }
    Ok(clean)
}

pub(super) fn outside(requested: &str) -> String {
    format!("{requested} leads outside the workspace; only paths inside it can be used")
}

pub(super) fn not_regular(requested: &str) -> String {
    format!("{requested} is not a regular file (a FIFO, socket or device); it is not opened")
}

/// Whether `rel` has a `.git` component, in any case (case-insensitive file systems).
pub(super) fn has_git(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(part) => part.eq_ignore_ascii_case(".git"),
        _ => false,
    })
}

pub(super) fn git_refused(requested: &str) -> String {
    format!(
        "{requested} is inside .git; write_file does not write there (git's config and hooks \
         would run commands)"
    )
}

pub(super) fn symlink_refused(requested: &str) -> String {
    format!("{requested} is a symbolic link; write_file does not write through links")
}

/// `target` (inside `root`) as the relative argument a command run in `root` needs.
pub(super) fn relative_arg(root: &Path, target: &Path) -> String {
    rel_or_dot(target.strip_prefix(root).unwrap_or(Path::new(".")))
}

pub(super) fn rel_or_dot(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        format!("./{}", rel.display())
    }
}

/// The schema of a path argument.
pub(super) fn path_schema(what: &str) -> Value {
    json!({"type": "string", "description": what})
}
