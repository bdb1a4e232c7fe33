//! The engine's signing key and the public keys statements are checked with.
//!
//! A private key is an ed25519 key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what
//! `openssl genpkey -algorithm ed25519` writes); a public key is read from SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`), from 64 hex digits (the raw key, as
//! `GET /api/provenance/keys` and securesystemslib show it), or from a private key file.
//!
//! Invariants: a key's id is `sha256:` + the hex SHA-256 of its 32 raw public bytes, so the
//! same key has the same id wherever it is read from; a [`Signer`]'s `Debug` never prints
//! the private key.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is neither a PEM key of the expected kind nor 64 hex digits.
    #[error("not an ed25519 key (expected PKCS#8 or SPKI PEM, or 64 hex digits): {0}")]
    Unreadable(String),
    /// Encoding a key to PEM failed (never for a valid key).
    #[error("encoding the key: {0}")]
    Encoding(String),
}

/// The id of the public key `raw` (its 32 bytes): `sha256:<hex>`.
pub fn key_id(raw: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(raw)))
}

/// A public key statements are verified with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Reads a public key from SPKI PEM, 64 hex digits, or a PKCS#8 private key's PEM.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(text, &mut raw)
                .map_err(|e| KeyError::Unreadable(e.to_string()))?;
            let key =
                VerifyingKey::from_bytes(&raw).map_err(|e| KeyError::Unreadable(e.to_string()))?;
            return Ok(PublicKey::from(key));
        }
        if text.contains("PRIVATE KEY") {
            return Ok(Signer::from_pem(text)?.public());
        }
        VerifyingKey::from_public_key_pem(text)
            .map(PublicKey::from)
            .map_err(|e| KeyError::Unreadable(e.to_string()))
    }

    /// `sha256:<hex>` of the raw key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw key in hex (securesystemslib's `keyval.public`).
    pub fn hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Whether `signature` (64 bytes) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify(message, &signature).is_ok()
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> PublicKey {
        PublicKey {
            id: key_id(key.as_bytes()),
            key,
        }
    }
}

/// The engine's private signing key.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.public().id)
    }
}

impl Signer {
    /// A signer of the 32-byte seed `seed` (the caller draws it from the OS's randomness).
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(text: &str) -> Result<Signer, KeyError> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(|key| Signer { key })
            .map_err(|e| KeyError::Unreadable(e.to_string()))
    }

    /// The key as PKCS#8 PEM, to write to a private file.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Encoding(e.to_string()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.key.verifying_key())
    }

    /// The signature of `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_every_form_with_one_id() {
        let signer = Signer::from_seed(&[7; 32]);
        let pem = signer.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let again = Signer::from_pem(&pem).unwrap();
        assert_eq!(again.public(), signer.public());
        let public = signer.public();
        assert_eq!(PublicKey::parse(&public.hex()).unwrap(), public);
        assert_eq!(PublicKey::parse(&pem).unwrap(), public);
        assert!(public.id().starts_with("sha256:") && public.id().len() == 71);
        assert_ne!(Signer::from_seed(&[8; 32]).public().id(), public.id());
    }

    #[test]
    fn a_signature_verifies_only_its_message_under_its_key() {
        let signer = Signer::from_seed(&[1; 32]);
        let sig = signer.sign(b"message");
        assert!(signer.public().verifies(b"message", &sig));
        assert!(!signer.public().verifies(b"messagf", &sig));
        assert!(!Signer::from_seed(&[2; 32])
            .public()
            .verifies(b"message", &sig));
        assert!(!signer.public().verifies(b"message", &sig[..63]));
    }

    #[test]
    fn garbage_is_no_key() {
        for text in [
            "",
            "hello",
            &"zz".repeat(32),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        ] {
            assert!(PublicKey::parse(text).is_err(), "{text}");
        }
        // The private key never prints.
        let signer = Signer::from_seed(&[9; 32]);
        assert!(!format!("{signer:?}").contains(&hex::encode([9u8; 32])));
    }
}
