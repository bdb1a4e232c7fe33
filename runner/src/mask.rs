//! Hides secret values in log text.
//!
//! A [`Masker`] is built once per attempt from its secret values and applied to every line
//! before it leaves the runner. It looks for each secret in every spelling the engine's
//! outbound wall knows ([`plue_outbound::spellings`]: as it is, reversed, hex, base64 at
//! its three alignments, UTF-16), as a workflow command escapes it, and each line of a
//! multi-line one, all without ASCII case (base64's too: masking a case-changed copy costs
//! nothing). Every byte covered by an occurrence of any of them is replaced: overlapping or
//! nested occurrences collapse into one `***`, so no part of an overlapped secret shows
//! (plain leftmost-longest replacement would leave the tail of the second of two
//! overlapping secrets visible). Empty and whitespace-only values (or lines) are ignored:
//! they would mask everything or every space.
//!
//! Text that arrives in pieces is masked as one stream, never piece by piece:
//! - An `llm` step's streamed deltas, and a process's over-long line delivered in pieces,
//!   go through a [`StreamMasker`] ([`Masker::push_piece`]): it holds back only a tail that
//!   could still grow into a secret (at most the longest spelling's length − 1 bytes), so
//!   the emitted pieces concatenate to exactly [`Masker::mask`] of the whole text, and with
//!   no secrets nothing is held back. No cut — line length, pipe read or log batch — splits
//!   a secret into clear halves.
//! - An attempt's log lines, whatever made them, go through [`AcrossLines`] (in the log
//!   sender): the lines read as one text joined without their line breaks, and a spelling
//!   that runs over two or more lines is masked in each of them. See its doc for what it
//!   holds back and what it still shows.
//!
//! The engine masks every line again with every secret of the run (the outbound wall, line
//! by line); this masker is the only one that sees an attempt's lines as one stream, in
//! order, in one process — which is why masking across lines lives here.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

mod across_lines;
mod trie;

pub use across_lines::{AcrossLines, MAX_HELD_LINES};
use trie::Trie;

/// What replaces a secret.
pub const MASK: &str = "***";

/// `text` escaped as GitHub's workflow commands escape a message (`%`, CR, LF) or, with
/// `property`, a property value (also `:` and `,`).
fn command_escaped(text: &str, property: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' if property => out.push_str("%3A"),
            ',' if property => out.push_str("%2C"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces secret values in text; cheap to apply when there are no secrets.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// `None` when there is nothing to mask.
    matcher: Option<AhoCorasick>,
    /// The same patterns, for the streaming maskers (`None` exactly when `matcher` is).
    trie: Option<Arc<Trie>>,
    /// The secrets as they are, their escaped forms and lines (for
    /// [`Masker::finds_secret_in_name`]).
    names: Vec<String>,
}

impl Masker {
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns: Vec<String> = Vec::new();
        let mut spelt: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.trim().is_empty() {
                continue;
            }
            patterns.push(secret.to_owned());
            // A secret as a workflow-command line carries it (`::error title=…::…`, the
            // engine's annotations decode `%25 %0D %0A`, and `%3A %2C` in properties): a
            // tool that escapes its annotation text must not print the secret in clear.
            for escaped in [
                command_escaped(secret, false),
                command_escaped(secret, true),
            ] {
                if escaped != secret {
                    patterns.push(escaped);
                }
            }
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
            spelt.extend(
                plue_outbound::spellings::of(secret)
                    .into_iter()
                    .map(|(_, spelling)| spelling),
            );
        }
        let names = patterns.clone();
        // Compared without ASCII case, so kept once whatever their case.
        patterns.extend(spelt);
        patterns.iter_mut().for_each(|p| p.make_ascii_lowercase());
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker::default();
        }
        // Standard semantics, because overlapping search needs it; the overlaps are merged
        // in `mask`. Building fails only past aho-corasick's size limits (gigabytes of
        // secrets); then fall back to masking everything rather than leaking.
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .unwrap_or_else(|err| {
                tracing::error!(%err, "secret matcher could not be built; masking whole lines");
                AhoCorasick::new([""]).expect("a single empty pattern always builds")
            });
        Masker {
            matcher: Some(matcher),
            trie: Some(Arc::new(Trie::new(&patterns))),
            names,
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Whether `name` — an output's name, which later steps see upper-cased with `-` as
    /// `_` in a variable name — holds a secret when compared the same way (ASCII case
    /// ignored, `-` and `_` alike). A secret with a character no name can hold never
    /// matches.
    pub fn finds_secret_in_name(&self, name: &str) -> bool {
        fn fold(text: &str) -> String {
            text.chars()
                .map(|c| {
                    if c == '-' {
                        '_'
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }
        let name = fold(name);
        self.names.iter().any(|secret| name.contains(&fold(secret)))
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

/// Masks text that arrives in pieces; see the module doc.
///
/// [`StreamMasker::push`] returns the masked part of what arrived that is safe to show now;
/// [`StreamMasker::finish`] the rest, at the end of the text. Together they equal
/// `masker.mask(whole text)`.
#[derive(Debug)]
pub struct StreamMasker<'a> {
    masker: &'a Masker,
    /// Arrived but not yet emitted (unmasked).
    pending: String,
}

impl<'a> StreamMasker<'a> {
    pub fn new(masker: &'a Masker) -> StreamMasker<'a> {
        StreamMasker {
            masker,
            pending: String::new(),
        }
    }

    /// Takes the next piece; returns what may be shown now, masked (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        self.masker.push_piece(&mut self.pending, piece)
    }

    /// Ends the text; returns what was still held back, masked.
    pub fn finish(&mut self) -> String {
        self.masker.finish_pieces(&mut self.pending)
    }
}

impl Masker {
    /// [`StreamMasker::push`] with the held-back text kept by the caller in `pending`
    /// (for owners that cannot hold a borrowing [`StreamMasker`], like a pipe's line
    /// reader): appends `piece` and returns the masked part that may be shown now.
    pub fn push_piece(&self, pending: &mut String, piece: &str) -> String {
        if self.is_empty() {
            return piece.to_owned();
        }
        pending.push_str(piece);
        let cut = self.safe_cut(pending);
        let shown = self.mask(&pending[..cut]).into_owned();
        pending.drain(..cut);
        shown
    }

    /// [`StreamMasker::finish`] for a caller-held `pending`: empties it, masked.
    pub fn finish_pieces(&self, pending: &mut String) -> String {
        let rest = std::mem::take(pending);
        self.mask(&rest).into_owned()
    }
}

impl Masker {
    /// The longest prefix `text[..cut]` whose masking cannot change when more text follows:
    /// no secret occurrence (complete, or one the tail may still become) crosses `cut`.
    fn safe_cut(&self, text: &str) -> usize {
        let (Some(matcher), Some(trie)) = (&self.matcher, &self.trie) else {
            return text.len();
        };
        // A tail that is a proper prefix of a secret may still become it; it is shorter
        // than the longest secret, so reading that much finds it.
        let from = text.len().saturating_sub(trie.longest());
        let mut cut = text.len() - trie.open(trie.read(&text.as_bytes()[from..]));
        // Complete occurrences that straddle the cut move it to their start (all of them
        // are visible: one starting before the tail read is at least `longest` from the
        // end). A secret starts on a character boundary, and so does `cut`.
        let found: Vec<(usize, usize)> = matcher
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        loop {
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            match found.iter().find(|(start, end)| *start < cut && cut < *end) {
                Some((start, _)) => cut = *start,
                None => return cut,
            }
        }
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
    fn a_secret_escaped_as_an_annotation_carries_it_is_masked() {
        // regression: `%3A`/`%25`/`%0A` spelled a secret the masker did not know, and the
        // engine's annotation decoded it back into clear text.
        let secret = "pa:ss%w0rd,x";
        assert_eq!(
            masked(
                &[secret],
                "::error title=pa%3Ass%25w0rd%2Cx::pa:ss%25w0rd,x"
            ),
            "::error title=***::***"
        );
        assert_eq!(
            masked(&["two\nlines"], "::error::two%0Alines"),
            "::error::***"
        );
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

    /// Every way of cutting `text` into three pieces streams to exactly `mask(text)`, and
    /// no piece shows a secret.
    fn streams_like_whole(secrets: &[&str], text: &str) {
        let masker = Masker::new(secrets);
        let whole = masker.mask(text).into_owned();
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for (i, &a) in bounds.iter().enumerate() {
            for &b in &bounds[i..] {
                let mut stream = StreamMasker::new(&masker);
                let mut shown = vec![
                    stream.push(&text[..a]),
                    stream.push(&text[a..b]),
                    stream.push(&text[b..]),
                ];
                shown.push(stream.finish());
                assert_eq!(shown.concat(), whole, "{text:?} cut at {a}, {b}");
                for piece in &shown {
                    for secret in secrets.iter().filter(|s| !s.trim().is_empty()) {
                        assert!(!piece.contains(secret), "{piece:?} shows {secret:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn secrets_split_across_pieces_are_masked_and_pieces_add_up() {
        streams_like_whole(&["hunter2"], "pw: hunter2, hunter2!");
        streams_like_whole(&["abc", "bcd"], "xabcdx abc");
        streams_like_whole(&["ab", "abcd"], "ab abc abcd");
        streams_like_whole(&["пароль"], "ключ: пароль ✓ пар");
        streams_like_whole(&["aa"], "aaaaa");
        let masker = Masker::new(["hunter2"]);
        let mut stream = StreamMasker::new(&masker);
        assert_eq!(stream.push("see "), "see ");
        assert_eq!(stream.push("the hun"), "the ");
        assert_eq!(stream.push("ter2 and h"), "*** and ");
        assert_eq!(stream.push("elp"), "help");
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn every_spelling_the_wall_knows_is_masked_whole_and_across_deltas() {
        // regression: the runner masked a secret only as it is, so its reversed, hex or
        // base64 spelling streamed by a model in two deltas reached the log in clear (the
        // engine masks those spellings only line by line).
        let secret = "tok-Kx9Q2mPzW";
        let masker = Masker::new([secret]);
        for (how, spelling) in plue_outbound::spellings::of(secret) {
            let text = format!("see {spelling} and {} .", spelling.to_ascii_uppercase());
            assert_eq!(masker.mask(&text), "see *** and *** .", "{how}");
            streams_like_whole(&[secret], &text);
        }
    }

    #[test]
    fn nothing_is_held_back_without_secrets() {
        let masker = Masker::default();
        let mut stream = StreamMasker::new(&masker);
        assert_eq!(stream.push("hun"), "hun");
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn multi_line_secrets_mask_each_line() {
        let masker = Masker::new(["-----BEGIN KEY-----\r\nAAAA\n\n-----END KEY-----\n"]);
        assert_eq!(masker.mask("line AAAA here"), "line *** here");
        assert_eq!(masker.mask("-----END KEY-----"), "***");
        assert_eq!(masker.mask("plain"), "plain");
    }
}
