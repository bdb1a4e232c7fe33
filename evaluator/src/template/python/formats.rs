//! Where an output reference in a `python` script would be a format string, a template or
//! a pattern, though it stands in code.
//!
//! A reference in code reads its value from the environment, so Python never parses the
//! value as code — but some code reads a *string* as a little program of its own:
//! `value.format(obj)` and `str.format(value, obj)` walk attributes and items of their
//! arguments (`{0.__init__.__globals__[os].environ[TOKEN]:.1}` prints a prefix of any
//! secret, which the log masker, matching whole values only, lets through), `value % obj`
//! and `string.Template(value)` read the keys of a mapping, a regular expression or glob
//! matches more than its text. This module finds those positions around each reference, as
//! written:
//!
//! - the receiver of `.format` / `.format_map` (the whole primary before the dot: `ref`,
//!   `(ref + "x")`, `str(ref)`, `f"{ref}"`, `ref.strip()`), and the left operand of `%`;
//! - the first argument of `str.format`, `str.format_map`, `<...formatter...>.format`,
//!   `.vformat`, `Template(...)`, the second of the builtin `format(value, spec)`;
//! - the pattern argument of `re.<function>`, `fnmatch`, `glob` and `.glob`/`.rglob`;
//! - the same reached through a name or a call ([`indirect`]): a receiver the script bound
//!   to `str`, `type(...)`, `__class__` or a `Formatter` (`S = str`, `import ... as F`),
//!   a name bound to a format method (`f = str.format`), the arguments of `getattr`,
//!   `map`, `partial`, `methodcaller`, `__call__` calls that name a format method, and an
//!   output assigned (`=`, `:=`) to a name the script formats with.
//!
//! A reference passed as a *value* (`"{}".format(ref)`, `"%s" % ref`, `int(ref) % 2`,
//! `re.compile(re.escape(ref))`) stays allowed. The check is lexical: a value passed
//! through a function, a container or a second variable before it is formatted is not
//! seen (docs/src/security/outputs.md, "The check is lexical", says never to), and code
//! it misjudges is only refused, never rendered differently. Linear in the script's length.
//!
//! The script is read by [`super::tokens`], which agrees with [`super::contexts`] on what
//! is code.

use super::tokens::{tokenize, Kind, Token, NONE};

mod indirect;

/// Why an output may not be the receiver of `.format()`.
const RECEIVER: &str = "an output must not be the receiver of .format() or .format_map(): its text would be a format string that reads attributes of the arguments (e.g. {0.__init__.__globals__}); pass it as a value instead, e.g. \"{}\".format({{ steps.<id>.outputs.<key> }})";
/// Why an output may not be the left operand of `%`.
const PERCENT: &str = "an output must not be the left operand of %: its text would be a format string reading the right-hand side; pass it as a value instead, e.g. \"%s\" % ({{ steps.<id>.outputs.<key> }},)";
/// Why an output may not be a format string argument.
const FORMAT_ARGUMENT: &str = "an output must not be the format string of str.format, str.format_map, a Formatter's format/vformat or format()'s spec: its text would read attributes of the arguments; pass it as a value to a format string you wrote";
/// Why an output may not reach a format method through a call.
const INDIRECT_FORMAT: &str = "an output must not be an argument of a call that reaches a format method by name or as a value (getattr(..., \"format\"), map(str.format, ...), functools.partial(str.format, ...), operator.methodcaller(\"format\", ...), str.format.__call__): its text would be a format string; pass it as a value to a format string you wrote";
/// Why an output may not be stored in a name the script formats with.
const STORED: &str = "an output must not be assigned to a name the script uses as a format string (NAME.format(...), NAME.format_map(...), NAME % ...): its text would read attributes of the arguments; format a string you wrote with the output as a value";
/// Why an output may not be a `string.Template`.
const TEMPLATE: &str = "an output must not be a string.Template: its text would read keys of the mapping it is substituted with; substitute it as a value instead";
/// Why an output may not be a pattern.
const PATTERN: &str = "an output must not be a pattern (re, fnmatch, glob): it would match more than its own text, or cost unbounded time; match its text literally (re.escape(...), ==, in)";

/// Calls whose result keeps nothing of an argument's text usable as a format string.
const NUMERIC_CALLS: &[&str] = &[
    "int", "float", "complex", "bool", "len", "abs", "round", "ord", "hash",
];

/// `re` functions whose first argument is a pattern.
const RE_FUNCTIONS: &[&str] = &[
    "compile",
    "match",
    "search",
    "fullmatch",
    "sub",
    "subn",
    "split",
    "findall",
    "finditer",
];

/// How many (reference, position) pairs one script's check may visit; past it, every
/// output not yet decided is refused (only a script built to be expensive gets there).
const MAX_VISITS: usize = 1 << 20;

/// Why an output may not stand in a script this costly to check.
const TOO_COSTLY: &str = "the script nests too many references in format positions to check; read the output from os.environ[\"PLUE_OUTPUT_<STEP>_<KEY>\"] instead";

/// Which calls around a reference make it only a value for one kind of position.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Safe {
    /// `int(ref)`, `len(ref)`: nothing of the text is left to be a format string.
    Numeric,
    /// `re.escape(ref)`: a pattern matching exactly the text.
    Escaped,
    Never,
}

/// For each reference position in `at` (ascending; the placeholders of `text`), why an
/// *output* there would be a format string, template or pattern, if it would. Linear in
/// the length of `text`, with at most [`MAX_VISITS`] more steps.
pub(super) fn refusals(text: &str, at: &[usize]) -> Vec<Option<&'static str>> {
    let mut out = vec![None; at.len()];
    if at.is_empty() {
        return out;
    }
    let tokens = tokenize(text.as_bytes());
    let aliases = indirect::aliases(&tokens, text);
    let name = |t: &Token| &text[t.start..t.end];
    // The byte start of the innermost numeric (escape) call around each reference.
    let (numeric, escaped) = enclosing_calls(&tokens, text, at);
    let mut starts = vec![None; tokens.len()];
    let mut positions = Vec::new(); // (from, to, why, safe)
    for (j, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Dot if j > 0 => {
                let Some(attr) = tokens.get(j + 1).filter(|n| n.kind == Kind::Name) else {
                    continue;
                };
                if matches!(name(attr), "format" | "format_map" | "__mod__") {
                    if let Some(start) = primary(&tokens, j - 1, &mut starts) {
                        positions.push((start, t.start, RECEIVER, Safe::Numeric));
                    }
                }
            }
            Kind::Percent if j > 0 => {
                if let Some(start) = primary(&tokens, j - 1, &mut starts) {
                    positions.push((start, t.start, PERCENT, Safe::Numeric));
                }
            }
            Kind::Open if j > 0 && name(t) == "(" && t.partner != NONE => {
                let Some((position, why)) = call_kind(&tokens, j, text, &aliases) else {
                    continue;
                };
                let safe = if why == PATTERN {
                    Safe::Escaped
                } else {
                    Safe::Never
                };
                let args = arguments(&tokens, j);
                if let Some(&(from, to)) = args.get(position) {
                    positions.push((from, to, why, safe));
                }
                // A keyword argument that is the format string or pattern.
                for &(from, to) in &args {
                    let k = tokens.partition_point(|t| t.start < from);
                    let keyword = tokens.get(k).is_some_and(|t| {
                        t.kind == Kind::Name
                            && matches!(
                                name(t),
                                "format_string" | "template" | "pattern" | "pat" | "format_spec"
                            )
                    }) && tokens.get(k + 1).is_some_and(|t| t.kind == Kind::Assign);
                    if keyword {
                        positions.push((from, to, why, safe));
                    }
                }
            }
            _ => {}
        }
    }
    for (from, to) in indirect::indirect_calls(&tokens, text, &mut |last| {
        primary(&tokens, last, &mut starts)
    }) {
        positions.push((from, to, INDIRECT_FORMAT, Safe::Numeric));
    }
    for (from, to) in indirect::stored_receivers(&tokens, text) {
        positions.push((from, to, STORED, Safe::Numeric));
    }
    // Each decided reference is skipped from then on (`next[k]`: the first undecided
    // reference at or after `k`).
    let mut next: Vec<usize> = (0..=at.len()).collect();
    fn find(next: &mut [usize], mut k: usize) -> usize {
        while next[k] != k {
            next[k] = next[next[k]];
            k = next[k];
        }
        k
    }
    let mut visits = 0;
    for (from, to, why, safe) in positions {
        let mut k = find(&mut next, at.partition_point(|&p| p < from));
        while k < at.len() && at[k] < to {
            visits += 1;
            if visits > MAX_VISITS {
                for slot in out.iter_mut().filter(|o| o.is_none()) {
                    *slot = Some(TOO_COSTLY);
                }
                return out;
            }
            let inside = match safe {
                Safe::Numeric => numeric[k],
                Safe::Escaped => escaped[k],
                Safe::Never => None,
            };
            if inside.is_some_and(|call| call >= from) {
                k = find(&mut next, k + 1);
                continue;
            }
            out[k] = Some(why);
            next[k] = k + 1;
            k = find(&mut next, k + 1);
        }
    }
    out
}

/// For each reference of `at`, the byte start of the innermost numeric call (`int(`) and
/// of the innermost escape call (`re.escape(`) around it, if any.
#[allow(clippy::type_complexity)]
fn enclosing_calls(
    tokens: &[Token],
    text: &str,
    at: &[usize],
) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let mut numeric = vec![None; at.len()];
    let mut escaped = vec![None; at.len()];
    // Open groups: (token, numeric start, escape start) as they were inside it.
    let mut open: Vec<(usize, Option<usize>, Option<usize>)> = Vec::new();
    let (mut n, mut e) = (None, None);
    let mut k = 0;
    for (j, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Open => {
                let callee = j
                    .checked_sub(1)
                    .map(|c| tokens[c])
                    .filter(|c| c.kind == Kind::Name && &text[t.start..t.end] == "(");
                let callee = callee.map(|c| &text[c.start..c.end]);
                let dotted = j >= 2 && tokens[j - 2].kind == Kind::Dot;
                let (inner_n, inner_e) = match callee {
                    Some(c) if !dotted && NUMERIC_CALLS.contains(&c) => (Some(t.start), e),
                    Some("escape") => (n, Some(t.start)),
                    _ => (n, e),
                };
                open.push((j, n, e));
                n = inner_n;
                e = inner_e;
            }
            Kind::Close if t.partner != NONE => {
                while let Some((j, outer_n, outer_e)) = open.pop() {
                    n = outer_n;
                    e = outer_e;
                    if j == t.partner {
                        break;
                    }
                }
            }
            Kind::Ref => {
                while k < at.len() && at[k] < t.start {
                    k += 1;
                }
                if at.get(k) == Some(&t.start) {
                    numeric[k] = n;
                    escaped[k] = e;
                }
            }
            _ => {}
        }
    }
    (numeric, escaped)
}

/// The start of the primary (atom and trailers) whose last token is `tokens[last]`;
/// `None` when `tokens[last]` ends no primary. `starts` memoises the answer for every
/// token a walk passes, so all walks together are linear.
fn primary(tokens: &[Token], last: usize, starts: &mut [Option<Option<usize>>]) -> Option<usize> {
    let mut passed = Vec::new();
    let mut i = last;
    let mut start = None;
    loop {
        if let Some(known) = starts[i] {
            start = known.or(start);
            break;
        }
        passed.push(i);
        let t = tokens[i];
        match t.kind {
            Kind::Close if t.partner != NONE => {
                start = Some(tokens[t.partner].start);
                if t.partner == 0 {
                    break;
                }
                i = t.partner - 1;
                if !matches!(
                    tokens[i].kind,
                    Kind::Name | Kind::Str | Kind::Ref | Kind::Close | Kind::Number
                ) {
                    break;
                }
            }
            Kind::Str => {
                start = Some(t.start);
                if t.partner == 0 || tokens[t.partner - 1].kind != Kind::Str {
                    break;
                }
                i = t.partner - 1;
            }
            Kind::Name => {
                start = Some(t.start);
                if i < 2 || tokens[i - 1].kind != Kind::Dot {
                    break;
                }
                i -= 2;
            }
            Kind::Ref | Kind::Number => {
                start = Some(t.start);
                break;
            }
            _ => break,
        }
    }
    for i in passed {
        starts[i] = Some(start);
    }
    start
}

/// For the call whose `(` is `tokens[open]`: which positional argument is a format
/// string, template or pattern, and why; `None` for other calls.
fn call_kind(
    tokens: &[Token],
    open: usize,
    text: &str,
    aliases: &indirect::Aliases<'_>,
) -> Option<(usize, &'static str)> {
    let callee = tokens[open - 1];
    if callee.kind != Kind::Name {
        return None;
    }
    let name = &text[callee.start..callee.end];
    let dotted = open >= 2 && tokens[open - 2].kind == Kind::Dot;
    // The last name of what the method is called on: `str` in `str.format`, `Formatter`
    // in `string.Formatter().format`, `re` in `re.compile`.
    let receiver = if dotted && open >= 3 {
        let mut k = open - 3;
        if tokens[k].kind == Kind::Close && tokens[k].partner != NONE && tokens[k].partner > 0 {
            k = tokens[k].partner - 1;
        }
        (tokens[k].kind == Kind::Name).then(|| &text[tokens[k].start..tokens[k].end])
    } else {
        None
    };
    // `str`, `type("")`, `"".__class__`, a `Formatter`, or a name the script bound to one.
    let formatter = receiver.is_some_and(|r| indirect::is_formatter(r, aliases));
    match name {
        "vformat" if dotted => Some((0, FORMAT_ARGUMENT)),
        f if dotted && formatter && indirect::is_format_method(f) => Some((0, FORMAT_ARGUMENT)),
        // `f = str.format` ... `f(ref, obj)`.
        f if !dotted && aliases.format_functions.contains(f) => Some((0, FORMAT_ARGUMENT)),
        "format" if !dotted => Some((1, FORMAT_ARGUMENT)),
        "Template" => Some((0, TEMPLATE)),
        f if dotted && receiver == Some("re") && RE_FUNCTIONS.contains(&f) => Some((0, PATTERN)),
        "fnmatch" | "fnmatchcase" | "filter" if dotted && receiver == Some("fnmatch") => {
            Some((1, PATTERN))
        }
        "translate" if dotted && receiver == Some("fnmatch") => Some((0, PATTERN)),
        "glob" | "iglob" if dotted && receiver == Some("glob") => Some((0, PATTERN)),
        // A `pathlib.Path` method (`Path.match` is left out: a compiled regular
        // expression's `.match(text)` takes the text).
        "glob" | "rglob" if dotted => Some((0, PATTERN)),
        _ => None,
    }
}

/// The byte ranges of the arguments of the call whose `(` is `tokens[open]`, split at its
/// own commas.
fn arguments(tokens: &[Token], open: usize) -> Vec<(usize, usize)> {
    let close = tokens[open].partner;
    let mut out = Vec::new();
    let mut from = tokens[open].end;
    let mut i = open + 1;
    while i < close {
        let t = tokens[i];
        match t.kind {
            Kind::Open if t.partner != NONE && t.partner < close => i = t.partner,
            Kind::Comma => {
                out.push((from, t.start));
                from = t.end;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((from, tokens[close].start));
    out
}

#[cfg(test)]
mod tests;
