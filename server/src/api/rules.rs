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
        .max_properties(Some(plue_pool::scope::MAX_LABELS))
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
mod tests;
