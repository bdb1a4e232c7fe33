//! The whole new content of every file a built commit adds or changes, read back from the
//! engine's mirror for the validator ([`crate::safe_outputs::validate::check_new_file`]):
//! a file is judged by what it holds once changed, not by the diff's hunks, modified files
//! as well as new ones.
//!
//! Invariants: only regular files are read (a link or submodule is refused by the path and
//! mode rules before); a file larger than the bound is not read, only its size is; git runs
//! with the engine's hardening and a timeout, as every git of the applier.

use anyhow::Context;

use super::commit::GIT_TIMEOUT;
use crate::registry::git::{self, Mirror};

/// A file the built commit adds or changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub path: String,
    /// Its size once changed, in bytes.
    pub size: u64,
    /// Its whole content once changed; `None` when larger than the bound it was read with.
    pub content: Option<Vec<u8>>,
}

/// Every regular file `commit` adds or changes against `base`, read whole when at most
/// `max_bytes` long.
pub async fn new_files(
    mirror: &Mirror,
    base: &str,
    commit: &str,
    max_bytes: u64,
) -> anyhow::Result<Vec<NewFile>> {
    let dir = Some(mirror.dir());
    let out = git::git_with(
        dir,
        &[
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--no-commit-id",
            base,
            commit,
        ],
        &[],
        None,
        GIT_TIMEOUT,
    )
    .await?;
    // `:OLD NEW OLDSHA NEWSHA STATUS\0PATH\0` per path.
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    let mut changed: Vec<(String, String)> = Vec::new();
    while let Some(meta) = fields.next() {
        let meta = std::str::from_utf8(meta).context("diff-tree output")?;
        let words: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let path = fields.next().context("diff-tree printed no path")?;
        let path = String::from_utf8(path.to_vec())
            .map_err(|_| anyhow::anyhow!("the built commit changes a path that is not UTF-8"))?;
        let [_, new_mode, _, new_blob, ..] = words[..] else {
            anyhow::bail!("diff-tree printed {meta:?}");
        };
        // 100644 or 100755; 000000 is a deleted file.
        if new_mode.starts_with("100") {
            changed.push((path, new_blob.to_owned()));
        }
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let mut asked = String::new();
    for (_, blob) in &changed {
        asked.push_str(blob);
        asked.push('\n');
    }
    // `SHA blob SIZE` per blob.
    let sizes = git::git_with(
        dir,
        &["cat-file", "--batch-check"],
        &[],
        Some(asked.as_bytes()),
        GIT_TIMEOUT,
    )
    .await?;
    let sizes = String::from_utf8(sizes).context("cat-file --batch-check output")?;
    let sizes: Vec<&str> = sizes.lines().collect();
    // Every file judged: none left out by a short answer.
    anyhow::ensure!(
        sizes.len() == changed.len(),
        "cat-file --batch-check answered {} lines for {} blobs",
        sizes.len(),
        changed.len()
    );
    let mut files = Vec::new();
    for ((path, blob), line) in changed.into_iter().zip(sizes) {
        let size: u64 = match line.split(' ').collect::<Vec<_>>()[..] {
            [sha, "blob", size] if sha == blob => size.parse().context("a blob's size")?,
            _ => anyhow::bail!("cat-file --batch-check printed {line:?} for {path:?}"),
        };
        let content = if size <= max_bytes {
            let content =
                git::git_with(dir, &["cat-file", "blob", &blob], &[], None, GIT_TIMEOUT).await?;
            anyhow::ensure!(
                content.len() as u64 == size,
                "the blob of {path:?} is not {size} bytes"
            );
            Some(content)
        } else {
            None
        };
        files.push(NewFile {
            path,
            size,
            content,
        });
    }
    Ok(files)
}
