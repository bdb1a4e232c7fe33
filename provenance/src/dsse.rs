//! DSSE envelopes (Dead Simple Signing Envelope, v1): a payload, its type, and signatures
//! over the pre-authentication encoding `DSSEv1 <len> <type> <len> <payload>` ([`pae`]).
//!
//! Invariants: what is signed and verified is always the PAE of the payload's exact bytes
//! (never a re-serialisation of parsed JSON); [`Envelope::open`] returns the payload only
//! when a signature of a given key verifies, and says which key.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, Signer};

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

/// A signed envelope, as JSON `{payloadType, payload (base64), signatures: [{keyid, sig}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    /// The payload's bytes, standard base64.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signing key's id ([`crate::keys::key_id`]).
    #[serde(default)]
    pub keyid: String,
    /// The signature over the PAE, standard base64.
    pub sig: String,
}

/// Why an envelope was not opened.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The payload is not base64.
    #[error("the envelope's payload is not base64")]
    Payload,
    /// The envelope carries another type of payload.
    #[error("the envelope holds a {0:?} payload, not {IN_TOTO_PAYLOAD:?}")]
    PayloadType(String),
    /// No signature is there at all.
    #[error("the envelope holds no signature")]
    Unsigned,
    /// No signature verifies with any of the keys given.
    #[error(
        "no signature verifies with the given key(s) {given} (the envelope is signed by {signed})"
    )]
    BadSignature { given: String, signed: String },
}

/// The pre-authentication encoding DSSE signs: `DSSEv1 SP len(type) SP type SP len(body) SP
/// body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// `payload` of `payload_type` signed by `signer`.
    pub fn sign(payload_type: &str, payload: &[u8], signer: &Signer) -> Envelope {
        let b64 = base64::engine::general_purpose::STANDARD;
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: b64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: signer.public().id().to_owned(),
                sig: b64.encode(signer.sign(&pae(payload_type, payload))),
            }],
        }
    }

    /// The in-toto payload's bytes and the key that signed it, when a signature verifies
    /// with one of `keys` (a signature naming a key id is tried only with that key).
    pub fn open<'k>(&self, keys: &'k [PublicKey]) -> Result<(Vec<u8>, &'k PublicKey), OpenError> {
        if self.payload_type != IN_TOTO_PAYLOAD {
            return Err(OpenError::PayloadType(self.payload_type.clone()));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(&self.payload).map_err(|_| OpenError::Payload)?;
        if self.signatures.is_empty() {
            return Err(OpenError::Unsigned);
        }
        let message = pae(&self.payload_type, &payload);
        for signature in &self.signatures {
            let Ok(sig) = b64.decode(&signature.sig) else {
                continue;
            };
            let named =
                |key: &&PublicKey| signature.keyid.is_empty() || key.id() == signature.keyid;
            if let Some(key) = keys
                .iter()
                .filter(named)
                .find(|key| key.verifies(&message, &sig))
            {
                return Ok((payload, key));
            }
        }
        let list = |ids: Vec<&str>| ids.join(", ");
        Err(OpenError::BadSignature {
            given: list(keys.iter().map(PublicKey::id).collect()),
            signed: list(self.signatures.iter().map(|s| s.keyid.as_str()).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The PAE example of the DSSE protocol's specification.
    #[test]
    fn pae_is_the_specifications() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn an_envelope_opens_with_its_key_only() {
        let signer = Signer::from_seed(&[3; 32]);
        let other = Signer::from_seed(&[4; 32]);
        let envelope = Envelope::sign(IN_TOTO_PAYLOAD, b"{\"a\":1}", &signer);
        let keys = [other.public(), signer.public()];
        let (payload, key) = envelope.open(&keys).unwrap();
        assert_eq!(payload, b"{\"a\":1}");
        assert_eq!(key, &signer.public());
        let refused = envelope.open(&[other.public()]).unwrap_err();
        assert!(
            matches!(refused, OpenError::BadSignature { .. }),
            "{refused}"
        );
    }

    // The attacker edits the payload, swaps the type, or strips and forges signatures.
    #[test]
    fn a_tampered_envelope_does_not_open() {
        let signer = Signer::from_seed(&[5; 32]);
        let keys = [signer.public()];
        let b64 = base64::engine::general_purpose::STANDARD;
        let good = Envelope::sign(IN_TOTO_PAYLOAD, b"{\"model\":\"a\"}", &signer);
        let mut edited = good.clone();
        edited.payload = b64.encode(b"{\"model\":\"b\"}");
        assert!(matches!(
            edited.open(&keys),
            Err(OpenError::BadSignature { .. })
        ));
        let mut retyped = good.clone();
        retyped.payload_type = "text/plain".into();
        assert!(matches!(
            retyped.open(&keys),
            Err(OpenError::PayloadType(_))
        ));
        let mut unsigned = good.clone();
        unsigned.signatures.clear();
        assert_eq!(unsigned.open(&keys), Err(OpenError::Unsigned));
        let mut forged = good.clone();
        forged.signatures[0].sig = b64.encode([0u8; 64]);
        assert!(forged.open(&keys).is_err());
        // A signature by another key that names the engine's key id is not the engine's.
        let mut stolen_id = Envelope::sign(IN_TOTO_PAYLOAD, b"{}", &Signer::from_seed(&[6; 32]));
        stolen_id.signatures[0].keyid = signer.public().id().to_owned();
        assert!(stolen_id.open(&keys).is_err());
        let mut garbled = good;
        garbled.payload = "%%%".into();
        assert_eq!(garbled.open(&keys), Err(OpenError::Payload));
    }
}
