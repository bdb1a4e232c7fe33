//! Step templates: the `{{ ... }}` references a command, script, env value, prompt or llm
//! input may contain, parsed into literal text and references, and rendered in linear time
//! under a size bound. Pure: no IO, no step results (the caller resolves references).
//!
//! The grammar is exactly what the contract offers, nothing more:
//! - `{{ steps.<id>.outputs.<key> }}` — an output of an earlier step;
//! - `{{ steps.<id>.status }}` — its final status (`succeeded`, `failed`, ...);
//! - `{{ raw steps.<id>.outputs.<key> }}` (and `raw` of a status) — the value pasted into
//!   the command or script as code, unquoted: whoever controls the output controls the
//!   step (unsafe by design, for text the author trusts: docs/src/security/outputs.md,
//!   "Raw form (unsafe)");
//! - `\{{` — a literal `{{`; `\\{{` — a literal `\` followed by a reference; in a run of
//!   backslashes before `{{` each pair is one `\` and an odd one left makes the `{{`
//!   literal, so any text can be written as a template that renders to itself ([`escape`]:
//!   how `ctx` text reaches a workflow, so it never becomes template syntax).
//!
//! Whitespace inside the braces is optional. Anything else between `{{` and `}}` (block
//! helpers, `@root`, partials, `{{{`, comments) is an error: a template can never loop,
//! recurse or reach data other than the named value. Text without `{{` is unchanged.
//!
//! How a reference is rendered depends on where the text goes ([`bash`], [`python`]: code,
//! so a value is never pasted into it, only read from the environment, and an output may
//! stand only where the language itself expands a variable — not inside bash single
//! quotes or a Python string literal; everything else: plain text). [`check`] runs every
//! template of a plan at validation.

pub mod bash;
mod check;
pub mod python;
mod written;

pub use crate::text::echo;
use std::fmt;

pub(crate) use check::sites;
pub use check::{check, RAW_TOO};
pub use written::{unwritten_raw, written_raw};

/// The largest text one template may render to; more is an error, not a truncation.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// What stands for a reference in [`Template::literal_text`]: inert in both lexers.
pub const PLACEHOLDER: char = '\0';

/// A parsed template: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    /// Where each reference was written in the parsed text (byte ranges, `{{` to `}}`).
    pub sources: Vec<std::ops::Range<usize>>,
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is (escapes already resolved: `\{{` is stored as `{{`).
    Text(String),
    Ref(Reference),
}

/// `{{ [raw] steps.<step>.outputs.<key> }}` or `{{ [raw] steps.<step>.status }}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub step: String,
    pub field: Field,
    /// The explicit raw form: the value is pasted into code unquoted.
    pub raw: bool,
}

/// What of a step a [`Reference`] reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Output(String),
    Status,
    /// `{{ steps.<step>.rounds }}`: the outputs of every earlier round of a step of the
    /// reader's own review loop, as JSON text (`[{"round": 1, "outputs": {...}}, ...]`,
    /// `[]` in round 1). Only in text that is never parsed (llm prompts and inputs, env).
    Rounds,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = if self.raw { "raw " } else { "" };
        match &self.field {
            Field::Output(key) => write!(f, "{{{{ {raw}steps.{}.outputs.{key} }}}}", self.step),
            Field::Status => write!(f, "{{{{ {raw}steps.{}.status }}}}", self.step),
            Field::Rounds => write!(f, "{{{{ {raw}steps.{}.rounds }}}}", self.step),
        }
    }
}

/// Why a text is not a template Plue accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Byte offset of the offending `{{` in the text.
    pub offset: usize,
    pub message: String,
}

/// Why rendering stopped; `E` is the reason the caller's resolver gave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError<E = String> {
    /// The rendered text would exceed its bound.
    #[error("the rendered text exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// A reference could not be resolved (the resolver's reason).
    #[error("{0}")]
    Unresolved(E),
}

/// What every message about a foreign construct ends with.
const OFFERED: &str = "a template may only be '{{ steps.<id>.outputs.<key> }}', '{{ steps.<id>.status }}' or their 'raw' forms; write '\\{{' for literal braces";

impl Template {
    /// Parses `text`. Linear in its length.
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        let mut segments = Vec::new();
        let mut sources = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(pos) = rest.find("{{") {
            let before = &rest[..pos];
            // The backslashes right before `{{`: each pair is one literal `\`, and an odd
            // one left over makes the `{{` literal (`\{{` → `{{`, `\\{{` → `\` and a
            // reference, `\\\{{` → `\{{`).
            let run = before.len() - before.trim_end_matches('\\').len();
            literal.push_str(&before[..before.len() - run]);
            literal.extend(std::iter::repeat_n('\\', run / 2));
            if run % 2 == 1 {
                literal.push_str("{{");
                offset += pos + 2;
                rest = &rest[pos + 2..];
                continue;
            }
            let start = offset + pos;
            let after = &rest[pos + 2..];
            let Some(end) = after.find("}}") else {
                return Err(ParseError {
                    offset: start,
                    message: format!(
                        "'{}' is not closed by '}}}}'; write '\\{{{{' for literal braces",
                        echo(&rest[pos..])
                    ),
                });
            };
            let inner = &after[..end];
            let reference = parse_reference(inner).map_err(|why| ParseError {
                offset: start,
                message: format!("'{}': {why}; {OFFERED}", echo(&rest[pos..pos + 4 + end])),
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            sources.push(start..offset + pos + 4 + end);
            offset += pos + 4 + end;
            rest = &after[end + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Template { segments, sources })
    }

    /// The references, in order (repeats included).
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Text(_) => None,
        })
    }

    /// The literal text with each reference replaced by one [`PLACEHOLDER`] byte, and the
    /// offset of each placeholder: what the [`bash`] and [`python`] lexers read. The
    /// placeholder keeps text on either side of a reference apart (`'{{ r }}'` is not the
    /// token `''`, `EOF{{ r }}` is not a here-document's end).
    pub fn literal_text(&self) -> (String, Vec<usize>) {
        let mut text = String::new();
        let mut at = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => text.push_str(t),
                Segment::Ref(_) => {
                    at.push(text.len());
                    text.push(PLACEHOLDER);
                }
            }
        }
        (text, at)
    }

    /// Renders with `piece(index, reference)` giving the text of the `index`-th reference,
    /// stopping as soon as the result would exceed `limit` bytes.
    pub fn render<E>(
        &self,
        limit: usize,
        mut piece: impl FnMut(usize, &Reference) -> Result<String, E>,
    ) -> Result<String, RenderError<E>> {
        let mut out = String::new();
        let mut index = 0;
        for segment in &self.segments {
            let text = match segment {
                Segment::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
                Segment::Ref(r) => {
                    let text = piece(index, r).map_err(RenderError::Unresolved)?;
                    index += 1;
                    std::borrow::Cow::Owned(text)
                }
            };
            if out.len() + text.len() > limit {
                return Err(RenderError::TooLarge { limit });
            }
            out.push_str(&text);
        }
        Ok(out)
    }
}

/// The `{{ ... }}` pieces of `text` that are references in the template grammar (whatever
/// backslashes stand before them), exactly as written: what [`escape`] neutralises, found
/// in `ctx` text so that a reference that reached a plan from there anyway — its escape
/// lost to `repr()`, `json.dumps()` or `replace("\\", "/")` — is refused. Linear: the
/// inside of a reference holds no `{`, so each byte is scanned once.
pub fn reference_texts(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("{{") {
        let start = from + pos;
        let inner_start = start + 2;
        let stop = text[inner_start..]
            .find(['{', '}'])
            .map_or(text.len(), |n| inner_start + n);
        if text[stop..].starts_with("}}") && parse_reference(&text[inner_start..stop]).is_ok() {
            found.push(&text[start..stop + 2]);
            from = stop + 2;
        } else {
            // A `{` stops the inside: it may open the next `{{` (`{{{`: one byte on).
            from = if stop == inner_start { start + 1 } else { stop };
        }
    }
    found
}

/// `text` as a template whose rendering is exactly `text`: every `{{` becomes literal (its
/// backslashes doubled, one more added). For text that is data, not template syntax —
/// every string of `ctx` ([`crate::EvalContext::as_template_text`]), which a workflow may
/// paste into a command or prompt — so that `{{ raw ... }}` in a branch or file name is
/// shown, never expanded. Text without `{{` is returned unchanged.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("{{") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(pos) = rest.find("{{") {
        let before = &rest[..pos];
        let run = before.len() - before.trim_end_matches('\\').len();
        out.push_str(before);
        out.extend(std::iter::repeat_n('\\', run + 1));
        out.push_str("{{");
        rest = &rest[pos + 2..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The inside of `{{ ... }}` as a [`Reference`], or why it is not one.
fn parse_reference(inner: &str) -> Result<Reference, String> {
    let trimmed = inner.trim_matches(|c: char| c.is_ascii_whitespace());
    if let Some(first) = inner.chars().next() {
        match first {
            '{' => return Err("triple braces are not supported (nothing is HTML-escaped)".into()),
            '~' => return Err("whitespace control ('{{~') is not supported".into()),
            _ => {}
        }
    }
    if trimmed.contains('@') {
        return Err("'@root', '@index' and other '@' data are not supported".into());
    }
    match trimmed.chars().next() {
        Some('#') | Some('/') | Some('^') => {
            return Err("block helpers ('{{#each}}', '{{#if}}', ...) are not supported".into())
        }
        Some('>') => return Err("partials are not supported".into()),
        Some('!') => return Err("comments are not supported".into()),
        None => return Err("the braces are empty".into()),
        _ => {}
    }
    let (raw, path) = match trimmed.strip_prefix("raw") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_whitespace()) => (
            true,
            rest.trim_start_matches(|c: char| c.is_ascii_whitespace()),
        ),
        _ => (false, trimmed),
    };
    let parts: Vec<&str> = path.split('.').collect();
    let field = match parts.as_slice() {
        ["steps", _, "outputs", key] => {
            if !is_output_key(key) {
                return Err(format!(
                    "'{}' is not an output name ([A-Za-z_][A-Za-z0-9_-]*)",
                    echo(key)
                ));
            }
            Field::Output(key.to_string())
        }
        ["steps", _, "status"] => Field::Status,
        ["steps", _, "rounds"] => Field::Rounds,
        _ => return Err("not a reference to a step's output, status or rounds".into()),
    };
    let step = parts[1];
    if step.is_empty()
        || !step
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("'{}' is not a step id", echo(step)));
    }
    Ok(Reference {
        step: step.to_string(),
        field,
        raw,
    })
}

/// `[A-Za-z_][A-Za-z0-9_-]*`, the grammar of `$PLUE_OUTPUT` keys.
fn is_output_key(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// For the lexers' tests: `text` with each `@` (an output reference) written as one
/// [`PLACEHOLDER`], and where each stands (byte offsets).
#[cfg(test)]
pub(crate) fn at_placeholders(text: &str) -> (String, Vec<usize>) {
    let mut literal = String::new();
    let mut at = Vec::new();
    for c in text.chars() {
        if c == '@' {
            at.push(literal.len());
            literal.push(PLACEHOLDER);
        } else {
            literal.push(c);
        }
    }
    (literal, at)
}

#[cfg(test)]
mod tests;
