//! Executable bits (`executable-file`): a file the pull request adds as executable, or
//! whose mode it changes to executable, is something a person or a tool may run; it needs a
//! writer's look. A symbolic link (`symlink`) needs one too, and one that leads out of the
//! repository (an absolute target, or more `..` than the link is deep) is refused: it
//! reads or overwrites the runner's files. (The validator refuses links and submodules
//! before this check; this is the check's own guard.)

use super::super::verdict::{Finding, Severity};
use super::Subject;

pub(crate) fn check(subject: &Subject<'_>, found: &mut Vec<Finding>) {
    for file in &subject.files {
        let executable = |mode: &Option<String>| {
            mode.as_deref()
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
                .is_some_and(|m| m & 0o111 != 0)
        };
        if !file.deleted && file.new_mode.as_deref().map(str::trim) == Some("120000") {
            let target = file
                .added
                .first()
                .map(|l| l.text.trim())
                .unwrap_or_default();
            let escapes = escapes_the_repository(&file.path, target);
            found.push(Finding::new(
                "symlink",
                if escapes {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                Some(&file.path),
                None,
                if escapes {
                    format!("adds a symbolic link out of the repository (to {target:?})")
                } else {
                    format!("adds a symbolic link (to {target:?})")
                },
            ));
            continue;
        }
        if file.deleted || !executable(&file.new_mode) {
            continue;
        }
        let was = executable(&file.old_mode);
        let changed_to = file.old_mode.is_some() && !was;
        if file.created || changed_to {
            let what = if file.created {
                "adds an executable file"
            } else {
                "makes the file executable"
            };
            found.push(Finding::new(
                "executable-file",
                Severity::Warning,
                Some(&file.path),
                None,
                format!(
                    "{what} (mode {})",
                    file.new_mode.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
}

/// Whether a link at `path` to `target` leads out of the repository.
fn escapes_the_repository(path: &str, target: &str) -> bool {
    let target = target.replace('\\', "/");
    if target.starts_with('/') || target.starts_with('~') || target.contains(':') {
        return true;
    }
    let mut depth = path.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}
