//! A small Python tokenizer for [`super::formats`]: names, numbers, string literals (one
//! token each, after the tokens of their f-string replacement fields), references,
//! brackets paired with their partners, and the few operators the position rules need.
//!
//! It follows the string rules of [`super::contexts`] (prefixes, triple quotes,
//! backslashes, f-string replacement fields and format specs, a same quote ending the
//! string even inside a field) so that both agree on what is code. Total on any text
//! (unbalanced brackets and unterminated strings included) and linear in its length.

use crate::template::PLACEHOLDER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Name,
    Number,
    /// A whole string literal (prefix included); its replacement fields' tokens come
    /// before it, from `partner` on.
    Str,
    Ref,
    /// `(`, `[`, `{`, and the `{` of a replacement field; `partner`: its closer (or
    /// `usize::MAX` when unclosed).
    Open,
    /// `)`, `]`, `}`; `partner`: its opener (or `usize::MAX` when unbalanced).
    Close,
    Dot,
    Percent,
    Comma,
    /// `=` alone (a keyword argument or an assignment).
    Assign,
    /// The end of a logical line, `;`, a keyword-free operator: anything a primary stops at.
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) partner: usize,
}

pub(super) const NONE: usize = usize::MAX;

/// A region of code being read: the script itself, or a replacement field of an f-string.
struct Region {
    /// Open brackets (token indices) of this region.
    open: Vec<usize>,
    /// Inside a replacement field: its `{` token (the string it belongs to is right below).
    field: Option<usize>,
}

/// A string literal being read.
struct StrState {
    start: usize,
    quote: u8,
    triple: bool,
    fmt: bool,
    /// The first token emitted inside it (its fields').
    first: usize,
    /// The `{` tokens of the fields whose format spec is being read (after `:`), innermost
    /// last: there `{` opens a nested field and `}` closes that field.
    specs: Vec<usize>,
}

enum Mode {
    Code(Region),
    Str(StrState),
}

fn push(tokens: &mut Vec<Token>, kind: Kind, start: usize, end: usize) -> usize {
    tokens.push(Token {
        kind,
        start,
        end,
        partner: NONE,
    });
    tokens.len() - 1
}

/// Pairs opener `open` with a new closing token at byte `at`.
fn close(tokens: &mut Vec<Token>, open: usize, at: usize) {
    let k = push(tokens, Kind::Close, at, at + 1);
    tokens[k].partner = open;
    tokens[open].partner = k;
}

/// Tokens of `b`, in order (a string literal's token after its fields' tokens).
pub(super) fn tokenize(b: &[u8]) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut modes = vec![Mode::Code(Region {
        open: Vec::new(),
        field: None,
    })];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let top = modes.len() - 1;
        // The string a field region belongs to ends at its own quote, even inside the
        // field (the context lexer's rule, Python before 3.12).
        if let (Mode::Code(Region { field: Some(_), .. }), Some(Mode::Str(s))) =
            (&modes[top], top.checked_sub(1).map(|k| &modes[k]))
        {
            if c == s.quote && ends_string(b, i, s) {
                let end = i + if s.triple { 3 } else { 1 };
                end_string(&mut modes, &mut tokens, end);
                i = end;
                continue;
            }
        }
        match &mut modes[top] {
            Mode::Str(s) => {
                if c == b'\\' {
                    i += 2;
                } else if c == b'\n' && !s.triple {
                    // Unterminated: resynchronise, as the context lexer does.
                    end_string(&mut modes, &mut tokens, i);
                } else if c == s.quote && ends_string(b, i, s) {
                    let end = i + if s.triple { 3 } else { 1 };
                    end_string(&mut modes, &mut tokens, end);
                    i = end;
                } else if s.fmt && c == b'{' && s.specs.is_empty() && b.get(i + 1) == Some(&b'{') {
                    i += 2;
                } else if s.fmt && c == b'{' {
                    let k = push(&mut tokens, Kind::Open, i, i + 1);
                    modes.push(Mode::Code(Region {
                        open: Vec::new(),
                        field: Some(k),
                    }));
                    i += 1;
                } else if s.fmt && c == b'}' {
                    match s.specs.pop() {
                        Some(k) => close(&mut tokens, k, i),
                        None if b.get(i + 1) == Some(&b'}') => i += 1,
                        None => {}
                    }
                    i += 1;
                } else {
                    i += 1;
                }
            }
            Mode::Code(region) => match c {
                b' ' | b'\t' | b'\r' | b'\x0c' => i += 1,
                b'\\' => i += 2, // a line continuation
                b'\n' => {
                    if region.open.is_empty() && region.field.is_none() {
                        push(&mut tokens, Kind::Other, i, i + 1);
                    }
                    i += 1;
                }
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'\'' | b'"' => i = open_string(b, i, i, &mut modes, tokens.len()),
                _ if c == PLACEHOLDER as u8 => {
                    push(&mut tokens, Kind::Ref, i, i + 1);
                    i += 1;
                }
                b'(' | b'[' | b'{' => {
                    let k = push(&mut tokens, Kind::Open, i, i + 1);
                    region.open.push(k);
                    i += 1;
                }
                b')' | b']' | b'}' => {
                    match (region.open.pop(), region.field) {
                        (Some(k), _) => close(&mut tokens, k, i),
                        (None, Some(field)) if c == b'}' => {
                            close(&mut tokens, field, i);
                            modes.pop();
                        }
                        (None, _) => {
                            push(&mut tokens, Kind::Close, i, i + 1);
                        }
                    }
                    i += 1;
                }
                b':' if region.open.is_empty() && b.get(i + 1) != Some(&b'=') => {
                    if let Some(field) = region.field {
                        // A format spec: text with nested fields, up to the field's `}`.
                        modes.pop();
                        if let Some(Mode::Str(s)) = modes.last_mut() {
                            s.specs.push(field);
                        }
                    } else {
                        push(&mut tokens, Kind::Other, i, i + 1);
                    }
                    i += 1;
                }
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    push(&mut tokens, Kind::Dot, i, i + 1);
                    i += 1;
                }
                b',' => {
                    push(&mut tokens, Kind::Comma, i, i + 1);
                    i += 1;
                }
                b';' => {
                    push(&mut tokens, Kind::Other, i, i + 1);
                    i += 1;
                }
                _ if c.is_ascii_digit() || c == b'.' => {
                    let start = i;
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'_'))
                    {
                        i += 1;
                    }
                    push(&mut tokens, Kind::Number, start, i);
                }
                _ if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 => {
                    let start = i;
                    while i < b.len()
                        && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80)
                    {
                        i += 1;
                    }
                    let word = std::str::from_utf8(&b[start..i]).unwrap_or("");
                    if matches!(b.get(i), Some(b'\'' | b'"')) && super::is_prefix(word) {
                        i = open_string(b, start, i, &mut modes, tokens.len());
                    } else {
                        push(&mut tokens, Kind::Name, start, i);
                    }
                }
                _ => {
                    let (kind, len) = operator(&b[i..]);
                    push(&mut tokens, kind, i, i + len);
                    i += len;
                }
            },
        }
    }
    tokens
}

/// Whether the quote at `i` ends string `s`.
fn ends_string(b: &[u8], i: usize, s: &StrState) -> bool {
    !s.triple || (b.get(i + 1) == Some(&s.quote) && b.get(i + 2) == Some(&s.quote))
}

/// Starts a string literal whose prefix begins at `start` and quote is at `quote_at`;
/// returns where its content begins.
fn open_string(
    b: &[u8],
    start: usize,
    quote_at: usize,
    modes: &mut Vec<Mode>,
    first: usize,
) -> usize {
    let c = b[quote_at];
    let triple = b.get(quote_at + 1) == Some(&c) && b.get(quote_at + 2) == Some(&c);
    let fmt = b[start..quote_at]
        .iter()
        .any(|p| matches!(p, b'f' | b'F' | b't' | b'T'));
    modes.push(Mode::Str(StrState {
        start,
        quote: c,
        triple,
        fmt,
        first,
        specs: Vec::new(),
    }));
    quote_at + if triple { 3 } else { 1 }
}

/// Ends the innermost string at byte `end` (and the fields it left open), emitting its
/// token.
fn end_string(modes: &mut Vec<Mode>, tokens: &mut Vec<Token>, end: usize) {
    while modes.len() > 1 {
        if let Some(Mode::Str(s)) = modes.pop() {
            push(tokens, Kind::Str, s.start, end);
            let k = tokens.len() - 1;
            tokens[k].partner = s.first;
            return;
        }
    }
}

/// The operator at the start of `b` (not a bracket, quote, name or number): its kind and
/// length, Python's longest match.
fn operator(b: &[u8]) -> (Kind, usize) {
    const THREE: [&[u8]; 4] = [b"**=", b"//=", b">>=", b"<<="];
    const TWO: [&[u8]; 19] = [
        b"**", b"//", b">>", b"<<", b"->", b":=", b"!=", b"==", b"<=", b">=", b"+=", b"-=", b"*=",
        b"/=", b"%=", b"&=", b"|=", b"^=", b"@=",
    ];
    if THREE.iter().any(|op| b.starts_with(op)) {
        return (Kind::Other, 3);
    }
    if TWO.iter().any(|op| b.starts_with(op)) {
        return (Kind::Other, 2);
    }
    match b[0] {
        b'%' => (Kind::Percent, 1),
        b'=' => (Kind::Assign, 1),
        c if c < 0x80 => (Kind::Other, 1),
        // A stray non-ASCII byte outside a name: step over the whole character.
        _ => (Kind::Other, utf8_len(b[0])),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}
