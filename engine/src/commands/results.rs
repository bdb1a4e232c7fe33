//! Results back to the user: `plue artifacts RUN [--step S] [--to DIR]` (a run's artifact
//! files, from the embedded database's blob store or a server's API) and the writing of
//! `plue run --export STEP=DIR` (a step's final workspace, kept for it by the engine).
//!
//! Invariants: every tar is unpacked by `runner::handoff::unpack`, which refuses an entry
//! that would land outside the target (`..`, absolute paths, links pointing out, writes
//! through a link) and bounds bytes and entries, so a hostile archive (a compromised
//! server, a step's own files) writes nothing outside DIR; DIR must not exist or be an
//! empty directory (never a link), so nothing of the user's is overwritten.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures::TryStreamExt;
use plue_core::artifacts::{Artifacts, ArtifactsConfig};
use plue_store::Store;
use plue_types::handoff::Limits;
use runner::handoff::{self, Unpacked};

use super::client::ApiClient;
use super::run_lines::ArtifactLine;
use crate::cli::ArtifactsArgs;

/// A stream of a tar's bytes.
type TarStream = plue_core::artifacts::ByteStream;

/// Makes `dir` ready to receive files: created when missing, refused when it is anything
/// but an empty directory (a link to one included).
pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            anyhow::bail!("{} exists and is not a directory", dir.display())
        }
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            if entries.next().is_some() {
                anyhow::bail!("{} exists and is not empty", dir.display());
            }
            Ok(())
        }
    }
}

/// Checks what `prepare_dir` would refuse, without creating anything.
pub(crate) fn check_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => prepare_dir(dir),
    }
}

/// Unpacks the tar `stream` into the prepared directory `dir`.
async fn unpack(stream: TarStream, dir: &Path) -> anyhow::Result<Unpacked> {
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let root = dir.to_path_buf();
    tokio::task::spawn_blocking(move || handoff::unpack(reader, &root, &Limits::default()))
        .await
        .context("the unpacking task failed")?
        .with_context(|| format!("unpacking into {}", dir.display()))
}

/// The blob store of the data directory `data_dir` (as `plue run` configures it).
fn local_blobs(data_dir: &Path) -> anyhow::Result<Artifacts> {
    let data_dir = std::fs::canonicalize(data_dir)
        .with_context(|| format!("the data directory {}", data_dir.display()))?;
    Artifacts::open(&ArtifactsConfig::local(data_dir.join("artifacts")))
}

/// Writes the final workspace step `step` of run `run_id` left into `dir` (`plue run
/// --export`); the engine kept it because `plue run` named the step.
pub(crate) async fn export_workspace(
    store: &Store,
    data_dir: &Path,
    run_id: i64,
    step: &str,
    dir: &Path,
) -> anyhow::Result<Unpacked> {
    let blob = store
        .latest_blob(
            run_id,
            step,
            plue_types::protocol::BlobKind::Workspace.as_str(),
        )
        .await?
        .with_context(|| format!("step '{step}' left no workspace (it did not run to its end)"))?;
    let blobs = local_blobs(data_dir)?;
    let stream = blobs
        .get(&blob.key)
        .await
        .with_context(|| format!("reading the workspace of '{step}'"))?;
    prepare_dir(dir)?;
    unpack(stream, dir).await
}

/// `plue artifacts RUN`.
pub(crate) async fn artifacts(args: ArtifactsArgs) -> anyhow::Result<ExitCode> {
    let source = Source::new(&args.source).await?;
    let mut files = source.listing(args.run_id).await?;
    if let Some(step) = &args.step {
        files.retain(|f| &f.step == step);
        if files.is_empty() {
            anyhow::bail!("step '{step}' of run {} kept no artifacts", args.run_id);
        }
    }
    let Some(to) = &args.to else {
        for file in &files {
            println!(
                "{}  {}  {:>10}  {}",
                file.step, file.digest, file.size, file.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let mut steps: Vec<&str> = files.iter().map(|f| f.step.as_str()).collect();
    steps.dedup();
    check_dir(to)?;
    // One step: its files straight into DIR; several: each in DIR/STEP.
    let into = |step: &str| -> PathBuf {
        if args.step.is_some() {
            to.clone()
        } else {
            to.join(step)
        }
    };
    for step in &steps {
        plue_types::handoff::clean_relative(Path::new(step))
            .filter(|p| p.components().count() == 1)
            .with_context(|| format!("refused step name '{step}' as a directory"))?;
    }
    prepare_dir(to)?;
    for step in steps {
        let dir = into(step);
        prepare_dir(&dir)?;
        let stream = source.tar(args.run_id, step).await?;
        let unpacked = unpack(stream, &dir).await?;
        eprintln!(
            "{step}: {} entries ({}) in {}",
            unpacked.entries,
            plue_types::handoff::human(unpacked.bytes),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `plue artifacts` reads: the embedded database or a server.
enum Source {
    Local { store: Store, blobs: Artifacts },
    Server(ApiClient),
}

impl Source {
    async fn new(args: &crate::cli::SourceArgs) -> anyhow::Result<Source> {
        Ok(match &args.server {
            Some(server) => Source::Server(ApiClient::new(server, args.token.clone())?),
            None => {
                let store = Store::open_data_dir(&args.data_dir).await?;
                Source::Local {
                    store,
                    blobs: local_blobs(&args.data_dir)?,
                }
            }
        })
    }

    async fn listing(&self, run_id: i64) -> anyhow::Result<Vec<ArtifactLine>> {
        match self {
            Source::Local { store, .. } => {
                store
                    .run(run_id)
                    .await?
                    .with_context(|| format!("no run {run_id}"))?;
                Ok(store
                    .artifacts_of_run(run_id)
                    .await?
                    .into_iter()
                    .map(ArtifactLine::from_row)
                    .collect())
            }
            Source::Server(client) => super::runs::all_artifacts(client, run_id).await,
        }
    }

    /// The tar of the artifacts `step` kept (its latest attempt that kept any).
    async fn tar(&self, run_id: i64, step: &str) -> anyhow::Result<TarStream> {
        match self {
            Source::Local { store, blobs } => {
                let blob = store
                    .latest_blob(
                        run_id,
                        step,
                        plue_types::protocol::BlobKind::Artifacts.as_str(),
                    )
                    .await?
                    .with_context(|| format!("step '{step}' kept no artifacts"))?;
                Ok(blobs.get(&blob.key).await?)
            }
            Source::Server(client) => {
                let url = client.url(&format!("/api/runs/{run_id}/steps/{step}/artifacts"));
                let response = client
                    .authorized(client.http().get(&url))
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                let status = response.status();
                if !status.is_success() {
                    let body = response.text().await.unwrap_or_default();
                    anyhow::bail!("GET {url}: {status} {}", body.trim());
                }
                Ok(Box::pin(
                    response.bytes_stream().map_err(std::io::Error::other),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_missing_or_empty_directory_never_a_link_or_a_file() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("a/b");
        prepare_dir(&missing).unwrap();
        assert!(missing.is_dir());
        prepare_dir(&missing).expect("an empty directory is fine");

        std::fs::write(missing.join("mine.txt"), "x").unwrap();
        let err = prepare_dir(&missing).unwrap_err().to_string();
        assert!(err.ends_with("exists and is not empty"), "{err}");

        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = prepare_dir(&file).unwrap_err().to_string();
        assert!(err.ends_with("exists and is not a directory"), "{err}");

        // A link to an empty directory elsewhere: writing through it would leave DIR.
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = prepare_dir(&link).unwrap_err().to_string();
        assert!(err.ends_with("exists and is not a directory"), "{err}");
        assert!(check_dir(&link).is_err());
        assert!(check_dir(&root.path().join("new")).is_ok());
        assert!(
            !root.path().join("new").exists(),
            "checking creates nothing"
        );
    }
}
