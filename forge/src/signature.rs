//! Webhook signatures: HMAC-SHA256 of the exact request body under the repository's
//! webhook secret. GitHub sends `X-Hub-Signature-256: sha256=<hex>`; Gitea sends
//! `X-Gitea-Signature: <hex>` (Forgejo also `X-Forgejo-Signature`).
//!
//! Invariant: the comparison is constant time (`Mac::verify_slice`), and a missing,
//! malformed or wrong signature all give the same answer to the caller: not verified.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Forge;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery is not authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header {0}")]
    Missing(&'static str),
    #[error("signature does not match")]
    Mismatch,
}

/// The header carrying the signature for `forge`.
pub fn header_name(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "x-hub-signature-256",
        Forge::Gitea => "x-gitea-signature",
    }
}

/// Checks `signature` (the header's value, if any) against `body` under `secret`.
pub fn verify(
    forge: Forge,
    signature: Option<&str>,
    body: &[u8],
    secret: &str,
) -> Result<(), SignatureError> {
    let header = header_name(forge);
    let value = signature
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(SignatureError::Missing(header))?;
    let hex_digest = match forge {
        Forge::GitHub => value
            .strip_prefix("sha256=")
            .ok_or(SignatureError::Mismatch)?,
        Forge::Gitea => value.strip_prefix("sha256=").unwrap_or(value),
    };
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Mismatch)?;
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The hex HMAC-SHA256 of `body` under `secret` (what a forge sends; used by tests and
/// the benchmark to sign deliveries).
pub fn sign(body: &[u8], secret: &str) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_verify() {
        // The example from GitHub's documentation ("Validating webhook deliveries").
        let body = b"Hello, World!";
        let secret = "It's a Secret to Everybody";
        let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(body, secret), expected);
        let header = format!("sha256={expected}");
        assert_eq!(verify(Forge::GitHub, Some(&header), body, secret), Ok(()));
        assert_eq!(
            verify(Forge::GitHub, Some(expected), body, secret),
            Err(SignatureError::Mismatch),
            "GitHub's header needs its sha256= prefix"
        );
    }

    #[test]
    fn gitea_signatures_are_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let signature = sign(body, "s3cret");
        assert_eq!(
            verify(Forge::Gitea, Some(&signature), body, "s3cret"),
            Ok(())
        );
        assert_eq!(
            verify(
                Forge::Gitea,
                Some(&signature.to_uppercase()),
                body,
                "s3cret"
            ),
            Ok(()),
            "hex case does not matter"
        );
    }

    #[test]
    fn wrong_missing_and_malformed_signatures_fail() {
        let body = b"payload";
        let good = format!("sha256={}", sign(body, "right"));
        let wrong = format!("sha256={}", sign(body, "wrong"));
        assert_eq!(
            verify(Forge::GitHub, Some(&wrong), body, "right"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Forge::GitHub, Some(&good), b"payload ", "right"),
            Err(SignatureError::Mismatch),
            "one byte of body more"
        );
        assert_eq!(
            verify(Forge::GitHub, None, body, "right"),
            Err(SignatureError::Missing("x-hub-signature-256"))
        );
        for bad in ["", "sha256=", "sha256=zz", "sha1=abcd", "sha256=abcd"] {
            assert!(
                verify(Forge::GitHub, Some(bad), body, "right").is_err(),
                "{bad}"
            );
        }
    }
}
