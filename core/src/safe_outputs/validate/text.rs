//! How a forge reads a proposal's text — the links it renders (and the images every
//! reader's browser fetches), the mentions it notifies, what it shows after decoding HTML
//! references and percent escapes — for [`super`]'s checks. Pure: no IO.

use evaluator::safe_outputs::SafeOutputs;

/// The first link to a host that is neither allowed nor the forge's, however the text
/// writes it for the markdown and HTML a forge renders: `scheme://host`, `http:host` and
/// `https:\\host`, a scheme-relative `//host` (or `\\host`) where a link or an attribute
/// starts, a `www.host` autolink — after HTML character references are decoded and tabs
/// and line breaks (which URL parsers drop) removed.
pub(super) fn foreign_link(
    text: &str,
    so: &SafeOutputs,
    forge_host: Option<&str>,
) -> Option<String> {
    let lower: String = decode_references(text)
        .to_lowercase()
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let allowed = |host: &str| Some(host) == forge_host || so.allow_links.iter().any(|h| h == host);
    let is_slash = |c: char| c == '/' || c == '\\';
    let chars: Vec<(usize, char)> = lower.char_indices().collect();
    for (n, &(at, c)) in chars.iter().enumerate() {
        let before = n.checked_sub(1).map(|m| chars[m].1);
        let rest = &lower[at..];
        // Where an authority starts, if a link starts here.
        let authority_at = if c == ':' {
            let scheme: String = lower[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || "+.-".contains(*c))
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            let slashes = rest[1..].chars().take_while(|c| is_slash(*c)).count();
            let web = ["http", "https", "ftp", "ws", "wss"].contains(&scheme.as_str());
            (web || (slashes >= 2 && !scheme.is_empty())).then_some(at + 1 + slashes)
        } else if is_slash(c)
            && rest[1..].starts_with(is_slash)
            && before.is_none_or(|b| b.is_whitespace() || "(<\"'=".contains(b))
        {
            Some(at + 2 + rest[2..].chars().take_while(|c| is_slash(*c)).count())
        } else if rest.starts_with("www.")
            && before.is_none_or(|b| b.is_whitespace() || "*_~(<\"'=".contains(b))
        {
            Some(at)
        } else {
            None
        };
        let Some(from) = authority_at else {
            continue;
        };
        let authority: String = lower[from..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !"/?#<>\"'`)]|\\".contains(*c))
            .collect();
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.split(':').next().unwrap_or(""),
        };
        let host = host.trim_end_matches('.');
        if !host.is_empty() && !allowed(host) {
            return Some(host.to_owned());
        }
    }
    None
}

/// `text` with its HTML character references decoded as a forge's renderer (CommonMark,
/// then an HTML parser) would: numeric ones (`&#58;`, `&#x3a;`, the `;` optional as HTML
/// allows) and the named ones that can spell a link or a mention.
pub(super) fn decode_references(text: &str) -> String {
    const NAMED: [(&str, char); 24] = [
        ("colon", ':'),
        ("sol", '/'),
        ("bsol", '\\'),
        ("period", '.'),
        ("commat", '@'),
        ("tab", '\t'),
        ("newline", '\n'),
        ("amp", '&'),
        ("quot", '"'),
        ("apos", '\''),
        ("lt", '<'),
        ("gt", '>'),
        ("lpar", '('),
        ("rpar", ')'),
        ("lsqb", '['),
        ("rsqb", ']'),
        ("lbrack", '['),
        ("rbrack", ']'),
        ("equals", '='),
        ("quest", '?'),
        ("num", '#'),
        ("excl", '!'),
        ("percnt", '%'),
        ("nbsp", ' '),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let numeric = rest
            .strip_prefix('#')
            .map(|n| match n.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16, 2),
                None => (n, 10, 1),
            })
            .and_then(|(digits, radix, skip)| {
                let len = digits.chars().take_while(|c| c.is_digit(radix)).count();
                let value = u32::from_str_radix(&digits[..len.min(8)], radix).ok()?;
                let used = skip + len + usize::from(digits[len..].starts_with(';'));
                Some((char::from_u32(value).unwrap_or('\u{fffd}'), used))
            });
        let named = || {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let lower = name.to_ascii_lowercase();
            let (_, c) = NAMED.iter().find(|(n, _)| *n == lower)?;
            rest[name.len()..]
                .starts_with(';')
                .then_some((*c, name.len() + 1))
        };
        match numeric.or_else(named) {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

/// The first `@name` mention: an `@` not preceded by a word character (so `a@b.c` is an
/// address, not a mention) followed by a user or team name.
pub(super) fn mention(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c != '@' {
            continue;
        }
        let before = i.checked_sub(1).map(|j| chars[j]);
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '.' || b == '-') {
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '-' || **c == '/' || **c == '_')
            .collect();
        if name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return Some(name);
        }
    }
    None
}

/// `text` with its `%XX` escapes decoded (invalid UTF-8 replaced).
pub(super) fn percent_decoded(text: &str) -> String {
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
