//! The argument words of a bash command that another program reads as a program of its
//! own: `printf`'s format (`%s`, `%b`, `%q`, `%(...)T` read the other arguments), the
//! command of `bash -c` / `sh -c` / `su -c`, the script of `python -c`, `perl -e`,
//! `ruby -e`, `node -e`, every argument of `eval` and the action of `trap`. An output
//! expanded there — even inside double quotes, where bash itself leaves it text — becomes
//! code or a format for that program, so [`format_refusals`] finds the references standing
//! in those words.
//!
//! The commands are found by name where a command starts (also after `then`, `command`,
//! `sudo`, `env`, `xargs`, ... or `NAME=value` assignments, and as `/bin/bash`-like paths);
//! a program built elsewhere (`printf "$fmt"`, `"$SHELL" -c`) is not seen. Linear: the
//! words after each command are scanned under one budget for the whole text, and each
//! reference is decided once.

use super::{contexts, is_var_name, Context};

/// Why an output may not be `printf`'s format argument.
const PRINTF_FORMAT: &str = "an output must not be printf's format argument: its text would be read as a format (%s, %b, %q, %(...)T read the arguments); print it as a value instead, e.g. printf '%s\\n' \"{{ steps.<id>.outputs.<key> }}\"";

/// Why an output may not be part of a program another command parses.
const PROGRAM: &str = "an output must not be part of code another program parses (bash -c, sh -c, python -c, perl -e, eval, trap), even in double quotes: it would run there; pass it as an argument instead, e.g. bash -c 'echo \"$1\"' _ {{ steps.<id>.outputs.<key> }}";

/// Which argument words of a command are a program.
#[derive(Clone, Copy)]
enum Rule {
    /// `printf [-v NAME] [--] FORMAT ...`.
    PrintfFormat,
    /// A shell: the word after an option cluster holding `c` (`-c`, `-ec`, `-lc`).
    ShellCommand,
    /// Python: the word after `-c` (or a flag cluster ending in `c`).
    PythonCommand,
    /// Perl, Ruby, Node: the word after `-e`/`-E` (or a cluster ending in one), `--eval`.
    ScriptExpression,
    /// `eval`: every argument.
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
    ("su", Rule::ShellCommand),
    ("python", Rule::PythonCommand),
    ("python3", Rule::PythonCommand),
    ("python2", Rule::PythonCommand),
    ("perl", Rule::ScriptExpression),
    ("ruby", Rule::ScriptExpression),
    ("node", Rule::ScriptExpression),
    ("eval", Rule::AllArguments),
    ("trap", Rule::FirstArgument),
];

/// For each reference position in `at` (the placeholders of `text`, ascending), why an
/// output there would be read as a format or a program by the command whose argument it
/// is ([`COMMANDS`]). Linear in the length of `text`.
pub fn format_refusals(text: &str, at: &[usize]) -> Vec<Option<&'static str>> {
    let mut out = vec![None; at.len()];
    if at.is_empty() {
        return out;
    }
    let b = text.as_bytes();
    let mut candidates: Vec<(usize, usize, Rule)> = Vec::new();
    for &(name, rule) in COMMANDS {
        candidates.extend(
            text.match_indices(name)
                .map(|(i, _)| i)
                .filter(|&i| command_word_at(b, i, i + name.len()))
                .map(|i| (i, i + name.len(), rule)),
        );
    }
    if candidates.is_empty() {
        return out;
    }
    candidates.sort_unstable_by_key(|&(start, _, _)| start);
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
    for (&(_, end, rule), context) in candidates.iter().zip(code) {
        if context != Context::Unquoted {
            continue;
        }
        let Some((from, to)) = program_words(b, end, rule, &mut budget) else {
            continue;
        };
        let why = match rule {
            Rule::PrintfFormat => PRINTF_FORMAT,
            _ => PROGRAM,
        };
        // Nested programs (`printf "$(printf ...)"`) overlap: each reference is refused
        // once and skipped after (`next[k]`: the first one not yet refused from `k` on).
        let mut k = find(&mut next, at.partition_point(|&p| p < from));
        while k < at.len() && at[k] < to {
            out[k] = Some(why);
            next[k] = k + 1;
            k = find(&mut next, k + 1);
        }
    }
    out
}

/// Whether `b[start..end]` is a whole word in command position.
fn command_word_at(b: &[u8], start: usize, end: usize) -> bool {
    let word = |c: u8| {
        !matches!(
            c,
            b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' | b'`'
        )
    };
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
    assignment
        || matches!(
            previous,
            b"then"
                | b"do"
                | b"else"
                | b"elif"
                | b"if"
                | b"while"
                | b"until"
                | b"time"
                | b"command"
                | b"builtin"
                | b"exec"
                | b"env"
                | b"sudo"
                | b"xargs"
                | b"!"
        )
}

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

/// The byte range of the words that are a program, for a command named by `rule` whose
/// arguments start at `i`; `None` when it has none.
fn program_words(b: &[u8], mut i: usize, rule: Rule, budget: &mut usize) -> Option<(usize, usize)> {
    // The next word, as (start, end); `None` at the end of the command.
    let word = |i: usize, budget: &mut usize| {
        let start = skip_blanks(b, i);
        let end = word_end(b, start, budget);
        (end > start).then_some((start, end))
    };
    match rule {
        Rule::AllArguments => {
            let (from, mut to) = word(i, budget)?;
            while let Some((_, end)) = word(to, budget) {
                to = end;
            }
            Some((from, to))
        }
        Rule::FirstArgument => {
            let (start, end) = word(i, budget)?;
            if &b[start..end] == b"--" {
                return word(end, budget);
            }
            Some((start, end))
        }
        Rule::PrintfFormat => loop {
            let (start, end) = word(i, budget)?;
            match &b[start..end] {
                b"--" => return word(end, budget),
                // `-v NAME`: skip the name too.
                b"-v" => i = word(end, budget)?.1,
                w if w.starts_with(b"-v") => i = end,
                _ => return Some((start, end)),
            }
        },
        Rule::ShellCommand | Rule::PythonCommand | Rule::ScriptExpression => loop {
            let (start, end) = word(i, budget)?;
            let w = &b[start..end];
            let flags = w.len() > 1 && matches!(w[0], b'-' | b'+') && w[1] != b'-';
            let introduces = match rule {
                Rule::ShellCommand => flags && w.contains(&b'c'),
                Rule::PythonCommand => flags && w.ends_with(b"c"),
                _ => (flags && (w.ends_with(b"e") || w.ends_with(b"E"))) || w == b"--eval",
            };
            if introduces {
                return word(end, budget);
            }
            // Options taking an argument: skip it too.
            let takes_argument = match rule {
                Rule::ShellCommand => matches!(w, b"-o" | b"+o" | b"-O" | b"+O"),
                Rule::PythonCommand => matches!(w, b"-W" | b"-X"),
                _ => matches!(w, b"-I" | b"-r" | b"-M"),
            };
            if takes_argument {
                i = word(end, budget)?.1;
            } else if flags || w.starts_with(b"--") {
                i = end;
            } else {
                return None; // a script file: its arguments are data
            }
        },
    }
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
mod tests {
    use super::*;

    #[test]
    fn an_output_is_never_a_format_or_another_program_s_code() {
        let refused = |text: &str| -> Vec<bool> {
            let mut literal = String::new();
            let mut at = Vec::new();
            for c in text.chars() {
                if c == '@' {
                    at.push(literal.len());
                    literal.push(crate::template::PLACEHOLDER);
                } else {
                    literal.push(c);
                }
            }
            format_refusals(&literal, &at)
                .into_iter()
                .map(|r| r.is_some())
                .collect()
        };
        for text in [
            "printf @",
            "printf \"hello @\\n\"",
            "printf -v out @",
            "printf -vout -- @x",
            "x=1; printf \"$(echo @)\" a",
            "if true; then printf @; fi",
            "LC_ALL=C printf @",
            "echo $(printf @)",
            "a | printf \\\n  @",
            "command printf @ x",
            // Programs of other commands, in any quoting.
            "bash -c \"echo @\"",
            "sudo sh -ec \"echo @; true\" x",
            "/bin/bash -o pipefail -c @",
            "python3 -c \"print(@)\"",
            "perl -ne \"print @\" f",
            "node --eval @",
            "eval echo @",
            "eval \"x=@\"; echo",
            "trap \"rm @\" EXIT",
            "su -c @ user",
        ] {
            assert_eq!(refused(text), [true], "{text}");
        }
        for text in [
            "printf '%s\\n' @",
            "printf %s \"@\" @",
            "printf -v x %s @",
            "echo printf @",
            "myprintf @",
            "printf_x @",
            "echo 'printf' @",
            "# printf @",
            "echo \"printf @\"",
            "printf",
            "bash -c 'echo \"$1\"' _ @",
            "bash script.sh @",
            "python3 -m http.server @",
            "python3 tool.py -c @",
            "eval x; echo @",
            "trap 'rm \"$F\"' EXIT; F=@",
            "ssh host ls @ || echo bash -c @",
            "echo sh -c @",
        ] {
            assert!(refused(text).iter().all(|r| !r), "{text}");
        }
        // Each `printf` scans its words: many unclosed-looking ones stay linear.
        let started = std::time::Instant::now();
        for bomb in [
            "printf $'\\'' @;",
            "bash -o x -c @ ",
            "eval @ ",
            "/bin/sh -c @ /bin/bash ",
            "x=1 sudo env bash -ec \"@\";",
            "trap -- @ EXIT\n",
        ] {
            let text = bomb.repeat((1 << 20) / bomb.len());
            let _ = refused(&text);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(3000),
            "{:?}",
            started.elapsed()
        );
    }
}
