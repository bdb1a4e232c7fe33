//! The engine's provenance keys for `plue serve`: `--signing-key FILE` (a PKCS#8 PEM
//! ed25519 key), else `provenance-signing-key.pem` in the data directory, made at the first
//! start; and `--previous-signing-key FILE` (repeatable: a public or private key file of an
//! earlier key), listed so statements it signed still verify.
//!
//! Invariants: a key file other users may read is refused (`super::private_file`: mode
//! 0600, or 0440 from a Kubernetes Secret volume under the pod's fsGroup); a generated key is written with mode 0600 in a file created new (never over
//! an existing one), from the OS's randomness; a key file that exists but does not parse
//! stops the start (it is never replaced by a new key, which would orphan every statement
//! signed before).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use plue_core::safe_outputs::attest::Keys;
use plue_provenance::{PublicKey, Signer};

use crate::cli::SigningArgs;

/// The file a generated key is kept in, in the data directory.
pub(crate) const GENERATED: &str = "provenance-signing-key.pem";

/// The keys `args` name, the generated one in `data_dir` when `--signing-key` is not given.
pub(crate) fn keys(args: &SigningArgs, data_dir: &Path) -> anyhow::Result<Keys> {
    let signer = match &args.signing_key {
        Some(file) => read_signer(file)?,
        None => generated(&data_dir.join(GENERATED))?,
    };
    let previous = args
        .previous_signing_keys
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading --previous-signing-key {}", file.display()))?;
            PublicKey::parse(&text)
                .with_context(|| format!("--previous-signing-key {}", file.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Keys {
        signer: Arc::new(signer),
        previous,
    })
}

/// The most bytes of a key file read.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// The private key in `file`, refused when other users may read it
/// ([`super::private_file`]).
fn read_signer(file: &Path) -> anyhow::Result<Signer> {
    // A Token is zeroized when dropped.
    let text = plue_forge::auth::Token::new(super::private_file::read_private(
        file,
        "the signing key",
        MAX_KEY_BYTES,
    )?);
    Signer::from_pem(text.expose()).with_context(|| format!("the signing key {}", file.display()))
}

/// The key in `file`, made there first when there is none.
fn generated(file: &Path) -> anyhow::Result<Signer> {
    if file.exists() {
        return read_signer(file);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("drawing a signing key: {e}"))?;
    let signer = Signer::from_seed(&seed);
    let pem = signer.to_pem()?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    out.write_all(pem.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn private(file: &Path) {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn args(key: Option<&Path>, previous: &[&Path]) -> SigningArgs {
        SigningArgs {
            signing_key: key.map(Path::to_path_buf),
            previous_signing_keys: previous.iter().map(|p| p.to_path_buf()).collect(),
        }
    }

    #[test]
    fn the_first_start_makes_a_private_key_the_next_one_reads() {
        let dir = tempfile::tempdir().unwrap();
        let first = keys(&args(None, &[]), dir.path()).unwrap();
        let file = dir.path().join(GENERATED);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = keys(&args(None, &[]), dir.path()).unwrap();
        assert_eq!(again.signer.public(), first.signer.public());
    }

    #[test]
    fn a_rotation_keeps_the_old_key_listed() {
        let dir = tempfile::tempdir().unwrap();
        let old = keys(&args(None, &[]), dir.path()).unwrap();
        let new_file = dir.path().join("new.pem");
        std::fs::write(&new_file, Signer::from_seed(&[1; 32]).to_pem().unwrap()).unwrap();
        private(&new_file);
        let old_public = dir.path().join("old.pub");
        std::fs::write(&old_public, old.signer.public().hex()).unwrap();
        let rotated = keys(&args(Some(&new_file), &[&old_public]), dir.path()).unwrap();
        assert_eq!(
            rotated.signer.public(),
            Signer::from_seed(&[1; 32]).public()
        );
        assert_eq!(rotated.previous, vec![old.signer.public()]);
    }

    // A damaged key file is never replaced by a new key (that would orphan every statement
    // signed before): the start stops.
    #[test]
    fn a_damaged_key_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GENERATED), "not a key").unwrap();
        private(&dir.path().join(GENERATED));
        let refused = keys(&args(None, &[]), dir.path()).unwrap_err();
        assert!(
            format!("{refused:#}").contains("signing key"),
            "{refused:#}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(GENERATED)).unwrap(),
            "not a key"
        );
    }

    // Another user of the host could read a signing key left group- or world-readable (and
    // sign statements as this engine): the start stops, as for the runner's token file.
    #[test]
    fn a_signing_key_others_may_read_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, Signer::from_seed(&[2; 32]).to_pem().unwrap()).unwrap();
        for mode in [0o644, 0o640] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = keys(&args(Some(&file), &[]), dir.path()).err().unwrap();
            assert!(
                format!("{refused:#}").contains("readable by other users"),
                "{refused:#}"
            );
        }
        private(&file);
        assert!(keys(&args(Some(&file), &[]), dir.path()).is_ok());
    }
}
