//! Caret lines under `path:line:col` problems, as compilers print them: the problem, then
//! the line of the file it points at and a `^` under its column.
//!
//! ```text
//! ci.plue.py:3:32: Step.bash() got an unexpected keyword argument 'retrys'
//!     3 |         Step.bash("x", "true", retrys=2),
//!       |                                ^
//! ```
//!
//! Invariants: the quoted line is escaped like every diagnostic (no control character or
//! terminal escape from the file reaches the terminal) and cut to [`MAX_SHOWN`] characters
//! around the column; a problem without a place, a line past the file's end or a file that
//! cannot be read prints no excerpt, never a wrong one. The column is the evaluator's:
//! 1-based, in bytes of the line (Python's `col_offset` + 1).

use evaluator::plan::Location;
use evaluator::text::escape_line;
use evaluator::Diagnostic;

/// Most characters of a source line shown.
const MAX_SHOWN: usize = 120;
/// Largest file read back for an excerpt.
const MAX_FILE: u64 = 8 << 20;

/// The two excerpt lines for `location` in `source` (each ending in a newline), if the
/// line exists.
pub(crate) fn excerpt(source: &str, location: Location) -> Option<String> {
    let index = usize::try_from(location.line).ok()?.checked_sub(1)?;
    let line = source.lines().nth(index)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    // The column as a byte offset, on a character boundary, within the line.
    let mut at = usize::try_from(location.col)
        .ok()?
        .saturating_sub(1)
        .min(line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    // Escaped, as every diagnostic is: the caret goes under the escaped text.
    let (before, after) = line.split_at(at);
    let before: Vec<char> = escape_line(before).chars().collect();
    let after: Vec<char> = escape_line(after).chars().collect();
    // A window of MAX_SHOWN characters keeping the column in view.
    let skip = before.len().saturating_sub(MAX_SHOWN / 2);
    let shown_before: String = before[skip..].iter().collect();
    let room = MAX_SHOWN.saturating_sub(before.len() - skip);
    let mut shown_after: String = after.iter().take(room).collect();
    let lead = if skip > 0 { "…" } else { "" };
    if after.len() > room {
        shown_after.push('…');
    }
    let number = location.line.to_string();
    let gutter = " ".repeat(number.len());
    let pad = " ".repeat(lead.chars().count() + shown_before.chars().count());
    Some(format!(
        "{number:>4} | {lead}{shown_before}{shown_after}\n{gutter:>4} | {pad}^\n"
    ))
}

/// `problems` as they print: each problem's line, its excerpt (the file read by
/// `source_of(path)`, once per path), then, with `details`, its detail (the traceback).
pub(crate) fn render(
    problems: &[Diagnostic],
    details: bool,
    mut source_of: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut sources: std::collections::HashMap<String, Option<String>> =
        std::collections::HashMap::new();
    let mut text = String::new();
    for problem in problems {
        text.push_str(&problem.to_string());
        text.push('\n');
        if let Some(location) = problem.location {
            let source = sources
                .entry(problem.path.clone())
                .or_insert_with(|| source_of(&problem.path));
            if let Some(lines) = source.as_deref().and_then(|s| excerpt(s, location)) {
                text.push_str(&lines);
            }
        }
        if let Some(detail) = problem.detail.as_ref().filter(|_| details) {
            text.push_str(&evaluator::text::escape_lines(detail));
            text.push('\n');
        }
    }
    text
}

/// The file at `path` as the user named it, for excerpts: `None` when it cannot be read
/// or is too large to be a workflow file.
pub(crate) fn read_source(path: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32, col: u32) -> Location {
        Location { line, col }
    }

    #[test]
    fn the_caret_sits_under_the_column() {
        let source = "plan(\n    steps=[Step.bash(\"x\", retrys=2)],\n)\n";
        let shown = excerpt(source, at(2, 27)).unwrap();
        assert_eq!(
            shown,
            "   2 |     steps=[Step.bash(\"x\", retrys=2)],\n     |                           ^\n"
        );
        // Column 1 and a column past the end both point into the line.
        assert!(excerpt(source, at(1, 1)).unwrap().ends_with("| ^\n"));
        assert!(excerpt(source, at(3, 99)).unwrap().ends_with("|  ^\n"));
    }

    #[test]
    fn no_excerpt_without_the_line() {
        assert_eq!(excerpt("one\n", at(2, 1)), None);
        assert_eq!(excerpt("one\n", at(0, 1)), None);
        let problems = [Diagnostic::at("gone.plue.py", at(1, 1), "boom")];
        assert_eq!(
            render(&problems, true, |_| None),
            "gone.plue.py:1:1: boom\n"
        );
    }

    #[test]
    fn a_hostile_line_is_escaped_and_the_caret_follows_the_escapes() {
        let source = "x = \"\x1b[2J\u{202e}\" + boom\n";
        let col = source.find("boom").unwrap() as u32 + 1;
        let shown = excerpt(source, at(1, col)).unwrap();
        assert!(
            !shown.contains('\x1b') && !shown.contains('\u{202e}'),
            "{shown:?}"
        );
        let (first, second) = shown.split_once('\n').unwrap();
        let text_at = first.find("boom").unwrap();
        let caret_at = second.find('^').unwrap();
        assert_eq!(
            first[..text_at].chars().count(),
            second[..caret_at].chars().count(),
            "{shown}"
        );
    }

    #[test]
    fn long_lines_keep_the_column_in_view() {
        let source = format!("{}target{}\n", "a".repeat(500), "b".repeat(500));
        let shown = excerpt(&source, at(1, 501)).unwrap();
        let (first, second) = shown.split_once('\n').unwrap();
        assert!(first.chars().count() < MAX_SHOWN + 12, "{first}");
        let text_at = first.find("target").unwrap();
        let caret_at = second.find('^').unwrap();
        assert_eq!(
            first[..text_at].chars().count(),
            second[..caret_at].chars().count()
        );
    }

    #[test]
    fn each_file_is_read_once_and_details_follow_the_excerpt() {
        let mut reads = 0;
        let mut first = Diagnostic::at("w.plue.py", at(1, 3), "one");
        first.detail = Some("  in w.plue.py:1".into());
        let problems = [first, Diagnostic::at("w.plue.py", at(2, 1), "two")];
        let text = render(&problems, true, |_| {
            reads += 1;
            Some("a = 1\nb = 2\n".into())
        });
        assert_eq!(reads, 1);
        assert_eq!(
            text,
            "w.plue.py:1:3: one\n   1 | a = 1\n     |   ^\n  in w.plue.py:1\n\
             w.plue.py:2:1: two\n   2 | b = 2\n     | ^\n"
        );
    }
}
