//! Paths and texts as they *read*, so a rule cannot be dodged by spelling: a path folded
//! to lowercase ASCII with its lookalikes, a text with its invisible characters found.
//!
//! Invariants: [`path`] never makes two paths a reader would tell apart look the same in
//! the dangerous direction only — it maps every character a reader takes for an ASCII one
//! (NFKC compatibility forms such as fullwidth letters, Cyrillic and Greek lookalikes,
//! division and fraction slashes, one-dot leaders) to that ASCII character, drops invisible
//! characters, reads `\` as `/`, drops empty, `.` parts and each part's trailing dots and
//! spaces (as Windows checkouts do), and lowercases; a rule matches the folded path.

use unicode_normalization::UnicodeNormalization;

/// `path` as a reader (and a case-insensitive or Windows checkout) takes it.
pub(crate) fn path(path: &str) -> String {
    let folded = chars(path).to_lowercase().replace('\\', "/");
    let parts: Vec<&str> = folded
        .split('/')
        .map(|part| part.trim_end_matches(['.', ' ']))
        .filter(|part| !part.is_empty())
        .collect();
    // `..` parts are kept: the validator refuses them, and a rule matching on the rest
    // still sees the file's name.
    parts.join("/")
}

/// `text` with every character a reader takes for an ASCII one made that character and
/// invisible characters dropped (NFKC first, then the lookalikes NFKC keeps apart).
pub(crate) fn chars(text: &str) -> String {
    text.nfkc()
        .filter(|c| !is_invisible(*c))
        .map(|c| lookalike(c).unwrap_or(c))
        .collect()
}

/// Whether `text` spells anything with a character [`chars`] folds (a lookalike or an
/// invisible character).
pub(crate) fn disguised(text: &str) -> bool {
    text.chars()
        .any(|c| !c.is_ascii() && (is_invisible(c) || lookalike(c).is_some()))
        || (!text.is_ascii() && chars(text) != text && chars(text).is_ascii())
}

/// Zero-width, joiner, word-joiner, byte-order-mark and direction-changing characters.
pub(crate) fn is_invisible(c: char) -> bool {
    evaluator::safe_outputs::is_invisible(c) || matches!(c, '\u{00ad}' | '\u{034f}' | '\u{180e}')
}

/// Characters that change the direction text is shown in (the "Trojan Source" attack:
/// code that reads otherwise than it runs).
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// The ASCII character `c` is taken for, for the lookalikes NFKC does not fold.
fn lookalike(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic.
        'а' | 'А' => 'a',
        'в' | 'В' => 'b',
        'с' | 'С' => 'c',
        'ԁ' => 'd',
        'е' | 'Е' | 'ё' => 'e',
        'һ' | 'Н' | 'н' => 'h',
        'і' | 'І' | 'ӏ' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' => 'k',
        'м' | 'М' => 'm',
        'о' | 'О' => 'o',
        'р' | 'Р' => 'p',
        'ԛ' => 'q',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' => 't',
        'у' | 'У' => 'y',
        'х' | 'Х' => 'x',
        'ԝ' => 'w',
        // Greek.
        'α' | 'Α' => 'a',
        'β' | 'Β' => 'b',
        'ε' | 'Ε' => 'e',
        'η' | 'Η' => 'h',
        'ι' | 'Ι' => 'i',
        'κ' | 'Κ' => 'k',
        'μ' | 'Μ' => 'm',
        'ν' | 'Ν' => 'n',
        'ο' | 'Ο' => 'o',
        'ρ' | 'Ρ' => 'p',
        'τ' | 'Τ' => 't',
        'υ' | 'Υ' => 'y',
        'χ' | 'Χ' => 'x',
        'ζ' | 'Ζ' => 'z',
        // Latin extensions and marks that read as ASCII.
        'ı' => 'i',
        'ɡ' => 'g',
        'ɩ' => 'i',
        'ʟ' => 'l',
        'ᴄ' => 'c',
        'ᴏ' => 'o',
        'ꜱ' => 's',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ᴢ' => 'z',
        // Slashes and dots.
        '∕' | '⁄' | '⧸' | '╱' => '/',
        '⧵' | '∖' | '﹨' => '\\',
        '․' | '‧' | '·' | '。' => '.',
        '‐' | '‑' | '‒' | '–' | '—' | '−' => '-',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fold_to_what_they_read_as() {
        assert_eq!(path(".GitHub/Workflows/ci.yml"), ".github/workflows/ci.yml");
        assert_eq!(
            path("./.github//workflows/ci.yml"),
            ".github/workflows/ci.yml"
        );
        assert_eq!(
            path(".github\\workflows\\ci.yml"),
            ".github/workflows/ci.yml"
        );
        assert_eq!(path(".gіthub/workflows/ci.yml"), ".github/workflows/ci.yml");
        assert_eq!(path("ＭａｋｅＦｉｌｅ"), "makefile");
        assert_eq!(path(".github∕workflows∕x.yml"), ".github/workflows/x.yml");
        assert_eq!(path("Jenkinsfile. "), "jenkinsfile");
        assert_eq!(
            path(".git\u{200b}hub/workflows/a.yml"),
            ".github/workflows/a.yml"
        );
    }

    #[test]
    fn only_lookalikes_are_disguised() {
        assert!(disguised(".gіthub"));
        assert!(disguised("a\u{200b}b"));
        assert!(!disguised("docs/café.md"));
        assert!(!disguised("plain.rs"));
    }
}
