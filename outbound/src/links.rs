//! Links and mentions in a text as a forge renders it: the links it makes (and the images
//! every reader's browser fetches: an exfiltration channel) and the mentions it notifies.
//! Pure: no I/O. The text given is one of [`crate::render`]'s views.
//!
//! Invariants: a link is `scheme://host`, `http:host` or `https:\\host`, a
//! scheme-relative `//host` (or `\\host`) where a link or an attribute starts, or a
//! `www.host` autolink; tabs and line breaks inside it are ignored, as URL parsers drop
//! them. A mention is an `@` not preceded by a word character, followed by a name.
//! Offsets returned are byte offsets into the text given.

use std::ops::Range;

/// A link to a host: where it starts (its scheme, slashes or `www.`) and where its
/// authority ends, in the text given, and the host, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub span: Range<usize>,
    pub host: String,
}

/// Every link of `text` whose host `allowed` does not accept.
pub fn foreign_links(text: &str, allowed: &dyn Fn(&str) -> bool) -> Vec<Link> {
    // Without tabs and line breaks (which URL parsers drop), ASCII-lowercased; `origin`
    // maps each of its bytes (and its end) back to `text`.
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len() + 1);
    for (at, c) in text.char_indices() {
        if !matches!(c, '\t' | '\n' | '\r') {
            lower.push(c.to_ascii_lowercase());
            origin.extend((0..c.len_utf8()).map(|i| at + i));
        }
    }
    origin.push(text.len());
    let is_slash = |c: char| c == '/' || c == '\\';
    let chars: Vec<(usize, char)> = lower.char_indices().collect();
    let mut found = Vec::new();
    let mut covered = 0;
    for (n, &(at, c)) in chars.iter().enumerate() {
        if at < covered {
            continue;
        }
        let before = n.checked_sub(1).map(|m| chars[m].1);
        let rest = &lower[at..];
        // (where the link starts, where its authority starts)
        let start = if c == ':' {
            let scheme_len: usize = lower[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || "+.-".contains(*c))
                .count();
            let scheme = &lower[at - scheme_len..at];
            let slashes = rest[1..].chars().take_while(|c| is_slash(*c)).count();
            let web = ["http", "https", "ftp", "ws", "wss"].contains(&scheme);
            (web || (slashes >= 2 && !scheme.is_empty()))
                .then_some((at - scheme_len, at + 1 + slashes))
        } else if is_slash(c)
            && rest[1..].starts_with(is_slash)
            && before.is_none_or(|b| b.is_whitespace() || "(<\"'=".contains(b))
        {
            Some((
                at,
                at + 2 + rest[2..].chars().take_while(|c| is_slash(*c)).count(),
            ))
        } else if rest.starts_with("www.")
            && before.is_none_or(|b| b.is_whitespace() || "*_~(<\"'=".contains(b))
        {
            Some((at, at))
        } else {
            None
        };
        let Some((start, from)) = start else {
            continue;
        };
        let authority_len: usize = lower[from..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !"/?#<>\"'`)]|\\".contains(*c))
            .map(char::len_utf8)
            .sum();
        let authority = &lower[from..from + authority_len];
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        let host = host.trim_end_matches('.');
        if !host.is_empty() && !allowed(host) {
            found.push(Link {
                span: origin[start]..origin[from + authority_len],
                host: host.to_owned(),
            });
            covered = from + authority_len;
        }
    }
    found
}

/// The first mention of `text`: the range of its `@name` and the name.
pub fn mention(text: &str) -> Option<(Range<usize>, String)> {
    mentions(text).into_iter().next()
}

/// Every `@name` mention of `text`: an `@` not preceded by a word character (so `a@b.c`
/// is an address, not a mention) followed by a user or team name.
pub fn mentions(text: &str) -> Vec<(Range<usize>, String)> {
    let mut found = Vec::new();
    let mut before: Option<char> = None;
    for (at, c) in text.char_indices() {
        let previous = before.replace(c);
        if c != '@' || previous.is_some_and(|b| b.is_alphanumeric() || "_.-".contains(b)) {
            continue;
        }
        let name: String = text[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-/_".contains(*c))
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            found.push((at..at + 1 + name.len(), name));
        }
    }
    found
}
