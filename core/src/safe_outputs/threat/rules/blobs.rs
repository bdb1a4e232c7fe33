//! Encoded blobs in added lines: long base64 or hex runs, and the same split over
//! consecutive lines (`"aGVs" + "bG8="`, one literal per line). A blob that decodes to
//! text is scanned again by the command and network rules: one that holds a command or an
//! endpoint is `encoded-payload` (critical in code); any other blob is `encoded-blob` (a
//! warning: nobody reviews what they cannot read).
//!
//! Invariants: a shorter run (from [`MIN_PAYLOAD`] characters) is decoded too, and is a
//! finding only when it decodes to a command or an endpoint; a run is a blob only past
//! [`MIN_BASE64`] base64 or [`MIN_HEX`] hex
//! characters with the mix of a random encoding (upper and lower case and digits for base64),
//! so identifiers, hashes and UUIDs are not blobs; lockfiles' integrity hashes (`sha512-...`)
//! and image data URIs that decode to no text are not blobs; a split blob is the
//! concatenation of the runs of consecutive lines that are each mostly one run.

use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

use super::super::verdict::{Finding, Severity};
use super::super::Scope;
use super::{commands, excerpt, Doc, Kind};

/// The shortest base64 run taken for a blob.
pub(crate) const MIN_BASE64: usize = 100;
/// The shortest base64 run decoded to look for a payload (a shorter blob that decodes to
/// no command or endpoint is no finding).
pub(crate) const MIN_PAYLOAD: usize = 20;
/// The shortest hex run taken for a blob.
pub(crate) const MIN_HEX: usize = 128;
/// The shortest run of one line that may be part of a split blob.
const MIN_PIECE: usize = 16;

static BASE64_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_-]{16,}={0,2}").expect("the base64 pattern"));
static HEX_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:0x)?[0-9a-f]{32,}|(?:\\x[0-9a-f]{2}){16,}|(?:0x[0-9a-f]{2},\s*){16,}")
        .expect("the hex pattern")
});

pub(crate) fn check(doc: &Doc<'_>, scope: &Scope<'_>, found: &mut Vec<Finding>) {
    if doc.kind == Kind::Lock {
        return;
    }
    let mut split = String::new();
    let mut split_start = 0;
    let flush = |split: &mut String, start: u32, found: &mut Vec<Finding>| {
        if split.len() >= MIN_BASE64 {
            if let Some(f) = judge(doc, scope, start, split, "split over lines") {
                found.push(f);
            }
        }
        split.clear();
    };
    for (index, line) in doc.lines.iter().enumerate() {
        let at = if line.number > 0 {
            line.number
        } else {
            index as u32 + 1
        };
        let text = line.text.as_str();
        if text.contains("sha512-") || text.contains("sha384-") || text.contains("integrity") {
            flush(&mut split, split_start, found);
            continue;
        }
        let mut longest = "";
        for run in BASE64_RUN.find_iter(text) {
            let run = run.as_str();
            if run.len() >= MIN_BASE64 {
                if let Some(f) = judge(doc, scope, at, run, "") {
                    found.push(f);
                }
            } else if run.len() >= MIN_PAYLOAD {
                let text = decode_base64(run).as_deref().and_then(readable);
                if let Some(f) = text.and_then(|t| payload(doc, scope, at, &t, "")) {
                    found.push(f);
                }
            }
            if run.len() > longest.len() {
                longest = run;
            }
        }
        for run in HEX_RUN.find_iter(text) {
            let digits: String = run
                .as_str()
                .replace("\\x", "")
                .replace("0x", "")
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            if digits.len() >= MIN_HEX {
                if let Some(f) = judge_hex(doc, scope, at, &digits) {
                    found.push(f);
                }
            }
        }
        // A piece of a split blob: the line is mostly one run.
        let trimmed = text.trim().len().max(1);
        if longest.len() >= MIN_PIECE && longest.len() * 10 >= trimmed * 6 {
            if split.is_empty() {
                split_start = at;
            }
            split.push_str(longest.trim_end_matches('='));
        } else {
            flush(&mut split, split_start, found);
        }
    }
    flush(&mut split, split_start, found);
}

/// The finding for a base64-looking `run`, if it is one.
fn judge(doc: &Doc<'_>, scope: &Scope<'_>, at: u32, run: &str, how: &str) -> Option<Finding> {
    let letters = |f: fn(&char) -> bool| run.chars().filter(f).count();
    let (upper, lower, digits) = (
        letters(char::is_ascii_uppercase),
        letters(char::is_ascii_lowercase),
        letters(char::is_ascii_digit),
    );
    if upper < 4 || lower < 4 || digits < 2 || entropy(run) < 4.2 {
        return None;
    }
    let decoded = decode_base64(run);
    let text = decoded.as_deref().and_then(readable);
    let image = doc
        .lines
        .iter()
        .any(|l| l.text.contains("data:image/") || l.text.contains("data:font/"));
    let how = if how.is_empty() {
        String::new()
    } else {
        format!(" ({how})")
    };
    match text {
        Some(text) => payload(doc, scope, at, &text, &how).or_else(|| {
            Some(doc.finding(
                "encoded-blob",
                Severity::Warning,
                at,
                format!(
                    "adds {} characters of base64{how}, which decode to text no reviewer reads: {}",
                    run.len(),
                    excerpt(&text)
                ),
            ))
        }),
        None if image => None,
        None => Some(doc.finding(
            "encoded-blob",
            Severity::Warning,
            at,
            format!(
                "adds {} characters of encoded data{how}: {}",
                run.len(),
                excerpt(run)
            ),
        )),
    }
}

fn judge_hex(doc: &Doc<'_>, scope: &Scope<'_>, at: u32, digits: &str) -> Option<Finding> {
    let bytes = hex::decode(&digits[..digits.len() / 2 * 2]).ok()?;
    match readable(&bytes) {
        Some(text) => payload(doc, scope, at, &text, " (hex)").or_else(|| {
            Some(doc.finding(
                "encoded-blob",
                Severity::Warning,
                at,
                format!(
                    "adds {} hex digits that decode to text: {}",
                    digits.len(),
                    excerpt(&text)
                ),
            ))
        }),
        // Random bytes: a key, a digest list, a fixture; worth a look only when long.
        None if digits.len() >= 4 * MIN_HEX => Some(doc.finding(
            "encoded-blob",
            Severity::Warning,
            at,
            format!("adds {} hex digits of binary data", digits.len()),
        )),
        None => None,
    }
}

/// A finding when decoded `text` holds a command or an endpoint.
fn payload(doc: &Doc<'_>, scope: &Scope<'_>, at: u32, text: &str, how: &str) -> Option<Finding> {
    let mut hits = commands::in_text(text);
    let hosts = super::network::hosts_in(text);
    if hosts.iter().any(|h| super::network::is_endpoint(scope, h)) {
        hits.push(("new-endpoint", Severity::Warning));
    }
    // Decoded code that itself decodes or evaluates is layered obfuscation.
    if text.contains("eval") || text.contains("exec(") || text.contains("import ") {
        hits.push(("code", Severity::Warning));
    }
    let (rule, _) = hits.iter().max_by_key(|(_, s)| *s)?;
    Some(doc.finding(
        "encoded-payload",
        doc.weigh(Severity::Critical),
        at,
        format!(
            "an encoded blob{how} decodes to code ({rule}): {}",
            excerpt(text)
        ),
    ))
}

/// `run` decoded as base64 (standard or URL-safe, padded or not).
fn decode_base64(run: &str) -> Option<Vec<u8>> {
    let trimmed = run.trim_end_matches('=');
    let engines = [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for cut in 0..4 {
        let piece = &trimmed[..trimmed.len().saturating_sub(cut)];
        for engine in engines {
            if let Ok(bytes) = engine.decode(piece) {
                return Some(bytes);
            }
        }
    }
    None
}

/// `bytes` as text when most of it is printable.
fn readable(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let total = text.chars().count().max(1);
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .filter(|c| *c != char::REPLACEMENT_CHARACTER)
        .count();
    (printable * 100 >= total * 90).then(|| text.into_owned())
}

/// Shannon entropy of `text` in bits per character.
fn entropy(text: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in text.bytes() {
        counts[b as usize] += 1;
    }
    let n = text.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}
