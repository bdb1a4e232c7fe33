//! Uploads played by a hostile runner against a local blob store: a path twice, a sparse
//! file, more files than the quota leaves. Each must end refused with nothing left in the
//! store's directory.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use plue_store::BlobUsage;
use plue_types::protocol::BlobKind;
use runner::handoff;

use super::quota::{Allowance, Quota, Quotas, Scope};
use super::{ArtifactError, Artifacts, ArtifactsConfig};

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
        &plue_types::handoff::Limits::default(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_one_run_streaming_at_once_see_each_other() {
    // regression (attack q1): each upload was checked while streaming against what was
    // recorded when it began, so eight uploads streaming at once held disk far past the
    // run's quota before their records refused all but one.
    let dir = tempfile::tempdir().unwrap();
    let artifacts = store(dir.path());
    let quota = allowance(10 << 20, 100);
    let six = vec![6u8; 6 << 20];
    // The first upload has streamed its 6 MiB and waits for the rest of its body.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let first = {
        let artifacts = artifacts.clone();
        let quota = quota.clone();
        tokio::spawn(async move {
            let reserved = artifacts.streaming().reserve(1);
            let body = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            artifacts
                .put_reserved(
                    "runs/1/left/1/workspace-a.tar",
                    BlobKind::Workspace,
                    &quota,
                    Some(reserved),
                    body,
                )
                .await
        })
    };
    for chunk in six.chunks(1 << 20) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while artifacts.streaming().of_run(1) < 6 << 20 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first upload streams");
    // A second upload of the same run, 6 MiB too, is refused while it streams.
    let refused = artifacts
        .put_reserved(
            "runs/1/right/1/workspace-b.tar",
            BlobKind::Workspace,
            &quota,
            Some(artifacts.streaming().reserve(1)),
            chunks(six.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ArtifactError::OverQuota { over, .. } if over.scope == Scope::Run && over.partial),
        "{refused}"
    );
    // An upload of another run is not counted with them.
    artifacts
        .put_reserved(
            "runs/2/other/1/workspace-c.tar",
            BlobKind::Workspace,
            &quota,
            Some(artifacts.streaming().reserve(2)),
            chunks(six.clone()),
        )
        .await
        .unwrap();
    drop(tx);
    first.await.unwrap().unwrap();
    assert_eq!(artifacts.streaming().of_run(1), 0, "given back");
    assert_eq!(files_in(dir.path()).len(), 2);
}
