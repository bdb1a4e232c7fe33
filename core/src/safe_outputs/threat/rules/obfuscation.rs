//! Code written not to be read: direction-changing characters (`bidi-control`, the "Trojan
//! Source" attack — critical anywhere but prose), invisible characters in code
//! (`invisible-char`), identifiers mixing Latin with lookalike letters (`homoglyph`),
//! strings assembled from character codes or escapes, obfuscator-style names, reversed or
//! rotated strings, built-ins reached by name (`obfuscation`, warnings). Decoding at run
//! time alone is no finding (tokens and data are decoded every day); decoding *and running*
//! is `decode-exec`, an encoded payload `encoded-payload`.
//!
//! Invariants: prose may hold invisible joiners (emoji sequences) and non-Latin words;
//! only code is judged for them. A direction control is refused in code and a warning in
//! prose.

use std::sync::LazyLock;

use regex::RegexSet;

use super::super::fold;
use super::super::verdict::{Finding, Severity};
use super::{excerpt, Doc, Kind};

static OBFUSCATION: LazyLock<(RegexSet, Vec<&'static str>)> = LazyLock::new(|| {
    let rules: [(&str, &str); 8] = [
        (
            r"(?i)fromcharcode\s*\(\s*\d+(?:\s*,\s*\d+){5,}",
            "builds a string from character codes",
        ),
        (
            r"(?i)(?:chr\s*\(\s*\d+\s*\)\s*[+.,]\s*){5,}",
            "builds a string from character codes",
        ),
        (
            r"(?i)(?:\\x[0-9a-f]{2}){12,}|(?:\\u00[0-9a-f]{2}){8,}|(?:\\[0-7]{3}){10,}",
            "spells a string in escapes",
        ),
        (
            r"\b_0x[0-9a-f]{4,6}\b.*\b_0x[0-9a-f]{4,6}\b.*\b_0x[0-9a-f]{4,6}\b",
            "uses obfuscator-generated names",
        ),
        (
            r"(?i)\[::-1\]\s*\)|\.split\(\s*['\x22]{2}\s*\)\.reverse\(\)\.join",
            "runs a reversed string",
        ),
        (
            r"(?i)codecs\.(?:decode|encode)\([^)]*rot.?13|\brot13\b",
            "rotates a string (rot13)",
        ),
        (
            r"(?i)''\.join\(\s*(?:map\(\s*chr|\[?\s*chr\s*\()",
            "builds a string from character codes",
        ),
        (
            r"(?i)\bgetattr\s*\(\s*__builtins__|\bglobals\(\)\s*\[\s*['\x22]__builtins__|\b__builtins__\.__dict__",
            "reaches built-ins by name",
        ),
    ];
    let set = RegexSet::new(rules.iter().map(|r| r.0)).expect("the obfuscation rules compile");
    (set, rules.iter().map(|r| r.1).collect())
});

pub(crate) fn check(doc: &Doc<'_>, found: &mut Vec<Finding>) {
    for (index, line) in doc.lines.iter().enumerate() {
        let at = if line.number > 0 {
            line.number
        } else {
            index as u32 + 1
        };
        let text = &line.text;
        if text.chars().any(fold::is_bidi_control) {
            found.push(doc.finding(
                "bidi-control",
                doc.weigh(Severity::Critical),
                at,
                "holds a direction-changing character: the line reads otherwise than it runs",
            ));
        }
        if doc.kind != Kind::Code {
            continue;
        }
        if text
            .chars()
            .any(|c| fold::is_invisible(c) && !fold::is_bidi_control(c))
        {
            found.push(doc.finding(
                "invisible-char",
                Severity::Warning,
                at,
                "holds an invisible character",
            ));
        }
        if let Some(word) = homoglyph(text) {
            found.push(doc.finding(
                "homoglyph",
                Severity::Warning,
                at,
                format!(
                    "the word {word:?} mixes Latin letters with lookalikes; it reads as {:?}",
                    fold::chars(&word)
                ),
            ));
        }
        let (set, whats) = &*OBFUSCATION;
        if let Some(hit) = set.matches(text).iter().next() {
            found.push(doc.finding(
                "obfuscation",
                Severity::Warning,
                at,
                format!("{}: {}", whats[hit], excerpt(text)),
            ));
        }
    }
}

/// The first word of `line` mixing ASCII letters with letters that fold to ASCII ones.
fn homoglyph(line: &str) -> Option<String> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find(|word| {
            word.chars().any(|c| c.is_ascii_alphabetic())
                && word
                    .chars()
                    .any(|c| !c.is_ascii() && fold::chars(&c.to_string()).is_ascii())
        })
        .map(str::to_owned)
}
