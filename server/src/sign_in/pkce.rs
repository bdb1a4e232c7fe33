//! PKCE (RFC 7636) with S256, and the random values of a sign-in.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A random value for a sign-in's id, `state`, nonce or verifier: 64 hex digits (256
/// bits), within PKCE's verifier grammar (43 to 128 unreserved characters).
pub(super) fn random() -> anyhow::Result<String> {
    plue_vault::tokens::new_token()
}

/// The S256 challenge of `verifier`: BASE64URL(SHA-256(verifier)) without padding.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is a verifier PKCE allows (43 to 128 of `A-Z a-z 0-9 - . _ ~`) and
/// `challenge` is its S256 challenge (compared in constant time).
pub(super) fn verifies(verifier: &str, challenge_given: &str) -> bool {
    let grammar = (43..=128).contains(&verifier.len())
        && verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    grammar && plue_vault::tokens::tokens_match(&challenge(verifier), challenge_given)
}

/// Whether `challenge` looks like an S256 challenge: 43 base64url characters.
pub(super) fn is_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(verifies(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!verifies(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!verifies("short", &challenge("short")));
        assert!(is_challenge(&challenge(&random().unwrap())));
        assert!(!is_challenge("plain-verifier"));
    }
}
