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
//! - `comrak` follows CommonMark 0.31; GitHub's `cmark-gfm` 0.29. Where 0.31 takes as an
//!   HTML comment or declaration what 0.29 shows as text (`<!-- a -- b -->`, `<!-->`,
//!   `<!x y>`), the text is read as 0.29 reads it: that `<` is escaped and the text
//!   rendered again, at most [`MAX_PASSES`] times; a text that still differs then is
//!   [`Reading::unreadable`] (refused by the wall, never guessed).
//! - What the renderer does not reach (a diff, a file name, a label) is not read here.

use comrak::nodes::{AstNode, NodeValue};
use comrak::{Arena, Options};

/// How often a text is rendered again to read it as CommonMark 0.29 does before it is
/// called unreadable (each pass reveals one more level of nested comments; a real text
/// needs at most one).
pub const MAX_PASSES: usize = 8;

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
    /// Whether the text could not be read as the forge reads it (see the module's
    /// invariants): the wall refuses it.
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

/// `markdown` rendered with `options`, its comments and declarations read as CommonMark
/// 0.29 reads them; `None` when that takes more than [`MAX_PASSES`] renderings.
fn as_cmark_029(markdown: &str, options: &Options) -> Option<String> {
    let mut text = markdown.to_owned();
    for _ in 0..MAX_PASSES {
        let arena = Arena::new();
        let root = comrak::parse_document(&arena, &text, options);
        let escapes = escapes_for_029(&text, root);
        if escapes.is_empty() {
            let mut html = String::new();
            comrak::format_html(root, options, &mut html).ok()?;
            return Some(html);
        }
        let mut escaped = String::with_capacity(text.len() + escapes.len());
        let mut from = 0;
        for at in escapes {
            escaped.push_str(&text[from..at]);
            escaped.push('\\');
            from = at;
        }
        escaped.push_str(&text[from..]);
        text = escaped;
    }
    None
}

/// The byte offsets of the `<` of every HTML comment or declaration `root` holds that
/// CommonMark 0.29 shows as text, in order; `usize::MAX`-free (an offset that cannot be
/// placed makes the reading fail through a repeated escape).
fn escapes_for_029<'a>(text: &str, root: &'a AstNode<'a>) -> Vec<usize> {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(at, _)| at + 1))
        .collect();
    let mut escapes = Vec::new();
    for node in root.descendants() {
        let data = node.data.borrow();
        let (literal, block) = match &data.value {
            NodeValue::HtmlInline(literal) => (literal.as_str(), false),
            NodeValue::HtmlBlock(block) => (block.literal.as_str(), true),
            _ => continue,
        };
        let text_029 = if block {
            // A block is an HTML block in 0.29 too, except one that starts with a
            // lower-case declaration (0.29's type 4 wants an upper-case letter).
            starts_lowercase_declaration(literal)
        } else {
            !comment_or_declaration_in_029(literal)
        };
        if !text_029 {
            continue;
        }
        let pos = data.sourcepos.start;
        let Some(line_start) = line_starts.get(pos.line.saturating_sub(1)) else {
            continue;
        };
        let at = line_start + pos.column.saturating_sub(1);
        // A block's literal may start after its indentation.
        let at = match text.get(at..) {
            Some(rest) if rest.starts_with('<') => at,
            Some(rest) => match rest.find('<') {
                Some(i) => at + i,
                None => continue,
            },
            None => continue,
        };
        escapes.push(at);
    }
    escapes.sort_unstable();
    escapes.dedup();
    escapes
}

/// Whether `literal` (an inline HTML node: a tag, comment, declaration, instruction or
/// CDATA section) is markup in CommonMark 0.29 as well: tags, instructions and CDATA are
/// the same in both; a comment must not start with `>` or `->` nor hold `--` before its
/// `-->`; a declaration's name is upper-case.
fn comment_or_declaration_in_029(literal: &str) -> bool {
    if let Some(body) = literal.strip_prefix("<!--") {
        if body.starts_with("-->") {
            return true;
        }
        if body.starts_with('>') || body.starts_with("->") {
            return false;
        }
        // The first `--` must be the closing `-->`.
        return body
            .find("--")
            .is_some_and(|i| body[i..].starts_with("-->"));
    }
    !starts_lowercase_declaration(literal)
}

/// Whether `literal` starts with `<!` and a letter that is not upper-case.
fn starts_lowercase_declaration(literal: &str) -> bool {
    literal
        .strip_prefix("<!")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_lowercase())
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

/// Elements inside which forges link nothing of their own.
const UNLINKED: &[&str] = &["a", "code", "pre", "script", "style"];

/// What a browser's reader gets of `html`: its text nodes, the texts of its visible
/// attributes and the URLs of its elements.
fn read_html(html: &str) -> Reading {
    use html5gum::{Token, Tokenizer};
    let mut reading = Reading::default();
    let mut attributes_seen = String::new();
    // How deep inside each element of UNLINKED the text is.
    let mut unlinked = 0usize;
    let mut stack: Vec<String> = Vec::new();
    for token in Tokenizer::new(html).flatten() {
        match token {
            Token::String(text) => {
                let text = String::from_utf8_lossy(&text);
                reading.visible.push_str(&text);
                if unlinked == 0 {
                    reading.linkable.push_str(&text);
                    reading.linkable.push_str(" \n");
                    reading.linkable_joined.push_str(&text);
                }
            }
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                for (attribute, value) in &tag.attributes {
                    let attribute = String::from_utf8_lossy(attribute).to_ascii_lowercase();
                    let value = String::from_utf8_lossy(value).into_owned();
                    if URL_ATTRIBUTES.contains(&attribute.as_str()) {
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
                if let Some(open) = stack.iter().rposition(|n| *n == name) {
                    unlinked -= stack.len() - open;
                    stack.truncate(open);
                }
            }
            Token::Comment(_) | Token::Doctype(_) | Token::Error(_) => {}
        }
    }
    reading.visible.push_str(&attributes_seen);
    reading
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
    fn nesting_past_the_passes_is_unreadable() {
        let nested = "<!-- -- ".repeat(MAX_PASSES + 2) + "-->";
        assert!(read(&format!("a {nested}")).unreadable);
    }
}
