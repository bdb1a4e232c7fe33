//! User-facing problems with a workflow file, printed as `path:line:col: message`.
//!
//! A [`Diagnostic`] is what `plue check` prints and what a failed evaluation carries into
//! the API. Its `Display` is the one format users see; `detail` holds an optional short
//! traceback into the user's own file, never into Plue's internals. [`Found`] collects a
//! file's problems, keeping a bounded number; [`Budget`] (in `suggest.rs`) bounds the "did
//! you mean" work and the time of validating one plan.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::Location;
use crate::text::{escape_line, redact_host_paths};

mod suggest;
pub use suggest::{
    did_you_mean, suggestion, Budget, Work, MAX_CELLS, MAX_COMPARISONS, MAX_SUGGESTED_LEN,
    MAX_SUGGESTIONS,
};

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub path: String,
    /// Where in the file, when the problem has a place.
    pub location: Option<Location>,
    pub message: String,
    /// A short traceback through the user's file, innermost call last.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl Diagnostic {
    pub fn at(path: impl Into<String>, location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            location: Some(location),
            message: message.into(),
            detail: None,
        }
    }

    pub fn whole_file(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            location: None,
            message: message.into(),
            detail: None,
        }
    }
}

impl Diagnostic {
    /// This diagnostic made safe to show: message one line with user text escaped, cut to
    /// [`MAX_MESSAGE_LEN`], no host path; detail lines escaped and cut likewise.
    pub fn cleaned(self) -> Diagnostic {
        let clean = |text: &str, max: usize| -> String {
            let text = redact_host_paths(text);
            let text = escape_line(&text);
            cut(&text, max)
        };
        Diagnostic {
            path: cut(&escape_line(&self.path), MAX_MESSAGE_LEN),
            location: self.location,
            message: clean(&self.message, MAX_MESSAGE_LEN),
            detail: self.detail.map(|detail| {
                detail
                    .split('\n')
                    .take(MAX_DETAIL_LINES)
                    .map(|line| clean(line, MAX_MESSAGE_LEN))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        }
    }
}

/// Longest message (and detail line) shown, in bytes.
pub const MAX_MESSAGE_LEN: usize = 2000;
/// Most lines of a detail (traceback) shown.
const MAX_DETAIL_LINES: usize = 24;

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Always one line: the path and message are escaped again here, so a diagnostic built
/// anywhere can never print a newline or a terminal escape.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = escape_line(&self.path);
        let message = escape_line(&self.message);
        match self.location {
            Some(Location { line, col }) => write!(f, "{path}:{line}:{col}: {message}"),
            None => write!(f, "{path}: {message}"),
        }
    }
}

/// Most problems reported for one file; the rest are counted in a last line.
pub const MAX_DIAGNOSTICS: usize = 50;

/// The problems found in one file, in file order: at most [`MAX_DIAGNOSTICS`] are kept
/// (the first by place, ties in the order found), the others only counted, so a plan
/// with a hundred thousand problems costs fifty messages of memory, not all of them.
#[derive(Debug)]
pub struct Found {
    path: String,
    kept: Vec<Diagnostic>,
    total: usize,
}

impl Found {
    pub fn new(path: &str) -> Found {
        Found {
            path: path.to_string(),
            kept: Vec::new(),
            total: 0,
        }
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A problem at `location`.
    pub fn add(&mut self, location: Location, message: String) {
        let diagnostic = Diagnostic::at(self.path.as_str(), location, message);
        self.push(diagnostic);
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.total += 1;
        self.kept.push(diagnostic);
        if self.kept.len() >= 2 * MAX_DIAGNOSTICS {
            self.compact();
        }
    }

    /// How many problems were found, kept or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Keeps the first [`MAX_DIAGNOSTICS`] by place. The sort is stable and what was kept
    /// was found earlier, so this keeps what sorting every problem would.
    fn compact(&mut self) {
        self.kept
            .sort_by_key(|d| d.location.map(|l| (l.line, l.col)));
        self.kept.truncate(MAX_DIAGNOSTICS);
    }

    /// In file order; past [`MAX_DIAGNOSTICS`], the last line says how many more.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.compact();
        if self.total > MAX_DIAGNOSTICS {
            let shown = MAX_DIAGNOSTICS - 1;
            self.kept.truncate(shown);
            let more = self.total - shown;
            self.kept.push(Diagnostic::whole_file(
                self.path.as_str(),
                format!("and {more} more problems"),
            ));
        }
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_location() {
        let d = Diagnostic::at("a.plue.py", Location { line: 3, col: 7 }, "boom");
        assert_eq!(d.to_string(), "a.plue.py:3:7: boom");
        assert_eq!(
            Diagnostic::whole_file("a.plue.py", "boom").to_string(),
            "a.plue.py: boom"
        );
    }

    #[test]
    fn messages_are_one_line_with_user_text_escaped() {
        let d = Diagnostic::at(
            "a.plue.py",
            Location { line: 1, col: 1 },
            "unknown step 'x\nb.plue.py:1:1: fine\x1b[2K'",
        );
        assert_eq!(
            d.to_string(),
            "a.plue.py:1:1: unknown step 'x\\nb.plue.py:1:1: fine\\x1b[2K'"
        );
        let mut leaky = Diagnostic::whole_file(
            "a.plue.py",
            "ValueError: from /usr/lib/python3.11/json/decoder.py",
        );
        leaky.detail = Some("line 1\n  x = '\x1b'".into());
        let clean = leaky.cleaned();
        assert_eq!(clean.message, "ValueError: from <python>");
        assert_eq!(clean.detail.as_deref(), Some("line 1\n  x = '\\x1b'"));
    }

    #[test]
    fn found_keeps_the_first_problems_by_place_and_counts_the_rest() {
        let mut found = Found::new("w");
        for i in (0..10_000u32).rev() {
            found.add(
                Location {
                    line: i + 1,
                    col: 1,
                },
                format!("problem {i}"),
            );
            assert!(found.kept.len() < 2 * MAX_DIAGNOSTICS);
        }
        found.add(Location { line: 1, col: 1 }, "second at line 1".into());
        assert_eq!(found.total(), 10_001);
        let shown = found.finish();
        assert_eq!(shown.len(), MAX_DIAGNOSTICS);
        assert_eq!(shown[0].message, "problem 0");
        assert_eq!(
            shown[1].message, "second at line 1",
            "ties in the order found"
        );
        assert_eq!(shown[48].message, "problem 47");
        assert_eq!(shown[49].message, "and 9952 more problems");
    }
}
