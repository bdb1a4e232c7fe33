//! Resolving a step's `prompt_file`: `builtin:NAME`, or a path relative to the workspace
//! root of the step.
//!
//! The reference comes from a workflow file, which anyone who can open a pull request can
//! write, so it is untrusted. Invariants: an absolute path, a path whose `..` climbs above
//! the root, and a path that leaves the root through a symbolic link are all refused; the
//! file read is the canonical path that was checked to lie inside the canonical root. This
//! assumes nothing rewrites the workspace between the check and the read — prompts are
//! resolved before a step's own code runs there.

use std::path::{Component, Path, PathBuf};

use crate::{builtin, Prompt, PromptError};

/// The prefix of a reference to a built-in prompt: `builtin:code-review`.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Loads the prompt `reference` names: `builtin:NAME`, or a file relative to
/// `workspace_root` that must stay inside it.
pub fn resolve(reference: &str, workspace_root: &Path) -> Result<Prompt, PromptError> {
    if let Some(name) = reference.strip_prefix(BUILTIN_PREFIX) {
        return builtin(name).ok_or_else(|| PromptError::UnknownBuiltin {
            name: name.to_string(),
        });
    }
    let path = confine(reference, workspace_root)?;
    Prompt::load_as(&path, reference)
}

/// The text of the prompt file `reference` names inside `root` (confined as [`resolve`]
/// confines it, and checked to parse as a prompt), or `None` for `builtin:NAME`. This is
/// what the engine sends a runner when the file lives outside the step's workspace.
pub fn resolve_text(reference: &str, root: &Path) -> Result<Option<String>, PromptError> {
    if reference.starts_with(BUILTIN_PREFIX) {
        return Ok(None);
    }
    let path = confine(reference, root)?;
    let text = Prompt::read_text(&path, reference)?;
    Prompt::parse(reference, &text)?;
    Ok(Some(text))
}

/// The canonical path of `reference` inside `root`, or why it is refused.
fn confine(reference: &str, root: &Path) -> Result<PathBuf, PromptError> {
    let refuse = |why: &'static str| PromptError::BadReference {
        reference: reference.to_string(),
        why,
    };
    if reference.is_empty() {
        return Err(refuse(
            "is empty: give a path relative to the workspace root, or builtin:NAME",
        ));
    }
    let relative = Path::new(reference);
    // Lexical check first, so `../x` is refused whether or not `x` exists.
    let mut depth = 0usize;
    for component in relative.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(refuse(
                    "is an absolute path: give a path relative to the workspace root",
                ))
            }
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| refuse("leads out of the workspace through `..`"))?;
            }
            Component::Normal(_) => depth += 1,
        }
    }
    let root = root.canonicalize().map_err(|source| PromptError::Read {
        path: root.display().to_string(),
        source,
    })?;
    let path = root
        .join(relative)
        .canonicalize()
        .map_err(|source| PromptError::Read {
            path: reference.to_string(),
            source,
        })?;
    if !path.starts_with(&root) {
        return Err(refuse("leads out of the workspace through a symbolic link"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "---\nname: local\ndescription: A local prompt\n---\nHi\n";

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ws/prompts")).unwrap();
        std::fs::write(dir.path().join("ws/prompts/local.md"), PROMPT).unwrap();
        std::fs::write(dir.path().join("outside.md"), PROMPT).unwrap();
        dir
    }

    fn refused(reference: &str, root: &Path) -> String {
        match resolve(reference, root) {
            Ok(prompt) => panic!("{reference} resolved to {prompt:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn resolves_builtins() {
        let dir = workspace();
        let prompt = resolve("builtin:code-review", dir.path()).unwrap();
        assert_eq!(prompt.name, "code-review");
        assert_eq!(
            refused("builtin:nope", dir.path()),
            "unknown built-in prompt `builtin:nope` (built-ins: bug-fix, code-review)"
        );
    }

    #[test]
    fn resolves_paths_inside_the_workspace() {
        let dir = workspace();
        let root = dir.path().join("ws");
        let prompt = resolve("prompts/local.md", &root).unwrap();
        assert_eq!(prompt.name, "local");
        assert_eq!(prompt.source_name(), "prompts/local.md");
        // `..` that stays inside the root is fine.
        let prompt = resolve("./prompts/../prompts/local.md", &root).unwrap();
        assert_eq!(prompt.name, "local");
    }

    #[test]
    fn refuses_parent_directory_escapes() {
        let dir = workspace();
        let root = dir.path().join("ws");
        assert_eq!(
            refused("../outside.md", &root),
            "prompt file `../outside.md` leads out of the workspace through `..`"
        );
        assert_eq!(
            refused("prompts/../../outside.md", &root),
            "prompt file `prompts/../../outside.md` leads out of the workspace through `..`"
        );
        assert_eq!(
            refused("../x", &root),
            "prompt file `../x` leads out of the workspace through `..`"
        );
    }

    #[test]
    fn refuses_absolute_paths() {
        let dir = workspace();
        assert_eq!(
            refused("/etc/passwd", dir.path()),
            "prompt file `/etc/passwd` is an absolute path: give a path relative to the \
             workspace root"
        );
        let inside = dir.path().join("ws/prompts/local.md");
        assert!(refused(inside.to_str().unwrap(), &dir.path().join("ws"))
            .ends_with("is an absolute path: give a path relative to the workspace root"));
    }

    #[test]
    fn refuses_symlinks_leading_out() {
        let dir = workspace();
        let root = dir.path().join("ws");
        std::os::unix::fs::symlink(dir.path().join("outside.md"), root.join("prompts/link.md"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        assert_eq!(
            refused("prompts/link.md", &root),
            "prompt file `prompts/link.md` leads out of the workspace through a symbolic link"
        );
        assert_eq!(
            refused("up/outside.md", &root),
            "prompt file `up/outside.md` leads out of the workspace through a symbolic link"
        );
    }

    #[test]
    fn follows_symlinks_that_stay_inside() {
        let dir = workspace();
        let root = dir.path().join("ws");
        std::os::unix::fs::symlink(root.join("prompts/local.md"), root.join("alias.md")).unwrap();
        assert_eq!(resolve("alias.md", &root).unwrap().name, "local");
    }

    #[test]
    fn a_missing_file_or_empty_reference_is_an_error() {
        let dir = workspace();
        let err = refused("prompts/none.md", dir.path());
        assert!(
            err.starts_with("prompts/none.md: cannot read the prompt file: "),
            "{err}"
        );
        assert_eq!(
            refused("", dir.path()),
            "prompt file `` is empty: give a path relative to the workspace root, or builtin:NAME"
        );
    }

    #[test]
    fn a_directory_is_not_a_prompt() {
        let dir = workspace();
        assert_eq!(
            refused("ws/prompts", dir.path()),
            "ws/prompts: not a regular file"
        );
    }
    #[test]
    fn resolve_text_reads_what_resolve_reads_and_refuses_what_it_refuses() {
        let dir = workspace();
        let root = dir.path().join("ws");
        assert_eq!(resolve_text("builtin:code-review", &root).unwrap(), None);
        assert_eq!(
            resolve_text("prompts/local.md", &root).unwrap().as_deref(),
            Some(PROMPT)
        );
        let refused = |reference: &str| resolve_text(reference, &root).unwrap_err().to_string();
        assert_eq!(
            refused("../outside.md"),
            "prompt file `../outside.md` leads out of the workspace through `..`"
        );
        assert!(refused("/etc/passwd").contains("is an absolute path"));
        std::os::unix::fs::symlink(dir.path().join("outside.md"), root.join("prompts/link.md"))
            .unwrap();
        assert_eq!(
            refused("prompts/link.md"),
            "prompt file `prompts/link.md` leads out of the workspace through a symbolic link"
        );
        // A file that is not a prompt is refused before its text goes anywhere.
        std::fs::write(root.join("prompts/bad.md"), "no frontmatter").unwrap();
        assert!(resolve_text("prompts/bad.md", &root).is_err());
    }
}
