//! The parent ↔ evaluator-worker wire format.
//!
//! Frames are a 4-byte big-endian length and a JSON body. The parent writes one
//! [`Request`] per evaluation to the zygote's stdin; the zygote forks a child that reads it
//! and answers on the *result channel* (the zygote's original stdout, duplicated to a
//! private descriptor held only by Rust code before fds 1 and 2 point at `/dev/null`) with
//! at most one [`Frame::Plan`] or [`Frame::Failed`]. When the child has ended, the zygote
//! itself sends [`Frame::Done`]. So per evaluation: `[Plan|Failed] Done`. User code has no
//! way to write a frame: a `print` in a workflow can never be mistaken for a result.
//!
//! The parent trusts nothing it reads: frame sizes are capped and the plan is validated
//! again after decoding.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::context::EvalContext;
use crate::diagnostic::Diagnostic;
use crate::modules::{ModuleRequest, ModulesIn};
use crate::plan::{Plan, SourceMap};

/// Largest frame either side accepts. A plan is at most 1 MiB of JSON by default;
/// the headroom covers the source map and captured prints.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Bounds the worker enforces itself while building the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerLimits {
    pub max_steps: usize,
    pub max_plan_bytes: usize,
}

/// One evaluation request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The name used in messages and tracebacks.
    pub path: String,
    pub source: String,
    pub ctx: EvalContext,
    pub limits: WorkerLimits,
    /// The lock file's pins and the modules fetched so far ([`crate::modules`]).
    #[serde(default)]
    pub modules: ModulesIn,
}

/// What the worker sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// Sent once by the zygote, after the interpreter is initialised and locked down.
    Ready,
    /// The evaluation produced a plan (not yet validated as a whole). From the child.
    Plan {
        plan: Plan,
        source_map: SourceMap,
        /// What the workflow printed, capped.
        output: String,
    },
    /// The workflow file is wrong or hostile. From the child.
    Failed { diagnostic: Diagnostic },
    /// The file used modules it was not given: fetch them and ask again. From the child.
    NeedModules { requests: Vec<ModuleRequest> },
    /// From the zygote: the evaluation's child has ended.
    Done {
        /// The child reached the wall-clock bound and was killed.
        timed_out: bool,
        /// The signal the child died of, if it did.
        signal: Option<i32>,
        /// The child's exit code, if it exited.
        code: Option<i32>,
        /// The zygote used up its CPU budget and exits after this frame.
        retire: bool,
    },
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {} bytes exceeds the limit", body.len()),
        ));
    }
    // One write: a frame is never interleaved with anything else on the channel.
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit"),
        ));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversize_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Frame::Ready).unwrap();
        let back: Frame = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert!(matches!(back, Frame::Ready));
        let empty: Option<Frame> = read_frame(&mut [].as_slice()).unwrap();
        assert!(empty.is_none());
        let huge = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
        let err = read_frame::<Frame>(&mut huge.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
