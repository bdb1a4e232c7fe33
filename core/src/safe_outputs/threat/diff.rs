//! A pull request's diff read into what the rules look at: each file's paths (both sides
//! of a rename or copy), its modes, and the lines it adds and removes with their numbers.
//!
//! Invariants: lenient where the validator is strict (the validator already refused a diff
//! `git apply` would read otherwise; the corpus tests feed diffs straight here) — a line
//! this reader cannot place is kept as added text of the current file rather than dropped,
//! so nothing goes unscanned; every path named anywhere (`diff --git`, `---`/`+++`,
//! `rename`/`copy from`/`to`) is one of the file's [`FileChange::paths`].

/// One line of a file's change: its number in the new content (for added and context
/// lines) or the old one (removed lines), and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) number: u32,
    pub(crate) text: String,
}

/// One file's part of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileChange {
    /// The new side's path (the old one's for a deleted file), as the diff names it.
    pub(crate) path: String,
    /// Every path the file's part names (both sides, renames and copies).
    pub(crate) paths: Vec<String>,
    /// The new side's mode when the diff gives one (`100755` for an executable file).
    pub(crate) new_mode: Option<String>,
    pub(crate) old_mode: Option<String>,
    pub(crate) created: bool,
    pub(crate) deleted: bool,
    pub(crate) added: Vec<Line>,
    pub(crate) removed: Vec<Line>,
}

/// The files of `diff`.
pub(crate) fn files(diff: &str) -> Vec<FileChange> {
    let mut files: Vec<FileChange> = Vec::new();
    let mut new_line: u32 = 0;
    let mut old_line: u32 = 0;
    let mut in_hunk = false;
    for raw in diff.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix("diff --git ") {
            let mut file = FileChange::default();
            for path in git_line_paths(rest) {
                push_path(&mut file, path);
            }
            file.path = file.paths.last().cloned().unwrap_or_default();
            files.push(file);
            in_hunk = false;
            continue;
        }
        if files.is_empty() {
            // Text before any file (the validator refuses it): scanned as a file of its own.
            files.push(FileChange::default());
        }
        let file = files.last_mut().expect("a file was pushed");
        if in_hunk {
            match raw.as_bytes().first() {
                Some(b'+') if !raw.starts_with("+++ ") => {
                    file.added.push(Line {
                        number: new_line,
                        text: raw[1..].to_owned(),
                    });
                    new_line += 1;
                    continue;
                }
                Some(b'-') if !raw.starts_with("--- ") => {
                    file.removed.push(Line {
                        number: old_line,
                        text: raw[1..].to_owned(),
                    });
                    old_line += 1;
                    continue;
                }
                Some(b' ') => {
                    new_line += 1;
                    old_line += 1;
                    continue;
                }
                Some(b'\\') => continue,
                _ => {}
            }
        }
        if let Some((old, new)) = hunk_starts(raw) {
            in_hunk = true;
            old_line = old;
            new_line = new;
            continue;
        }
        let header = |prefix: &str| raw.strip_prefix(prefix).map(str::to_owned);
        if let Some(mode) = header("new file mode ") {
            file.created = true;
            file.new_mode = Some(mode);
        } else if let Some(mode) = header("deleted file mode ") {
            file.deleted = true;
            file.old_mode = Some(mode);
        } else if let Some(mode) = header("new mode ") {
            file.new_mode = Some(mode);
        } else if let Some(mode) = header("old mode ") {
            file.old_mode = Some(mode);
        } else if let Some(index) = header("index ") {
            if let Some((_, mode)) = index.split_once(' ') {
                file.new_mode.get_or_insert(mode.to_owned());
            }
        } else if let Some(path) = header("--- ").or_else(|| header("+++ ")) {
            if path != "/dev/null" {
                let path = unquote(&path);
                let path = path
                    .strip_prefix("a/")
                    .or_else(|| path.strip_prefix("b/"))
                    .unwrap_or(&path)
                    .to_owned();
                push_path(file, path);
            }
        } else if let Some(path) = ["rename from ", "rename to ", "copy from ", "copy to "]
            .iter()
            .find_map(|p| header(p))
        {
            push_path(file, unquote(&path));
        } else if !raw.is_empty()
            && !raw.starts_with("similarity index ")
            && !raw.starts_with("dissimilarity index ")
        {
            // A line this reader cannot place: scanned all the same.
            file.added.push(Line {
                number: 0,
                text: raw.to_owned(),
            });
        }
    }
    for file in &mut files {
        if file.path.is_empty() {
            file.path = file.paths.last().cloned().unwrap_or_default();
        }
    }
    files
}

fn push_path(file: &mut FileChange, path: String) {
    if !path.is_empty() && !file.paths.contains(&path) {
        file.paths.push(path);
    }
}

/// `@@ -a,b +c,d @@`: the first old and new line numbers.
fn hunk_starts(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(' ')?;
    let first = |range: &str| range.split(',').next()?.parse::<u32>().ok();
    Some((first(old)?, first(new)?))
}

/// The paths of a `diff --git a/X b/Y` line without their prefixes; every reading of an
/// unquoted line with spaces.
fn git_line_paths(rest: &str) -> Vec<String> {
    let mut paths = Vec::new();
    if rest.starts_with('"') {
        if let Some(end) = quoted_end(rest) {
            paths.push(unquote(&rest[..end]));
            paths.push(unquote(rest[end..].trim_start()));
        }
    } else {
        let first = rest.strip_prefix("a/").unwrap_or(rest);
        for (at, _) in first.match_indices(" b/") {
            paths.push(first[..at].to_owned());
            paths.push(first[at + 3..].to_owned());
        }
        if let Some(q) = rest.find(" \"") {
            paths.push(unquote(&rest[q + 1..]));
        }
    }
    paths
        .into_iter()
        .map(|p| {
            p.strip_prefix("a/")
                .or_else(|| p.strip_prefix("b/"))
                .map(str::to_owned)
                .unwrap_or(p)
        })
        .collect()
}

/// The byte after the closing quote of the C-quoted string `text` starts with.
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A path as git writes it, C-quoted or not; an escape it cannot read is kept as it is.
fn unquote(text: &str) -> String {
    let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return text.to_owned();
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        i += 2;
        match next {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0'..=b'3' if i + 1 < bytes.len() + 1 => {
                let digits = inner.get(i - 1..i + 2).unwrap_or("");
                match u8::from_str_radix(digits, 8) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(next),
                }
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_reads_into_files_lines_and_modes() {
        let diff = "diff --git a/src/a.rs b/src/a.rs\nindex 1..2 100644\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1,2 +1,3 @@\n keep\n-old\n+new\n+more\ndiff --git a/run.sh b/run.sh\nnew file mode 100755\nindex 0..3\n--- /dev/null\n+++ b/run.sh\n@@ -0,0 +1 @@\n+echo hi\ndiff --git a/x b/y\nsimilarity index 90%\nrename from x\nrename to \"y\\303\\251\"\n";
        let files = files(diff);
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].path, "src/a.rs");
        assert_eq!(files[0].added[0].number, 2);
        assert_eq!(files[0].added[1].text, "more");
        assert_eq!(files[0].removed[0].text, "old");
        assert_eq!(files[1].new_mode.as_deref(), Some("100755"));
        assert!(files[1].created);
        assert!(files[2].paths.contains(&"x".to_owned()));
        assert!(
            files[2].paths.contains(&"yé".to_owned()),
            "{:?}",
            files[2].paths
        );
    }
}
