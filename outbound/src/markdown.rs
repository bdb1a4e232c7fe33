//! What a forge's reader gets of a Markdown text, read by the same kind of parsers the
//! forge and the reader's browser use: the text is rendered by a CommonMark + GFM
//! implementation (`comrak`) configured as GitHub's `cmark-gfm` renders (tables,
//! strikethrough, autolinks, task lists; raw HTML kept, as GitHub keeps it before its
//! sanitiser drops what it does not allow), and the HTML it makes is read by a WHATWG HTML
//! tokenizer (`html5gum`), as a browser reads it. Pure: no I/O.
//!
//! A [`Reading`] holds what a reader gets: the visible text (every text node, alt and
//! title texts), the text nodes the forge scans for its own links, mentions and references
//! (outside `a`, `code` and `pre`, as GitHub's filters skip them), and every URL an element
//! of the rendered HTML names (`href`, `src`, a `srcset`'s, …), character references
//! decoded as the browser decodes them. The URLs are judged by the caller with a WHATWG URL
//! parser ([`crate::Checker`]).
//!
//! Invariants:
//! - The reading is a superset of both renderings a GitHub reader may meet: with and
//!   without footnotes (GitHub's renderer reads `[^1]: …` as a footnote, cmark-gfm as a
//!   link reference definition), each read whole.
//! - `comrak` follows CommonMark 0.31; GitHub's `cmark-gfm` 0.29. Where 0.31 reads as
//!   markup what 0.29 shows as text (comments such as `<!-- a -- b -->` and `<!-->`,
//!   lower-case declarations, the blocks 0.31 starts at `<textarea>` and `<search>`), the
//!   text is read as 0.29 reads it: that `<` is written `&lt;` before rendering, which
//!   only ever shows the wall more than a reader gets, never less.
//! - What the renderer does not reach (a diff, a file name, a label) is not read here.

use comrak::{Arena, Options};

/// What a reader of a forge gets of a Markdown text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Every text node of the rendered HTML, joined as they follow each other (a secret
    /// cut by a tag reads whole), and the alt and title texts, each on a line of its own.
    pub visible: String,
    /// The text nodes outside `a`, `code` and `pre` (where forges link bare URLs, mentions
    /// and references of their own), each on a line of its own (as a forge's filters read
    /// them, node by node).
    pub linkable: String,
    /// The same text nodes joined where nothing but markup stands between them (as they
    /// read once the markup is dropped).
    pub linkable_joined: String,
    /// Every URL an element of the rendered HTML names, as the browser reads the attribute.
    pub urls: Vec<String>,
    /// Whether the text could not be read as the forge reads it (the renderer failed): the
    /// wall refuses it.
    pub unreadable: bool,
}

/// What a forge's reader gets of `markdown`.
pub fn read(markdown: &str) -> Reading {
    let mut reading = Reading::default();
    for footnotes in [false, true] {
        let options = forge_options(footnotes);
        match as_cmark_029(markdown, &options) {
            Some(html) => reading.extend(read_html(&html)),
            None => reading.unreadable = true,
        }
    }
    reading
}

/// `markdown` rendered to HTML as GitHub's `cmark-gfm` renders it (raw HTML kept).
pub fn render(markdown: &str) -> Option<String> {
    as_cmark_029(markdown, &forge_options(true))
}

/// The renderer's options: GitHub's extensions, raw HTML and every URL kept.
fn forge_options(footnotes: bool) -> Options<'static> {
    let mut options = Options::default();
    options.extension.strikethrough = true;
    options.extension.table = true;
    options.extension.autolink = true;
    options.extension.tasklist = true;
    options.extension.footnotes = footnotes;
    options.render.r#unsafe = true;
    options.render.gfm_quirks = true;
    options
}

impl Reading {
    fn extend(&mut self, other: Reading) {
        if !self.visible.is_empty() {
            // A space too: a line break is nothing inside a URL to a scan of links.
            self.visible.push_str(" \n");
        }
        self.visible.push_str(&other.visible);
        if !self.linkable.is_empty() {
            self.linkable.push_str(" \n");
        }
        self.linkable.push_str(&other.linkable);
        if !self.linkable_joined.is_empty() {
            self.linkable_joined.push_str(" \n");
        }
        self.linkable_joined.push_str(&other.linkable_joined);
        for url in other.urls {
            if !self.urls.contains(&url) {
                self.urls.push(url);
            }
        }
        self.unreadable |= other.unreadable;
    }
}

/// `markdown` rendered with `options`, read as CommonMark 0.29 reads it (`None` if the
/// renderer fails).
///
/// Where 0.31 reads markup that 0.29 shows as text, that markup's `<` is written `&lt;`
/// first (which a renderer shows as `<` and never reads as markup, whatever precedes it):
/// a distortion only where the same characters stand in code, a link destination or an
/// HTML block, where it hides nothing (it only shows more to the wall). What is escaped:
/// - an HTML comment 0.29 does not accept: one whose text starts with `>` or `->` or holds
///   `--` before its `-->` (`<!-->`, `<!-- a -- b -->`), or one never closed;
/// - a declaration whose name is not upper-case (`<!x y>`), markup in 0.31 only;
/// - every `textarea` and `search` tag: 0.31 starts a block at `<textarea>` (type 1,
///   ending at `</textarea>` also for `<pre>`, `<script>` and `<style>`) and at `<search>`
///   (type 6) where 0.29 does not; GitHub shows `<textarea>` as text anyway (its tag
///   filter).
fn as_cmark_029(markdown: &str, options: &Options) -> Option<String> {
    let text = escape_for_029(markdown);
    let arena = Arena::new();
    let root = comrak::parse_document(&arena, &text, options);
    let mut html = String::new();
    comrak::format_html(root, options, &mut html).ok()?;
    Some(html)
}

/// `text` with the `<` of the markup [`as_cmark_029`] names written `&lt;`. Linear in the
/// text's length.
fn escape_for_029(text: &str) -> String {
    const TAGS: &[&str] = &["<textarea", "</textarea", "<search", "</search"];
    let bytes = text.as_bytes();
    // For each byte, where the first `--` at or after it starts (`usize::MAX`: none).
    let mut next_dashes = vec![usize::MAX; bytes.len() + 1];
    for i in (0..bytes.len()).rev() {
        next_dashes[i] = match bytes.get(i..i + 2) {
            Some(b"--") => i,
            _ => next_dashes[i + 1],
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (at, _) in text.match_indices('<') {
        let rest = &bytes[at..];
        let escape = if rest.starts_with(b"<!--") {
            let body = at + 4;
            let accepted = bytes[body..].starts_with(b"-->")
                || (!bytes[body..].starts_with(b">")
                    && !bytes[body..].starts_with(b"->")
                    && bytes
                        .get(next_dashes[body]..)
                        .is_some_and(|dashes| dashes.starts_with(b"-->")));
            !accepted
        } else if rest.len() > 2 && rest[1] == b'!' {
            rest[2].is_ascii_lowercase()
        } else {
            TAGS.iter().any(|t| {
                rest.len() >= t.len() && rest[..t.len()].eq_ignore_ascii_case(t.as_bytes())
            })
        };
        if escape {
            out.push_str(&text[from..at]);
            out.push_str("&lt;");
            from = at + 1;
        }
    }
    out.push_str(&text[from..]);
    out
}

/// Attributes whose value a browser reads as a URL (fetched, followed or submitted to).
const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "srcset",
    "imagesrcset",
    "poster",
    "cite",
    "action",
    "formaction",
    "data",
    "background",
    "longdesc",
    "usemap",
    "codebase",
    "archive",
    "lowsrc",
    "dynsrc",
    "manifest",
    "ping",
    "xlink:href",
    "icon",
    "profile",
    "classid",
    "itemtype",
];

/// Attributes whose value a reader sees (a tooltip, an image's stand-in).
const VISIBLE_ATTRIBUTES: &[&str] = &["alt", "title", "aria-label", "placeholder", "label"];

/// Elements inside which forges link nothing of their own (GitHub's tag filter shows
/// `<script>` and `<style>` as text, so what follows them is linked as any text).
const UNLINKED: &[&str] = &["a", "code", "pre"];

/// Attributes of SVG animations whose values set another attribute (a link's `href`).
const ANIMATION_VALUES: &[&str] = &["values", "from", "to", "by"];

/// What a browser's reader gets of `html`: its text nodes, the texts of its visible
/// attributes and the URLs of its elements.
fn read_html(html: &str) -> Reading {
    use html5gum::{Token, Tokenizer};
    let mut reading = Reading::default();
    let mut attributes_seen = String::new();
    // How deep inside each element of UNLINKED the text is.
    let mut unlinked = 0usize;
    let mut stack: Vec<String> = Vec::new();
    // The text as a browser builds it: what stands in a table outside its cells is moved
    // before the table (foster parenting), so it reads joined to what precedes the table.
    // (Built as what precedes the outermost table, what is fostered out of it, and its
    // cells' text, joined when it ends: linear however much is fostered.)
    let mut fostered = String::new();
    let mut fostered_out = String::new();
    let mut table_text = String::new();
    let mut table_depth = 0usize;
    let mut cell_depth = 0usize;
    for token in Tokenizer::new(html).flatten() {
        match token {
            Token::String(text) => {
                let text = String::from_utf8_lossy(&text);
                reading.visible.push_str(&text);
                match (table_depth > 0, cell_depth > 0) {
                    (true, false) => fostered_out.push_str(&text),
                    (true, true) => table_text.push_str(&text),
                    (false, _) => fostered.push_str(&text),
                }
                if unlinked == 0 {
                    reading.linkable.push_str(&text);
                    reading.linkable.push_str(" \n");
                    reading.linkable_joined.push_str(&text);
                }
            }
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                match name.as_str() {
                    "table" if !tag.self_closing => table_depth += 1,
                    "td" | "th" | "caption" if table_depth > 0 && !tag.self_closing => {
                        cell_depth += 1
                    }
                    _ => {}
                }
                for (attribute, value) in &tag.attributes {
                    let attribute = String::from_utf8_lossy(attribute).to_ascii_lowercase();
                    let value = String::from_utf8_lossy(value).into_owned();
                    if attribute == "style" {
                        reading.urls.extend(css_urls(&value));
                    } else if ANIMATION_VALUES.contains(&attribute.as_str()) {
                        reading
                            .urls
                            .extend(value.split(';').map(|v| v.trim().to_owned()));
                    } else if URL_ATTRIBUTES.contains(&attribute.as_str()) {
                        if attribute.ends_with("srcset") {
                            reading.urls.extend(srcset_urls(&value));
                        } else {
                            reading.urls.push(value);
                        }
                    } else if VISIBLE_ATTRIBUTES.contains(&attribute.as_str()) {
                        attributes_seen.push_str(" \n");
                        attributes_seen.push_str(&value);
                    }
                }
                if !tag.self_closing && UNLINKED.contains(&name.as_str()) {
                    reading.linkable_joined.push_str(" \n");
                    unlinked += 1;
                    stack.push(name);
                }
            }
            Token::EndTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                match name.as_str() {
                    "table" if table_depth > 0 => {
                        table_depth -= 1;
                        if table_depth == 0 {
                            fostered.push_str(&std::mem::take(&mut fostered_out));
                            fostered.push_str(&std::mem::take(&mut table_text));
                        }
                    }
                    "td" | "th" | "caption" => cell_depth = cell_depth.saturating_sub(1),
                    _ => {}
                }
                if let Some(open) = stack.iter().rposition(|n| *n == name) {
                    unlinked -= stack.len() - open;
                    stack.truncate(open);
                }
            }
            Token::Comment(_) | Token::Doctype(_) | Token::Error(_) => {}
        }
    }
    reading.visible.push_str(&attributes_seen);
    // A table never closed: the browser closes it at the end.
    fostered.push_str(&fostered_out);
    fostered.push_str(&table_text);
    if fostered != reading.visible {
        reading.visible.push_str(" \n");
        reading.visible.push_str(&fostered);
    }
    reading
}

/// The URLs of a `style` attribute's `url(…)`s, CSS escapes decoded (`\2f` is `/`).
fn css_urls(style: &str) -> Vec<String> {
    let mut decoded = String::with_capacity(style.len());
    let mut chars = style.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            decoded.push(c);
            continue;
        }
        let mut hex = String::new();
        while hex.len() < 6 && chars.peek().is_some_and(char::is_ascii_hexdigit) {
            hex.extend(chars.next());
        }
        if hex.is_empty() {
            decoded.extend(chars.next());
            continue;
        }
        if chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let value = u32::from_str_radix(&hex, 16).unwrap_or(0xfffd);
        decoded.push(char::from_u32(value).unwrap_or('\u{fffd}'));
    }
    let lower = decoded.to_ascii_lowercase();
    lower
        .match_indices("url(")
        .map(|(at, _)| {
            let rest = decoded[at + 4..].trim_start();
            let rest = rest.trim_start_matches(['"', '\'']);
            let end = rest.find(['"', '\'', ')']).unwrap_or(rest.len());
            rest[..end].trim().to_owned()
        })
        .collect()
}

/// The URLs of a `srcset` attribute: each candidate's first word.
fn srcset_urls(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|candidate| candidate.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_by_a_tag_reads_whole_and_a_comment_hides_nothing_forges_show() {
        let r = read("a <!-- -- gh<b></b>p_x --> b");
        assert!(r.visible.contains("ghp_x"), "{r:?}");
        let r = read("a <!x gh<b></b>p_x> b");
        assert!(r.visible.contains("ghp_x"), "{r:?}");
        let r = read("a <!-- gh<b></b>p_x --> b");
        assert!(!r.visible.contains("ghp_x"), "{r:?}");
        assert!(!r.unreadable);
    }

    #[test]
    fn links_are_read_as_the_renderer_makes_them() {
        let r = read("[l](https://docs.example.com\\.evil.example/a) ![i](//img.example/p)");
        assert!(
            r.urls
                .contains(&"https://docs.example.com.evil.example/a".to_owned()),
            "{r:?}"
        );
        assert!(r.urls.contains(&"//img.example/p".to_owned()), "{r:?}");
        let r = read("see www.evil.example/x and me@mail.example");
        assert!(
            r.urls.iter().any(|u| u.contains("www.evil.example")),
            "{r:?}"
        );
        assert!(r.urls.iter().any(|u| u.starts_with("mailto:")), "{r:?}");
        let r =
            read("<a href=\"&#x6a;avascript:x\">a</a> <img srcset=\"a.png 1x, //e.example/b 2x\">");
        assert!(r.urls.contains(&"javascript:x".to_owned()), "{r:?}");
        assert!(r.urls.contains(&"//e.example/b".to_owned()), "{r:?}");
    }

    #[test]
    fn a_footnote_is_read_both_as_a_footnote_and_as_a_link_definition() {
        let r = read("see [^1]\n\n[^1]: https://evil.example/x\n");
        assert!(r.urls.iter().any(|u| u.contains("evil.example")), "{r:?}");
    }

    #[test]
    fn code_and_links_are_not_linkable_text() {
        let r = read("`@admin` [@admin](#x) @someone");
        assert!(!r.linkable.contains("@admin"), "{r:?}");
        assert!(r.linkable.contains("@someone"), "{r:?}");
    }

    #[test]
    fn blocks_and_comments_only_newer_commonmark_reads_are_text() {
        // 0.31 starts a raw block at `<search>` and `<textarea>` and hides what follows;
        // 0.29 (GitHub) renders it as Markdown.
        for text in [
            "para\n<search>\n[t](javascript:x)",
            "<textarea>\n\n[t](javascript:x)",
            "<pre>\n</textarea>\n`<a href=\"javascript:x\">x</a>`",
        ] {
            let r = read(text);
            assert!(
                r.urls.iter().any(|u| u.starts_with("javascript")),
                "{text}: {r:?}"
            );
        }
        let nested = "<!-- -- ".repeat(50) + "-->";
        assert!(read(&format!("a {nested} ghp<b></b>_x"))
            .visible
            .contains("ghp_x"));
    }
}
