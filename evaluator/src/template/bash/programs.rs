//! `printf`'s format word in a bash command: an output there would be read as a format
//! (`%s`, `%b`, `%q`, `%(...)T` read the other arguments), so [`format_refusals`] finds the
//! references standing in it. Linear: the words after each `printf` are scanned under one
//! budget for the whole text, and each reference is decided once.

use super::{contexts, is_var_name, Context};

/// Why an output may not be `printf`'s format argument.
const PRINTF_FORMAT: &str = "an output must not be printf's format argument: its text would be read as a format (%s, %b, %q, %(...)T read the arguments); print it as a value instead, e.g. printf '%s\\n' \"{{ steps.<id>.outputs.<key> }}\"";

/// For each reference position in `at` (the placeholders of `text`, ascending), why an
/// output there would be read as a format string: the word after `printf` (and its `-v
/// NAME` and `--`) that is its format. The lexer sees `printf` as a command word in code
/// (at the start of a command, after a keyword such as `then`, `command` or `builtin`, or
/// after `NAME=value` assignments); a format built elsewhere (`printf "$fmt"`) is not
/// seen. Linear in the length of `text`.
pub fn format_refusals(text: &str, at: &[usize]) -> Vec<Option<&'static str>> {
    let mut out = vec![None; at.len()];
    if at.is_empty() || !text.contains("printf") {
        return out;
    }
    let b = text.as_bytes();
    let candidates: Vec<usize> = text
        .match_indices("printf")
        .map(|(i, _)| i)
        .filter(|&i| command_word_at(b, i, i + "printf".len()))
        .collect();
    let code = contexts(text, &candidates);
    // Words are scanned from each `printf` on; what all scans may read in total, after
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
    for (&start, context) in candidates.iter().zip(code) {
        if context != Context::Unquoted {
            continue;
        }
        let Some((from, to)) = printf_format(b, start + "printf".len(), &mut budget) else {
            continue;
        };
        // Nested formats (`printf "$(printf ...)"`) overlap: each reference is refused
        // once and skipped after (`next[k]`: the first one not yet refused from `k` on).
        let mut k = find(&mut next, at.partition_point(|&p| p < from));
        while k < at.len() && at[k] < to {
            out[k] = Some(PRINTF_FORMAT);
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
    // The previous word, skipping blanks.
    let mut i = start;
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

/// The byte range of the format word of a `printf` whose arguments start at `i`.
fn printf_format(b: &[u8], mut i: usize, budget: &mut usize) -> Option<(usize, usize)> {
    loop {
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            continue;
        }
        let end = word_end(b, i, budget);
        if end == i {
            return None; // no arguments: the command ends here
        }
        match &b[i..end] {
            b"--" => {
                i = end;
                while matches!(b.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
                let end = word_end(b, i, budget);
                return (end > i).then_some((i, end));
            }
            b"-v" => {
                // `-v NAME`: skip the name too.
                i = end;
                while matches!(b.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
                i = word_end(b, i, budget);
            }
            w if w.starts_with(b"-v") => i = end,
            _ => return Some((i, end)),
        }
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
    fn an_output_is_never_printf_s_format() {
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
        ] {
            assert!(refused(text).iter().all(|r| !r), "{text}");
        }
        // Each `printf` scans its words: many unclosed-looking ones stay linear.
        let many = "printf $'\\'' @;".repeat(50_000);
        let started = std::time::Instant::now();
        let _ = refused(&many);
        assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    }
}
