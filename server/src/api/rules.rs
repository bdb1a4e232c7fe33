//! Rules the handlers enforce on text, as the OpenAPI document states them: JSON Schema
//! patterns built from the same character sets the checks use, so a request the document
//! allows is one the handler accepts, and one it refuses is one the handler refuses.
//!
//! Patterns are read by two dialects: schemathesis generates from them with Python's `re`,
//! validators (ECMA 262) check against them. Both read `\uXXXX` in a class and a literal
//! character; neither reads `\p{Cf}` or `\u{XXXXX}` alike, so characters past the BMP are
//! written as themselves.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};

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

/// What a branch glob holds for its own syntax, beside `*` and `?` (in [`REF_REFUSED`]):
/// alternatives `{a,b}` and the end of a class.
const GLOB_SYNTAX: &[(u32, u32)] = &[
    (',' as u32, ',' as u32),
    (']' as u32, ']' as u32),
    ('{' as u32, '{' as u32),
    ('}' as u32, '}' as u32),
];

/// What a glob's class holds for its own syntax: ranges and negation.
const CLASS_SYNTAX: &[(u32, u32)] = &[('!' as u32, '!' as u32), ('-' as u32, '-' as u32)];

/// The sets a class's range stays within, first to last: digits, lower-case letters,
/// upper-case letters.
const RANGE_SETS: &[(char, char)] = &[('0', '9'), ('a', 'z'), ('A', 'Z')];

/// The most characters of a branch glob: even of four bytes each, within
/// [`evaluator::glob::MAX_GLOB_LEN`].
pub(super) const MAX_GLOB_CHARS: usize = 128;

fn within(ranges: &[(u32, u32)], c: char) -> bool {
    ranges
        .iter()
        .any(|&(from, to)| (from..=to).contains(&(c as u32)))
}

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

/// A branch glob (`evaluator::glob`'s syntax, which `allowed_refs` takes), in the part of
/// it a pattern can state, every glob of which compiles: characters a branch name may hold
/// (no whitespace, controls, bidi or invisible characters, `:^~\`); `*` (not across `/`),
/// `**` and `?`; classes `[...]` and `[!...]` of such characters and ranges within digits
/// or one case of letters, in order (`0-9`, `a-f`); one level of alternatives `{a,b}`;
/// `,` outside them. [`is_branch_glob`] checks the same, and a test holds them equal.
pub(super) fn branch_glob_pattern() -> String {
    let literal = format!(
        "[^{}]",
        class(&[REF_REFUSED, USER_LINE_REFUSED, GLOB_SYNTAX])
    );
    let member = format!(
        "[^{}]",
        class(&[REF_REFUSED, USER_LINE_REFUSED, GLOB_SYNTAX, CLASS_SYNTAX])
    );
    let ranges: Vec<String> = RANGE_SETS
        .iter()
        .flat_map(|&(first, last)| (first..=last).map(move |c| format!("{c}-[{c}-{last}]")))
        .collect();
    let glob_class = format!(r"\[!?(?:{member}|{})+\]", ranges.join("|"));
    let token = format!(r"(?:{literal}|\*|\?|{glob_class})");
    format!(r"^(?:{token}|,|\{{(?:{token}|,)*\}})+$")
}

/// Whether `text` is a branch glob as [`branch_glob_pattern`] states it.
pub(super) fn is_branch_glob(text: &str) -> bool {
    if !(1..=MAX_GLOB_CHARS).contains(&text.chars().count()) {
        return false;
    }
    let mut chars = text.chars().peekable();
    let mut in_alternatives = false;
    while let Some(c) = chars.next() {
        let fits = match c {
            '*' | '?' | ',' => true,
            '[' => is_glob_class(&mut chars),
            '{' => !std::mem::replace(&mut in_alternatives, true),
            '}' => std::mem::replace(&mut in_alternatives, false),
            c => {
                !within(REF_REFUSED, c) && !within(USER_LINE_REFUSED, c) && !within(GLOB_SYNTAX, c)
            }
        };
        if !fits {
            return false;
        }
    }
    !in_alternatives
}

/// Whether what follows a `[` is the rest of a class: `!` or not, then at least one member
/// — a character or a range in order within one of [`RANGE_SETS`] — then `]`.
fn is_glob_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    chars.next_if_eq(&'!');
    let mut members = 0;
    loop {
        let first = match chars.next() {
            None => return false,
            Some(']') => return members > 0,
            Some(c) => c,
        };
        if [REF_REFUSED, USER_LINE_REFUSED, GLOB_SYNTAX, CLASS_SYNTAX]
            .iter()
            .any(|set| within(set, first))
        {
            return false;
        }
        if chars.next_if_eq(&'-').is_some() {
            let Some(last) = chars.next() else {
                return false;
            };
            let in_order = RANGE_SETS.iter().any(|&(low, high)| {
                (low..=high).contains(&first) && (first..=high).contains(&last)
            });
            if !in_order {
                return false;
            }
        }
        members += 1;
    }
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

/// A repository's clone URL, as [`clone_url_pattern`] states it.
pub(super) fn clone_url() -> Schema {
    string(clone_url_pattern())
        .description(Some(
            "`https://`, `http://` or `ssh://` with an optional `user[:password]@`, a host (a \
             name of ASCII letters, digits, `_` and single `-` in dot-separated labels, the \
             last starting with a letter; a dotted IPv4 address; or a bracketed IPv6 \
             address) and an optional port (1 to 65535); `file://` with an optional host and \
             no port; `git@host:path`; or an absolute path (not starting with `//`). After \
             the host (or the path's start), one line without control, bidi or invisible \
             (format) characters.",
        ))
        .examples([serde_json::json!("https://github.com/octo/hello.git")])
        .into()
}

/// A forge's API URL (or `null`: none), as [`api_url_pattern`] states it.
pub(super) fn api_url() -> Schema {
    string(api_url_pattern())
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(
            "The forge's API, for commit statuses: `https://` or `http://` with an optional \
             `user[:password]@`, a host (a name of ASCII letters, digits, `_` and single `-` \
             in dot-separated labels, the last starting with a letter; a dotted IPv4 \
             address; or a bracketed IPv6 address) and an optional port (1 to 65535), then \
             one line without control, bidi or invisible (format) characters.",
        ))
        .examples([serde_json::json!("https://api.github.com")])
        .into()
}

/// A decimal IPv4 octet, 0 to 255, without leading zeros (RFC 3986 `dec-octet`).
const DEC_OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// A URL's host: a name (dot-separated labels of ASCII letters, digits and `_`, `-` only
/// single and between them, the last starting with a letter and an optional final `.`), a
/// dotted-decimal IPv4 address, or an IPv6 address in brackets (RFC 3986 `IPv6address`).
///
/// It is the part of RFC 3986's `host` that Python's `urllib.parse.urlsplit` (brackets
/// only around a whole IPv6 host: `ipaddress` must read it) and the `url` crate (WHATWG:
/// a name whose last label is a number must be an IPv4 address; a label `xn--` must be
/// punycode, so no label holds `--`; no IPvFuture) both take, without percent-encoding or
/// non-ASCII names.
fn host_pattern() -> String {
    let h16 = "[0-9A-Fa-f]{1,4}";
    let ipv4 = format!(r"{DEC_OCTET}(?:\.{DEC_OCTET}){{3}}");
    let ls32 = format!("(?:{h16}:{h16}|{ipv4})");
    let before = |most: usize| format!("(?:(?:{h16}:){{0,{most}}}{h16})?");
    let ipv6 = [
        format!("(?:{h16}:){{6}}{ls32}"),
        format!("::(?:{h16}:){{5}}{ls32}"),
        format!("(?:{h16})?::(?:{h16}:){{4}}{ls32}"),
        format!("{}::(?:{h16}:){{3}}{ls32}", before(1)),
        format!("{}::(?:{h16}:){{2}}{ls32}", before(2)),
        format!("{}::{h16}:{ls32}", before(3)),
        format!("{}::{ls32}", before(4)),
        format!("{}::{h16}", before(5)),
        format!("{}::", before(6)),
    ]
    .join("|");
    let label = "[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*";
    let last = "[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*";
    format!(r"(?:(?:{label}\.)*{last}\.?|{ipv4}|\[(?:{ipv6})\])")
}

/// `//` and an authority (optional userinfo of RFC 3986's characters, a host as
/// [`host_pattern`] states it, an optional port 1 to 65535), then optionally a path, query
/// or fragment of clean text: none of [`USER_LINE_REFUSED`].
fn network_url_rest() -> String {
    let refused = class(&[USER_LINE_REFUSED]);
    let host = host_pattern();
    let userinfo = "(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*@";
    let port =
        "[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]";
    format!("//(?:{userinfo})?{host}(?::(?:{port}))?(?:[/?#][^{refused}]*)?")
}

/// What `check_clone_url` takes, the handler compiling this very text: `http(s)://` or
/// `ssh://` URLs of [`network_url_rest`]; `file://` with an optional host (no userinfo or
/// port, which a file URL cannot carry); the scp form `git@host:path`; an absolute local
/// path whose second character is not `/` (`//x` would be read as a host).
pub(super) fn clone_url_pattern() -> String {
    let refused = class(&[USER_LINE_REFUSED]);
    let host = host_pattern();
    let rest = network_url_rest();
    format!(
        "^(?:(?:https?|ssh):{rest}|file://{host}?(?:[/?#][^{refused}]*)?\
         |git@{host}:[^{refused}]*|/(?:[^/{refused}][^{refused}]*)?)$"
    )
}

/// What `check_api_url` takes, the handler compiling this very text: `http(s)://` URLs of
/// [`network_url_rest`].
pub(super) fn api_url_pattern() -> String {
    format!("^https?:{}$", network_url_rest())
}

/// Whether `url` is a clone URL as [`clone_url_pattern`] states it.
pub(super) fn is_clone_url(url: &str) -> bool {
    static RULE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(&clone_url_pattern()).expect("the clone URL pattern compiles")
    });
    RULE.is_match(url)
}

/// Whether `url` is an API URL as [`api_url_pattern`] states it.
pub(super) fn is_api_url(url: &str) -> bool {
    static RULE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(&api_url_pattern()).expect("the API URL pattern compiles")
    });
    RULE.is_match(url)
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

/// An environment's `allowed_refs`: at most `max` branch globs ([`branch_glob_pattern`]).
pub(super) fn branch_globs(max: usize) -> Schema {
    ArrayBuilder::new()
        .items(
            string(branch_glob_pattern())
                .min_length(Some(1))
                .max_length(Some(MAX_GLOB_CHARS)),
        )
        .max_items(Some(max))
        .description(Some(format!(
            "Globs over branch names, e.g. `[\"main\", \"release/*\"]`; at most {max}. Empty: \
             no run may use the environment. A glob is 1 to {MAX_GLOB_CHARS} characters: those \
             a branch name may hold (no whitespace, controls, bidi or invisible characters, \
             `:^~\\`); `*` (not across `/`), `**` and `?`; classes `[...]` and `[!...]` of such \
             characters and ranges in order within digits or one case of letters (`[0-9]`, \
             `[a-f]`); one level of alternatives `{{main,release/*}}`."
        )))
        .examples([serde_json::json!(["main", "release/*"])])
        .into()
}

/// Standard base64 with its padding, as `base64`'s `STANDARD` engine decodes it: groups of
/// four, the last one padded, and the bits the padding leaves unused zero.
pub(super) const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*\
     (?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// Base64 text (or `null`: none) of at most `max_chars` characters.
pub(super) fn base64(max_chars: usize, description: &str) -> Schema {
    string(BASE64_PATTERN.to_string())
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(max_chars))
        .description(Some(description))
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

    /// The document's rule for one branch glob, as a validator (ECMA 262, as schemathesis's
    /// `jsonschema_rs`) reads it.
    fn glob_validator() -> jsonschema::Validator {
        let schema = serde_json::json!({
            "type": "string", "pattern": branch_glob_pattern(),
            "minLength": 1, "maxLength": MAX_GLOB_CHARS,
        });
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    }

    /// The document and the handler agree on `glob`, and a glob they allow compiles.
    fn agree(validator: &jsonschema::Validator, glob: &str) -> bool {
        let allowed = is_branch_glob(glob);
        assert_eq!(allowed, validator.is_valid(&glob.into()), "{glob:?}");
        if allowed {
            if let Err(e) = evaluator::glob::compile(glob) {
                panic!("{glob:?} is allowed but does not compile: {e}");
            }
        }
        allowed
    }

    // The attack (issue 54): a glob the document allowed (`release/[`) was refused with a
    // 400, and one it refused could have been taken. Every string of up to four of the
    // syntax's corner characters, and pieces of globs joined at random.
    #[test]
    fn a_branch_glob_is_what_the_pattern_states_and_it_compiles() {
        let validator = glob_validator();
        let corners = [
            'a', '9', '-', '!', '*', '?', '[', ']', '{', '}', ',', '\\', ' ',
        ];
        let mut globs = vec![String::new()];
        let mut allowed = 0;
        for _ in 0..4 {
            globs = globs
                .iter()
                .flat_map(|g| corners.iter().map(move |c| format!("{g}{c}")))
                .collect();
            allowed += globs.iter().filter(|g| agree(&validator, g)).count();
        }
        assert!(allowed > 1000, "{allowed}");
        let pieces = [
            "main",
            "/",
            "*",
            "**",
            "?",
            "[",
            "]",
            "[a-z]",
            "[z-a]",
            "[0-9]",
            "[!a]",
            "[a-]",
            "[-a]",
            "[A-z]",
            "[a-a]",
            "[Z-Z]",
            "{",
            "}",
            ",",
            "{a,b}",
            "{,}",
            "-",
            "!",
            "\\",
            " ",
            "\u{e9}",
            "\u{202e}",
            "\u{1F600}",
            "[]",
            "[!]",
            "[a-f-z]",
            "[!!]",
            ":",
            "~",
        ];
        // A fixed linear congruential sequence: the same globs every run.
        let mut seed: u64 = 54;
        let mut next = |bound: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % bound
        };
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let glob: String = (0..=next(6)).map(|_| pieces[next(pieces.len())]).collect();
            if agree(&validator, &glob) {
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(yes > 100 && no > 100, "{yes} allowed, {no} refused");
        for glob in [
            "main",
            "release/*",
            "**",
            "v[0-9]*",
            "{main,release/**}",
            "[!a-f]x,y",
        ] {
            assert!(agree(&validator, glob), "{glob}");
        }
        for glob in [
            "",
            "release/[",
            "[z-a]",
            "{a,{b}}",
            "a}",
            "x\\",
            "[!]",
            "a b",
        ] {
            assert!(!agree(&validator, glob), "{glob}");
        }
    }

    #[test]
    fn the_longest_and_busiest_branch_globs_compile() {
        let validator = glob_validator();
        let n = MAX_GLOB_CHARS;
        for glob in [
            "?".repeat(n),
            "*".repeat(n),
            "**/".repeat(n / 3),
            "[!a]".repeat(n / 4),
            "[0-9a-zA-Z]".repeat(n / 11),
            "{*,?}".repeat(n / 5),
            format!("{{{}}}", ",".repeat(n - 2)),
            "\u{1F600}".repeat(n),
        ] {
            assert!(agree(&validator, &glob), "{glob}");
        }
        assert!(!agree(&validator, &"a".repeat(n + 1)));
    }

    // The attack (issue 54): keystrokes the document allowed as any string were a 400 when
    // they were not base64. Every string of up to four characters from each corner of the
    // alphabet, alone and after a whole group: the pattern allows exactly what the decoder
    // takes.
    #[test]
    fn base64_is_exactly_what_the_decoder_takes() {
        use base64::Engine;
        let schema = serde_json::json!({"type": "string", "pattern": BASE64_PATTERN});
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let corners = ['A', 'Q', 'R', 'g', 'z', '0', '+', '/', '=', '-', '\n'];
        let mut texts = vec![String::new()];
        let mut allowed = 0;
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|t| corners.iter().map(move |c| format!("{t}{c}")))
                .collect();
            // Alone, and after one whole group.
            for text in texts.iter().flat_map(|t| [t.clone(), format!("QUJD{t}")]) {
                let decodes = base64::engine::general_purpose::STANDARD
                    .decode(&text)
                    .is_ok();
                assert_eq!(
                    decodes,
                    validator.is_valid(&text.as_str().into()),
                    "{text:?}"
                );
                allowed += usize::from(decodes);
            }
        }
        assert!(allowed > 1000, "{allowed}");
    }

    /// The document's rule for a URL field, as a validator (ECMA 262) reads it.
    fn url_validator(pattern: String) -> jsonschema::Validator {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    }

    /// Whether Python's `urllib.parse.urlsplit` (3.11 to 3.13) reads `text`, and the port
    /// of its netloc when asked for it (`.port`): the netloc (after `scheme:`, from `//`
    /// to the first of `/?#`) holds `[` and `]` both or neither, and when both, the
    /// hostname after the last `@` is a whole bracketed IPv6 address (`ipaddress` reads
    /// it; not IPv4) or IPvFuture, followed by nothing or `:port`; a port is ASCII digits
    /// of at most 65535. `None`: no netloc (a path, the scp form).
    fn python_netloc(text: &str) -> Option<Result<String, String>> {
        let scheme_chars = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
        let rest = match text.find(':') {
            Some(i)
                if i > 0
                    && text.starts_with(|c: char| c.is_ascii_alphabetic())
                    && text[..i].chars().all(scheme_chars) =>
            {
                &text[i + 1..]
            }
            _ => text,
        };
        let after = rest.strip_prefix("//")?;
        let netloc = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        Some(python_checks(netloc).map(|()| netloc.to_string()))
    }

    fn python_checks(netloc: &str) -> Result<(), String> {
        let invalid = || Err("Invalid IPv6 URL".to_string());
        let (open, close) = (netloc.contains('['), netloc.contains(']'));
        if open != close {
            return invalid();
        }
        let host_and_port = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
        let port = match host_and_port.split_once('[') {
            Some(("", bracketed)) => {
                let (hostname, port) = bracketed.split_once(']').unwrap_or((bracketed, ""));
                if !port.is_empty() && !port.starts_with(':') {
                    return invalid();
                }
                if let Some(future) = hostname.strip_prefix('v') {
                    let ok = future.split_once('.').is_some_and(|(hex, tail)| {
                        !hex.is_empty()
                            && hex.chars().all(|c| c.is_ascii_hexdigit())
                            && !tail.is_empty()
                            && !tail.contains('\n')
                    });
                    if !ok {
                        return Err("IPvFuture address is invalid".into());
                    }
                } else if hostname.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("{hostname:?} is not an IPv6 address"));
                }
                port.strip_prefix(':').unwrap_or("")
            }
            Some(_) => return invalid(),
            None => host_and_port.split_once(':').map_or("", |(_, port)| port),
        };
        let port_reads = port.is_empty()
            || (port.chars().all(|c| c.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| p <= 65535));
        if !port_reads {
            return Err(format!("port {port:?} out of range"));
        }
        Ok(())
    }

    /// The document and the handler agree on `text`, and a URL they allow parses: with
    /// Python's rules, and (one with `://`) with the `url` crate's; a path or the scp form
    /// has no netloc for Python to read as a host.
    fn agree_on_url(
        validator: &jsonschema::Validator,
        handler: fn(&str) -> bool,
        text: &str,
    ) -> bool {
        let allowed = handler(text);
        assert_eq!(allowed, validator.is_valid(&text.into()), "{text:?}");
        if allowed {
            match python_netloc(text) {
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{text:?} is allowed but Python refuses it: {e}"),
                None => assert!(!text.contains("://"), "{text:?}"),
            }
            if text.contains("://") {
                if let Err(e) = url::Url::parse(text) {
                    panic!("{text:?} is allowed but the url crate refuses it: {e}");
                }
            }
        }
        allowed
    }

    /// A URL field's rule: the document's validator and the handler's check.
    type UrlRule<'a> = (&'a jsonschema::Validator, fn(&str) -> bool);

    fn clone_url_handler(text: &str) -> bool {
        crate::api::repos::check_clone_url(text).is_ok()
    }

    fn api_url_handler(text: &str) -> bool {
        crate::api::repos::check_api_url(text).is_ok()
    }

    const URL_STARTS: &[&str] = &[
        "https://", "http://", "ssh://", "file://", "git@", "/", "//", "ftp://", "HTTPS://", "",
    ];

    const URL_PIECES: &[&str] = &[
        "example.com",
        "a",
        "localhost",
        "a-b",
        "a--b",
        "xn--a",
        "-a",
        "a_b",
        "a.",
        ".",
        "..",
        "a.1",
        "a.0x1",
        "1a",
        "1.2.3.4",
        "127.0.0.1",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3",
        "[",
        "]",
        "[]",
        "[::1]",
        "[::]",
        "[1:2:3:4:5:6:7:8]",
        "[1:2:3:4:5:6:7::]",
        "[1::2::3]",
        "[::ffff:1.2.3.4]",
        "[::ffff:1.2.3.04]",
        "[1.2.3.4]",
        "[v1.x]",
        "[fe80::1%eth0]",
        "[g::1]",
        "x@",
        "u:p@",
        "@",
        "%41@",
        "%4@",
        "a[b@",
        ":",
        ":22",
        ":0",
        ":08",
        ":65535",
        ":65536",
        ":99999",
        ":x",
        "/",
        "/o/r.git",
        "?q=[",
        "#f]",
        ":o/r.git",
        " ",
        "\t",
        "\\",
        "\u{e9}",
        "\u{202e}",
        "\n",
        "%",
        "\u{1F600}",
    ];

    // The attack: schemathesis registered a clone URL `https://…[…` — any clean text after
    // the scheme was taken — and crashed reading it back (Python's `urlsplit`: "Invalid
    // IPv6 URL"). Every start with every one and two pieces of a URL's corners, and pieces
    // joined at random: the document and the handler agree, and what they allow parses.
    #[test]
    fn a_url_is_what_the_pattern_states_and_it_parses() {
        let clone = url_validator(clone_url_pattern());
        let api = url_validator(api_url_pattern());
        let rules: [UrlRule; 2] = [(&clone, clone_url_handler), (&api, api_url_handler)];
        let (mut yes, mut no) = (0, 0);
        let mut tally = |allowed: bool| {
            if allowed {
                yes += 1;
            } else {
                no += 1;
            }
        };
        for start in URL_STARTS {
            for first in URL_PIECES {
                for (validator, handler) in rules {
                    tally(agree_on_url(validator, handler, &format!("{start}{first}")));
                }
                for second in URL_PIECES {
                    for (validator, handler) in rules {
                        let text = format!("{start}{first}{second}");
                        tally(agree_on_url(validator, handler, &text));
                    }
                }
            }
        }
        // A fixed linear congruential sequence: the same URLs every run.
        let mut seed: u64 = 9;
        let mut next = |bound: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % bound
        };
        for _ in 0..4000 {
            let start = URL_STARTS[next(URL_STARTS.len())];
            let text: String = (0..=next(5))
                .map(|_| URL_PIECES[next(URL_PIECES.len())])
                .collect();
            for (validator, handler) in rules {
                tally(agree_on_url(validator, handler, &format!("{start}{text}")));
            }
        }
        assert!(yes > 2000 && no > 2000, "{yes} allowed, {no} refused");
    }

    #[test]
    fn the_urls_the_engine_registers_are_taken_and_broken_hosts_refused() {
        let clone = url_validator(clone_url_pattern());
        let api = url_validator(api_url_pattern());
        for url in [
            "https://github.com/octo/hello.git",
            "https://x/y.git",
            "http://127.0.0.1:41234/octo/hello.git",
            "http://bot:s3cr3t@127.0.0.1:1/octo/down.git",
            "https://x-access-token:ghp_x@github.com/o/r",
            "https://forge.example/api\u{e9}/[v1]?q=[#]",
            "ssh://git@forge.example:2222/o/r.git",
            "https://[::1]:8080/o/r.git",
            "http://[2001:db8::1.2.3.4]/",
            "https://FORGE.example./o",
            "git@forge.example:o/r.git",
            "git@[::1]:o/r.git",
            "file:///srv/r",
            "file:///nowhere/fresh.git",
            "file://localhost/srv/r",
            "/srv/r",
            "/nonexistent/acme/app.git",
            "/tmp/plue test/origin",
            "/",
        ] {
            assert!(agree_on_url(&clone, clone_url_handler, url), "{url}");
        }
        for url in [
            "https://forge.example/api/v3",
            "http://127.0.0.1:41234/api/v1",
            "https://api.github.com",
        ] {
            assert!(agree_on_url(&api, api_url_handler, url), "{url}");
        }
        for url in [
            "",
            "-u",
            "relative/path",
            "https://x[",
            "https://x/\ny",
            "https://\u{2026}[\u{2026}",
            "https://[",
            "https://a]/",
            "https://[v1.x]/",
            "https://[1.2.3.4]/",
            "https://a[b@x/",
            "https://",
            "https:///x",
            "http://1.2.3.256/",
            "http://a.1/",
            "http://xn--a.example/",
            "http://h:0/",
            "http://h:65536/",
            "file://[/x",
            "file://h:22/x",
            "//[x",
            "//host/x",
            "git@x",
            "git@[:x",
            "ftp://x/y",
        ] {
            assert!(!agree_on_url(&clone, clone_url_handler, url), "{url:?}");
            assert!(!agree_on_url(&api, api_url_handler, url), "{url:?}");
        }
        for url in ["ssh://x/y", "git@x:y", "/srv/r", "file:///x"] {
            assert!(!agree_on_url(&api, api_url_handler, url), "{url}");
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
