//! Executable bits (`executable-file`): a file the pull request adds as executable, or
//! whose mode it changes to executable, is something a person or a tool may run; it needs a
//! writer's look. (Links and submodules are refused by the validator before this check.)

use super::super::verdict::{Finding, Severity};
use super::Subject;

pub(crate) fn check(subject: &Subject<'_>, found: &mut Vec<Finding>) {
    for file in &subject.files {
        let executable = |mode: &Option<String>| {
            mode.as_deref()
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
                .is_some_and(|m| m & 0o111 != 0)
        };
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
