//! The held runner connection: one connection per runner on which every JSON call of the
//! protocol rides (a poll — the runner asking to be pushed its next assignment —, its
//! acceptance, the start, log batches, the watch for a cancel, the completion whose answer
//! pushes the next assignment, heartbeats), instead of an HTTP request and answer each.
//!
//! Opening: after registering, the runner sends `GET` [`SESSION_PATH`] with its session
//! token (`Authorization: Bearer`) and `Connection: upgrade`, `Upgrade:` [`PROTOCOL`]. The
//! engine answers `101 Switching Protocols` with the same `Upgrade`, and from then on the
//! connection carries frames both ways. An engine that does not speak the version asked
//! for answers `426 Upgrade Required` naming the one it speaks ([`PROTOCOL`]); a runner
//! then keeps to one HTTP request per call, as it does when the engine has no session
//! route (404, an older engine) or the upgrade fails on the way (a proxy).
//!
//! Frames: each is a 4-byte big-endian length, then that many bytes (at most
//! [`MAX_FRAME_BYTES`]).
//! - A call (runner → engine): the call's id (8 bytes, big-endian; the runner numbers its
//!   calls), the path's length (2 bytes) and the path (`/internal/...`, as the HTTP
//!   protocol's `POST` routes name it), then the JSON body.
//! - An answer (engine → runner): the call's id, the HTTP status it would have had
//!   (2 bytes), then the JSON body it would have had (the answer, or an `ErrorBody`).
//!
//! Invariants:
//! - A call means exactly what the same `POST` means over HTTP, authenticated as the
//!   runner whose token opened the connection: the engine hands each call to the same
//!   handlers, with that token. Only the protocol's `POST` routes are reachable; blobs
//!   (streamed `PUT`/`GET`) keep their own requests.
//! - Calls are answered in any order (a held poll never holds back a log batch); each
//!   call gets exactly one answer while the connection lives. When it closes, every call
//!   without an answer fails on the runner's side as unreachable, and the runner retries
//!   it over HTTP (every call is idempotent or acknowledged, as over HTTP).
//! - A frame past [`MAX_FRAME_BYTES`], or one that does not parse, closes the connection.

/// Where a runner opens its held connection.
pub const SESSION_PATH: &str = "/internal/session";

/// The `Upgrade` token of this version of the held connection.
pub const PROTOCOL: &str = "plue-runner/1";

/// The longest frame either side sends or accepts: a body as large as the HTTP protocol
/// allows, with room for the frame's header.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024 + 1024;

/// A runner's call, as a frame carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub id: u64,
    pub path: String,
    pub body: Vec<u8>,
}

/// The engine's answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub id: u64,
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("a call's path of {0} bytes runs past its frame")]
    PathPastFrame(usize),
    #[error("a call's path is not UTF-8")]
    PathNotText,
    #[error("a call's path {0:?} is not one of the protocol's")]
    NotInternal(String),
}

impl Call {
    /// The frame's bytes (without the length the framing adds).
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_bytes();
        let path_len = u16::try_from(path.len()).unwrap_or(u16::MAX);
        let mut frame = Vec::with_capacity(10 + path.len() + self.body.len());
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(&path_len.to_be_bytes());
        frame.extend_from_slice(&path[..usize::from(path_len)]);
        frame.extend_from_slice(&self.body);
        frame
    }

    /// A frame's call; its path must name one of the protocol's routes (`/internal/`).
    pub fn decode(frame: &[u8]) -> Result<Call, FrameError> {
        if frame.len() < 10 {
            return Err(FrameError::Short(frame.len()));
        }
        let id = u64::from_be_bytes(frame[..8].try_into().expect("8 bytes"));
        let path_len = usize::from(u16::from_be_bytes([frame[8], frame[9]]));
        let rest = &frame[10..];
        if path_len > rest.len() {
            return Err(FrameError::PathPastFrame(path_len));
        }
        let path = std::str::from_utf8(&rest[..path_len]).map_err(|_| FrameError::PathNotText)?;
        if !path.starts_with("/internal/") || path == SESSION_PATH {
            return Err(FrameError::NotInternal(path.chars().take(100).collect()));
        }
        Ok(Call {
            id,
            path: path.to_owned(),
            body: rest[path_len..].to_vec(),
        })
    }
}

impl Answer {
    /// The frame's bytes (without the length the framing adds).
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(10 + self.body.len());
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(&self.status.to_be_bytes());
        frame.extend_from_slice(&self.body);
        frame
    }

    pub fn decode(frame: &[u8]) -> Result<Answer, FrameError> {
        if frame.len() < 10 {
            return Err(FrameError::Short(frame.len()));
        }
        Ok(Answer {
            id: u64::from_be_bytes(frame[..8].try_into().expect("8 bytes")),
            status: u16::from_be_bytes([frame[8], frame[9]]),
            body: frame[10..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers_survive_their_frames() {
        let call = Call {
            id: u64::MAX - 3,
            path: "/internal/attempts/7/complete".into(),
            body: br#"{"outcome":"succeeded"}"#.to_vec(),
        };
        assert_eq!(Call::decode(&call.encode()), Ok(call));
        let answer = Answer {
            id: 9,
            status: 409,
            body: br#"{"error":"no"}"#.to_vec(),
        };
        assert_eq!(Answer::decode(&answer.encode()), Ok(answer));
    }

    #[test]
    fn a_frame_that_lies_about_itself_or_leaves_the_protocol_is_refused() {
        assert_eq!(Call::decode(&[0; 9]), Err(FrameError::Short(9)));
        assert_eq!(Answer::decode(&[0; 3]), Err(FrameError::Short(3)));
        let mut frame = 1u64.to_be_bytes().to_vec();
        frame.extend_from_slice(&500u16.to_be_bytes());
        frame.extend_from_slice(b"/internal/x");
        assert_eq!(Call::decode(&frame), Err(FrameError::PathPastFrame(500)));
        for path in ["/api/runs", SESSION_PATH, "internal/runners/poll", "/"] {
            let call = Call {
                id: 1,
                path: path.into(),
                body: Vec::new(),
            };
            assert!(
                matches!(
                    Call::decode(&call.encode()),
                    Err(FrameError::NotInternal(_))
                ),
                "{path}"
            );
        }
        let mut frame = 1u64.to_be_bytes().to_vec();
        frame.extend_from_slice(&2u16.to_be_bytes());
        frame.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(Call::decode(&frame), Err(FrameError::PathNotText));
    }
}
