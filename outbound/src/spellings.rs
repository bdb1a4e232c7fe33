//! The spellings of a secret the wall looks for: as it is, reversed, hex (both cases),
//! base64 (standard and URL-safe, at each of the three alignments a secret can sit at
//! inside a longer encoded text), and UTF-16 (both byte orders, as a file written by a
//! Windows tool holds it). Pure: no I/O.
//!
//! Invariants: a secret shorter than [`MIN_SECRET`] bytes is not looked for (it would be
//! found everywhere); its encoded spellings only from [`MIN_ENCODED_SECRET`] bytes; a
//! base64 spelling is only the characters made of the secret's own bits, so it is found
//! whatever surrounds the secret before encoding.

use base64::Engine;

/// Shortest secret looked for as it is.
pub const MIN_SECRET: usize = 4;
/// Shortest secret looked for encoded.
pub const MIN_ENCODED_SECRET: usize = 6;

/// How a secret was spelt where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    AsItIs,
    Reversed,
    Hex,
    Base64,
    Base64Url,
    Utf16,
}

impl std::fmt::Display for Spelling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Spelling::AsItIs => "as it is",
            Spelling::Reversed => "reversed",
            Spelling::Hex => "hex",
            Spelling::Base64 => "base64",
            Spelling::Base64Url => "base64url",
            Spelling::Utf16 => "UTF-16",
        })
    }
}

/// Every spelling of `secret` looked for.
pub fn of(secret: &str) -> Vec<(Spelling, String)> {
    let mut forms = Vec::new();
    if secret.len() < MIN_SECRET {
        return forms;
    }
    forms.push((Spelling::AsItIs, secret.to_owned()));
    forms.push((Spelling::Reversed, secret.chars().rev().collect()));
    if secret.len() < MIN_ENCODED_SECRET {
        return forms;
    }
    let bytes = secret.as_bytes();
    forms.push((Spelling::Hex, hex::encode(bytes)));
    forms.push((Spelling::Hex, hex::encode_upper(bytes)));
    for shift in 0..3usize {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(bytes);
        for (engine, spelling) in [
            (
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                Spelling::Base64,
            ),
            (
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                Spelling::Base64Url,
            ),
        ] {
            let encoded = engine.encode(&shifted);
            // Only the characters made of the secret's bits alone.
            let start = (8 * shift).div_ceil(6);
            let end = 8 * (shift + bytes.len()) / 6;
            if end > start + 4 {
                forms.push((spelling, encoded[start..end].to_owned()));
            }
        }
    }
    let units: Vec<u16> = secret.encode_utf16().collect();
    for bytes in [
        units
            .iter()
            .flat_map(|u| u.to_le_bytes())
            .collect::<Vec<u8>>(),
        units.iter().flat_map(|u| u.to_be_bytes()).collect(),
    ] {
        // NUL is a valid UTF-8 character: an ASCII secret's UTF-16 is a string too.
        if let Ok(text) = String::from_utf8(bytes) {
            forms.push((Spelling::Utf16, text));
        }
    }
    forms
}
