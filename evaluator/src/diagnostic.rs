//! User-facing problems with a workflow file, printed as `path:line:col: message`.
//!
//! A [`Diagnostic`] is what `plue check` prints and what a failed evaluation carries into
//! the API. Its `Display` is the one format users see; `detail` holds an optional short
//! traceback into the user's own file, never into Plue's internals.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::Location;
use crate::text::{escape_line, redact_host_paths};

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

/// Longest name a suggestion is computed for; longer names get none (the edit distance
/// is quadratic in the length).
pub const MAX_SUGGESTED_LEN: usize = 64;
/// Most candidates compared.
const MAX_CANDIDATES: usize = 1000;

/// Renders "did you mean 'x'?" for the closest candidate, if one is close enough. Bounded:
/// names longer than [`MAX_SUGGESTED_LEN`] are neither looked up nor offered.
pub fn suggestion<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if wrong.len() > MAX_SUGGESTED_LEN {
        return None;
    }
    candidates
        .into_iter()
        .take(MAX_CANDIDATES)
        .filter(|c| c.len() <= MAX_SUGGESTED_LEN)
        .map(|c| (strsim::damerau_levenshtein(wrong, c), c))
        .filter(|(distance, c)| {
            *distance > 0 && *distance <= (c.len().max(wrong.len()) / 3).max(1) + 1
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `" (did you mean 'x'?)"` or the empty string.
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggestion(wrong, candidates)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
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
    fn suggestions_have_bounded_cost() {
        let long = "x".repeat(520_000);
        let started = std::time::Instant::now();
        assert_eq!(suggestion(&long, ["x", "xx"]), None);
        assert_eq!(suggestion("xx", [long.as_str()]), None);
        assert!(started.elapsed().as_millis() < 50);
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["depends_on", "timeout", "retries"];
        assert_eq!(suggestion("depend_on", names), Some("depends_on"));
        assert_eq!(suggestion("retires", names), Some("retries"));
        assert_eq!(suggestion("colour", names), None);
        assert_eq!(
            did_you_mean("tset", ["test", "build"]),
            " (did you mean 'test'?)"
        );
    }
}
