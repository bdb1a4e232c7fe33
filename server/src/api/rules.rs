//! Rules the handlers enforce on text, as the OpenAPI document states them: JSON Schema
//! patterns built from the same character sets the checks use, so a request the document
//! allows is one the handler accepts, and one it refuses is one the handler refuses.
//!
//! Patterns are read by two dialects: schemathesis generates from them with Python's `re`,
//! validators (ECMA 262) check against them. Both read `\uXXXX` in a class and a literal
//! character; neither reads `\p{Cf}` or `\u{XXXXX}` alike, so characters past the BMP are
//! written as themselves.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

/// What `evaluator::text` refuses in [`TextKind::UserLine`](evaluator::text::TextKind)
/// text (token names, comments, labels, repository URLs): C0 controls but tab, DEL and C1
/// controls, the format characters (Cf, Unicode 16: bidi controls and marks, zero-width
/// characters, tags) and the line and paragraph separators. `a_user_line_refuses_*` checks
/// it against the check itself, character by character.
const USER_LINE_REFUSED: &[(u32, u32)] = &[
    (0x00, 0x08),
    (0x0A, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// The whitespace `str::trim` removes (`White_Space`) that a user line may hold: a name
/// of these alone is blank.
const BLANK: &[(u32, u32)] = &[
    (0x09, 0x09),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// `White_Space`: what `str::trim` removes.
const WHITE_SPACE: &[(u32, u32)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// What `check_ref` refuses anywhere in a ref: controls, whitespace and `:?*[\^~`.
const REF_REFUSED: &[(u32, u32)] = &[
    (0x00, 0x20),
    (0x7F, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (':' as u32, ':' as u32),
    ('?' as u32, '?' as u32),
    ('*' as u32, '*' as u32),
    ('[' as u32, '[' as u32),
    ('\\' as u32, '\\' as u32),
    ('^' as u32, '^' as u32),
    ('~' as u32, '~' as u32),
];

/// The ranges as the inside of a regex class.
fn class(ranges: &[&[(u32, u32)]]) -> String {
    let one = |c: u32| match c {
        c if c < 0x10000 => format!("\\u{c:04X}"),
        c => char::from_u32(c).expect("a code point").to_string(),
    };
    let mut out = String::new();
    for &(from, to) in ranges.iter().flat_map(|r| r.iter()) {
        out.push_str(&one(from));
        if to != from {
            out.push('-');
            out.push_str(&one(to));
        }
    }
    out
}

/// One line of people's text: none of [`USER_LINE_REFUSED`].
pub(super) fn user_line_pattern() -> String {
    format!("^[^{}]*$", class(&[USER_LINE_REFUSED]))
}

/// A user line that is not blank once trimmed.
pub(super) fn named_line_pattern() -> String {
    let refused = class(&[USER_LINE_REFUSED]);
    let blank = class(&[USER_LINE_REFUSED, BLANK]);
    format!("^[^{refused}]*[^{blank}][^{refused}]*$")
}

/// A git ref `check_ref` takes: not starting with `-` or `+`, without `..` or `@{`, none
/// of [`REF_REFUSED`].
pub(super) fn git_ref_pattern() -> String {
    format!(
        r"^(?![-+])(?!.*\.\.)(?!.*@\{{)[^{}]+$",
        class(&[REF_REFUSED])
    )
}

fn string(pattern: String) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// A token's name (API or runner token): 1 to 100 characters, not blank, one clean line.
pub(super) fn token_name() -> Schema {
    string(named_line_pattern())
        .min_length(Some(1))
        .max_length(Some(100))
        .description(Some(
            "What the token is for: at most 100 characters, not blank, no control, bidi, \
             invisible (format) or line-separator characters. A label only: no rule reads it.",
        ))
        .examples([serde_json::json!("laptop")])
        .into()
}

/// An approval's comment: at most 4096 characters of one clean line.
pub(super) fn comment() -> Schema {
    string(user_line_pattern())
        .max_length(Some(4096))
        .description(Some(
            "Kept with the decision; at most 4096 characters of one line, without control, \
             bidi or invisible (format) characters.",
        ))
        .into()
}

/// A repository's clone URL.
pub(super) fn clone_url() -> Schema {
    let refused = class(&[USER_LINE_REFUSED]);
    string(format!(
        "^(https://|http://|file://|ssh://|git@|/)[^{refused}]*$"
    ))
    .description(Some(
        "`https://`, `http://`, `ssh://`, `git@`, `file://` or an absolute path; one line \
         without control, bidi or invisible (format) characters.",
    ))
    .examples([serde_json::json!("https://github.com/octo/hello.git")])
    .into()
}

/// A forge's API URL (or `null`: none).
pub(super) fn api_url() -> Schema {
    let refused = class(&[USER_LINE_REFUSED]);
    string(format!("^(https://|http://)[^{refused}]*$"))
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(
            "The forge's API (`http(s)://`), for commit statuses; one line without control, \
             bidi or invisible (format) characters.",
        ))
        .examples([serde_json::json!("https://api.github.com")])
        .into()
}

/// A webhook secret: at least 8 characters once trimmed of whitespace.
pub(super) fn webhook_secret() -> Schema {
    let blank = class(&[WHITE_SPACE]);
    string(format!(
        r"^[{blank}]*[^{blank}][\s\S]{{6,}}[^{blank}][{blank}]*$"
    ))
    .min_length(Some(8))
    .description(Some(
        "The HMAC key of the forge's webhook deliveries, at least 8 characters not \
             counting surrounding whitespace. Stored sealed, never shown again.",
    ))
    .into()
}

/// A git ref, as dispatch and a default branch take it (or `null`: the default).
fn git_ref(description: &str) -> ObjectBuilder {
    string(git_ref_pattern())
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(255))
        .description(Some(description))
        .examples([serde_json::json!("main")])
}

/// A repository's default branch.
pub(super) fn default_branch() -> Schema {
    git_ref(
        "The branch dispatch and schedules read by default: at most 255 characters, no \
         whitespace, controls or `:?*[\\^~`, not starting with `-` or `+`, no `..` or `@{`.",
    )
    .into()
}

/// Dispatch's ref.
pub(super) fn dispatch_ref() -> Schema {
    git_ref(
        "The branch, tag or commit (default: the repository's default branch, else `HEAD`): \
         at most 255 characters, no whitespace, controls or `:?*[\\^~`, not starting with `-` \
         or `+`, no `..` or `@{`.",
    )
    .into()
}

/// A runner token's labels: at most 8; keys of `A-Z a-z 0-9 . _ - /` (1 to 63), values of
/// at most 63 characters of one clean line without `,` or `=`.
pub(super) fn labels() -> Schema {
    let refused = class(&[USER_LINE_REFUSED]);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(crate::runner_scope::MAX_LABELS))
        .property_names(Some(string(r"^[A-Za-z0-9._/-]{1,63}$".to_string())))
        .additional_properties(Some(
            string(format!("^[^,={refused}]*$")).max_length(Some(63)),
        ))
        .description(Some(
            "The labels its runners may announce (none: unlabelled steps only): at most 8; \
             keys of 1 to 63 letters, digits, `.`, `_`, `-` and `/`; values of at most 63 \
             characters without `,`, `=`, control, bidi or invisible (format) characters.",
        ))
        .examples([serde_json::json!({"gpu": "a100"})])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use evaluator::text::{check_clean_field, TextKind};

    fn within(ranges: &[(u32, u32)], c: char) -> bool {
        ranges
            .iter()
            .any(|&(from, to)| (from..=to).contains(&(c as u32)))
    }

    fn every_char() -> impl Iterator<Item = char> {
        (0..=0x10FFFF).filter_map(char::from_u32)
    }

    #[test]
    fn a_user_line_refuses_exactly_what_the_check_refuses() {
        for c in every_char() {
            let refused = check_clean_field("x", &c.to_string(), TextKind::UserLine).is_err();
            assert_eq!(refused, within(USER_LINE_REFUSED, c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn blank_is_the_whitespace_trim_removes_that_a_line_may_hold() {
        for c in every_char() {
            let allowed_blank = c.is_whitespace() && !within(USER_LINE_REFUSED, c);
            assert_eq!(allowed_blank, within(BLANK, c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn white_space_is_what_trim_removes() {
        for c in every_char() {
            assert_eq!(
                c.is_whitespace(),
                within(WHITE_SPACE, c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn a_ref_refuses_exactly_the_characters_check_ref_refuses() {
        for c in every_char() {
            let refused = crate::registry::git::check_ref(&format!("a{c}b")).is_err();
            assert_eq!(refused, within(REF_REFUSED, c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn classes_write_the_bmp_escaped_and_the_rest_as_itself() {
        assert_eq!(
            class(&[&[(0x0A, 0x1F), (0xE0001, 0xE0001)]]),
            "\\u000A-\\u001F\u{E0001}"
        );
    }
}
