//! Text as Markdown: what the generated pages need to show text from the code as written.

/// `text` as Markdown prose: `<` and `>` outside code spans become entities (help texts
/// say `<token>`, which a Markdown renderer would take for an HTML tag), the rest as is.
pub(super) fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            '>' if !in_code => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Plain text (a help text, not Markdown) as Markdown prose: as [`prose`], and `*` outside
/// code spans escaped, so `*.plue.py ... *` never turns into emphasis.
pub(super) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in prose(text).chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '*' if !in_code => out.push_str("\\*"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` as one table cell: prose on one line, `|` escaped.
pub(super) fn cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    prose(&one_line).replace('|', "\\|")
}

/// `text` as an inline code span, with enough backticks around it for the ones inside.
pub(super) fn code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// `code` as a table cell (a code span, with `|` escaped: GFM tables split on it even
/// inside code spans).
pub(super) fn code_cell(text: &str) -> String {
    code(text).replace('|', "\\|")
}

/// The id mdBook gives a heading whose rendered text is `text` (markup and entities
/// dropped): lower case; letters, digits, `-` and `_` kept; white space as `-`; the rest
/// dropped. A repeated id gets `-1`, `-2`, ... (not handled here).
pub(crate) fn heading_id(text: &str) -> String {
    let mut text = text.to_string();
    for entity in ["&lt;", "&gt;", "&amp;", "&#39;", "&quot;"] {
        text = text.replace(entity, "");
    }
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_escapes_angle_brackets_outside_code_only() {
        assert_eq!(
            prose("Bearer <token> or `<FILE>`"),
            "Bearer &lt;token&gt; or `<FILE>`"
        );
    }

    #[test]
    fn plain_text_keeps_its_asterisks() {
        assert_eq!(
            plain("every *.plue.py and `*.md` *"),
            "every \\*.plue.py and `*.md` \\*"
        );
    }

    #[test]
    fn a_cell_is_one_line_without_bare_pipes() {
        assert_eq!(cell("a | b\n  c"), "a \\| b c");
    }

    #[test]
    fn code_spans_hold_backticks() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
    }
}
