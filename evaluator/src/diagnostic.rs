//! User-facing problems with a workflow file, printed as `path:line:col: message`.
//!
//! A [`Diagnostic`] is what `plue check` prints and what a failed evaluation carries into
//! the API. Its `Display` is the one format users see; `detail` holds an optional short
//! traceback into the user's own file, never into Plue's internals.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::Location;

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

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(Location { line, col }) => {
                write!(f, "{}:{}:{}: {}", self.path, line, col, self.message)
            }
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Renders "did you mean 'x'?" for the closest candidate, if one is close enough.
pub fn suggestion<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
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
