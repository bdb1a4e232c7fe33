//! One plain HTTP request per client connection, framed exactly: what the egress proxy
//! (`proxy.rs`) forwards once a request's target passed the allow-list — a plain
//! `http://` request, or plain HTTP riding a `CONNECT` tunnel.
//!
//! The upstream is reached by the request's host only, so what must never happen is a
//! *second* request on the same upstream connection: a shared front (a CDN, a virtual
//! host) would route it by its own `Host`, which nobody checked. So [`exchange`]:
//! - sends the checked head (`Connection: close` in it), then exactly the body its framing
//!   gives ([`framing`]: one `Content-Length`, or `Transfer-Encoding: chunked` followed
//!   chunk by chunk, [`Chunked`]) and nothing after it — bytes a client pipelines or
//!   sends later on the connection are read and dropped, never forwarded;
//! - relays the response with `Connection: close` in its final head (interim `1xx` heads
//!   pass as they are), then closes the client's connection once the upstream is done.
//!
//! A head framed two ways (`Content-Length` and `Transfer-Encoding`), by several different
//! lengths, or by a coding other than `chunked` is refused by [`framing`] before anything
//! is sent: the proxy and the upstream must never disagree where the body ends, or its
//! tail would be a request of its own.
//!
//! [`sniff`] tells whether a tunnel that is not TLS carries plain HTTP, so the same one
//! request, checked, is all it carries.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head rewritten; a longer one is relayed as it is.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The longest chunk-size line or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 8 * 1024;
/// How long the client's connection is read (and dropped) after the response, so unread
/// bytes of its own do not turn the close into a reset that loses the response's tail.
const LINGER: Duration = Duration::from_secs(1);

/// How a request's body is framed (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    Empty,
    Length(u64),
    Chunked,
}

/// The body framing of a request whose header lines are `block` (as `proxy::Request`
/// checked them: `name: value` lines ending in CRLF, through the blank line); the error
/// says why it is refused.
pub(super) fn framing(block: &[u8], http_1_0: bool) -> Result<Body, &'static str> {
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let Ok(value) = std::str::from_utf8(value) else {
            return Err("a header value that is not text");
        };
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.extend(value.split(',').map(|v| v.trim().to_owned()));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.extend(value.split(',').map(|v| v.trim().to_ascii_lowercase()));
        }
    }
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Body::Empty),
        ([_, ..], [_, ..]) => Err("a body framed by both Content-Length and Transfer-Encoding"),
        ([], [only]) if only == "chunked" && !http_1_0 => Ok(Body::Chunked),
        ([], _) => Err("a Transfer-Encoding other than chunked alone"),
        ([first, rest @ ..], []) => {
            let valid = !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit());
            match first.parse::<u64>() {
                Ok(length) if valid && rest.iter().all(|other| other == first) => {
                    Ok(Body::Length(length))
                }
                _ => Err("a Content-Length that is not one number"),
            }
        }
    }
}

/// Sends `head` and the body `body` frames (starting with `rest`, what was read past the
/// head) to `upstream`, relays the response to `client` with `Connection: close`, and
/// closes the client's side. Nothing the client sends past the body is forwarded.
pub(super) async fn exchange(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    head: &[u8],
    rest: Vec<u8>,
    body: Body,
) -> io::Result<()> {
    let (mut client_in, mut client_out) = client.split();
    let (mut upstream_in, mut upstream_out) = upstream.split();
    let request = async {
        upstream_out.write_all(head).await?;
        send_body(&mut client_in, &mut upstream_out, rest, body).await?;
        drop_until_eof(&mut client_in).await
    };
    let response = async {
        relay_response(&mut upstream_in, &mut client_out).await?;
        client_out.shutdown().await
    };
    tokio::pin!(request, response);
    // The body goes while the response comes (`Expect: 100-continue` needs both at once);
    // the response's end ends the exchange, and a broken body ends it at once.
    let mut sent = false;
    loop {
        tokio::select! {
            done = &mut request, if !sent => {
                done?;
                sent = true;
            }
            done = &mut response => {
                done?;
                break;
            }
        }
    }
    if !sent {
        let _ = tokio::time::timeout(LINGER, request).await;
    }
    Ok(())
}

/// Forwards exactly the body `body` frames: from `rest` first, then from `client`. What
/// `rest` holds past it (a pipelined request) is dropped.
async fn send_body(
    client: &mut (impl AsyncRead + Unpin),
    upstream: &mut (impl AsyncWrite + Unpin),
    rest: Vec<u8>,
    body: Body,
) -> io::Result<()> {
    match body {
        Body::Empty => Ok(()),
        Body::Length(length) => {
            let from_rest = rest
                .len()
                .min(usize::try_from(length).unwrap_or(usize::MAX));
            upstream.write_all(&rest[..from_rest]).await?;
            let left = length - from_rest as u64;
            let copied = tokio::io::copy(&mut client.take(left), upstream).await?;
            if copied < left {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
        Body::Chunked => {
            let mut chunked = Chunked::default();
            let mut bytes = rest;
            loop {
                let (used, done) = chunked.feed(&bytes)?;
                upstream.write_all(&bytes[..used]).await?;
                if done {
                    return Ok(());
                }
                bytes.resize(16 * 1024, 0);
                let read = client.read(&mut bytes).await?;
                if read == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                bytes.truncate(read);
            }
        }
    }
}

/// Reads `client` until it ends, dropping every byte.
async fn drop_until_eof(client: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut sink = [0u8; 4096];
    while client.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Relays the upstream's response: interim `1xx` heads as they are, the final head with
/// `Connection: close` (and no other connection header), then the rest as it comes. A
/// head this cannot read (too long, not `HTTP/1.x`, a `101`) goes as it is.
async fn relay_response(
    upstream: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(at + 4);
            }
            if buffer.len() >= MAX_RESPONSE_HEAD {
                break None;
            }
            let mut chunk = [0u8; 4096];
            let read = upstream.read(&mut chunk).await?;
            if read == 0 {
                break None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let Some(end) = end else {
            client.write_all(&buffer).await?;
            break;
        };
        match status(&buffer[..end]) {
            Some(code) if (100..200).contains(&code) && code != 101 => {
                client.write_all(&buffer[..end]).await?;
                buffer.drain(..end);
            }
            Some(code) if code != 101 => {
                client.write_all(&closing(&buffer[..end])).await?;
                client.write_all(&buffer[end..]).await?;
                break;
            }
            _ => {
                client.write_all(&buffer).await?;
                break;
            }
        }
    }
    tokio::io::copy(upstream, client).await?;
    Ok(())
}

/// The status code of a response head `HTTP/1.x NNN ...`.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next().filter(|c| c.len() == 3)?.parse().ok()
}

/// A response head (through its blank line) without `Connection`, `Keep-Alive` or
/// `Proxy-Connection` lines, with `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let lines = head.strip_suffix(b"\r\n").unwrap_or(head);
    let mut out = Vec::with_capacity(head.len() + 19);
    for line in lines.split_inclusive(|b| *b == b'\n') {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        let name = name.trim_ascii();
        let hop = [&b"connection"[..], b"keep-alive", b"proxy-connection"]
            .iter()
            .any(|hop| name.eq_ignore_ascii_case(hop));
        if !hop {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A chunked body read as it passes (RFC 9112 §7.1): where it ends, so nothing after it
/// is forwarded, and that it is well formed (CRLF line ends, hex sizes, trailer lines),
/// so the upstream ends it where this does.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line into `line`.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data: this many of its two bytes seen.
    DataEnd(u8),
    /// Reading a trailer line (after the last chunk) into `line`.
    Trailer,
    Done,
}

impl Chunked {
    /// Takes `bytes`, the next of the body: how many of them belong to it and whether it
    /// has ended with the last of those; an error for a body that is not well formed.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let mut at = 0;
        while at < bytes.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let byte = bytes[at];
                    at += 1;
                    self.line.push(byte);
                    if self.line.len() > MAX_CHUNK_LINE {
                        return Err(bad("a chunked body's line is too long"));
                    }
                    if byte != b'\n' {
                        continue;
                    }
                    let Some(line) = self.line.strip_suffix(b"\r\n") else {
                        return Err(bad("a chunked body's line ends in a bare LF"));
                    };
                    if line
                        .iter()
                        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
                    {
                        return Err(bad("a control byte in a chunked body's line"));
                    }
                    self.state = match self.state {
                        ChunkState::Size => match chunk_size(line) {
                            Some(0) => ChunkState::Trailer,
                            Some(size) => ChunkState::Data(size),
                            None => return Err(bad("a chunk size that is not hex")),
                        },
                        _ if line.is_empty() => ChunkState::Done,
                        _ if valid_trailer(line) => ChunkState::Trailer,
                        _ => return Err(bad("a trailer line that is not a header")),
                    };
                    self.line.clear();
                }
                ChunkState::Data(left) => {
                    let take = (bytes.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(seen) => {
                    let expected = if seen == 0 { b'\r' } else { b'\n' };
                    if bytes[at] != expected {
                        return Err(bad("a chunk's data is not followed by CRLF"));
                    }
                    at += 1;
                    self.state = if seen == 0 {
                        ChunkState::DataEnd(1)
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Done => unreachable!("the loop stops at Done"),
            }
        }
        Ok((at, self.state == ChunkState::Done))
    }
}

/// A chunk-size line's size: 1 to 15 hex digits, then nothing or `;` extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?;
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A trailer line: a token, a colon, a value (no folding).
fn valid_trailer(line: &[u8]) -> bool {
    match line.iter().position(|b| *b == b':') {
        Some(colon) => colon > 0 && line[..colon].iter().all(|b| is_tchar(*b)),
        None => false,
    }
}

/// A token character (RFC 9110 §5.6.2): what a method or a header name is made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the first bytes of a tunnel that is not TLS carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// A line ending in `HTTP/...`, as a server would read a request line: plain HTTP,
    /// whose head starts after the leading empty lines (this many bytes).
    Http { skip: usize },
    /// Anything else (SSH's banner, a binary protocol): carried as it is.
    Other,
    /// More bytes are needed to tell.
    More,
}

/// Whether `bytes` (the start of a tunnel) begin with what an HTTP server would read as a
/// request line: after empty lines, a token, whitespace, and a line whose last word
/// starts `HTTP/` (any case). Lenient on purpose: whatever a server might take for a
/// request is then held to the proxy's strict reading of one.
pub(super) fn sniff(bytes: &[u8], max: usize) -> Sniffed {
    let skip = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[skip..];
    let token = line.iter().position(|b| !is_tchar(*b));
    match token {
        None if line.is_empty() || line.len() < max => return Sniffed::More,
        None => return Sniffed::Other,
        Some(0) => return Sniffed::Other,
        Some(at) if line[at] != b' ' && line[at] != b'\t' => return Sniffed::Other,
        Some(_) => {}
    }
    let Some(end) = line.iter().position(|b| *b == b'\n') else {
        // A request line longer than the proxy reads is still one: the strict reading
        // refuses it.
        return if line.len() < max {
            Sniffed::More
        } else {
            Sniffed::Http { skip }
        };
    };
    let last = line[..end]
        .split(|b| b.is_ascii_whitespace())
        .rfind(|word| !word.is_empty())
        .unwrap_or_default();
    if last.len() >= 5 && last[..5].eq_ignore_ascii_case(b"http/") {
        Sniffed::Http { skip }
    } else {
        Sniffed::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_framed_one_way_only() {
        let frame = |block: &str| framing(block.as_bytes(), false);
        assert_eq!(frame("Host: a\r\n\r\n"), Ok(Body::Empty));
        assert_eq!(frame("Content-Length: 12\r\n\r\n"), Ok(Body::Length(12)));
        assert_eq!(
            frame("content-length: 3\r\nContent-Length: 3, 3\r\n\r\n"),
            Ok(Body::Length(3))
        );
        assert_eq!(
            frame("Transfer-Encoding: Chunked\r\n\r\n"),
            Ok(Body::Chunked)
        );
        for refused in [
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            "Content-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "Content-Length: +3\r\n\r\n",
            "Content-Length: 0x3\r\n\r\n",
            "Content-Length: \r\n\r\n",
            "Content-Length: 99999999999999999999999\r\n\r\n",
            "Transfer-Encoding: gzip, chunked\r\n\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding: identity\r\n\r\n",
        ] {
            assert!(frame(refused).is_err(), "{refused:?}");
        }
        assert!(framing(b"Transfer-Encoding: chunked\r\n\r\n", true).is_err());
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_says() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nGET /two HTTP/1.1\r\n";
        let mut chunked = Chunked::default();
        let (used, done) = chunked.feed(body).unwrap();
        assert!(done);
        assert_eq!(&body[..used], b"5;ext=1\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n");
        // Byte by byte, the same.
        let mut chunked = Chunked::default();
        let mut total = 0;
        for (i, byte) in body.iter().enumerate() {
            let (used, done) = chunked.feed(std::slice::from_ref(byte)).unwrap();
            total += used;
            if done {
                assert_eq!(i + 1, total);
                break;
            }
        }
        assert_eq!(total, used);
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"z\r\n",
            b"-5\r\n",
            b"\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: \x00\r\n\r\n",
        ] {
            assert!(
                Chunked::default().feed(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_final_response_head_says_the_connection_closes() {
        let head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                     Content-Length: 2\r\n\r\n";
        assert_eq!(status(head), Some(200));
        assert_eq!(
            String::from_utf8(closing(head)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(status(b"HTTP/1.1 100 Continue\r\n\r\n"), Some(100));
        assert_eq!(status(b"SSH-2.0-x\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn interim_answers_pass_and_the_final_one_closes() {
        let upstream = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nconnection: \
                         keep-alive\r\ncontent-length: 2\r\n\r\nok";
        let mut out = Vec::new();
        relay_response(&mut &upstream[..], &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\
             Connection: close\r\n\r\nok"
        );
    }

    #[test]
    fn plain_http_in_a_tunnel_is_told_from_other_protocols() {
        let max = 1024;
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\r\n\r\nget /x http/1.0\n",
            b"PRI * HTTP/2.0\r\n",
            b"GET\t/  HTTP/1.1 \r\n",
        ] {
            assert!(
                matches!(sniff(http, max), Sniffed::Http { .. }),
                "{:?}",
                String::from_utf8_lossy(http)
            );
        }
        assert_eq!(
            sniff(b"\r\nGET / HTTP/1.1\r\n", max),
            Sniffed::Http { skip: 2 }
        );
        for other in [
            &b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(
                sniff(other, max),
                Sniffed::Other,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        for more in [&b""[..], b"\r\n", b"GE", b"GET / HTT"] {
            assert_eq!(sniff(more, max), Sniffed::More, "{more:?}");
        }
        assert!(matches!(sniff(&[b'a'; 2048], max), Sniffed::Other));
        let mut long = b"GET /".to_vec();
        long.resize(2048, b'a');
        assert!(matches!(sniff(&long, max), Sniffed::Http { .. }));
    }
}
