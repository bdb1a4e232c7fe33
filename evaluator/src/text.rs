//! Clean text: what a plan string may contain, and how user text is shown in messages.
//!
//! Invariants:
//! - [`check_clean`] refuses NUL, every other C0 control except the ones a [`TextKind`]
//!   allows (tab; newline in multi-line text), DEL, C1 controls and the bidi overrides and
//!   isolates (U+202A–U+202E, U+2066–U+2069) that make text display in another order
//!   than it runs. PostgreSQL refuses NUL in `TEXT`; terminals act on the rest. People's
//!   text the engine keeps ([`TextKind::UserLine`]: token names, approval comments) loses
//!   the bidi marks too, and every other format character (general category Cf: zero-width
//!   spaces and joiners, soft hyphens, tag characters, byte-order marks) and the line and
//!   paragraph separators (Zl, Zp) — invisible or line-breaking, they make one name look
//!   like another or one line look like two. [`TextKind::Line`] refuses Zl and Zp too.
//!   [`check_clean_field`] names the field, position and code point.
//! - [`escape_line`] turns any text into one printable line: controls, format characters
//!   and line separators become `\n`, `\x1b`, `\u{202e}`. Backslashes are left alone, so
//!   escaping twice changes nothing.
//! - [`redact_host_paths`] replaces paths into the host's Python installation with
//!   `<python>`, so a message is never an oracle for what exists on the engine's disk.

use std::borrow::Cow;
use std::fmt::Write;

use unicode_general_category::{get_general_category, GeneralCategory};

/// Where a string goes, which decides the controls it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line (names, globs, labels, cron, descriptions): tab allowed, no newline nor
    /// line or paragraph separator.
    Line,
    /// Code, prompts and env values: newline and tab allowed.
    MultiLine,
    /// One line of people's text that the engine keeps and shows beside other text (API
    /// and runner token names, approval comments, runner labels, repository URLs): as
    /// [`TextKind::Line`], and every format character (Cf, which holds the bidi marks
    /// U+200E, U+200F, U+061C) too, which such text never needs.
    UserLine,
}

/// Bidi embedding, override and isolate controls.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Bidi marks: invisible, they change the direction of the neutral characters beside them.
fn is_bidi_mark(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Format characters (general category Cf, from the tables of `unicode-general-category`,
/// Unicode 16): invisible, they join, hide or steer the characters around them.
fn is_format(c: char) -> bool {
    // No ASCII character is one, and most are ASCII: the table is not looked up for them
    // (in a debug build each lookup copies the table: a plan's bomb of long names took
    // seconds).
    !c.is_ascii() && get_general_category(c) == GeneralCategory::Format
}

/// Line and paragraph separators (Zl, Zp: U+2028, U+2029).
fn is_separator(c: char) -> bool {
    !c.is_ascii()
        && matches!(
            get_general_category(c),
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// Characters shown escaped in messages.
fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_format(c) || is_separator(c)
}

/// A character [`check_clean`] refuses, by what kind of character it is; shown (escaped)
/// as the end of a sentence about the text: "contains the control character \x1b".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unclean {
    /// U+0000, which PostgreSQL refuses in `TEXT`.
    #[error("contains a NUL character")]
    Nul,
    /// A bidi override, isolate or (in [`TextKind::UserLine`]) mark.
    #[error("contains the bidirectional control character {}", escape_char(*.0))]
    Bidi(char),
    /// A line or paragraph separator (Zl, Zp) in one-line text.
    #[error("contains the line separator {}", escape_char(*.0))]
    LineSeparator(char),
    /// Another invisible format character (Cf) in [`TextKind::UserLine`].
    #[error("contains the invisible format character {}", escape_char(*.0))]
    Format(char),
    /// A C0 or C1 control or DEL (a newline in one-line text).
    #[error("contains the control character {}", escape_char(*.0))]
    Control(char),
}

impl Unclean {
    fn of(c: char) -> Unclean {
        match c {
            '\0' => Unclean::Nul,
            c if is_bidi_control(c) || is_bidi_mark(c) => Unclean::Bidi(c),
            c if is_separator(c) => Unclean::LineSeparator(c),
            c if is_format(c) => Unclean::Format(c),
            c => Unclean::Control(c),
        }
    }

    /// The refused character.
    pub fn char(self) -> char {
        match self {
            Unclean::Nul => '\0',
            Unclean::Bidi(c)
            | Unclean::LineSeparator(c)
            | Unclean::Format(c)
            | Unclean::Control(c) => c,
        }
    }
}

/// [`check_clean_field`]'s refusal: the field, the character's position (in characters,
/// from 1) and what it is, with its code point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {found} (U+{:04X}) at character {position}", found.char() as u32)]
pub struct UncleanField {
    pub field: String,
    pub position: usize,
    pub found: Unclean,
}

/// `Ok` when `text` carries no character [`TextKind`] refuses; otherwise the first
/// offending character, escaped, for the message.
pub fn check_clean(text: &str, kind: TextKind) -> Result<(), Unclean> {
    match first_unclean(text, kind) {
        None => Ok(()),
        Some((_, c)) => Err(Unclean::of(c)),
    }
}

/// [`check_clean`] for a named field of a request: the message names the field, the
/// offending character's position (in characters, from 1) and its code point.
pub fn check_clean_field(field: &str, text: &str, kind: TextKind) -> Result<(), UncleanField> {
    match first_unclean(text, kind) {
        None => Ok(()),
        Some((position, c)) => Err(UncleanField {
            field: field.to_owned(),
            position,
            found: Unclean::of(c),
        }),
    }
}

/// The first character of `text` that `kind` refuses, with its position (from 1).
fn first_unclean(text: &str, kind: TextKind) -> Option<(usize, char)> {
    text.chars()
        .zip(1..)
        .find(|&(c, _)| match c {
            '\t' => false,
            '\n' => kind != TextKind::MultiLine,
            c => {
                c.is_control()
                    || is_bidi_control(c)
                    || (kind != TextKind::MultiLine && is_separator(c))
                    || (kind == TextKind::UserLine && (is_bidi_mark(c) || is_format(c)))
            }
        })
        .map(|(c, position)| (position, c))
}

fn escape_char(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c if (c as u32) < 0x100 => format!("\\x{:02x}", c as u32),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// `text` as one printable line (see the module docs).
pub fn escape_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&escape_char(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Multi-line text (a traceback) with each line escaped and the line breaks kept.
pub fn escape_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape_line(line));
    }
    out
}

/// User text quoted for a message: escaped and cut to `max` characters.
pub fn quote(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            let _ = write!(out, "... ({} characters)", text.chars().count());
            return out;
        }
        out.push_str(&escape_line(c.encode_utf8(&mut [0; 4])));
    }
    out
}

/// Replaces every path-like token that reaches into a Python installation
/// (`/usr/lib/python3.11/json/decoder.py`) with `<python>`.
pub fn redact_host_paths(text: &str) -> Cow<'_, str> {
    if !text.contains("/python3") && !text.contains("/lib/python") {
        return Cow::Borrowed(text);
    }
    let is_path_char = |c: char| !c.is_whitespace() && !matches!(c, '\'' | '"' | '(' | ')' | ',');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(|c: char| is_path_char(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        if token.contains('/') && (token.contains("/python3") || token.contains("/lib/python")) {
            out.push_str("<python>");
        } else {
            out.push_str(token);
        }
        rest = &rest[end..];
    }
    Cow::Owned(out)
}

/// How much of an offending template an error echoes.
pub const ECHO_CHARS: usize = 60;

/// User text for a message: at most [`ECHO_CHARS`] characters, control characters and
/// quotes escaped, so it stays on one line and cannot forge output.
pub fn echo(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(ECHO_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(ECHO_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_refuses_controls_and_bidi_but_allows_tab_and_newline_where_sensible() {
        assert!(check_clean("make\ttest", TextKind::Line).is_ok());
        assert!(check_clean("echo a\necho b", TextKind::MultiLine).is_ok());
        assert!(check_clean("a\nb", TextKind::Line).is_err());
        assert_eq!(
            check_clean("a\0b", TextKind::MultiLine).unwrap_err(),
            Unclean::Nul
        );
        assert_eq!(
            check_clean("a\0b", TextKind::MultiLine)
                .unwrap_err()
                .to_string(),
            "contains a NUL character"
        );
        assert!(check_clean("x\x1b[2J", TextKind::MultiLine)
            .unwrap_err()
            .to_string()
            .contains("\\x1b"));
        assert!(check_clean("x\u{85}", TextKind::MultiLine).is_err(), "C1");
        assert!(check_clean("x\r", TextKind::MultiLine).is_err());
        assert!(check_clean("admin\u{202e}", TextKind::Line)
            .unwrap_err()
            .to_string()
            .contains("bidirectional"));
        assert!(check_clean("é ü 漢字 🚀", TextKind::Line).is_ok());
    }

    #[test]
    fn user_lines_refuse_bidi_marks_and_name_field_position_and_code_point() {
        for mark in ['\u{200e}', '\u{200f}', '\u{61c}'] {
            let text = format!("ok{mark}");
            assert!(
                check_clean(&text, TextKind::Line).is_ok(),
                "plans keep marks"
            );
            assert!(check_clean(&text, TextKind::UserLine).is_err(), "{mark:?}");
        }
        assert_eq!(
            check_clean_field("comment", "ok \u{202e}gnp.exe", TextKind::UserLine)
                .unwrap_err()
                .to_string(),
            "comment contains the bidirectional control character \\u{202e} (U+202E) at character 4"
        );
        assert_eq!(
            check_clean_field("name", "é\x1b", TextKind::UserLine)
                .unwrap_err()
                .to_string(),
            "name contains the control character \\x1b (U+001B) at character 2"
        );
        assert!(check_clean_field("name", "a\nb", TextKind::UserLine).is_err());
        assert!(check_clean_field("name", "déploiement\tprod 🚀", TextKind::UserLine).is_ok());
    }

    // The attack (issue 30): invisible and line-breaking characters in an approval comment
    // or a token name, which the controls-and-bidi rule let through.
    #[test]
    fn user_lines_refuse_every_format_character_and_line_separators() {
        for hidden in [
            '\u{2028}',
            '\u{2029}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{200b}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{180e}',
            '\u{110bd}',
        ] {
            let text = format!("deploy{hidden}prod");
            let refused = check_clean_field("name", &text, TextKind::UserLine)
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains(&format!("(U+{:04X}) at character 7", hidden as u32)),
                "{refused}"
            );
            assert!(
                !refused.contains(hidden),
                "the message escapes it: {refused}"
            );
            assert!(!escape_line(&text).contains(hidden));
        }
        for separator in ['\u{2028}', '\u{2029}'] {
            let text = format!("a{separator}b");
            assert!(check_clean(&text, TextKind::Line).is_err(), "one line");
            assert!(check_clean(&text, TextKind::MultiLine).is_ok());
        }
        // Plans keep invisible format characters in one-line strings (an emoji sequence).
        assert!(check_clean("👩\u{200d}💻", TextKind::Line).is_ok());
        assert!(check_clean("👩\u{200d}💻", TextKind::UserLine).is_err());
    }

    #[test]
    fn escaping_gives_one_line_and_is_idempotent() {
        let hostile = "id\nfake.plue.py:1:1: ok\x1b[2K\u{202e}";
        let once = escape_line(hostile);
        assert_eq!(once, "id\\nfake.plue.py:1:1: ok\\x1b[2K\\u{202e}");
        assert_eq!(escape_line(&once), once);
        assert!(matches!(escape_line("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_lines("a\x07\nb"), "a\\x07\nb");
        assert_eq!(quote("abcdef", 3), "abc... (6 characters)");
        assert_eq!(quote("a\nb", 10), "a\\nb");
    }

    #[test]
    fn host_paths_are_redacted() {
        assert_eq!(
            redact_host_paths("File \"/usr/lib/python3.11/json/decoder.py\", line 3"),
            "File \"<python>\", line 3"
        );
        assert_eq!(
            redact_host_paths("see /root/.pyenv/versions/3.11.9/lib/python3.11/re/_parser.py"),
            "see <python>"
        );
        assert_eq!(redact_host_paths("no path here"), "no path here");
    }
}
