//! A runner's own proxy connecting through the cluster's egress proxy (`gateway.rs`)
//! instead of by itself: what a runner in a pod does for an allow-list step
//! ([`super::through_gateway`]), since its pod reaches nothing outside but that proxy.
//!
//! Every target the runner's proxy allowed is reached by a `CONNECT host:port` to the
//! cluster's proxy carrying the attempt's credential (`Proxy-Authorization: Basic`), which
//! only the runner holds: the step is never given it, so a step that goes around the
//! runner's proxy to the cluster's is answered `407`. The cluster's proxy checks the same
//! list again, and what the runner cannot (where the name resolves: never the cluster's
//! networks, loopback or link-local); what it refuses is `Ok(None)`, a refusal of the step.
//!
//! Invariant: the response head is read byte by byte, so nothing of the tunnel after it
//! (a server that speaks first) is lost; it is bounded and has a deadline.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The user name in an attempt's proxy credential (`Basic base64(attempt:<grant>)`; the
/// engine's `internal_api::egress` reads it).
const USER: &str = "attempt";
/// The longest response head of the cluster's proxy read.
const MAX_HEAD: usize = 8 * 1024;
/// How long the cluster's proxy may take to answer a `CONNECT`.
const DEADLINE: Duration = Duration::from_secs(30);

/// The cluster's egress proxy and the attempt's credential for it.
#[derive(Clone)]
pub(super) struct Upstream {
    /// `host:port`.
    address: String,
    /// The `Proxy-Authorization` value: `Basic base64(attempt:<grant>)`.
    authorization: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `address` is `host:port`; `grant` the engine's credential for the attempt.
    pub(super) fn new(address: &str, grant: &str) -> Upstream {
        Upstream {
            address: address.to_owned(),
            authorization: format!("Basic {}", base64(format!("{}:{grant}", USER).as_bytes())),
        }
    }

    /// A tunnel to `host:port` through the cluster's proxy; `None` when it refused the
    /// target (403); an error when it could not be reached or answered otherwise.
    pub(super) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<Option<TcpStream>> {
        let mut stream = TcpStream::connect(&self.address).await?;
        // `host` passed the request parser (no control bytes, no `@`, no spaces).
        let request = format!(
            "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: {}\r\n\r\n",
            self.authorization
        );
        stream.write_all(request.as_bytes()).await?;
        let head = tokio::time::timeout(DEADLINE, read_head(&mut stream))
            .await
            .map_err(|_| {
                std::io::Error::other("the cluster's egress proxy did not answer in time")
            })??;
        let status = head.split(' ').nth(1).unwrap_or_default();
        match status {
            "200" => Ok(Some(stream)),
            "403" => Ok(None),
            _ => Err(std::io::Error::other(format!(
                "the cluster's egress proxy answered '{}'",
                head.lines().next().unwrap_or_default()
            ))),
        }
    }
}

/// The response head, through its blank line, read one byte at a time.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other(
                "the cluster's egress proxy's answer was cut off or too long",
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_is_rfc_4648s() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("attempt:a.b", "YXR0ZW1wdDphLmI="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }
}
