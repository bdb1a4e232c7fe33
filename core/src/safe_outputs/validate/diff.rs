//! The diff as `git apply` reads it, strictly ([`check_diff`]): nothing before the first
//! `diff --git`, hunks consumed by their line counts, every header line known, every path
//! it names checked against `paths_allow` and the deny globs ([`PathRules`]); and what a
//! built commit changes checked by the same rules ([`check_changes`]).

use evaluator::glob::{compile, Pattern};
use evaluator::safe_outputs::SafeOutputs;

use super::{DiffRefused, LineProblem};

/// The compiled allow and deny globs of `so`.
struct PathRules {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl PathRules {
    fn new(so: &SafeOutputs) -> Result<PathRules, DiffRefused> {
        let compiled = |globs: Vec<&str>| -> Result<Vec<Pattern>, DiffRefused> {
            globs
                .into_iter()
                .map(|g| {
                    compile(g).map_err(|source| DiffRefused::Glob {
                        glob: g.to_owned(),
                        source,
                    })
                })
                .collect()
        };
        Ok(PathRules {
            allow: compiled(so.paths_allow.iter().map(String::as_str).collect())?,
            deny: compiled(so.deny())?,
        })
    }

    fn check(&self, path: &str) -> Result<(), DiffRefused> {
        if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
            return Err(DiffRefused::BadPath(path.to_owned()));
        }
        for part in path.split('/') {
            let folded = part.to_lowercase();
            let folded = folded.trim_end_matches(['.', ' ']);
            if part.is_empty() || part == "." || part == ".." {
                return Err(DiffRefused::BadPath(path.to_owned()));
            }
            if folded == ".git" {
                return Err(DiffRefused::InGitDirectory(path.to_owned()));
            }
        }
        let lower = path.to_lowercase();
        // As a Windows checkout names it: each part without its trailing dots and spaces.
        let trimmed: Vec<&str> = lower
            .split('/')
            .map(|part| part.trim_end_matches(['.', ' ']))
            .collect();
        let trimmed = trimmed.join("/");
        if self
            .deny
            .iter()
            .any(|d| d.is_match(path) || d.is_match(&lower) || d.is_match(&trimmed))
        {
            return Err(DiffRefused::Denied(path.to_owned()));
        }
        if !self.allow.iter().any(|a| a.is_match(path)) {
            return Err(DiffRefused::NotAllowed(path.to_owned()));
        }
        Ok(())
    }
}

/// Checks what a built commit changes — `(old mode, new mode, path)` as `git diff-tree -r
/// --no-renames` reports them, `000000` for a side that does not exist — by the rules the
/// diff's paths and modes were checked by, so that a diff `git apply` reads otherwise than
/// [`check_diff`] still changes no denied path and adds no link or submodule.
pub fn check_changes(
    changes: &[(String, String, String)],
    so: &SafeOutputs,
) -> Result<(), DiffRefused> {
    let rules = PathRules::new(so)?;
    for (old, new, path) in changes {
        if [old, new]
            .iter()
            .any(|m| matches!(m.as_str(), "120000" | "160000"))
        {
            return Err(DiffRefused::CommitLinkOrSubmodule {
                path: path.clone(),
                mode: new.clone(),
            });
        }
        rules.check(path)?;
    }
    Ok(())
}

/// Where the parser is in the diff.
enum At {
    Start,
    Header,
    Hunk { old: u64, new: u64 },
}

/// Checks every header and path of `diff`; the number of files it changes.
pub fn check_diff(diff: &str, so: &SafeOutputs) -> Result<usize, DiffRefused> {
    if let Some(at) = diff.find('\0') {
        return Err(DiffRefused::Nul {
            path: file_at(diff, at),
        });
    }
    let rules = PathRules::new(so)?;
    let mut at = At::Start;
    let mut files = 0;
    // The new side of the file whose part of the diff the line is in.
    let mut file: Option<String> = None;
    let last = diff.split('\n').count() - 1;
    for (number, line) in diff.split('\n').enumerate() {
        let at_line = |problem: LineProblem| DiffRefused::Line {
            line: number + 1,
            problem,
        };
        let bad = |problem: LineProblem| Err(at_line(problem));
        if let At::Hunk { old, new } = &mut at {
            if *old > 0 || *new > 0 {
                match line.as_bytes().first() {
                    Some(b' ') => {
                        *old = old.saturating_sub(1);
                        *new = new.saturating_sub(1);
                    }
                    Some(b'-') if *old > 0 => *old -= 1,
                    Some(b'+') if *new > 0 => *new -= 1,
                    Some(b'\\') => {}
                    _ => return bad(LineProblem::HunkEndsEarly),
                }
                continue;
            }
            if line.starts_with('\\') {
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            files += 1;
            let paths = git_line_paths(rest).ok_or(DiffRefused::UnreadableGitLine)?;
            for path in &paths {
                rules.check(path)?;
            }
            file = paths.last().cloned();
            at = At::Header;
            continue;
        }
        match at {
            At::Start => {
                if !line.is_empty() {
                    return bad(LineProblem::BeforeFirstFile);
                }
            }
            At::Header => {
                if line.starts_with("@@ ") {
                    at = hunk(line).ok_or_else(|| at_line(LineProblem::UnreadableHunkHeader))?;
                } else if line.is_empty() && number == last {
                    // The newline ending a file's headers with no hunk after them (an
                    // empty file added or removed, a mode changed).
                } else if line == "GIT binary patch" || line.starts_with("Binary files ") {
                    return Err(DiffRefused::Binary { path: file });
                } else {
                    header(line, &rules).map_err(at_line)?;
                }
            }
            At::Hunk { .. } => {
                if line.starts_with("@@ ") {
                    at = hunk(line).ok_or_else(|| at_line(LineProblem::UnreadableHunkHeader))?;
                } else if !line.is_empty() {
                    return bad(LineProblem::OutsideHunk);
                }
            }
        }
    }
    Ok(files)
}

/// `@@ -a,b +c,d @@`: the old and new line counts.
fn hunk(line: &str) -> Option<At> {
    let mut parts = line.split(' ');
    let _ = parts.next();
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((_, n)) => n.parse().ok(),
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    let old = count(parts.next()?.strip_prefix('-')?)?;
    let new = count(parts.next()?.strip_prefix('+')?)?;
    Some(At::Hunk { old, new })
}

/// One extended header line of a file's diff.
fn header(line: &str, rules: &PathRules) -> Result<(), LineProblem> {
    const MODES: [&str; 6] = [
        "old mode ",
        "new mode ",
        "deleted file mode ",
        "new file mode ",
        "similarity index ",
        "dissimilarity index ",
    ];
    let path_headers = [
        "--- ",
        "+++ ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
    ];
    // The mode is the last word of a mode line or of an `index a..b MODE` line.
    let mode = if line.starts_with("index ") || MODES[..4].iter().any(|m| line.starts_with(m)) {
        line.rsplit(' ').next()
    } else {
        None
    };
    if matches!(mode, Some("120000" | "160000")) {
        return Err(LineProblem::LinkOrSubmodule);
    }
    if let Some(prefix) = path_headers.iter().find(|p| line.starts_with(**p)) {
        let raw = &line[prefix.len()..];
        if raw == "/dev/null" {
            return Ok(());
        }
        let path = unquote(raw).ok_or(LineProblem::UnreadablePath)?;
        let path = if prefix.starts_with("---") || prefix.starts_with("+++") {
            let stripped = path
                .strip_prefix("a/")
                .or_else(|| path.strip_prefix("b/"))
                .ok_or(LineProblem::NoSidePrefix)?;
            stripped.to_owned()
        } else {
            path
        };
        return rules
            .check(&path)
            .map_err(|e| LineProblem::Path(Box::new(e)));
    }
    if MODES.iter().any(|m| line.starts_with(m)) || line.starts_with("index ") {
        return Ok(());
    }
    Err(LineProblem::UnknownHeader(
        line.chars().take(60).collect::<String>(),
    ))
}

/// The paths of a `diff --git a/X b/Y` line (without the prefixes), quoted or not. An
/// unquoted line with spaces can be read several ways (`a/x b/y b/z`): every reading's
/// paths are returned, so each is checked.
fn git_line_paths(rest: &str) -> Option<Vec<String>> {
    if rest.starts_with('"') {
        let end = quoted_end(rest)?;
        let first = unquote(&rest[..end])?;
        let second = rest[end..].strip_prefix(' ')?;
        let second = if second.starts_with('"') {
            unquote(second)?
        } else {
            second.to_owned()
        };
        return Some(vec![
            first.strip_prefix("a/")?.to_owned(),
            second.strip_prefix("b/")?.to_owned(),
        ]);
    }
    if let Some(q) = rest.find(" \"b/") {
        let second = unquote(&rest[q + 1..])?;
        return Some(vec![
            rest[..q].strip_prefix("a/")?.to_owned(),
            second.strip_prefix("b/")?.to_owned(),
        ]);
    }
    let first = rest.strip_prefix("a/")?;
    let mut paths = Vec::new();
    for (at, _) in first.match_indices(" b/") {
        paths.push(first[..at].to_owned());
        paths.push(first[at + 3..].to_owned());
    }
    (!paths.is_empty()).then_some(paths)
}

/// The byte just after the closing quote of the C-quoted string starting `text`.
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

/// A path as git writes it: as it is, or C-quoted (`"a\tb\303\251"`).
fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Some(text.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        i += 2;
        out.push(match next {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'v' => 11,
            b'"' => b'"',
            b'\\' => b'\\',
            b'0'..=b'3' => {
                let digits = bytes.get(i - 1..i + 2)?;
                i += 2;
                u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()?
            }
            _ => return None,
        });
    }
    String::from_utf8(out).ok()
}

/// Each file's part of `diff` (from its `diff --git` line to the next), with the path of
/// its new side when the line can be read.
pub(super) fn file_parts(diff: &str) -> Vec<(Option<String>, &str)> {
    let mut starts: Vec<usize> = diff
        .match_indices("\ndiff --git ")
        .map(|(at, _)| at + 1)
        .collect();
    if diff.starts_with("diff --git ") {
        starts.insert(0, 0);
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(diff.len());
            let part = &diff[start..end];
            (file_of_header(part), part)
        })
        .collect()
}

/// The new side's path of the `diff --git` line `text` starts with.
fn file_of_header(text: &str) -> Option<String> {
    let line = text.split('\n').next()?;
    git_line_paths(line.strip_prefix("diff --git ")?)?.pop()
}

/// The file of `diff` whose part holds byte `at`.
fn file_at(diff: &str, at: usize) -> Option<String> {
    let start = match diff[..at].rfind("\ndiff --git ") {
        Some(newline) => newline + 1,
        None if diff.starts_with("diff --git ") => 0,
        None => return None,
    };
    file_of_header(&diff[start..])
}
