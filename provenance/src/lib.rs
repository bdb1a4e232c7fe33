//! Provenance for the changes a Plue engine applies: an in-toto v1 Statement with a SLSA
//! Provenance v1 predicate ([`statement`]), signed in a DSSE envelope ([`dsse`]) with the
//! engine's ed25519 key ([`keys`]), and told in words ([`words`]).
//!
//! [`sign`] and [`open`] are the entry points: the applier signs a statement it built,
//! `plue verify` opens an envelope with the public keys it was given.
//!
//! Invariants: no I/O (no clock, no file, no network, no randomness — the caller passes
//! times and key seeds in); an envelope opens only with a key whose signature verifies
//! over the exact payload bytes, and only then is the payload parsed.

pub mod dsse;
pub mod keys;
pub mod statement;
pub mod words;

pub use dsse::{Envelope, OpenError, IN_TOTO_PAYLOAD};
pub use keys::{KeyError, PublicKey, Signer};
pub use statement::{Statement, StatementError};

/// Why an envelope was not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The signature did not verify (or the envelope is malformed).
    #[error(transparent)]
    Envelope(#[from] OpenError),
    /// The signed payload is not a statement Plue writes.
    #[error(transparent)]
    Statement(#[from] StatementError),
}

/// `statement` signed by `signer`.
pub fn sign(statement: &Statement, signer: &Signer) -> Envelope {
    Envelope::sign(IN_TOTO_PAYLOAD, &statement.to_json(), signer)
}

/// The statement in `envelope` and the key that signed it, when one of `keys` did.
pub fn open<'k>(
    envelope: &Envelope,
    keys: &'k [PublicKey],
) -> Result<(Statement, &'k PublicKey), Refused> {
    let (payload, key) = envelope.open(keys)?;
    Ok((Statement::parse(&payload)?, key))
}

#[cfg(test)]
mod tests;
