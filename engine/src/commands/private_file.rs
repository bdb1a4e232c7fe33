//! Reading a file that holds a secret of this process alone — the runner's registration
//! token (`plue runner --token-file`), the GitHub App's private key (`plue serve
//! --github-app-key-file`), the provenance signing key (`--signing-key`): one rule for all.
//!
//! Invariant: a file that a user other than its owner may read is refused (nothing of it
//! is read), except a Kubernetes Secret volume's file (the kubelet's `..data` layout beside
//! it) whose group is this process's own — the pod's `fsGroup` — readable by that group
//! (the chart mounts them `defaultMode: 0440`): no one else's. The mode is checked on the
//! file opened, not on the path again, so nothing can be swapped in between.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context};

/// The mode bits `path` (its metadata `metadata`) may not have: any for others, and for
/// the group unless it is a pod's Secret volume of this process's group.
fn forbidden_bits(path: &Path, metadata: &std::fs::Metadata) -> u32 {
    let pod_secret = path.parent().is_some_and(|dir| dir.join("..data").exists())
        && metadata.gid() == nix::unistd::getegid().as_raw();
    if pod_secret {
        0o037
    } else {
        0o077
    }
}

/// The text of `path` (at most `max_bytes`), `what` naming it in errors; refused when other
/// users may read it.
pub(crate) fn read_private(path: &Path, what: &str, max_bytes: u64) -> anyhow::Result<String> {
    let context = || format!("cannot read {what} {}", path.display());
    let file = std::fs::File::open(path).with_context(context)?;
    let metadata = file.metadata().with_context(context)?;
    let mode = metadata.mode();
    if mode & forbidden_bits(path, &metadata) != 0 {
        bail!(
            "{what} {} is readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let mut text = String::new();
    file.take(max_bytes)
        .read_to_string(&mut text)
        .with_context(context)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn with_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    // Another user on the host reads a key file left group- or world-readable: refused.
    #[test]
    fn a_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "secret").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o440, 0o600 | 0o004] {
            with_mode(&file, mode);
            let refused = read_private(&file, "the key", 64).unwrap_err();
            assert!(
                format!("{refused:#}").contains("readable by other users"),
                "{mode:o}: {refused:#}"
            );
            assert!(!format!("{refused:#}").contains("secret"), "{refused:#}");
        }
        for mode in [0o600, 0o400] {
            with_mode(&file, mode);
            assert_eq!(read_private(&file, "the key", 64).unwrap(), "secret");
        }
        let missing = read_private(&dir.path().join("none"), "the key", 64).unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read the key"));
    }

    // A Kubernetes Secret volume (`..data` beside the file) under the pod's fsGroup is
    // group-readable by this process's own group: allowed, as the chart's 0440 mounts.
    // Readable by others it is still refused.
    #[test]
    fn a_pod_secret_of_its_own_group_may_be_group_readable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "secret").unwrap();
        with_mode(&file, 0o440);
        assert_eq!(read_private(&file, "the key", 64).unwrap(), "secret");
        with_mode(&file, 0o444);
        assert!(read_private(&file, "the key", 64).is_err());
    }
}
