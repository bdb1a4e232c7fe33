//! Annotations: a step's `::error file=F,line=L,col=C,endLine=..,title=T::message`,
//! `::warning …` and `::notice …` log lines (GitHub Actions' workflow-command format, with
//! its `%25` / `%0D` / `%0A` escapes, and `%3A` / `%2C` in property values), read at log
//! ingest ([`ingest`]) into the store's `annotations` table and shown on the run page and
//! by `GET /api/runs/{id}/annotations`.
//!
//! Invariants:
//! - The text is the step's, so untrusted: every field is decoded once, its control
//!   characters replaced by U+FFFD (a newline stays in a message, nowhere else) — never
//!   dropped, which would join a secret a control character hid from the runner's masker —
//!   and cut to a bound ([`MAX_MESSAGE`], [`MAX_TITLE`], [`MAX_FILE`]); pages escape it at
//!   the template.
//! - An annotation belongs to the step run whose attempt printed the line: [`ingest`] is
//!   given the attempt the runner holds (`internal_api` authenticated it), and nothing in a
//!   line names a step, so a step cannot put an annotation on another step.
//! - At most [`PER_ATTEMPT`] are kept per attempt; the rest are counted
//!   ([`Store::add_annotations`]). A batch is only parsed line by line with a prefix test,
//!   and the store is written only when the batch held an annotation.

use plue_types::protocol::LogLine;

use plue_store::{LogAttempt, NewAnnotation, Store};

/// Annotations kept per attempt; more are counted, not stored.
pub const PER_ATTEMPT: i64 = 50;
/// Characters kept of a message (GitHub's own limit is 4 KiB).
pub const MAX_MESSAGE: usize = 4096;
/// Characters kept of a title.
pub const MAX_TITLE: usize = 256;
/// Characters kept of a file path.
pub const MAX_FILE: usize = 1024;

/// How serious an annotation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

/// One parsed annotation line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub level: Level,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub end_line: Option<i64>,
    pub col: Option<i64>,
    pub end_col: Option<i64>,
    pub title: Option<String>,
    pub message: String,
}

/// The annotation `text` (one log line) holds, if it is one: `::LEVEL[ PROPS]::MESSAGE`
/// at the start of the line. Unknown properties and numbers that do not parse are left
/// out; a line without the closing `::` is no annotation.
pub fn parse(text: &str) -> Option<Annotation> {
    let rest = text.strip_prefix("::")?;
    let (command, message) = rest.split_once("::")?;
    let (name, props) = match command.split_once(' ') {
        Some((name, props)) => (name, props),
        None => (command, ""),
    };
    let level = match name {
        "error" => Level::Error,
        "warning" => Level::Warning,
        "notice" => Level::Notice,
        _ => return None,
    };
    let mut found = Annotation {
        level,
        file: None,
        line: None,
        end_line: None,
        col: None,
        end_col: None,
        title: None,
        message: clean(
            &unescape(message.trim_end_matches('\r'), false),
            true,
            MAX_MESSAGE,
        ),
    };
    for prop in props.split(',') {
        let Some((key, value)) = prop.split_once('=') else {
            continue;
        };
        let value = unescape(value, true);
        let number = || {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(i64::from)
        };
        match key.trim() {
            "file" => found.file = Some(clean(&value, false, MAX_FILE)).filter(|f| !f.is_empty()),
            "title" => {
                found.title = Some(clean(&value, false, MAX_TITLE)).filter(|t| !t.is_empty())
            }
            "line" => found.line = number(),
            "endLine" => found.end_line = number(),
            "col" => found.col = number(),
            "endColumn" => found.end_col = number(),
            _ => {}
        }
    }
    Some(found)
}

/// Decodes GitHub's escapes in one pass (so `%250A` is the text `%0A`, not a newline):
/// `%25`, `%0D`, `%0A` everywhere, `%3A` and `%2C` in property values too.
fn unescape(text: &str, property: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        // Upper case only, as GitHub's runner reads them (and the runner's masker knows
        // a secret's escaped spellings in upper case).
        let decoded = match rest.get(at + 1..at + 3) {
            Some("25") => Some('%'),
            Some("0D") => Some('\r'),
            Some("0A") => Some('\n'),
            Some("3A") if property => Some(':'),
            Some("2C") if property => Some(','),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` with each control character replaced by U+FFFD (newlines kept when `multiline`,
/// as `\n`), cut to `max` characters with an ellipsis. Replaced, not dropped: dropping
/// would join what the control character kept apart — `s3c%0Dr3t` would become a secret
/// the runner's masker never saw whole in the line.
fn clean(text: &str, multiline: bool, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text
        .chars()
        .map(|c| {
            if (multiline && c == '\n') || !c.is_control() {
                c
            } else {
                char::REPLACEMENT_CHARACTER
            }
        })
        .enumerate()
    {
        if count == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// Stores the annotations among `lines`, a batch the runner sent for attempt `at` (already
/// stored as log lines): the store keeps the first [`PER_ATTEMPT`] of the attempt and
/// counts the rest, and a batch sent again adds nothing. Returns how many were stored.
pub async fn ingest(store: &Store, at: LogAttempt, lines: &[LogLine]) -> anyhow::Result<u64> {
    let found: Vec<NewAnnotation> = lines
        .iter()
        .filter(|l| l.text.starts_with("::"))
        .filter_map(|l| parse(&l.text).map(|a| (l.seq as i64, a)))
        .map(|(seq, a)| NewAnnotation {
            seq,
            level: a.level.as_str(),
            file: a.file,
            line: a.line,
            end_line: a.end_line,
            col: a.col,
            end_col: a.end_col,
            title: a.title,
            message: a.message,
        })
        .collect();
    if found.is_empty() {
        return Ok(0);
    }
    let last_seq = lines.iter().map(|l| l.seq as i64).max().unwrap_or(0);
    store
        .add_annotations(at, &found, last_seq, PER_ATTEMPT)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_every_property_is_read() {
        let a = parse("::error file=src/lib.rs,line=12,col=5,endLine=14,endColumn=9,title=Type error::expected `u8`")
            .unwrap();
        assert_eq!(a.level, Level::Error);
        assert_eq!(a.file.as_deref(), Some("src/lib.rs"));
        assert_eq!(
            (a.line, a.col, a.end_line, a.end_col),
            (Some(12), Some(5), Some(14), Some(9))
        );
        assert_eq!(a.title.as_deref(), Some("Type error"));
        assert_eq!(a.message, "expected `u8`");
    }

    #[test]
    fn warnings_and_notices_without_properties() {
        let w = parse("::warning::deprecated").unwrap();
        assert_eq!(
            (w.level, w.message.as_str(), w.file),
            (Level::Warning, "deprecated", None)
        );
        let n = parse("::notice title=Hi::x\r").unwrap();
        assert_eq!(
            (n.level, n.title.as_deref(), n.message.as_str()),
            (Level::Notice, Some("Hi"), "x")
        );
    }

    #[test]
    fn escapes_are_decoded_once() {
        let a =
            parse("::error file=a%3Ab%2Cc.rs,title=50%25::line one%0Aline two%0D%250A").unwrap();
        assert_eq!(a.file.as_deref(), Some("a:b,c.rs"));
        assert_eq!(a.title.as_deref(), Some("50%"));
        // %0D is a control character: replaced. %250A is the text %0A.
        assert_eq!(a.message, "line one\nline two\u{fffd}%0A");
        // Only property values decode %3A and %2C; an unknown escape stays as written.
        assert_eq!(
            parse("::error::a%3Ab %zz %").unwrap().message,
            "a%3Ab %zz %"
        );
    }

    #[test]
    fn malformed_lines_are_no_annotations() {
        for text in [
            "error::x",
            " ::error::indented",
            "::error no closing",
            "::debug::x",
            "::add-mask::secret",
            "::errors::x",
            "::::x",
            "",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        // Bad numbers and unknown keys are left out, the annotation kept.
        let a = parse("::error line=-3,col=x,endLine=99999999999,evil,=1,foo=bar::m").unwrap();
        assert_eq!((a.line, a.col, a.end_line), (None, None, None));
    }

    #[test]
    fn fields_are_cut_and_stripped_of_control_characters() {
        let long = "y".repeat(MAX_MESSAGE + 10);
        let a = parse(&format!(
            "::error title=\u{1b}[31mred%0Anew,file={}::{long}",
            "f".repeat(5000)
        ))
        .unwrap();
        assert_eq!(a.message.chars().count(), MAX_MESSAGE + 1);
        assert!(a.message.ends_with('…'));
        assert_eq!(a.file.unwrap().chars().count(), MAX_FILE + 1);
        // No escape character, no newline outside a message.
        assert_eq!(a.title.as_deref(), Some("\u{fffd}[31mred\u{fffd}new"));
    }

    /// Red team: the runner masks a secret as the line spells it (and its escaped
    /// spellings); a control character, raw or escaped, in the middle of the secret hides
    /// it from the masker, and must not be removed by the engine to join it back together.
    #[test]
    fn a_control_character_splitting_a_secret_does_not_join_it_again() {
        let secret = "s3cr3t-value";
        for line in [
            "::error::s3cr3t%0D-value",
            "::error::s3cr3t\u{7}-value",
            "::error title=s3cr3t%0D-value::m",
            "::error file=s3cr3t\u{1b}-value::m",
        ] {
            let a = parse(line).unwrap();
            for field in [Some(a.message), a.title, a.file].into_iter().flatten() {
                assert!(!field.contains(secret), "{line:?} came out as {field:?}");
            }
        }
    }
}
