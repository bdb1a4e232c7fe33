//! References in a `bash` command: where each one stands in the shell's grammar, and the
//! text it becomes there.
//!
//! Invariant (the security argument): a reference never pastes a value into the command.
//! It becomes an expansion of an environment variable whose name is fixed by Plue
//! (`[A-Z0-9_]`), and the value travels in the step's environment. Whatever context the
//! reference stands in — even one this lexer misjudges — bash never parses the value as
//! command text. The lexer only decides which expansion reads back the exact text: `"${V}"`
//! as a word, `${V}` inside double quotes or a here-document.
//!
//! An output expands only where bash itself would expand a `$V`. Inside single quotes
//! (`'...'`, `$'...'`) it is refused: there the author wrote text bash leaves alone, which
//! is often code for another program (`bash -c '...'`, `trap '...'`, `awk '...'`,
//! `ssh host '...'`), and the value would become part of that code. A step's status (a
//! fixed lowercase word) may stand there.
//!
//! Quoting does not cover the places where bash reads a *value* as code: it evaluates a
//! variable's value as an arithmetic expression (in `$(( ))`, but also `[[ x -gt 0 ]]`,
//! `${a[x]}`, `${s:x}`, `declare -i`, `let`) and as a variable name (`[[ -v x ]]`,
//! `printf -v x`), and an array subscript there (`a[$(cmd)]`) runs commands, an
//! assignment (`PATH=0`) changes what the next command is. The engine refuses such values
//! at dispatch ([`evaluation_hazard`]); the lexer also refuses the arithmetic contexts it
//! sees, so `plue check` reports them.
//!
//! An output is never `printf`'s format either ([`format_refusals`]): `printf {{ ref }}`
//! would make its text a format reading the other arguments.
//!
//! The lexer is deliberately small: quotes, `$'...'`, comments, `$(...)`, backticks,
//! `${...}`, here-documents and arithmetic. A here-document body with an unquoted
//! delimiter is read like double quotes (its `$(...)` and backticks are code again) and,
//! as in bash, ends at its delimiter line whatever it left open. Contexts where no expansion gives back the
//! value (a quoted here-document) or where bash would evaluate it as code (arithmetic)
//! are refused at validation.
//!
//! Why one file past ~600 lines: where a reference stands in bash's grammar is one lexer;
//! its states only make sense together.

mod programs;

pub use programs::format_refusals;

/// Where a reference stands in a bash command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Outside quotes (also inside `$(...)`, backticks and `${...}`).
    Unquoted,
    /// Inside `"..."`.
    Double,
    /// Inside `'...'`.
    Single,
    /// Inside `$'...'`.
    AnsiC,
    /// Inside a `# comment`.
    Comment,
    /// In the body of a here-document whose delimiter is unquoted (expansions happen).
    Heredoc,
    /// In the body of a here-document with a quoted delimiter (no expansion at all).
    QuotedHeredoc,
    /// Inside `$(( ))`, `(( ))` or `$[ ]`, where bash evaluates a value as an expression.
    Arithmetic,
    /// Right after a backslash that escapes the next character.
    AfterBackslash,
}

impl Context {
    /// Why no reference (output or status) can stand here, if none can.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Context::QuotedHeredoc => Some("a reference in a here-document with a quoted delimiter cannot be expanded; use an unquoted delimiter (<<EOF) or the PLUE_OUTPUT_<STEP>_<KEY> variable"),
            Context::Arithmetic => Some("a reference inside arithmetic ($(( )), (( )), $[ ]) would be evaluated as code by bash; check the value first, e.g. [[ \"$PLUE_OUTPUT_A_N\" =~ ^[0-9]+$ ]]"),
            Context::AfterBackslash => Some("a reference right after a backslash; remove the backslash"),
            _ => None,
        }
    }

    /// Why an output reference cannot stand here, if it cannot: [`Context::refusal`], and
    /// single quotes.
    pub fn output_refusal(self) -> Option<&'static str> {
        match self {
            Context::Single | Context::AnsiC => Some("an output inside single quotes ('...' or $'...') would become part of that text, which is often code for another program (bash -c, trap, awk, ssh); put the reference in double quotes (\"text {{ steps.<id>.outputs.<key> }}\") or use \"$PLUE_OUTPUT_<STEP>_<KEY>\""),
            _ => self.refusal(),
        }
    }
}

/// What bash could do with `value` where it evaluates a value as an arithmetic expression
/// or a variable name, if that is more than compute a number: the reason, else `None`.
///
/// - An array subscript (`[`) with a command substitution or parameter expansion (`$`) or
///   a backtick runs a command (`a[$(cmd)]`). Without `[` a value is evaluated but never
///   expanded; without `$` or a backtick a subscript expands nothing (process substitution
///   `<(...)` is not performed in a subscript).
/// - An assignment to an all-uppercase name (`PATH=0`, `X+=1`, also after `?`, `,` or
///   `||`) changes a variable the way environment variables are named, which children
///   inherit: `PATH=0` makes the next command run `./0/<command>` from the checkout.
///   Lowercase names are the script's own (and `a=b`-like outputs stay usable).
pub fn evaluation_hazard(value: &str) -> Option<&'static str> {
    if value.contains('[') && value.contains(['$', '`']) {
        return Some("holds '[' with '$' or '`' (a subscript that runs a command)");
    }
    if assigns_uppercase(value.as_bytes()) {
        return Some("assigns an uppercase variable (NAME=..., which children inherit)");
    }
    None
}

/// Whether `b` holds an all-uppercase name followed (after spaces and an optional
/// `[...]` subscript) by an assignment operator: `=` (not `==`) or `+= -= *= /= %= &= ^=
/// |= <<= >>=`. Linear.
fn assigns_uppercase(b: &[u8]) -> bool {
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let spaces = |mut j: usize| {
        while matches!(b.get(j), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            j += 1;
        }
        j
    };
    let mut i = 0;
    while i < b.len() {
        if !(ident(b[i]) && (i == 0 || !ident(b[i - 1]))) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = &b[start..i];
        let upper = !name[0].is_ascii_digit()
            && name.iter().any(u8::is_ascii_uppercase)
            && !name.iter().any(u8::is_ascii_lowercase);
        if !upper {
            continue;
        }
        let mut j = spaces(i);
        if b.get(j) == Some(&b'[') {
            match b[j..].iter().position(|&c| c == b']') {
                Some(k) => j = spaces(j + k + 1),
                None => continue,
            }
        }
        let op = match (b.get(j), b.get(j + 1), b.get(j + 2)) {
            (Some(b'='), next, _) => next != Some(&b'='),
            (Some(b'+' | b'-' | b'*' | b'/' | b'%' | b'&' | b'^' | b'|'), Some(b'='), next) => {
                next != Some(&b'=')
            }
            (Some(b'<'), Some(b'<'), Some(b'=')) | (Some(b'>'), Some(b'>'), Some(b'=')) => true,
            _ => false,
        };
        if op {
            return true;
        }
    }
    false
}

/// The text that reads environment variable `var` back as the exact value in `context`.
/// `var` must be a plain variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn expand(context: Context, var: &str) -> Result<String, &'static str> {
    debug_assert!(is_var_name(var), "{var}");
    if let Some(why) = context.output_refusal() {
        return Err(why);
    }
    Ok(match context {
        Context::Unquoted => format!("\"${{{var}}}\""),
        Context::Double | Context::Heredoc | Context::Comment => format!("${{{var}}}"),
        Context::Single
        | Context::AnsiC
        | Context::QuotedHeredoc
        | Context::Arithmetic
        | Context::AfterBackslash => unreachable!("refused above"),
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Top,
    /// `$(` ... `)`, counting nested parentheses.
    Subst,
    /// `${` ... `}`, counting nested braces.
    Brace,
    Backtick,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    Code {
        kind: Kind,
        depth: u32,
    },
    Double,
    Single,
    AnsiC,
    Comment,
    /// `$((`/`((` (closed by `))` at depth 0) or `$[` (closed by `]`).
    Arith {
        depth: u32,
        bracket: bool,
    },
    /// The body of a here-document with an unquoted delimiter (the top of `bodies`):
    /// expansions as inside double quotes, `"` is text, a line that is the delimiter ends it.
    Body,
}

/// A here-document body being read (a `Frame::Body`). Like bash, the lexer finds the
/// delimiter line first: whatever the body holds (an unclosed `$(`), it ends there.
struct Body {
    /// The index of its `Frame::Body` in the stack.
    frame: usize,
    /// Where its delimiter line starts (the text's end if there is none).
    delimiter_at: usize,
    /// Where the text resumes after the delimiter line.
    resume: usize,
    /// The here-documents named after it on the same command line, read after it.
    after: Vec<PendingHeredoc>,
}

struct PendingHeredoc {
    delimiter: Vec<u8>,
    strip_tabs: bool,
    quoted: bool,
}

/// The context of each position in `text` (byte offsets, ascending), one per position.
/// Linear in the length of `text`.
pub fn contexts(text: &str, at: &[usize]) -> Vec<Context> {
    let b = text.as_bytes();
    let mut out = vec![Context::Unquoted; at.len()];
    let mut next = 0; // the first position not yet assigned
    let mut stack = vec![Frame::Code {
        kind: Kind::Top,
        depth: 0,
    }];
    let mut pending: Vec<PendingHeredoc> = Vec::new();
    let mut bodies: Vec<Body> = Vec::new();
    let mut escaped = false;
    let mut i = 0;
    let mut mark = |upto: usize, ctx: Context, next: &mut usize| {
        while *next < at.len() && at[*next] <= upto {
            out[*next] = ctx;
            *next += 1;
        }
    };
    while i < b.len() {
        if bodies.last().is_some_and(|body| i >= body.delimiter_at) {
            let body = bodies.pop().expect("checked above");
            stack.truncate(body.frame);
            escaped = false;
            i = open_bodies(
                b,
                body.resume,
                body.after,
                &mut stack,
                &mut bodies,
                &mut |upto, ctx| mark(upto, ctx, &mut next),
            );
            continue;
        }
        let top = *stack.last().expect("the bottom frame is never popped");
        let here = if escaped {
            Context::AfterBackslash
        } else {
            frame_context(top)
        };
        mark(i, here, &mut next);
        let c = b[i];
        if escaped {
            escaped = false;
            i += 1;
            continue;
        }
        let peek = |n: usize| b.get(i + n).copied();
        match top {
            Frame::Code { kind, .. } => match c {
                b'\\' => escaped = true,
                b'\'' => stack.push(Frame::Single),
                b'"' => stack.push(Frame::Double),
                b'`' if kind == Kind::Backtick => {
                    stack.pop();
                }
                b'`' => stack.push(Frame::Code {
                    kind: Kind::Backtick,
                    depth: 0,
                }),
                b'$' => i += open_dollar(&mut stack, peek(1), peek(2)),
                b'(' if peek(1) == Some(b'(') => {
                    stack.push(Frame::Arith {
                        depth: 0,
                        bracket: false,
                    });
                    i += 1;
                }
                b'(' | b'{' => set_depth(&mut stack, c, 1),
                b')' | b'}' => close(&mut stack, c),
                b'#' if kind != Kind::Brace && word_start(b, i) => stack.push(Frame::Comment),
                b'<' if peek(1) == Some(b'<') && peek(2) != Some(b'<') => {
                    let (heredoc, end) = heredoc_operator(b, i + 2);
                    pending.push(heredoc);
                    i = end;
                    continue;
                }
                b'\n' if !pending.is_empty() => {
                    let queue = std::mem::take(&mut pending);
                    i = open_bodies(
                        b,
                        i + 1,
                        queue,
                        &mut stack,
                        &mut bodies,
                        &mut |upto, ctx| mark(upto, ctx, &mut next),
                    );
                    continue;
                }
                _ => {}
            },
            Frame::Body => match c {
                b'\\' => escaped = true,
                b'`' => stack.push(Frame::Code {
                    kind: Kind::Backtick,
                    depth: 0,
                }),
                // `$(( ))` and `$[ ]` stay body text: a value there is guarded at dispatch
                // (`evaluation_hazard`), as in every arithmetic context the lexer does not
                // refuse.
                b'$' if peek(1) == Some(b'(') && peek(2) != Some(b'(') => {
                    i += open_dollar(&mut stack, peek(1), peek(2))
                }
                _ => {}
            },
            Frame::Double => match c {
                b'\\' => escaped = true,
                b'"' => {
                    stack.pop();
                }
                b'`' => stack.push(Frame::Code {
                    kind: Kind::Backtick,
                    depth: 0,
                }),
                b'$' if matches!(peek(1), Some(b'(') | Some(b'[')) => {
                    i += open_dollar(&mut stack, peek(1), peek(2))
                }
                _ => {}
            },
            Frame::Single => {
                if c == b'\'' {
                    stack.pop();
                }
            }
            Frame::AnsiC => match c {
                b'\\' => escaped = true,
                b'\'' => {
                    stack.pop();
                }
                _ => {}
            },
            Frame::Comment => {
                if c == b'\n' {
                    stack.pop();
                    // The newline still ends the command line (here-documents start).
                    continue;
                }
            }
            Frame::Arith { depth, bracket } => match c {
                b'(' | b'[' => set_arith_depth(&mut stack, depth + 1, bracket),
                b']' if bracket && depth == 0 => {
                    stack.pop();
                }
                b')' if !bracket && depth == 0 && peek(1) == Some(b')') => {
                    stack.pop();
                    i += 1;
                }
                b')' | b']' => set_arith_depth(&mut stack, depth.saturating_sub(1), bracket),
                _ => {}
            },
        }
        i += 1;
    }
    let last = if escaped {
        Context::AfterBackslash
    } else {
        frame_context(*stack.last().expect("the bottom frame is never popped"))
    };
    mark(usize::MAX, last, &mut next);
    out
}

fn frame_context(frame: Frame) -> Context {
    match frame {
        Frame::Code { .. } => Context::Unquoted,
        Frame::Double => Context::Double,
        Frame::Single => Context::Single,
        Frame::AnsiC => Context::AnsiC,
        Frame::Comment => Context::Comment,
        Frame::Arith { .. } => Context::Arithmetic,
        Frame::Body => Context::Heredoc,
    }
}

/// After a `$` in code: pushes what it opens and returns how many extra bytes it took.
fn open_dollar(stack: &mut Vec<Frame>, next: Option<u8>, after: Option<u8>) -> usize {
    match (next, after) {
        (Some(b'('), Some(b'(')) => {
            stack.push(Frame::Arith {
                depth: 0,
                bracket: false,
            });
            2
        }
        (Some(b'('), _) => {
            stack.push(Frame::Code {
                kind: Kind::Subst,
                depth: 0,
            });
            1
        }
        (Some(b'['), _) => {
            stack.push(Frame::Arith {
                depth: 0,
                bracket: true,
            });
            1
        }
        (Some(b'{'), _) => {
            stack.push(Frame::Code {
                kind: Kind::Brace,
                depth: 0,
            });
            1
        }
        (Some(b'\''), _) => {
            stack.push(Frame::AnsiC);
            1
        }
        (Some(b'"'), _) => {
            stack.push(Frame::Double);
            1
        }
        _ => 0,
    }
}

/// An opening `(` in `$(...)` or `{` in `${...}` nests one level deeper.
fn set_depth(stack: &mut [Frame], c: u8, delta: u32) {
    if let Some(Frame::Code { kind, depth }) = stack.last_mut() {
        if (*kind == Kind::Subst && c == b'(') || (*kind == Kind::Brace && c == b'{') {
            *depth += delta;
        }
    }
}

/// A closing `)` or `}`: one level up, or the end of the `$(...)`/`${...}`.
fn close(stack: &mut Vec<Frame>, c: u8) {
    if let Some(Frame::Code { kind, depth }) = stack.last_mut() {
        let closes = (*kind == Kind::Subst && c == b')') || (*kind == Kind::Brace && c == b'}');
        if closes {
            if *depth == 0 {
                stack.pop();
            } else {
                *depth -= 1;
            }
        }
    }
}

fn set_arith_depth(stack: &mut [Frame], new: u32, bracket: bool) {
    if let Some(top) = stack.last_mut() {
        *top = Frame::Arith {
            depth: new,
            bracket,
        };
    }
}

/// Whether the byte at `i` starts a word (so a `#` there starts a comment).
fn word_start(b: &[u8], i: usize) -> bool {
    i == 0
        || matches!(
            b[i - 1],
            b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')'
        )
}

/// Reads the delimiter word of `<<` or `<<-` starting at `i`; returns it and where it ends.
fn heredoc_operator(b: &[u8], mut i: usize) -> (PendingHeredoc, usize) {
    let strip_tabs = b.get(i) == Some(&b'-');
    if strip_tabs {
        i += 1;
    }
    while matches!(b.get(i), Some(b' ') | Some(b'\t')) {
        i += 1;
    }
    let mut delimiter = Vec::new();
    let mut quoted = false;
    let mut quote: Option<u8> = None;
    while let Some(&c) = b.get(i) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => delimiter.push(c),
            None => match c {
                b'\'' | b'"' => {
                    quoted = true;
                    quote = Some(c);
                }
                b'\\' => {
                    quoted = true;
                    if let Some(&n) = b.get(i + 1) {
                        delimiter.push(n);
                        i += 1;
                    }
                }
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' => break,
                _ => delimiter.push(c),
            },
        }
        i += 1;
    }
    (
        PendingHeredoc {
            delimiter,
            strip_tabs,
            quoted,
        },
        i,
    )
}

/// Starts reading the bodies of `queue`'s here-documents at line `i`: a quoted one is
/// skipped (its positions marked), an unquoted one becomes a [`Frame::Body`] holding the
/// rest of the queue. Returns where reading resumes.
fn open_bodies(
    b: &[u8],
    mut i: usize,
    queue: Vec<PendingHeredoc>,
    stack: &mut Vec<Frame>,
    bodies: &mut Vec<Body>,
    mark: &mut dyn FnMut(usize, Context),
) -> usize {
    let mut queue = queue.into_iter();
    while let Some(heredoc) = queue.next() {
        if heredoc.quoted {
            i = skip_quoted_body(b, i, &heredoc, mark);
            continue;
        }
        let (delimiter_at, resume) = find_delimiter(b, i, &heredoc);
        if delimiter_at == i {
            // An empty body.
            i = resume;
            continue;
        }
        bodies.push(Body {
            frame: stack.len(),
            delimiter_at,
            resume,
            after: queue.collect(),
        });
        stack.push(Frame::Body);
        return i;
    }
    i
}

/// Where `heredoc`'s delimiter line starts, from line `i` on, and where the text after it
/// resumes; the text's end for both when there is none.
fn find_delimiter(b: &[u8], mut i: usize, heredoc: &PendingHeredoc) -> (usize, usize) {
    while i < b.len() {
        let end = b[i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |n| i + n);
        let mut line = &b[i..end];
        if heredoc.strip_tabs {
            while let [b'\t', rest @ ..] = line {
                line = rest;
            }
        }
        if line == heredoc.delimiter.as_slice() {
            return (i, (end + 1).min(b.len()));
        }
        i = end + 1;
    }
    (b.len(), b.len())
}

/// Skips the body of a here-document with a quoted delimiter (no expansion at all), which
/// starts at line `i`, marking the positions inside it; returns where the text resumes.
fn skip_quoted_body(
    b: &[u8],
    i: usize,
    heredoc: &PendingHeredoc,
    mark: &mut dyn FnMut(usize, Context),
) -> usize {
    let (delimiter_at, resume) = find_delimiter(b, i, heredoc);
    if delimiter_at > i {
        mark(delimiter_at - 1, Context::QuotedHeredoc);
    }
    resume
}

#[cfg(test)]
mod tests;
