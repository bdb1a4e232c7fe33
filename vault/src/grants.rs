//! Per-attempt grants: the credential an allow-list step on a Kubernetes pod gives the
//! cluster's egress proxy, which asks the engine what it grants.
//!
//! A grant is `<hex payload>.<hex HMAC-SHA256>`: the payload is the attempt's id and its
//! allow-list (`id\nhost\nhost...`), the tag is keyed by a [`GrantKey`] every engine replica
//! derives from the same secret (the egress proxy's token), so any replica can open a grant
//! another minted, and nothing is stored.
//!
//! Invariants:
//! - only the holder of the key mints a grant that opens: the tag covers the whole payload,
//!   so neither the attempt nor one host can be changed, and it is compared in constant
//!   time ([`Mac::verify_slice`]);
//! - a grant says nothing of whether its attempt still runs: the engine checks that on
//!   every opening, so a grant dies with its attempt;
//! - the grant's characters are `[0-9a-f.]`: it stands in a proxy URL's user information as
//!   it is.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The label the key is derived under, so the secret is never used as a key twice.
const LABEL: &[u8] = b"plue egress grant v1\0";

/// The key grants are minted and opened with.
#[derive(Clone)]
pub struct GrantKey {
    key: [u8; 32],
}

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

impl GrantKey {
    /// The key derived from `secret` (the egress proxy's token, which every replica has).
    pub fn derive(secret: &str) -> GrantKey {
        let mut digest = Sha256::new();
        digest.update(LABEL);
        digest.update(secret.as_bytes());
        GrantKey {
            key: digest.finalize().into(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The grant of attempt `attempt_id` for `hosts`; an error when a host holds a line
    /// break (no parsed allow-list does).
    pub fn mint(&self, attempt_id: i64, hosts: &[String]) -> anyhow::Result<String> {
        if let Some(host) = hosts.iter().find(|h| h.contains('\n')) {
            anyhow::bail!("the host pattern {host:?} holds a line break");
        }
        let mut payload = attempt_id.to_string();
        for host in hosts {
            payload.push('\n');
            payload.push_str(host);
        }
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        Ok(format!(
            "{}.{}",
            hex::encode(payload),
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// The attempt and hosts of a grant this key minted; `None` for anything else.
    pub fn open(&self, grant: &str) -> Option<(i64, Vec<String>)> {
        let (payload, tag) = grant.split_once('.')?;
        let payload = hex::decode(payload).ok()?;
        let tag = hex::decode(tag).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let mut lines = payload.split('\n');
        let attempt_id = lines.next()?.parse().ok()?;
        Some((attempt_id, lines.map(str::to_owned).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::GrantKey;

    #[test]
    fn a_grant_opens_under_its_key_only_and_unchanged() {
        let key = GrantKey::derive("the proxy's token");
        let hosts = vec!["pypi.org".to_owned(), "*.github.com:443".to_owned()];
        let grant = key.mint(42, &hosts).unwrap();
        assert!(grant.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'));
        assert_eq!(key.open(&grant), Some((42, hosts.clone())));
        // Another replica derives the same key from the same secret.
        assert_eq!(
            GrantKey::derive("the proxy's token").open(&grant),
            Some((42, hosts.clone()))
        );
        assert_eq!(GrantKey::derive("another token").open(&grant), None);

        // Another attempt, one more host, a tag cut short or from another grant: nothing.
        let (payload, tag) = grant.split_once('.').unwrap();
        let other = key.mint(43, &hosts).unwrap();
        let (other_payload, other_tag) = other.split_once('.').unwrap();
        let widened = hex::encode("42\npypi.org\n*.github.com:443\nevil.example");
        for forged in [
            format!("{other_payload}.{tag}"),
            format!("{payload}.{other_tag}"),
            format!("{widened}.{tag}"),
            format!("{payload}.{}", &tag[..tag.len() - 2]),
            format!("{payload}.{}", "0".repeat(64)),
            payload.to_owned(),
            String::new(),
            ".".to_owned(),
            format!("{payload}.{tag}.x"),
        ] {
            assert_eq!(key.open(&forged), None, "{forged}");
        }
        assert_eq!(key.open(&other), Some((43, hosts)));
        assert!(key.mint(1, &["a\nb".to_owned()]).is_err());
        assert_eq!(key.open(&key.mint(7, &[]).unwrap()), Some((7, vec![])));
    }
}
