//! The transcripts `llm` attempts keep (`plue_types::transcript`): a `transcript` blob per
//! attempt, a tar holding one `transcript.json`, read back for the API
//! (`GET /api/runs/{id}/steps/{step}/transcript`) and `plue rerun --replay`.
//!
//! Invariants: unlike hand-off tars (streamed, see [`crate::artifacts`]), a transcript is
//! read whole — it is bounded by the runner ([`transcript::MAX_BYTES`]) and anything past
//! [`MAX_BLOB_BYTES`] is refused before it is buffered further; only the entry named
//! [`transcript::FILE`] is read, and it must parse as a transcript of this version. A
//! transcript holds what the runner masked (the step's own secrets); what readers are shown
//! ([`for_readers`]) is masked again with every secret of the *run* by its outbound wall,
//! so another step's secret the agent read (a token left in a workspace it was handed) is
//! never shown in clear. Nothing here unmasks or adds anything.

use futures::TryStreamExt;
use plue_store::Store;
use plue_types::transcript::{self, Transcript};

use crate::artifacts::{ArtifactError, Artifacts};

/// The largest transcript blob read (the JSON, plus room for the tar's headers).
pub const MAX_BLOB_BYTES: usize = transcript::MAX_BYTES + (1 << 20);

/// What a step of a run kept.
#[derive(Debug)]
pub enum Kept {
    /// Its latest attempt kept no transcript (not an `llm` step, or from before
    /// transcripts).
    None,
    /// It kept one, deleted since by retention.
    Gone,
    Transcript(Box<Transcript>),
}

/// The transcript the latest attempt of `step_id` in run `run_id` kept, as its readers
/// are shown it: every string in it masked by the run's `wall`
/// ([`plue_outbound::Checker::mask`]).
pub async fn for_readers(
    store: &Store,
    artifacts: &Artifacts,
    run_id: i64,
    step_id: &str,
    wall: &plue_outbound::Checker,
) -> anyhow::Result<Kept> {
    Ok(match latest(store, artifacts, run_id, step_id).await? {
        Kept::Transcript(mut transcript) => {
            mask(&mut transcript, wall);
            Kept::Transcript(transcript)
        }
        other => other,
    })
}

/// Masks every string of `transcript` with `wall` — every field, whatever the transcript's
/// shape (walked as JSON, so a field added later is masked too).
pub fn mask(transcript: &mut Transcript, wall: &plue_outbound::Checker) {
    fn walk(value: &mut serde_json::Value, wall: &plue_outbound::Checker) {
        match value {
            serde_json::Value::String(text) => *text = wall.mask(text).into_string(),
            // A number the model wrote is its digits to a reader: a numeric secret (a PIN,
            // an account number) in a tool's input is masked as a string.
            serde_json::Value::Number(number) => {
                let digits = number.to_string();
                let masked = wall.mask(&digits).into_string();
                if masked != digits {
                    *value = serde_json::Value::String(masked);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, wall)),
            serde_json::Value::Object(fields) => {
                // Keys too: a tool's input is an object whose keys the model chose.
                let taken = std::mem::take(fields);
                for (key, mut v) in taken {
                    walk(&mut v, wall);
                    fields.insert(wall.mask(&key).into_string(), v);
                }
            }
            _ => {}
        }
    }
    let masked = serde_json::to_value(&*transcript)
        .map(|mut value| {
            walk(&mut value, wall);
            value
        })
        .and_then(serde_json::from_value::<Transcript>);
    match masked {
        Ok(masked) => *transcript = masked,
        // A transcript that does not survive its own round trip is shown as nothing.
        Err(e) => {
            tracing::warn!("masking a transcript: {e}");
            *transcript = Transcript {
                version: transcript.version,
                truncated: true,
                ..Transcript::default()
            };
        }
    }
}

/// The transcript the latest attempt of `step_id` in run `run_id` kept, as the runner
/// stored it (for `plue rerun --replay` on the engine's own machine).
pub async fn latest(
    store: &Store,
    artifacts: &Artifacts,
    run_id: i64,
    step_id: &str,
) -> anyhow::Result<Kept> {
    let Some(blob) = store.latest_blob(run_id, step_id, "transcript").await? else {
        return Ok(Kept::None);
    };
    let mut stream = match artifacts.get(&blob.key).await {
        Ok(stream) => stream,
        Err(ArtifactError::Store(object_store::Error::NotFound { .. })) => return Ok(Kept::Gone),
        Err(e) => anyhow::bail!("reading the transcript of step '{step_id}': {e}"),
    };
    let mut tar = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        tar.extend_from_slice(&chunk);
        if tar.len() > MAX_BLOB_BYTES {
            anyhow::bail!(
                "the transcript of step '{step_id}' is larger than {MAX_BLOB_BYTES} bytes"
            );
        }
    }
    parse_tar(&tar)
        .map(|t| Kept::Transcript(Box::new(t)))
        .map_err(|e| anyhow::anyhow!("the transcript of step '{step_id}': {e}"))
}

/// Why a transcript blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Not a tar archive, or one that cannot be read.
    #[error("{0}")]
    Archive(#[from] std::io::Error),
    #[error("no {} in the blob", transcript::FILE)]
    NoTranscript,
    #[error(transparent)]
    Transcript(#[from] transcript::TranscriptError),
}

/// The transcript inside a transcript blob.
pub fn parse_tar(tar: &[u8]) -> Result<Transcript, BlobError> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path().ok().as_deref() != Some(std::path::Path::new(transcript::FILE)) {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        return Ok(transcript::parse(&bytes)?);
    }
    Err(BlobError::NoTranscript)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(name: &str, body: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, name, body).unwrap();
        builder.into_inner().unwrap()
    }

    // The attack (issue 49): a numeric secret the model put in a tool's input as a JSON
    // number was shown in clear (only strings were masked).
    #[test]
    fn a_numeric_secret_in_a_tool_input_is_masked() {
        let wall = plue_outbound::Checker::new(
            &plue_outbound::Secrets::from_iter(["4815162342"]),
            ["github.com"],
        );
        let mut kept: Transcript = serde_json::from_value(serde_json::json!({
            "version": transcript::VERSION,
            "turns": [{
                "turn": 1,
                "request": {"n": 4815162342u64},
                "messages_added": [],
                "response": {"content": [{"input": {"pin": 4815162342u64, "x": 1}}]},
                "started_ms": 0,
                "duration_ms": 0,
                "tools": [{
                    "id": "t", "name": "bash", "input": {"pin": 4815162342u64},
                    "content": "", "is_error": false, "duration_ms": 0
                }]
            }]
        }))
        .unwrap();
        mask(&mut kept, &wall);
        let shown = serde_json::to_string(&kept).unwrap();
        assert!(!shown.contains("4815162342"), "{shown}");
        assert!(shown.contains("\"x\":1"), "{shown}");
        assert_eq!(kept.turns.len(), 1);
    }

    #[test]
    fn only_the_transcript_entry_of_this_version_is_read() {
        let good = serde_json::to_vec(&Transcript {
            version: transcript::VERSION,
            ..Transcript::default()
        })
        .unwrap();
        assert!(parse_tar(&tar_of(transcript::FILE, &good)).is_ok());
        let missing = parse_tar(&tar_of("other.json", &good)).unwrap_err();
        assert!(matches!(missing, BlobError::NoTranscript), "{missing}");
        assert_eq!(missing.to_string(), "no transcript.json in the blob");
        let old = br#"{"version": 99, "turns": []}"#;
        let old = parse_tar(&tar_of(transcript::FILE, old)).unwrap_err();
        assert!(
            matches!(
                old,
                BlobError::Transcript(transcript::TranscriptError::Version(99))
            ),
            "{old}"
        );
        assert!(old.to_string().contains("version 99"));
    }
}
