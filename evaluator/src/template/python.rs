//! References in a `python` script: where each one stands in Python's grammar, and the
//! text it becomes there.
//!
//! Invariant (the security argument): a reference never pastes a value into the script.
//! It becomes a read of an environment variable whose name is fixed by Plue
//! (`[A-Z0-9_]`): `(__import__("os").environ["V"])` where an expression stands — in code
//! or in a replacement field of an f-string. Whatever context the reference stands in —
//! even one this lexer misjudges — Python never parses the value as code; a misjudged
//! context costs a syntax error, never an injection.
//!
//! An output reference inside a string literal is refused: rendered there, the value would
//! become part of the literal, and a literal is often more than text — a format string
//! (`"Hello {{ ref }}".format(obj)` would let the value read `{0.__init__.__globals__}`),
//! a `%` template, code for `eval` or a shell. The author moves the reference out of the
//! literal (`"Hello " + {{ ref }}`) or reads `os.environ` in a replacement field. A step's
//! status (a fixed lowercase word) may stand anywhere but in a bytes literal.
//!
//! An output in code is refused, too, where the code reads a string as a program of its
//! own: the receiver of `.format()`, the left operand of `%`, the format string of
//! `str.format`, a `string.Template`, a pattern ([`format_refusals`]).
//!
//! The lexer knows comments, string prefixes, single and triple quotes, backslashes and the
//! replacement fields of f-strings.

mod formats;
mod tokens;

/// For each reference position in `at` (the placeholders of `text`, ascending), why an
/// output standing there in code would still be read as a program of its own — a format
/// string (`ref.format(obj)`, `str.format(ref, ...)`, `ref % obj`), a `string.Template` or
/// a pattern (`formats`) — if it would.
pub fn format_refusals(text: &str, at: &[usize]) -> Vec<Option<&'static str>> {
    formats::refusals(text, at)
}

/// Where a reference stands in a Python script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// Code: an expression may stand here.
    Code,
    /// Inside a `# comment`.
    Comment,
    /// Inside a string literal.
    Str {
        /// The prefix as written (`r`, `f`, `Rb`, ...).
        prefix: String,
        /// `'` or `"`.
        quote: char,
        triple: bool,
        /// A bytes literal (`b` in the prefix).
        bytes: bool,
        /// Inside a replacement field `{...}` of an f-string: code again.
        field: bool,
    },
    /// Right after a backslash that escapes the next character.
    AfterBackslash,
}

impl Context {
    /// Why no reference (output or status) can stand here, if none can.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Context::Str { bytes: true, .. } => Some("a reference inside a bytes literal is not supported; use os.environb[b'PLUE_OUTPUT_<STEP>_<KEY>']"),
            // A t-string (Python 3.14) keeps its literal parts apart from its values.
            Context::Str { prefix, field: false, .. } if prefix.contains(['t', 'T']) => Some("a reference inside a t-string is not supported; read os.environ['PLUE_OUTPUT_<STEP>_<KEY>'] in a replacement field"),
            Context::AfterBackslash => Some("a reference right after a backslash; remove the backslash"),
            _ => None,
        }
    }

    /// Why an output reference cannot stand here, if it cannot: [`Context::refusal`], and
    /// any string literal outside a replacement field.
    pub fn output_refusal(&self) -> Option<&'static str> {
        match self {
            Context::Str { field: false, .. } => self.refusal().or(Some(LITERAL)),
            _ => self.refusal(),
        }
    }
}

/// Why an output reference may not stand inside a string literal.
const LITERAL: &str = "an output inside a string literal would become part of the literal (a format string to .format() or %, code to eval()); put the reference outside the literal, e.g. \"Hello \" + {{ steps.<id>.outputs.<key> }}, or read os.environ[\"PLUE_OUTPUT_<STEP>_<KEY>\"]";

/// The text that reads environment variable `var` as a `str` in `context`. `var` must be
/// a plain variable name.
pub fn expand(context: &Context, var: &str) -> Result<String, &'static str> {
    debug_assert!(super::bash::is_var_name(var), "{var}");
    if let Some(why) = context.output_refusal() {
        return Err(why);
    }
    Ok(match context {
        Context::Code => format!("(__import__(\"os\").environ[\"{var}\"])"),
        Context::Comment => var.to_string(),
        Context::Str { quote, .. } => {
            // A replacement field (the only string context not refused). Before Python
            // 3.12 a replacement field may not hold its string's quote.
            let q = if *quote == '"' { '\'' } else { '"' };
            format!("(__import__({q}os{q}).environ[{q}{var}{q}])")
        }
        Context::AfterBackslash => unreachable!("refused above"),
    })
}

/// A word of lowercase ASCII letters (a step status) as a `str` in `context`.
pub fn word(context: &Context, word: &str) -> String {
    debug_assert!(word.bytes().all(|c| c.is_ascii_lowercase()), "{word}");
    match context {
        Context::Code => format!("\"{word}\""),
        Context::Str {
            field: true, quote, ..
        } => {
            let q = if *quote == '"' { '\'' } else { '"' };
            format!("{q}{word}{q}")
        }
        _ => word.to_string(),
    }
}

#[derive(Debug, Clone)]
enum State {
    Code,
    Comment,
    Str {
        prefix_at: (usize, usize),
        quote: u8,
        triple: bool,
        fmt: bool,
        /// Nesting of replacement fields (f-strings only).
        depth: u32,
    },
}

/// The context of each position in `text` (byte offsets, ascending), one per position.
/// Linear in the length of `text`.
pub fn contexts(text: &str, at: &[usize]) -> Vec<Context> {
    let b = text.as_bytes();
    let mut out = vec![Context::Code; at.len()];
    let mut next = 0;
    let mut state = State::Code;
    let mut escaped = false;
    // Where the identifier ending at the current byte began (a string prefix candidate).
    let mut ident_start: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        if next < at.len() && at[next] <= i {
            let ctx = if escaped {
                Context::AfterBackslash
            } else {
                context_of(&state, text)
            };
            while next < at.len() && at[next] <= i {
                out[next] = ctx.clone();
                next += 1;
            }
        }
        let c = b[i];
        if escaped {
            escaped = false;
            i += 1;
            continue;
        }
        match &mut state {
            State::Code => match c {
                b'#' => state = State::Comment,
                b'\\' => escaped = true,
                b'\'' | b'"' => {
                    let start = ident_start.unwrap_or(i);
                    let prefix = if is_prefix(&text[start..i]) { start } else { i };
                    let triple = b.get(i + 1) == Some(&c) && b.get(i + 2) == Some(&c);
                    let fmt = text[prefix..i]
                        .bytes()
                        .any(|p| matches!(p, b'f' | b'F' | b't' | b'T'));
                    state = State::Str {
                        prefix_at: (prefix, i),
                        quote: c,
                        triple,
                        fmt,
                        depth: 0,
                    };
                    if triple {
                        i += 2;
                    }
                }
                _ => {}
            },
            State::Comment => {
                if c == b'\n' {
                    state = State::Code;
                }
            }
            State::Str {
                quote,
                triple,
                fmt,
                depth,
                ..
            } => match c {
                b'\\' => escaped = true,
                b'\n' if !*triple => state = State::Code, // unterminated: resynchronise
                q if q == *quote
                    && (!*triple || (b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q))) =>
                {
                    if *triple {
                        i += 2;
                    }
                    state = State::Code;
                }
                b'{' if *fmt => {
                    if *depth == 0 && b.get(i + 1) == Some(&b'{') {
                        i += 1;
                    } else {
                        *depth += 1;
                    }
                }
                b'}' if *fmt => {
                    if *depth > 0 {
                        *depth -= 1;
                    } else if b.get(i + 1) == Some(&b'}') {
                        i += 1;
                    }
                }
                _ => {}
            },
        }
        let ident = c == b'_' || c.is_ascii_alphanumeric() || c >= 0x80;
        ident_start = match (ident, matches!(state, State::Code)) {
            (true, true) => ident_start.or(Some(i)),
            _ => None,
        };
        i += 1;
    }
    let last = if escaped {
        Context::AfterBackslash
    } else {
        context_of(&state, text)
    };
    for slot in &mut out[next..] {
        *slot = last.clone();
    }
    out
}

fn context_of(state: &State, text: &str) -> Context {
    match state {
        State::Code => Context::Code,
        State::Comment => Context::Comment,
        State::Str {
            prefix_at: (start, end),
            quote,
            triple,
            depth,
            ..
        } => {
            let prefix = &text[*start..*end];
            Context::Str {
                prefix: prefix.to_string(),
                quote: *quote as char,
                triple: *triple,
                bytes: prefix.bytes().any(|p| matches!(p, b'b' | b'B')),
                field: *depth > 0,
            }
        }
    }
}

/// Python's string prefixes, any case: `r u b f t` and the pairs `br fr tr`.
fn is_prefix(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "r" | "u" | "b" | "f" | "t" | "br" | "rb" | "fr" | "rf" | "tr" | "rt"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(text: &str) -> Vec<Context> {
        let (literal, at) = crate::template::at_placeholders(text);
        contexts(&literal, &at)
    }

    fn s(prefix: &str, quote: char, triple: bool, field: bool) -> Context {
        Context::Str {
            prefix: prefix.into(),
            quote,
            triple,
            bytes: prefix.to_ascii_lowercase().contains('b'),
            field,
        }
    }

    #[test]
    fn strings_comments_and_code() {
        assert_eq!(
            ctx("x = @ + '@' + \"@\" # '@"),
            [
                Context::Code,
                s("", '\'', false, false),
                s("", '"', false, false),
                Context::Comment
            ]
        );
        assert_eq!(
            ctx("print(r'\\'@', Rb\"@\", '''a\n'@''', \"\"\"@\"\"\")\n@"),
            [
                s("r", '\'', false, false),
                s("Rb", '"', false, false),
                s("", '\'', true, false),
                s("", '"', true, false),
                Context::Code
            ]
        );
        assert_eq!(ctx("'\\@'"), [Context::AfterBackslash]);
        assert_eq!(ctx("bar'@'"), [s("", '\'', false, false)]);
        let refused = ctx("t'@' T'{@}' tr'@'");
        let why: Vec<bool> = refused.iter().map(|c| c.refusal().is_some()).collect();
        assert_eq!(why, [true, false, true]);
    }

    #[test]
    fn outputs_are_refused_inside_literals_but_not_in_fields() {
        let refused: Vec<bool> = ctx(r#"@ '@' "@" '''@''' r'@' f'@' f'{@}' F"{x:{@}}" b'@' # @"#)
            .iter()
            .map(|c| c.output_refusal().is_some())
            .collect();
        assert_eq!(
            refused,
            [false, true, true, true, true, true, false, false, true, false]
        );
        // A status word may stand in a literal, not in a bytes literal.
        assert_eq!(s("", '\'', false, false).refusal(), None);
        assert!(s("b", '\'', false, false).refusal().is_some());
        assert!(expand(&s("", '"', false, false), "V").is_err());
        assert_eq!(
            expand(&s("f", '"', false, true), "V").unwrap(),
            "(__import__('os').environ['V'])"
        );
    }

    #[test]
    fn f_string_fields_are_code() {
        assert_eq!(
            ctx("f'{{@}} {x:>{@}} {@} @'"),
            [
                s("f", '\'', false, false),
                s("f", '\'', false, true),
                s("f", '\'', false, true),
                s("f", '\'', false, false)
            ]
        );
    }
}
