//! The argument words of a bash command that another program reads as a program of its
//! own: `printf`'s format (`%s`, `%b`, `%q`, `%(...)T` read the other arguments), the
//! command of `bash -c` / `sh -c` / `su -c`, the script of `python -c`, `perl -e`,
//! `ruby -e`, `node -e`, an awk or sed program (awk's `system()`, GNU sed's `e`), every
//! argument of `eval` and `watch`, the action of `trap`; and what an interpreter or
//! `source` reads as its script: a here-document, a here-string or a `<(...)` process
//! substitution (`bash <<EOF`, `python3 - <<EOF`, `sh <<< "..."`, `source <(echo ...)`).
//! An output expanded there — even inside double quotes, where bash itself leaves it
//! text — becomes code or a format for that program, so [`format_refusals`] finds the
//! references standing in those words.
//!
//! The commands are found by name where a command starts: also after `then`, `!`,
//! `NAME=value` assignments or find's `-exec`; anywhere in a simple command whose first
//! word is a wrapper that runs its arguments as a command (`timeout 5`, `nice -n 1`,
//! `sudo -u x`, `env -i`, `xargs -I{}`, `command -p`, `time -p`, ...); written as a path
//! (`/bin/bash`), escaped (`\printf`) or quoted (`'bash'`); and as `$NAME`/`${NAME}` —
//! the command assigned to `NAME` in the same text (`p=printf; $p ...`), or, for a name
//! never assigned one, any interpreter (`$SHELL -c`, `$X -e`, `$X <<EOF`). Option words
//! are compared unquoted (`printf '-v' out`, `"--"`).
//!
//! Not seen, by design (a lexical check follows no data): an output that reaches code
//! through a variable, a file or a pipe (`fmt="$(cat <<EOF ... EOF)"; printf "$fmt"`,
//! `echo {{ ref }} | xargs -I{} sh -c 'echo {}'`), a command built at run time
//! (`"$(which sh)" -c`), formats that read no process state (`date +...`, `find -printf`).
//!
//! Linear: each name occurrence is placed once (the walk back to its simple command's
//! start stops at the previous occurrence's), the words after each command are scanned
//! under one budget for the whole text, and each reference is decided once.
//!
//! Why one file past ~600 lines: a table of the programs that read an argument as a program
//! of their own (printf, `-c` shells, interpreters), each entry short.

use std::collections::HashMap;

use super::{contexts, find_delimiter, heredoc_operator, is_var_name, Context};

/// Why an output may not be `printf`'s format argument.
const PRINTF_FORMAT: &str = "an output must not be printf's format argument: its text would be read as a format (%s, %b, %q, %(...)T read the arguments); print it as a value instead, e.g. printf '%s\\n' \"{{ steps.<id>.outputs.<key> }}\"";

/// Why an output may not be part of a program another command parses.
const PROGRAM: &str = "an output must not be part of code another program parses (bash -c, sh -c, python -c, perl -e, awk and sed programs, eval, trap, a here-document, here-string or <(...) fed to an interpreter or source), even in double quotes: it would run there; pass it as an argument instead, e.g. bash -c 'echo \"$1\"' _ {{ steps.<id>.outputs.<key> }}";

/// Which argument words of a command are a program.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// `printf [-v NAME] [--] FORMAT ...`.
    PrintfFormat,
    /// A shell: the word after an option cluster holding `c` (`-c`, `-ec`, `-lc`).
    ShellCommand,
    /// Python: the word after `-c` (or a flag cluster ending in `c`).
    PythonCommand,
    /// Perl, Ruby, Node: the word after `-e`/`-E` (or a cluster ending in one), `--eval`.
    ScriptExpression,
    /// awk: the first word that is not an option (or the word after `-e`/`--source`).
    Awk,
    /// sed: the words after `-e`, or the first word that is not an option.
    Sed,
    /// `source`/`.`: only what it reads from stdin or a `<(...)`.
    Source,
    /// `$NAME` naming no known command: any interpreter's code words (`-c`, `-e`, stdin).
    Interpreter,
    /// `eval`, `watch`: every argument.
    AllArguments,
    /// `trap`: the first argument.
    FirstArgument,
}

const COMMANDS: &[(&str, Rule)] = &[
    ("printf", Rule::PrintfFormat),
    ("bash", Rule::ShellCommand),
    ("sh", Rule::ShellCommand),
    ("dash", Rule::ShellCommand),
    ("zsh", Rule::ShellCommand),
    ("ksh", Rule::ShellCommand),
    ("ash", Rule::ShellCommand),
    ("fish", Rule::ShellCommand),
    ("su", Rule::ShellCommand),
    ("python", Rule::PythonCommand),
    ("python3", Rule::PythonCommand),
    ("python2", Rule::PythonCommand),
    ("perl", Rule::ScriptExpression),
    ("ruby", Rule::ScriptExpression),
    ("node", Rule::ScriptExpression),
    ("awk", Rule::Awk),
    ("gawk", Rule::Awk),
    ("mawk", Rule::Awk),
    ("nawk", Rule::Awk),
    ("sed", Rule::Sed),
    ("gsed", Rule::Sed),
    ("source", Rule::Source),
    (".", Rule::Source),
    ("eval", Rule::AllArguments),
    ("watch", Rule::AllArguments),
    ("trap", Rule::FirstArgument),
];

/// Commands that run their arguments as a command: in a simple command starting with one
/// of these, any later word may be the command that runs.
const WRAPPERS: &[&[u8]] = &[
    b"time",
    b"command",
    b"builtin",
    b"exec",
    b"env",
    b"sudo",
    b"doas",
    b"xargs",
    b"timeout",
    b"nice",
    b"nohup",
    b"stdbuf",
    b"setsid",
    b"ionice",
    b"chrt",
    b"taskset",
    b"unbuffer",
    b"chroot",
    b"flock",
    b"busybox",
    b"runuser",
    b"setpriv",
    b"unshare",
    b"nsenter",
];

/// For each reference position in `at` (the placeholders of `text`, ascending), why an
/// output there would be read as a format or a program by the command whose argument it
/// is (`COMMANDS`). Linear in the length of `text`.
pub fn format_refusals(text: &str, at: &[usize]) -> Vec<Option<&'static str>> {
    let mut out = vec![None; at.len()];
    if at.is_empty() {
        return out;
    }
    let b = text.as_bytes();
    let candidates = commands(text);
    if candidates.is_empty() {
        return out;
    }
    let starts: Vec<usize> = candidates.iter().map(|&(start, _, _)| start).collect();
    let code = contexts(text, &starts);
    // Words are scanned from each command on; what all scans may read in total, after
    // which a word runs to the end of the text (only a text built to be expensive).
    let mut budget = 4 * b.len() + 1024;
    let mut next: Vec<usize> = (0..=at.len()).collect();
    fn find(next: &mut [usize], mut k: usize) -> usize {
        while next[k] != k {
            next[k] = next[next[k]];
            k = next[k];
        }
        k
    }
    let mut ranges = Vec::new();
    for (&(_, end, rule), context) in candidates.iter().zip(code) {
        if context != Context::Unquoted {
            continue;
        }
        ranges.clear();
        program_words(b, end, rule, &mut budget, &mut ranges);
        let why = match rule {
            Rule::PrintfFormat => PRINTF_FORMAT,
            _ => PROGRAM,
        };
        for &(from, to) in &ranges {
            // Nested programs (`printf "$(printf ...)"`) overlap: each reference is
            // refused once and skipped after (`next[k]`: the first one not yet refused).
            let mut k = find(&mut next, at.partition_point(|&p| p < from));
            while k < at.len() && at[k] < to {
                out[k] = Some(why);
                next[k] = k + 1;
                k = find(&mut next, k + 1);
            }
        }
    }
    out
}

/// Whether `c` ends a shell word (a blank or an operator).
fn ends_word(c: u8) -> bool {
    matches!(
        c,
        b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' | b'`'
    )
}

/// The commands of `text` in command position, as (start, end of the name, rule), by
/// start: [`COMMANDS`] by name (bare, a path, `\name`, `'name'`, `"name"`), and `$NAME`
/// or `${NAME}` (the command assigned to it in `text`, else [`Rule::Interpreter`]).
fn commands(text: &str) -> Vec<(usize, usize, Rule)> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut aliases: HashMap<&str, Rule> = HashMap::new();
    for &(name, rule) in COMMANDS {
        for (i, _) in text.match_indices(name) {
            let (mut start, mut end) = (i, i + name.len());
            match (i.checked_sub(1).map(|p| b[p]), b.get(end)) {
                (Some(b'\\'), _) => start -= 1,
                (Some(q @ (b'\'' | b'"')), Some(&c)) if c == q => {
                    start -= 1;
                    end += 1;
                }
                _ => {}
            }
            if b.get(end).is_some_and(|&c| !ends_word(c)) {
                continue;
            }
            // `NAME=printf`: `$NAME` is printf.
            if start > 0 && b[start - 1] == b'=' {
                let before = &text[..start - 1];
                let var = before
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(before, |n| &before[n + 1..]);
                if is_var_name(var) {
                    aliases.insert(var, rule);
                }
                continue;
            }
            found.push((start, end, Some(rule)));
        }
    }
    for (i, _) in text.match_indices('$') {
        let braced = b.get(i + 1) == Some(&b'{');
        let from = i + 1 + usize::from(braced);
        let len = b[from..]
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
            .unwrap_or(b.len() - from);
        let mut end = from + len;
        if braced {
            if b.get(end) != Some(&b'}') {
                continue;
            }
            end += 1;
        }
        if len == 0 || b.get(end).is_some_and(|&c| !ends_word(c)) {
            continue;
        }
        found.push((i, end, None));
    }
    found.sort_unstable_by_key(|&(start, _, _)| start);
    let mut memo = Memo::default();
    found
        .into_iter()
        .filter(|&(start, end, _)| command_position(b, start, end, &mut memo))
        .map(|(start, end, rule)| {
            let rule = rule.unwrap_or_else(|| {
                let name = text[start + 1..end].trim_matches(['{', '}']);
                aliases.get(name).copied().unwrap_or(Rule::Interpreter)
            });
            (start, end, rule)
        })
        .collect()
}

/// Where the last wrapper check was made and its answer: candidates come by start, so
/// each walks back at most to the previous one, which shares its simple command when no
/// separator lies between them.
#[derive(Default)]
struct Memo {
    last: Option<usize>,
    wrapped: bool,
}

/// Whether `b[start..end]` is a whole word in command position.
fn command_position(b: &[u8], start: usize, end: usize, memo: &mut Memo) -> bool {
    let word = |c: u8| !ends_word(c);
    if b.get(end).is_some_and(|&c| word(c)) {
        return false;
    }
    // The previous word, skipping blanks. A path (`/bin/bash`) counts from its start.
    let mut i = start;
    if i > 0 && b[i - 1] == b'/' {
        while i > 0 && word(b[i - 1]) && !matches!(b[i - 1], b'\'' | b'"' | b'$' | b'=') {
            i -= 1;
        }
    }
    if i > 0 && word(b[i - 1]) && !matches!(b[i - 1], b'{' | b'!') {
        return false;
    }
    let name_start = i;
    while i > 0 && matches!(b[i - 1], b' ' | b'\t') {
        i -= 1;
    }
    if i == 0
        || matches!(
            b[i - 1],
            b'\n' | b';' | b'&' | b'|' | b'(' | b'`' | b'{' | b'!'
        )
    {
        return true;
    }
    let mut j = i;
    while j > 0 && word(b[j - 1]) && !matches!(b[j - 1], b'\'' | b'"') {
        j -= 1;
    }
    let previous = &b[j..i];
    let assignment = previous.iter().position(|&c| c == b'=').is_some_and(|eq| {
        eq > 0 && is_var_name(std::str::from_utf8(&previous[..eq]).unwrap_or(""))
    });
    if assignment
        || matches!(
            previous,
            b"then"
                | b"do"
                | b"else"
                | b"elif"
                | b"if"
                | b"while"
                | b"until"
                | b"!"
                | b"-exec"
                | b"-execdir"
                | b"-ok"
                | b"-okdir"
        )
        || WRAPPERS.contains(&previous)
    {
        return true;
    }
    wrapped(b, name_start, memo)
}

/// Whether the simple command holding the word at `at` starts with a [`WRAPPERS`] word
/// (after keywords and assignments).
fn wrapped(b: &[u8], at: usize, memo: &mut Memo) -> bool {
    let separator = |c: u8| matches!(c, b'\n' | b';' | b'&' | b'|' | b'(' | b'`');
    let mut i = at;
    while i > 0 && !separator(b[i - 1]) {
        if memo.last.is_some_and(|last| i <= last) {
            memo.last = Some(at);
            return memo.wrapped;
        }
        i -= 1;
    }
    // The first word after keywords (`then`, `{`, `!`) and assignments.
    let mut k = i;
    let first = loop {
        while k < at && matches!(b[k], b' ' | b'\t' | b'{' | b'!') {
            k += 1;
        }
        let end = (k..at)
            .find(|&n| matches!(b[n], b' ' | b'\t'))
            .unwrap_or(at);
        let w = &b[k..end];
        let assignment = w
            .iter()
            .position(|&c| c == b'=')
            .is_some_and(|eq| eq > 0 && is_var_name(std::str::from_utf8(&w[..eq]).unwrap_or("")));
        let keyword = matches!(
            w,
            b"then" | b"do" | b"else" | b"elif" | b"if" | b"while" | b"until"
        );
        if end < at && (assignment || keyword) {
            k = end;
            continue;
        }
        break w;
    };
    let first = unquote(first);
    let name = first.rsplit(|&c| c == b'/').next().unwrap_or(&[]);
    *memo = Memo {
        last: Some(at),
        wrapped: WRAPPERS.contains(&name),
    };
    memo.wrapped
}

/// The start of a word (its first [`COMPARED`] bytes) without quotes and backslashes
/// (`'-v'` → `-v`, `\printf` → `printf`): what is compared with option and command names,
/// all short. Bounded so that a word running to the end of a hostile text costs nothing
/// per command.
fn unquote(w: &[u8]) -> Vec<u8> {
    w[..w.len().min(COMPARED)]
        .iter()
        .copied()
        .filter(|c| !matches!(c, b'\'' | b'"' | b'\\'))
        .collect()
}

/// How much of a word [`unquote`] reads.
const COMPARED: usize = 64;

/// Skips blanks and escaped newlines from `i`; the next word's start.
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    loop {
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            continue;
        }
        return i;
    }
}

/// Adds to `ranges` the byte ranges of the words that are a program, for a command named
/// by `rule` whose arguments start at `i`.
fn program_words(
    b: &[u8],
    mut i: usize,
    rule: Rule,
    budget: &mut usize,
    ranges: &mut Vec<(usize, usize)>,
) {
    // The next word, as (start, end); `None` at the end of the command.
    let word = |i: usize, budget: &mut usize| {
        let start = skip_blanks(b, i);
        let end = word_end(b, start, budget);
        (end > start).then_some((start, end))
    };
    match rule {
        Rule::AllArguments => {
            let Some((from, mut to)) = word(i, budget) else {
                return;
            };
            while let Some((_, end)) = word(to, budget) {
                to = end;
            }
            ranges.push((from, to));
        }
        Rule::FirstArgument => {
            let Some((start, end)) = word(i, budget) else {
                return;
            };
            if &b[start..end] == b"--" {
                ranges.extend(word(end, budget));
            } else {
                ranges.push((start, end));
            }
        }
        Rule::PrintfFormat => loop {
            let Some((start, end)) = word(i, budget) else {
                return;
            };
            match unquote(&b[start..end]).as_slice() {
                b"--" => return ranges.extend(word(end, budget)),
                // `-v NAME`: skip the name too.
                b"-v" => match word(end, budget) {
                    Some((_, after)) => i = after,
                    None => return,
                },
                w if w.starts_with(b"-v") => i = end,
                _ => return ranges.push((start, end)),
            }
        },
        _ => loop {
            let start = skip_blanks(b, i);
            // What an interpreter reads as its script on stdin or from `<(...)`.
            if let Some(end) = stdin_program(b, start, rule, budget, ranges) {
                i = end;
                continue;
            }
            let Some((start, end)) = word(start, budget) else {
                return;
            };
            let w = unquote(&b[start..end]);
            // `2>/dev/null`: a redirection of a numbered descriptor.
            if w.iter().all(u8::is_ascii_digit) && matches!(b.get(end), Some(b'<' | b'>')) {
                i = end;
                continue;
            }
            let flags = w.len() > 1 && matches!(w[0], b'-' | b'+') && w[1] != b'-';
            let introduces = match rule {
                Rule::ShellCommand => flags && w.contains(&b'c'),
                Rule::PythonCommand => flags && w.ends_with(b"c"),
                Rule::ScriptExpression => {
                    (flags && (w.ends_with(b"e") || w.ends_with(b"E"))) || w == b"--eval"
                }
                Rule::Sed => flags && w.ends_with(b"e"),
                Rule::Awk => w == b"-e" || w == b"--source",
                Rule::Interpreter => {
                    flags && (w.contains(&b'c') || w.ends_with(b"e") || w.ends_with(b"E"))
                }
                _ => false,
            };
            if introduces {
                let Some(program) = word(end, budget) else {
                    return;
                };
                ranges.push(program);
                if matches!(rule, Rule::ScriptExpression | Rule::Sed) {
                    i = program.1; // more -e may follow
                    continue;
                }
                return;
            }
            if w.starts_with(b"--expression=") {
                ranges.push((start, end));
                i = end;
                continue;
            }
            // Options taking an argument: skip it too.
            let takes_argument = match rule {
                Rule::ShellCommand => matches!(w.as_slice(), b"-o" | b"+o" | b"-O" | b"+O"),
                Rule::PythonCommand => matches!(w.as_slice(), b"-W" | b"-X"),
                Rule::Awk => matches!(w.as_slice(), b"-v" | b"-F" | b"-i" | b"-l"),
                Rule::Sed => matches!(w.as_slice(), b"-l"),
                _ => matches!(w.as_slice(), b"-I" | b"-r" | b"-M"),
            };
            let program_file = match rule {
                Rule::Awk | Rule::Sed => w == b"-f",
                _ => false,
            };
            if program_file {
                return; // the program is a file; the words after it are data
            } else if takes_argument {
                match word(end, budget) {
                    Some((_, after)) => i = after,
                    None => return,
                }
            } else if flags
                || w.starts_with(b"--")
                || matches!(w.as_slice(), b"-" | b"/dev/stdin" | b"/dev/fd/0")
            {
                i = end;
            } else {
                // awk's and sed's first operand is the program, unless one came before.
                if matches!(rule, Rule::Awk | Rule::Sed) && ranges.is_empty() {
                    ranges.push((start, end));
                }
                // Another interpreter's is a script file: its arguments are data.
                return;
            }
        },
    }
}

/// At a redirection starting at `i` of an interpreter-like command: adds what it reads as
/// code (a here-string's word, a here-document's body, a `<(...)`'s command) to `ranges`
/// and returns where the command's words go on; `None` when `i` starts no redirection.
fn stdin_program(
    b: &[u8],
    i: usize,
    rule: Rule,
    budget: &mut usize,
    ranges: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    let code = matches!(
        rule,
        Rule::ShellCommand
            | Rule::PythonCommand
            | Rule::ScriptExpression
            | Rule::Source
            | Rule::Interpreter
    );
    let rest = &b[i.min(b.len())..];
    if rest.starts_with(b"<<<") {
        let start = skip_blanks(b, i + 3);
        let end = word_end(b, start, budget);
        if code {
            ranges.push((start, end));
        }
        return Some(end);
    }
    if rest.starts_with(b"<<") {
        let (heredoc, after) = heredoc_operator(b, i + 2);
        if code {
            // The body starts on the next line.
            let line_end = b[after..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| after + n + 1);
            *budget = budget.saturating_sub(line_end - after);
            let (delimiter_at, _) = if *budget == 0 {
                (b.len(), b.len())
            } else {
                find_delimiter(b, line_end, &heredoc)
            };
            *budget = budget.saturating_sub(delimiter_at - line_end.min(delimiter_at));
            ranges.push((line_end.min(delimiter_at), delimiter_at));
        }
        return Some(after);
    }
    if rest.starts_with(b"<(") {
        let end = paren_end(b, i + 1, budget);
        if code {
            ranges.push((i, end));
        }
        return Some(end);
    }
    if matches!(rest.first(), Some(b'<' | b'>')) {
        // A redirection to or from a file: skip the operator and its word.
        let mut k = i;
        while matches!(b.get(k), Some(b'<' | b'>' | b'&' | b'|')) {
            k += 1;
        }
        let start = skip_blanks(b, k);
        return Some(word_end(b, start, budget).max(k));
    }
    None
}

/// Where the parenthesised text opening at `open` ends (after its `)`), quotes and
/// nesting considered; the text's end when it does not close. Each byte costs `budget`.
fn paren_end(b: &[u8], open: usize, budget: &mut usize) -> usize {
    let mut depth = 0u32;
    let mut quote: Option<u8> = None;
    let mut i = open;
    while i < b.len() {
        if *budget == 0 {
            return b.len();
        }
        *budget -= 1;
        let c = b[i];
        match quote {
            Some(b'\'') if c == b'\'' => quote = None,
            Some(b'\'') => {}
            Some(q) => match c {
                b'\\' => i += 1,
                _ if c == q => quote = None,
                _ => {}
            },
            None => match c {
                b'\\' => i += 1,
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    b.len()
}

/// Where the shell word starting at `i` ends: at an unquoted blank or operator outside
/// any `$(...)`, `${...}`, backticks or quotes. Approximate (no here-documents, no
/// comments); a misjudged word only refuses more or less, never renders differently.
/// Each byte read costs one of `budget`; with none left the word runs to the end.
fn word_end(b: &[u8], mut i: usize, budget: &mut usize) -> usize {
    let mut depth = 0u32; // inside `$(`/`${`/`(` of a substitution
    let mut quote: Option<u8> = None;
    while i < b.len() {
        if *budget == 0 {
            return b.len();
        }
        *budget -= 1;
        let c = b[i];
        match quote {
            Some(b'\'') => {
                if c == b'\'' {
                    quote = None;
                }
            }
            Some(q) => match c {
                b'\\' => i += 1,
                _ if c == q => quote = None,
                _ => {}
            },
            None => match c {
                b'\\' => i += 1,
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'$' if matches!(b.get(i + 1), Some(b'(' | b'{')) => {
                    depth += 1;
                    i += 1;
                }
                b'(' | b'{' if depth > 0 => depth += 1,
                b')' | b'}' if depth > 0 => depth -= 1,
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')'
                    if depth == 0 =>
                {
                    return i;
                }
                _ => {}
            },
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests;
