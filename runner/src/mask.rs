//! Hides secret values in log text.
//!
//! A [`Masker`] is built once per attempt from its secret values and applied to every line
//! before it leaves the runner. Every byte covered by an occurrence of any secret is
//! replaced: overlapping or nested occurrences collapse into one `***`, so no part of an
//! overlapped secret shows (plain leftmost-longest replacement would leave the tail of the
//! second of two overlapping secrets visible).
//!
//! Logs are line-based, so a multi-line secret could never match whole; each of its lines
//! is masked on its own too. Empty and whitespace-only values (or lines) are ignored: they
//! would mask everything or every space.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Replaces secret values in text; cheap to apply when there are no secrets.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// `None` when there is nothing to mask.
    matcher: Option<AhoCorasick>,
}

impl Masker {
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.trim().is_empty() {
                continue;
            }
            patterns.push(secret.to_owned());
            if secret.contains('\n') {
                let lines = secret
                    .split('\n')
                    .map(|line| line.strip_suffix('\r').unwrap_or(line));
                patterns.extend(
                    lines
                        .filter(|line| !line.trim().is_empty())
                        .map(str::to_owned),
                );
            }
        }
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker { matcher: None };
        }
        // Standard semantics, because overlapping search needs it; the overlaps are merged
        // in `mask`. Building fails only past aho-corasick's size limits (gigabytes of
        // secrets); then fall back to masking everything rather than leaking.
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .unwrap_or_else(|err| {
                tracing::error!(%err, "secret matcher could not be built; masking whole lines");
                AhoCorasick::new([""]).expect("a single empty pattern always builds")
            });
        Masker {
            matcher: Some(matcher),
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret occurrence replaced by [`MASK`]; borrowed when nothing
    /// matched.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        let mut matches = matcher.find_overlapping_iter(text).peekable();
        let Some(first) = matches.peek() else {
            return Cow::Borrowed(text);
        };
        if first.is_empty() {
            // Only the fallback matcher has an empty pattern.
            return Cow::Borrowed(MASK);
        }
        let mut out = String::with_capacity(text.len());
        // Matches come in order of their end; merge every range overlapping the current one.
        let mut copied = 0; // `text[..copied]` is in `out` (or masked)
        let mut current: Option<(usize, usize)> = None;
        for found in matches {
            let (start, end) = (found.start(), found.end());
            current = match current {
                Some((cur_start, cur_end)) if start < cur_end => Some((cur_start.min(start), end)),
                Some((cur_start, cur_end)) => {
                    flush(&mut out, text, &mut copied, cur_start, cur_end);
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((start, end)) = current {
            flush(&mut out, text, &mut copied, start, end);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// Appends the clear text before `start` and one mask for `start..end`.
fn flush(out: &mut String, text: &str, copied: &mut usize, start: usize, end: usize) {
    // A later match may start before an earlier, already flushed one ended only if they
    // overlap, and overlapping ones are merged first; `max` keeps this robust regardless.
    let start = start.max(*copied);
    out.push_str(&text[*copied..start]);
    out.push_str(MASK);
    *copied = end.max(*copied);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], text: &str) -> String {
        Masker::new(secrets).mask(text).into_owned()
    }

    #[test]
    fn replaces_every_occurrence() {
        assert_eq!(
            masked(&["hunter2"], "pw=hunter2 again hunter2"),
            "pw=*** again ***"
        );
        assert_eq!(masked(&["ab"], "abab"), "******");
    }

    #[test]
    fn masks_inside_longer_words() {
        assert_eq!(masked(&["hunter2"], "xhunter2y"), "x***y");
    }

    #[test]
    fn overlapping_and_nested_secrets_hide_all_of_both() {
        assert_eq!(masked(&["abc", "bcd"], "xabcdx"), "x***x");
        assert_eq!(masked(&["abc", "cde", "efg"], "abcdefg!"), "***!");
        assert_eq!(masked(&["secret", "cre"], "a secret"), "a ***");
        assert_eq!(masked(&["cre", "secret"], "cre secret"), "*** ***");
    }

    #[test]
    fn unicode_secrets_and_text() {
        assert_eq!(masked(&["пароль"], "ключ: пароль ✓"), "ключ: *** ✓");
        assert_eq!(masked(&["é"], "café"), "caf***");
    }

    #[test]
    fn empty_secrets_are_ignored() {
        let masker = Masker::new(["", "  "]);
        assert!(masker.is_empty());
        assert!(matches!(masker.mask("anything"), Cow::Borrowed("anything")));
        assert_eq!(masked(&["", "x"], "axb"), "a***b");
    }

    #[test]
    fn unmatched_text_is_borrowed() {
        let masker = Masker::new(["secret"]);
        assert!(matches!(masker.mask("harmless"), Cow::Borrowed("harmless")));
        assert!(Masker::default().is_empty());
    }

    #[test]
    fn multi_line_secrets_mask_each_line() {
        let masker = Masker::new(["-----BEGIN KEY-----\r\nAAAA\n\n-----END KEY-----\n"]);
        assert_eq!(masker.mask("line AAAA here"), "line *** here");
        assert_eq!(masker.mask("-----END KEY-----"), "***");
        assert_eq!(masker.mask("plain"), "plain");
    }
}
