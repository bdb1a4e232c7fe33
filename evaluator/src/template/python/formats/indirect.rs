//! Format positions reached through a name or a call instead of `.format` written on the
//! value: what [`super::refusals`] adds to the positions it sees directly.
//!
//! - [`Aliases`]: names this script binds to a formatter (`S = str`, `fmt =
//!   string.Formatter()`, `from string import Formatter as F`, `T = type("")`) or to a
//!   format method (`f = str.format`), so that `S.format(ref, obj)` and `f(ref, obj)` are
//!   seen as `str.format(ref, obj)`;
//! - [`indirect_calls`]: an output among the arguments of a call that reaches a format
//!   method by name or as a value — `getattr(ref, "format")`, `map(str.format, [ref])`,
//!   `functools.partial(str.format, ref)`, `operator.methodcaller("format", obj)(ref)`,
//!   `str.format.__call__(ref, obj)`, `(lambda t: t.format(obj))(ref)`;
//! - [`stored_receivers`]: an output assigned (`=`, `:=`, `for NAME in`) to a name that the script uses
//!   as the receiver of `.format`/`.format_map` or the left operand of `%`
//!   (`(s := ref) and s.format(obj)`, `t = ref` ... `t.format(obj)`).
//!
//! Still lexical: a value passed through a function, a container, an attribute or a second
//! variable is not followed (docs/src/security/outputs.md says so: "The check is
//! lexical"). Each pass is linear in the tokens: the alias table reads at most
//! [`MAX_VALUE_TOKENS`] tokens per assignment, the call ranges are answered from prefix
//! counts, the statement ends come from one backward pass.

use std::collections::HashSet;

use super::super::tokens::{Kind, Token, NONE};

/// How many tokens of an assignment's value the alias table reads (a formatter is short).
const MAX_VALUE_TOKENS: usize = 64;

/// Names that reach a format method when called with the method's name or the method.
const INDIRECT: &[&str] = &[
    "getattr",
    "map",
    "starmap",
    "partial",
    "partialmethod",
    "methodcaller",
    "__call__",
    "reduce",
    "apply",
    "lambda",
];

/// Names bound in the script to something whose `.format` reads its first argument as a
/// format string, or to such a method.
#[derive(Default)]
pub(super) struct Aliases<'t> {
    /// `S = str`, `F = string.Formatter`, `fmt = F()`, `T = type("")`, `... as F`.
    pub(super) formatters: HashSet<&'t str>,
    /// `f = str.format`, `g = fmt.vformat`.
    pub(super) format_functions: HashSet<&'t str>,
}

/// Whether `name` names a formatter: `str`, `type`, `__class__`, `*Formatter*`, or an
/// alias of one.
pub(super) fn is_formatter(name: &str, aliases: &Aliases<'_>) -> bool {
    matches!(name, "str" | "type" | "__class__")
        || name.to_ascii_lowercase().contains("formatter")
        || aliases.formatters.contains(name)
}

/// Methods that read their receiver or first argument as a format string or field name.
pub(super) fn is_format_method(name: &str) -> bool {
    matches!(
        name,
        "format" | "format_map" | "vformat" | "__mod__" | "get_field"
    )
}

/// The [`Aliases`] of the script, in one pass (assignments are read in order, so an alias
/// of an alias counts when written after it).
pub(super) fn aliases<'t>(tokens: &[Token], text: &'t str) -> Aliases<'t> {
    let name = |t: &Token| &text[t.start..t.end];
    let mut aliases = Aliases::default();
    for (j, t) in tokens.iter().enumerate() {
        // `... Formatter as F` / `... str as S`.
        if t.kind == Kind::Name && name(t) == "as" && j > 0 {
            let (before, after) = (tokens[j - 1], tokens.get(j + 1));
            if let Some(after) = after.filter(|a| a.kind == Kind::Name) {
                if before.kind == Kind::Name && is_formatter(name(&before), &aliases) {
                    aliases.formatters.insert(name(after));
                }
            }
            continue;
        }
        let assigns = t.kind == Kind::Assign || (t.kind == Kind::Other && name(t) == ":=");
        if !assigns || j == 0 || tokens[j - 1].kind != Kind::Name {
            continue;
        }
        if j >= 2 && tokens[j - 2].kind == Kind::Dot {
            continue; // `obj.attr = ...`
        }
        let target = name(&tokens[j - 1]);
        // The value's last token at its own depth, within the bound.
        let mut k = j + 1;
        let mut last = None;
        while k < tokens.len() && k <= j + MAX_VALUE_TOKENS {
            let v = tokens[k];
            let ends = match v.kind {
                Kind::Other => matches!(name(&v), "\n" | ";"),
                Kind::Close | Kind::Comma | Kind::Assign => true,
                _ => false,
            };
            if ends {
                break;
            }
            // A group counts as its closer (the value `F()` ends with `)`).
            let group_end = match v.kind {
                Kind::Open if v.partner != NONE => v.partner,
                _ => k,
            };
            last = Some(group_end);
            k = group_end + 1;
        }
        let Some(last) = last else { continue };
        let end = tokens[last];
        let called = (end.kind == Kind::Close && end.partner != NONE && end.partner > 0)
            .then(|| tokens[end.partner - 1])
            .filter(|c| c.kind == Kind::Name);
        match (end.kind, called) {
            (Kind::Name, _) if last > 0 && tokens[last - 1].kind == Kind::Dot => {
                let method = name(&end);
                if is_format_method(method) {
                    // `f = str.format`; not `f = "{}".format` (a literal's method).
                    let receiver = last.checked_sub(2).map(|r| tokens[r]);
                    if receiver.is_some_and(|r| r.kind != Kind::Str) {
                        aliases.format_functions.insert(target);
                    }
                } else if is_formatter(method, &aliases) {
                    aliases.formatters.insert(target); // `C = "".__class__`
                }
            }
            (Kind::Name, _) if is_formatter(name(&end), &aliases) => {
                aliases.formatters.insert(target);
            }
            // `fmt = string.Formatter()`, `T = type("")`; not `s = str(x)` (a string).
            (Kind::Close, Some(c)) if name(&c) != "str" && is_formatter(name(&c), &aliases) => {
                aliases.formatters.insert(target);
            }
            _ => {}
        }
    }
    aliases
}

/// The byte ranges of the arguments (inside the parentheses) of every call that reaches a
/// format method indirectly: its callee or arguments name an [`INDIRECT`] function and a
/// format method (`format`, `format_map`, `vformat`, as a name or a string).
pub(super) fn indirect_calls(
    tokens: &[Token],
    text: &str,
    callee_start: &mut dyn FnMut(usize) -> Option<usize>,
) -> Vec<(usize, usize)> {
    let name = |t: &Token| &text[t.start..t.end];
    // Prefix counts: mentions of a format method, and of an indirect function.
    let mut mentions = vec![0u32; tokens.len() + 1];
    let mut indirect = vec![0u32; tokens.len() + 1];
    for (j, t) in tokens.iter().enumerate() {
        let mention = match t.kind {
            Kind::Name => is_format_method(name(t)),
            // `"format"`, `'format_map'` (after any prefix letters).
            Kind::Str => is_format_method(
                name(t)
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .trim_matches(['\'', '"']),
            ),
            _ => false,
        };
        mentions[j + 1] = mentions[j] + u32::from(mention);
        let named = t.kind == Kind::Name && INDIRECT.contains(&name(t));
        indirect[j + 1] = indirect[j] + u32::from(named);
    }
    let mut out = Vec::new();
    for (j, t) in tokens.iter().enumerate() {
        if t.kind != Kind::Open || name(t) != "(" || t.partner == NONE || j == 0 {
            continue;
        }
        let Some(start) = callee_start(j - 1) else {
            continue;
        };
        let first = tokens.partition_point(|t| t.start < start);
        let close = t.partner;
        let names_indirect = indirect[j] > indirect[first];
        let mentions_format = mentions[close + 1] > mentions[first];
        if names_indirect && mentions_format {
            out.push((t.end, tokens[close].start));
        }
    }
    out
}

/// The byte ranges of the values assigned to names that the script formats with
/// (`NAME.format(`, `NAME.format_map(`, `NAME % ...`): `(s := ref) and s.format(obj)`.
pub(super) fn stored_receivers(tokens: &[Token], text: &str) -> Vec<(usize, usize)> {
    let name = |t: &Token| &text[t.start..t.end];
    let mut receivers = HashSet::new();
    for (j, t) in tokens.iter().enumerate() {
        if t.kind != Kind::Name || (j > 0 && tokens[j - 1].kind == Kind::Dot) {
            continue;
        }
        let formats = match tokens.get(j + 1).map(|n| n.kind) {
            Some(Kind::Percent) => true,
            Some(Kind::Dot) => tokens.get(j + 2).is_some_and(|m| {
                m.kind == Kind::Name && matches!(name(m), "format" | "format_map")
            }),
            _ => false,
        };
        if formats {
            receivers.insert(name(t));
        }
    }
    if receivers.is_empty() {
        return Vec::new();
    }
    // Where the statement (or the group) holding each token ends: one pass backwards.
    let mut end_of = vec![text.len(); tokens.len()];
    let mut ends: Vec<usize> = vec![text.len()];
    for j in (0..tokens.len()).rev() {
        let t = tokens[j];
        match t.kind {
            Kind::Close => ends.push(t.start),
            Kind::Open if ends.len() > 1 => {
                ends.pop();
            }
            Kind::Other if matches!(name(&t), "\n" | ";") => {
                if let Some(last) = ends.last_mut() {
                    *last = t.start;
                }
            }
            _ => {}
        }
        end_of[j] = *ends.last().unwrap_or(&text.len());
    }
    let mut out = Vec::new();
    for (j, t) in tokens.iter().enumerate() {
        // `NAME = value`, `NAME := value`, and `for NAME in value` (loops, comprehensions).
        let assigns = t.kind == Kind::Assign
            || (t.kind == Kind::Other && name(t) == ":=")
            || (t.kind == Kind::Name
                && name(t) == "in"
                && j >= 2
                && tokens[j - 2].kind == Kind::Name
                && name(&tokens[j - 2]) == "for");
        if !assigns || j == 0 || tokens[j - 1].kind != Kind::Name {
            continue;
        }
        if j >= 2 && tokens[j - 2].kind == Kind::Dot {
            continue;
        }
        if receivers.contains(name(&tokens[j - 1])) {
            out.push((t.end, end_of[j]));
        }
    }
    out
}
