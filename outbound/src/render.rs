//! How a forge shows a text to its readers, for the checks in [`crate::Checker`]: the
//! views a secret, a link or a mention is looked for in. Pure: no I/O.
//!
//! A forge renders Markdown with HTML in it (CommonMark, then an HTML sanitiser): an HTML
//! comment or tag is not shown, a character reference is shown as its character, a format
//! character (zero-width space, soft hyphen, bidi marks) is not seen. So `gh<b></b>p_x`,
//! `gh<!-- -->p_x`, `gh&#x0000000070;_x` and `gh\u{ad}p_x` all read `ghp_x`.
//!
//! Invariants:
//! - Every view only removes or decodes, never adds: a needle found in the text as it is
//!   is found in [`visible`] too unless markup or an invisible character cut it, which is
//!   what the view exists for.
//! - A numeric character reference of any length decodes (leading zeros are read, a value
//!   past U+10FFFF, zero or a surrogate is U+FFFD as HTML has it); the named references
//!   decoded are every one that spells an ASCII character or an invisible one (HTML has no
//!   named reference for a letter or digit but `&fjlig;`), compared without case.

use unicode_general_category::{get_general_category, GeneralCategory};

/// `text` as a reader sees it: HTML comments, tags, declarations and processing
/// instructions dropped, then character references decoded, then invisible characters
/// removed.
pub fn visible(text: &str) -> String {
    strip_invisible(&decode_references(&strip_markup(text)))
}

/// `text` with its character references decoded and invisible characters removed, markup
/// kept: a tag's attributes hold links (`<img src=…>`) that [`visible`] drops.
pub fn decoded(text: &str) -> String {
    strip_invisible(&decode_references(text))
}

/// `text` with Markdown's inline marks a secret can be cut by removed: a backslash before
/// punctuation, `*`, `~` and `` ` `` (`gh**p**_x` shows `ghp_x` in bold).
pub fn without_inline_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_punctuation) => {}
            '*' | '~' | '`' => {}
            _ => out.push(c),
        }
    }
    out
}

/// `text` with its `%XX` escapes decoded (invalid UTF-8 replaced).
pub fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a reader never sees `c`: a format character (zero-width spaces and joiners,
/// soft hyphen, bidi controls, tags), a variation selector, a combining grapheme joiner, or
/// a Hangul filler.
pub fn is_invisible(c: char) -> bool {
    // No ASCII character is (and most are ASCII: the category's table is not looked up).
    !c.is_ascii() && get_general_category(c) == GeneralCategory::Format
        || matches!(c,
            '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}'
            | '\u{180b}'..='\u{180f}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{e0100}'..='\u{e01ef}')
}

/// `text` without the characters a reader never sees ([`is_invisible`]).
pub fn strip_invisible(text: &str) -> String {
    text.chars().filter(|c| !is_invisible(*c)).collect()
}

/// `text` without HTML comments (an unclosed one runs to the end, as a browser reads it),
/// tags (`<x …>`, `</x>`, attribute values quoted or not), declarations and processing
/// instructions (`<!…>`, `<?…>`). A `<` that starts none of them is kept.
pub fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Where the next `>` is, from where it was looked for (`None`: there is none): a
    // declaration left open must not make every `<!` after it look to the end again.
    let mut next_gt: Option<Option<usize>> = None;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let tail = &rest[lt..];
        let at = text.len() - tail.len();
        let gt = match next_gt {
            Some(Some(gt)) if gt >= at => Some(gt),
            Some(None) => None,
            _ => {
                let found = tail.find('>').map(|i| at + i);
                next_gt = Some(found);
                found
            }
        };
        match markup_len(tail, gt.map(|gt| gt - at)) {
            Some(len) => rest = &tail[len..],
            None => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of the comment, tag, declaration or instruction `text` starts with; `gt` is
/// where its first `>` is.
fn markup_len(text: &str, gt: Option<usize>) -> Option<usize> {
    if let Some(body) = text.strip_prefix("<!--") {
        // `<!-->` and `<!--->` are empty comments; else up to `-->` (or `--!>`).
        for empty in [">", "->"] {
            if body.starts_with(empty) {
                return Some(4 + empty.len());
            }
        }
        // Both ends looked for at once: only as far as the first.
        let mut end = body.len();
        let mut from = 0;
        while let Some(dashes) = body[from..].find("--") {
            let after = &body[from + dashes + 2..];
            if after.starts_with('>') {
                end = from + dashes + 3;
                break;
            }
            if after.starts_with("!>") {
                end = from + dashes + 4;
                break;
            }
            from += dashes + 1;
        }
        return Some(4 + end);
    }
    let bytes = text.as_bytes();
    match bytes.get(1) {
        Some(b'!' | b'?') => gt.map(|i| i + 1),
        Some(b'/') if bytes.get(2).is_some_and(u8::is_ascii_alphabetic) => tag_len(text, 2),
        Some(c) if c.is_ascii_alphabetic() => tag_len(text, 1),
        _ => None,
    }
}

/// The length of the tag `text` starts with, its name at `from`: up to the `>` outside a
/// quoted attribute value.
fn tag_len(text: &str, from: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, b) in text.bytes().enumerate().skip(from) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => return Some(i + 1),
            (None, b'<') => return None,
            _ => {}
        }
    }
    None
}

/// The named references decoded: every one that spells an ASCII character, and the ones
/// that spell an invisible character (removed after decoding).
const NAMED: &[(&str, &str)] = &[
    ("tab", "\t"),
    ("newline", "\n"),
    ("excl", "!"),
    ("quot", "\""),
    ("num", "#"),
    ("dollar", "$"),
    ("percnt", "%"),
    ("amp", "&"),
    ("apos", "'"),
    ("lpar", "("),
    ("rpar", ")"),
    ("ast", "*"),
    ("midast", "*"),
    ("plus", "+"),
    ("comma", ","),
    ("period", "."),
    ("sol", "/"),
    ("colon", ":"),
    ("semi", ";"),
    ("lt", "<"),
    ("equals", "="),
    ("gt", ">"),
    ("quest", "?"),
    ("commat", "@"),
    ("lsqb", "["),
    ("lbrack", "["),
    ("bsol", "\\"),
    ("rsqb", "]"),
    ("rbrack", "]"),
    ("hat", "^"),
    ("lowbar", "_"),
    ("underbar", "_"),
    ("grave", "`"),
    ("diacriticalgrave", "`"),
    ("lcub", "{"),
    ("lbrace", "{"),
    ("verbar", "|"),
    ("vert", "|"),
    ("verticalline", "|"),
    ("rcub", "}"),
    ("rbrace", "}"),
    ("fjlig", "fj"),
    ("nbsp", "\u{a0}"),
    ("nonbreakingspace", "\u{a0}"),
    ("shy", "\u{ad}"),
    ("zerowidthspace", "\u{200b}"),
    ("negativeverythinspace", "\u{200b}"),
    ("negativethinspace", "\u{200b}"),
    ("negativemediumspace", "\u{200b}"),
    ("negativethickspace", "\u{200b}"),
    ("zwnj", "\u{200c}"),
    ("zwj", "\u{200d}"),
    ("lrm", "\u{200e}"),
    ("rlm", "\u{200f}"),
    ("nobreak", "\u{2060}"),
    ("applyfunction", "\u{2061}"),
    ("af", "\u{2061}"),
    ("invisibletimes", "\u{2062}"),
    ("it", "\u{2062}"),
    ("invisiblecomma", "\u{2063}"),
    ("ic", "\u{2063}"),
];

/// The references HTML decodes without their `;`.
const LEGACY: &[&str] = &["amp", "lt", "gt", "quot", "nbsp", "shy"];

/// `text` with its HTML character references decoded as a forge's renderer would:
/// numeric ones of any length (`&#58;`, `&#x3a;`, `&#x000000003a;`, the `;` optional as
/// HTML allows) and the named ones of `NAMED`.
pub fn decode_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        match numeric_reference(rest).or_else(|| named_reference(rest)) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &rest[used..];
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

/// `#123;` or `#x7b;` at the start of `rest` (after the `&`): the character and the bytes
/// used.
fn numeric_reference(rest: &str) -> Option<(String, usize)> {
    let digits = rest.strip_prefix('#')?;
    let (digits, radix, skip) = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16, 2),
        None => (digits, 10, 1),
    };
    let len = digits
        .bytes()
        .take_while(|b| (*b as char).is_digit(radix))
        .count();
    if len == 0 {
        return None;
    }
    // Any length: past U+10FFFF the value only grows, so saturating is exact enough.
    let value = digits[..len].chars().fold(0u64, |value, c| {
        value
            .saturating_mul(u64::from(radix))
            .saturating_add(u64::from(c.to_digit(radix).unwrap_or(0)))
    });
    let c = u32::try_from(value)
        .ok()
        .filter(|v| *v != 0)
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let used = skip + len + usize::from(digits[len..].starts_with(';'));
    Some((c.to_string(), used))
}

/// A named reference at the start of `rest` (after the `&`).
fn named_reference(rest: &str) -> Option<(String, usize)> {
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let lower = name.to_ascii_lowercase();
    let (_, decoded) = NAMED.iter().find(|(n, _)| *n == lower)?;
    if rest[name.len()..].starts_with(';') {
        Some(((*decoded).to_owned(), name.len() + 1))
    } else {
        LEGACY
            .contains(&lower.as_str())
            .then(|| ((*decoded).to_owned(), name.len()))
    }
}

/// `text`'s letters and digits alone: what a reader reads of a text cut by spaces, line
/// breaks, a table's cells or a link's brackets (`gh[p_x]()` reads `ghp_x`).
pub fn skeleton(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// `text` with git's C-style escapes read as git reads a quoted path (`"b/\147\150"`):
/// `\ooo` octal bytes, `\t`, `\n`, `\"`, `\\` and the other single-letter ones (invalid
/// UTF-8 replaced).
pub fn c_unquoted(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3');
        if let Some(digits) = octal {
            out.push(digits.iter().fold(0u8, |v, d| v * 8 + (d - b'0')));
            i += 4;
            continue;
        }
        let single = match bytes.get(i + 1) {
            Some(b'a') => Some(7),
            Some(b'b') => Some(8),
            Some(b't') => Some(b'\t'),
            Some(b'n') => Some(b'\n'),
            Some(b'v') => Some(11),
            Some(b'f') => Some(12),
            Some(b'r') => Some(b'\r'),
            Some(b'"') => Some(b'"'),
            Some(b'\\') => Some(b'\\'),
            _ => None,
        };
        match single {
            Some(b) => {
                out.push(b);
                i += 2;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
