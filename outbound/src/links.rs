//! Links and mentions in a text as a forge renders it: the links it makes (and the images
//! every reader's browser fetches: an exfiltration channel) and the mentions it notifies.
//! Pure: no I/O. The text given is one of [`crate::render`]'s views.
//!
//! Invariants: a link is `scheme://host`, `http:host` or `https:\\host`, a
//! scheme-relative `//host` (or `\\host`) where a link or an attribute starts, or a
//! `www.host` autolink; tabs and line breaks inside it are ignored, as URL parsers drop
//! them (but a line break before it is whitespace for where it may start). A mention is
//! an `@` not preceded by an ASCII letter, digit or `_`, followed by a name (GitHub's
//! rule, the wider of the two forges'). Linear in the text's length.
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
    // maps each of its bytes (and its end) back to `text`; `after_break` says of each of
    // its characters whether a dropped tab or line break stood right before it (for what
    // a link may follow, it is whitespace: `x\nwww.host` is a link on its own line).
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len() + 1);
    let mut after_break = Vec::with_capacity(text.len());
    let mut dropped = false;
    for (at, c) in text.char_indices() {
        if matches!(c, '\t' | '\n' | '\r') {
            dropped = true;
            continue;
        }
        lower.push(c.to_ascii_lowercase());
        origin.extend((0..c.len_utf8()).map(|i| at + i));
        after_break.push(std::mem::take(&mut dropped));
    }
    origin.push(text.len());
    let is_slash = |c: char| c == '/' || c == '\\';
    let chars: Vec<(usize, char)> = lower.char_indices().collect();
    // For each byte of `lower`: where the authority that would start there ends (the
    // first character that ends one, at or after it), and the last `@` before it; so a
    // link's authority is read in constant time however many links share it.
    let ends_authority = |c: char| c.is_whitespace() || "/?#<>\"'`)]|\\".contains(c);
    let mut authority_end = vec![lower.len(); lower.len() + 1];
    for &(at, c) in chars.iter().rev() {
        let end = if ends_authority(c) {
            at
        } else {
            authority_end[at + c.len_utf8()]
        };
        authority_end[at..at + c.len_utf8()].fill(end);
    }
    let mut last_at = vec![usize::MAX; lower.len() + 1];
    for (i, b) in lower.bytes().enumerate() {
        last_at[i + 1] = if b == b'@' { i } else { last_at[i] };
    }
    let mut found = Vec::new();
    let mut covered = 0;
    for (n, &(at, c)) in chars.iter().enumerate() {
        if at < covered {
            continue;
        }
        let before = match after_break[n] {
            true => Some('\n'),
            false => n.checked_sub(1).map(|m| chars[m].1),
        };
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
            // Anywhere a link may start: after a space, `(`, `<`, a quote, `=`, the `:` of
            // a link reference definition (`[x]://host`), a srcset's `,`...; not inside a
            // path (`a//b`, `x-//y`).
            && before.is_none_or(|b| !(b.is_alphanumeric() || "/\\-._~%+".contains(b)))
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
        let end = authority_end[from];
        let host_from = match last_at[end] {
            at_sign if at_sign != usize::MAX && at_sign >= from => at_sign + 1,
            _ => from,
        };
        let host_port = &lower[host_from..end];
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        let host = host.trim_end_matches('.');
        if !host.is_empty() && !allowed(host) {
            found.push(Link {
                span: origin[start]..origin[end],
                host: host.to_owned(),
            });
            covered = end;
        }
    }
    found
}

/// The first mention of `text`: the range of its `@name` and the name.
pub fn mention(text: &str) -> Option<(Range<usize>, String)> {
    mentions(text).into_iter().next()
}

/// Every `@name` mention of `text`: an `@` not preceded by an ASCII letter, digit or `_`
/// (so `a@b.c` is an address, not a mention) followed by a user or team name.
pub fn mentions(text: &str) -> Vec<(Range<usize>, String)> {
    let mut found = Vec::new();
    let mut before: Option<char> = None;
    for (at, c) in text.char_indices() {
        let previous = before.replace(c);
        // GitHub's filter: an `@` at the start or after any character but an ASCII letter,
        // digit or `_` (so `x.@name`, `x-@name` and `é@name` mention too).
        if c != '@' || previous.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_') {
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

/// A reference to a repository's issue, pull request or commit, as forges link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The repository referred to, `owner/name`, lowercase.
    pub repository: String,
    /// The reference as written (`owner/name#12`).
    pub text: String,
}

/// Every `owner/name#12`, `owner/name!12` or `owner/name@<7 to 40 hex digits>` of `text`
/// (GitHub's and Gitea's cross-repository references): an owner and a name that start
/// where a word may (not after a letter, digit or one of `_./-`). Linear in the text's
/// length.
pub fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let is_owner = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_name(bytes[i - 1]) || bytes[i - 1] == b'/');
        if !(starts_word && bytes[i].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let owner_end = i + bytes[i..].iter().take_while(|b| is_owner(**b)).count();
        if bytes.get(owner_end) != Some(&b'/') {
            // Not an owner: skip the whole word, so each byte is looked at a bounded
            // number of times.
            i = owner_end.max(i + 1);
            continue;
        }
        let name_start = owner_end + 1;
        let name_end = name_start
            + bytes[name_start..]
                .iter()
                .take_while(|b| is_name(**b))
                .count();
        let reference_end = match (name_end > name_start, bytes.get(name_end)) {
            (true, Some(b'#' | b'!')) => {
                let digits = bytes[name_end + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                (digits > 0).then_some(name_end + 1 + digits)
            }
            (true, Some(b'@')) => {
                let hex = bytes[name_end + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                let ends = bytes
                    .get(name_end + 1 + hex)
                    .is_none_or(|b| !b.is_ascii_alphanumeric());
                ((7..=40).contains(&hex) && ends).then_some(name_end + 1 + hex)
            }
            _ => None,
        };
        if let Some(end) = reference_end {
            found.push(Reference {
                repository: text[i..name_end].to_ascii_lowercase(),
                text: text[i..end].to_owned(),
            });
            i = end;
        } else {
            i = name_end.max(i + 1);
        }
    }
    found
}

/// The domain of every e-mail address of `text` a forge would link as `mailto:` (GFM's
/// extended e-mail autolink: letters, digits and `._+-` before the `@`, then at least two
/// labels of letters, digits, `-` and `_`, the last one not digits alone), lowercase.
/// Linear in the text's length.
pub fn email_domains(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_local = |b: u8| b.is_ascii_alphanumeric() || b"._+-".contains(&b);
    let is_label = |b: u8| b.is_ascii_alphanumeric() || b"-_".contains(&b);
    let mut found = Vec::new();
    let mut from = 0;
    for (at, _) in text.match_indices('@') {
        if at < from || at == 0 || !is_local(bytes[at - 1]) {
            continue;
        }
        let end = at
            + 1
            + bytes[at + 1..]
                .iter()
                .take_while(|b| is_label(**b) || **b == b'.')
                .count();
        let domain = text[at + 1..end].trim_end_matches(['.', '-', '_']);
        // No top-level domain is digits alone (`lodash@4.17.21` is a version).
        let tld = domain.rsplit('.').next().unwrap_or("");
        let named = tld.bytes().any(|b| b.is_ascii_alphabetic());
        if domain.contains('.') && !domain.starts_with('.') && named {
            found.push(domain.to_ascii_lowercase());
        }
        from = end;
    }
    found
}
