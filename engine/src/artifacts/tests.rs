//! Uploads played by a hostile runner against a local blob store: a path twice, a sparse
//! file, more files than the quota leaves. Each must end refused with nothing left in the
//! store's directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use runner::handoff;
use runner::protocol::BlobKind;

use super::quota::{Allowance, Quota, Quotas, Scope};
use super::{ArtifactError, Artifacts, ArtifactsConfig};
use crate::store::BlobUsage;

fn store(dir: &Path) -> Artifacts {
    Artifacts::open(&ArtifactsConfig::local(dir.join("blobs"))).unwrap()
}

/// Every regular file below `dir` (staging files of an upload included).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_owned())
        .collect()
}

fn chunks(tar: Vec<u8>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let pieces: Vec<Result<Bytes, std::io::Error>> = tar
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

/// A tar of `entries` as the tar crate writes it (paths may repeat).
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn allowance(bytes: u64, files: u64) -> Allowance {
    let quota = Quota { bytes, files };
    Allowance::new(
        &Quotas {
            run: quota,
            ..Quotas::default()
        },
        &BlobUsage::default(),
    )
}

#[tokio::test]
async fn a_path_twice_in_an_artifacts_tar_is_refused_and_nothing_is_left() {
    // regression: the second row of one path failed the record (500) after the object was
    // stored, which stayed in the store with no row naming it.
    let dir = tempfile::tempdir().unwrap();
    let artifacts = store(dir.path());
    let tar = tar_of(&[("out.txt", b"first"), ("./out.txt", b"second")]);
    let refused = artifacts
        .put(
            "runs/1/build/1/artifacts-x.tar",
            BlobKind::Artifacts,
            &allowance(1 << 30, 100),
            chunks(tar),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ArtifactError::Refused(why) if why.contains("'out.txt' twice")),
        "{refused}"
    );
    assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_sparse_file_counts_at_its_full_size() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let sparse = std::fs::File::create(workspace.join("sparse.bin")).unwrap();
    sparse.set_len(30 << 20).unwrap();
    let on_disk = sparse.metadata().unwrap().blocks() * 512;
    assert!(
        on_disk < 1 << 20,
        "the file is sparse: {on_disk} bytes on disk"
    );
    // The runner's own archive of it.
    let mut tar = Vec::new();
    let selection = handoff::Selection::artifacts(&["sparse.bin".into()]).unwrap();
    handoff::pack(
        &workspace,
        &selection,
        &handoff::Limits::default(),
        &mut tar,
    )
    .unwrap();

    let artifacts = store(dir.path());
    let refused = artifacts
        .put(
            "runs/1/build/1/artifacts-x.tar",
            BlobKind::Artifacts,
            &allowance(8 << 20, 100),
            chunks(tar.clone()),
        )
        .await
        .unwrap_err();
    let ArtifactError::OverQuota { over, .. } = &refused else {
        panic!("{refused}")
    };
    assert_eq!(
        (over.scope, over.files, over.limit),
        (Scope::Run, false, 8 << 20)
    );
    let text = refused.to_string();
    assert!(
        text.contains("the run's storage quota") && text.contains("--quota-run-bytes"),
        "{text}"
    );
    assert_eq!(files_in(&dir.path().join("blobs")), Vec::<PathBuf>::new());

    let stored = artifacts
        .put(
            "runs/1/build/1/artifacts-y.tar",
            BlobKind::Artifacts,
            &allowance(64 << 20, 100),
            chunks(tar),
        )
        .await
        .unwrap();
    assert!(stored.size > 30 << 20, "{}", stored.size);
    assert_eq!(stored.files[0].size, 30 << 20);
}

#[tokio::test]
async fn files_past_the_file_quota_are_refused_while_listing() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = store(dir.path());
    let names: Vec<String> = (0..50).map(|i| format!("f/{i}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let refused = artifacts
        .put(
            "runs/1/build/1/artifacts-x.tar",
            BlobKind::Artifacts,
            &allowance(1 << 30, 20),
            chunks(tar_of(&entries)),
        )
        .await
        .unwrap_err();
    let ArtifactError::OverQuota { over, .. } = &refused else {
        panic!("{refused}")
    };
    assert!(over.files && over.limit == 20, "{refused}");
    assert!(
        refused.to_string().contains("past the quota of 20 files"),
        "{refused}"
    );
    assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());

    // Exactly the quota fits.
    let stored = artifacts
        .put(
            "runs/1/build/1/artifacts-y.tar",
            BlobKind::Artifacts,
            &allowance(1 << 30, 50),
            chunks(tar_of(&entries)),
        )
        .await
        .unwrap();
    assert_eq!(stored.files.len(), 50);
}

#[tokio::test]
async fn a_workspace_counts_its_bytes_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = store(dir.path());
    let big = vec![7u8; 300 * 1024];
    let refused = artifacts
        .put(
            "runs/1/build/1/workspace-x.tar",
            BlobKind::Workspace,
            &allowance(256 * 1024, 1),
            chunks(tar_of(&[("a", &big), ("b", b"x"), ("c", b"y")])),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ArtifactError::OverQuota { .. }),
        "{refused}"
    );
    assert_eq!(files_in(dir.path()), Vec::<PathBuf>::new());
}
