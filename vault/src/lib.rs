//! Sealing values at rest: repository secrets, webhook secrets and forge API tokens are
//! stored encrypted with ChaCha20-Poly1305 under a key derived from `PLUE_SECRET_KEY`.
//!
//! Invariants:
//! - A sealed value is `v1:<nonce hex>:<ciphertext hex>`; every seal draws a fresh random
//!   96-bit nonce from the OS, and opening checks the authentication tag, so a value
//!   tampered with in the database (or sealed under another key) fails loudly.
//! - Without a key, only values that may be kept readable (webhook secrets, forge tokens)
//!   are stored as `plain:<text>`; repository secrets refuse to be stored at all.
//! - Error messages never contain the plaintext or the key.
//!
//! [`tokens`] holds the other secret material the engine makes: bearer tokens, stored
//! only as their SHA-256; [`grants`] the per-attempt credentials of the egress proxy,
//! signed, never stored.

pub mod grants;
pub mod tokens;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

/// The environment variable holding the key.
pub const KEY_ENV: &str = "PLUE_SECRET_KEY";
const MIN_KEY_CHARS: usize = 16;

/// Seals and opens values with one key.
#[derive(Clone)]
pub struct Vault {
    cipher: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keyed", &self.cipher.is_some())
            .finish()
    }
}

impl Vault {
    /// A vault keyed by `key` (any string of at least 16 characters; a random one such as
    /// `openssl rand -hex 32` is expected): the cipher key is its SHA-256.
    pub fn new(key: &str) -> anyhow::Result<Vault> {
        if key.trim().chars().count() < MIN_KEY_CHARS {
            anyhow::bail!("{KEY_ENV} must be at least {MIN_KEY_CHARS} characters (e.g. the output of `openssl rand -hex 32`)");
        }
        let digest = Sha256::digest(key.trim().as_bytes());
        Ok(Vault {
            cipher: Some(ChaCha20Poly1305::new(Key::from_slice(&digest))),
        })
    }

    /// A vault without a key: it can keep values readable but cannot seal secrets.
    pub fn unkeyed() -> Vault {
        Vault { cipher: None }
    }

    /// From `PLUE_SECRET_KEY` when it is set.
    pub fn from_env() -> anyhow::Result<Vault> {
        match std::env::var(KEY_ENV) {
            Ok(key) if !key.is_empty() => Vault::new(&key),
            _ => Ok(Vault::unkeyed()),
        }
    }

    pub fn is_keyed(&self) -> bool {
        self.cipher.is_some()
    }

    /// Encrypts `value`; errors without a key.
    pub fn seal(&self, value: &str) -> anyhow::Result<String> {
        let Some(cipher) = &self.cipher else {
            anyhow::bail!("secrets cannot be stored: the server has no {KEY_ENV}");
        };
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok(format!("v1:{}:{}", hex::encode(nonce), hex::encode(sealed)))
    }

    /// Encrypts `value` when keyed, else keeps it readable (`plain:`).
    pub fn seal_or_keep(&self, value: &str) -> anyhow::Result<String> {
        if self.is_keyed() {
            self.seal(value)
        } else {
            Ok(format!("plain:{value}"))
        }
    }

    /// The value of something [`Vault::seal`] or [`Vault::seal_or_keep`] produced.
    pub fn open(&self, stored: &str) -> anyhow::Result<String> {
        if let Some(plain) = stored.strip_prefix("plain:") {
            return Ok(plain.to_string());
        }
        let Some(rest) = stored.strip_prefix("v1:") else {
            anyhow::bail!("stored value has an unknown format");
        };
        let Some(cipher) = &self.cipher else {
            anyhow::bail!("a stored secret is encrypted but the server has no {KEY_ENV}");
        };
        let (nonce, sealed) = rest
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("stored secret is malformed"))?;
        let nonce = hex::decode(nonce).ok().filter(|n| n.len() == 12);
        let sealed = hex::decode(sealed).ok();
        let (Some(nonce), Some(sealed)) = (nonce, sealed) else {
            anyhow::bail!("stored secret is malformed");
        };
        let plain = cipher
            .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
            .map_err(|_| {
                anyhow::anyhow!("a stored secret does not open with this {KEY_ENV} (wrong key or tampered value)")
            })?;
        String::from_utf8(plain).map_err(|_| anyhow::anyhow!("stored secret is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let vault = Vault::new("correct horse battery staple").unwrap();
        let sealed = vault.seal("hunter2").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            vault.seal("hunter2").unwrap(),
            "fresh nonce per seal"
        );
        assert_eq!(vault.open(&sealed).unwrap(), "hunter2");

        let other = Vault::new("another key of enough length").unwrap();
        let err = other.open(&sealed).unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn tampering_is_detected() {
        let vault = Vault::new("correct horse battery staple").unwrap();
        let sealed = vault.seal("hunter2").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(vault.open(&tampered).is_err());
        assert!(vault.open("v1:zz:00").is_err());
        assert!(vault.open("v2:abc").is_err());
    }

    #[test]
    fn without_a_key_only_readable_values_are_kept() {
        let vault = Vault::unkeyed();
        assert!(vault.seal("x").unwrap_err().to_string().contains(KEY_ENV));
        let kept = vault.seal_or_keep("webhook-secret").unwrap();
        assert_eq!(vault.open(&kept).unwrap(), "webhook-secret");
        let keyed = Vault::new("correct horse battery staple").unwrap();
        let sealed = keyed.seal("x").unwrap();
        assert!(vault.open(&sealed).is_err());
        assert!(Vault::new("short").is_err());
    }
}
