//! The engine's RSA signing keys for steps' tokens: made, sealed and opened, published as
//! JSON Web Keys, and used to sign.
//!
//! Invariants: a key's id is the RFC 7638 thumbprint of its public half (so the same key
//! always has the same `kid`, whichever replica made it); the private half leaves this
//! module only as PKCS#8 PEM for the vault to seal.

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The size of a new key, in bits: what clouds' identity federation accepts everywhere.
const BITS: usize = 2048;

/// One signing key, parsed.
pub(super) struct SigningKey {
    kid: String,
    jwk: Value,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A new random key and its private half as PKCS#8 PEM (what is stored, sealed).
    pub(super) fn generate() -> anyhow::Result<(SigningKey, String)> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, BITS)
            .context("making an RSA key for steps' tokens")?;
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .context("writing the new key as PKCS#8")?
            .to_string();
        Ok((SigningKey::from_private(&private, &pem)?, pem))
    }

    /// The key stored as PKCS#8 `pem`.
    pub(super) fn from_pem(pem: &str) -> anyhow::Result<SigningKey> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem).context("reading a stored token key")?;
        SigningKey::from_private(&private, pem)
    }

    fn from_private(private: &RsaPrivateKey, pem: &str) -> anyhow::Result<SigningKey> {
        let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
        // RFC 7638: the required members, in lexicographic order, without whitespace.
        let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": n,
            "e": e,
        });
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
            .context("loading the token key for signing")?;
        Ok(SigningKey { kid, jwk, encoding })
    }

    pub(super) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as a JSON Web Key.
    pub(super) fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// `claims` signed with RS256, the header naming this key.
    pub(super) fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing a step's token")
    }
}
