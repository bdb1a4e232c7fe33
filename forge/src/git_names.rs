//! What makes a commit id or a ref name safe to hand to git: the checks the forge's
//! payloads and the registry's mirrors both apply. Pure.
//!
//! Invariant: a name that passes can never be read by git as an option, a revision range
//! or a refspec with a destination.

use anyhow::bail;

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_full_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64)
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A ref name git will not read as an option or a refspec with a destination.
pub fn check_ref(name: &str) -> anyhow::Result<()> {
    let bad = name.is_empty()
        || name.chars().count() > 255
        || name.starts_with('-')
        || name.starts_with('+')
        || name.contains("..")
        || name.contains("@{")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || ":?*[\\^~".contains(c));
    if bad {
        bail!("invalid ref '{name}'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_lowercase_ids_and_plain_ref_names_pass() {
        assert!(is_full_sha(&"a".repeat(40)));
        assert!(is_full_sha(&"0".repeat(64)));
        assert!(!is_full_sha(&"A".repeat(40)));
        assert!(!is_full_sha("abc"));
        assert!(check_ref("refs/heads/main").is_ok());
        for bad in [
            "", "-x", "+a:b", "a..b", "a@{1}", "a b", "a:b", "a\\b", "a~1",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?} passed");
        }
    }
}
