//! The HTTP client a runner talks to its engine with (registration, claims, logs, blobs):
//! it carries the runner's tokens, so where it connects is the operator's choice alone.
//!
//! Invariants:
//! - The client never takes a proxy from the process environment (`HTTP_PROXY`,
//!   `HTTPS_PROXY`, `ALL_PROXY`, in any case): a runner pod's template may set those
//!   variables, and must not be able to route the runner's token through a proxy of its
//!   choosing (issue 53).
//! - The one proxy it uses is the one given explicitly ([`EngineProxy`], `plue runner
//!   --engine-proxy`, which the Kubernetes pool passes from a class's `engine_proxy`); it
//!   has no environment variable.
//! - No redirects are followed (the engine never redirects; a redirect would carry the
//!   token elsewhere).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// A proxy the operator chose for the runner's traffic to its engine: an `http://` or
/// `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProxy(String);

impl EngineProxy {
    /// Checks `url` is a proxy URL the client can use.
    pub fn parse(url: &str) -> Result<EngineProxy, String> {
        let url = url.trim();
        let scheme_ok = ["http://", "https://"].iter().any(|s| {
            url.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if !scheme_ok || url.contains(char::is_whitespace) {
            return Err(format!(
                "{url:?} is not a proxy URL (http://HOST:PORT or https://HOST:PORT)"
            ));
        }
        reqwest::Proxy::all(url).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(EngineProxy(url.to_string()))
    }

    pub fn url(&self) -> &str {
        &self.0
    }
}

/// The client for the engine at `engine` (its base URL): on the Unix socket `socket` when
/// one is given (`plue run`'s own runners: `engine` then only names the host the requests
/// carry), else through `proxy` only when one is given.
pub fn build(
    engine: &str,
    proxy: Option<&EngineProxy>,
    socket: Option<&Path>,
) -> anyhow::Result<reqwest::Client> {
    // Over plain HTTP (a local or in-cluster engine) no certificate is ever checked: the
    // system's store is not read (~3 ms of CPU each time a runner starts).
    let plain = engine
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(!plain);
    if let Some(socket) = socket {
        builder = builder.unix_socket(socket);
    } else if let Some(proxy) = proxy {
        let proxy = reqwest::Proxy::all(proxy.url())
            .with_context(|| format!("the engine proxy {}", proxy.url()))?;
        builder = builder.proxy(proxy);
    }
    builder.build().context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A listener that counts the connections it gets and answers each one request with
    /// `200 {}`.
    fn recording_listener() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        (address, count)
    }

    /// Which test of this binary runs in a child process with the proxy variables set
    /// (the environment is the process's: set in a child, it never leaks into other tests).
    const CHILD: &str = "PLUE_ENGINE_CLIENT_TEST_CHILD";

    #[test]
    fn the_environments_proxies_are_never_used_an_explicit_one_is() {
        if let Ok(engine) = std::env::var(CHILD) {
            // In the child: every proxy variable points at the recorder.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = build(&engine, None, None).unwrap();
                let answer = client.post(format!("{engine}/x")).send().await.unwrap();
                assert_eq!(answer.status(), 200);
            });
            return;
        }
        let (engine, engine_seen) = recording_listener();
        let (proxy, proxy_seen) = recording_listener();
        let proxy_url = format!("http://{proxy}");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "engine_client::tests::the_environments_proxies_are_never_used_an_explicit_one_is",
                "--test-threads=1",
            ])
            .env(CHILD, format!("http://{engine}"));
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            child.env(name, &proxy_url);
            child.env(name.to_ascii_lowercase(), &proxy_url);
        }
        for name in ["NO_PROXY", "no_proxy"] {
            child.env_remove(name);
        }
        let out = child.output().unwrap();
        assert!(
            out.status.success(),
            "the child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            engine_seen.load(Ordering::SeqCst),
            1,
            "the engine was asked"
        );
        assert_eq!(
            proxy_seen.load(Ordering::SeqCst),
            0,
            "the environment's proxy was never connected to"
        );

        // The operator's proxy, given explicitly, carries the requests (here it answers
        // them itself: the engine is not reached).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let explicit = EngineProxy::parse(&proxy_url).unwrap();
        runtime.block_on(async {
            let client = build(&format!("http://{engine}"), Some(&explicit), None).unwrap();
            let answer = client
                .post(format!("http://{engine}/y"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
        });
        assert_eq!(proxy_seen.load(Ordering::SeqCst), 1);
        assert_eq!(engine_seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_socket_carries_every_request_whatever_the_url_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Port 1 of localhost answers nothing: only the socket can.
            let client = build("http://localhost:1", None, Some(&path)).unwrap();
            let answer = client.post("http://localhost:1/x").send().await.unwrap();
            assert_eq!(answer.status(), 200);
        });
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_proxy_url_has_a_proxy_scheme() {
        for good in ["http://proxy:3128", "https://p.example:443"] {
            assert_eq!(EngineProxy::parse(good).unwrap().url(), good);
        }
        for bad in ["proxy:3128", "ftp://p", "socks5://p:1080", "http://p x", ""] {
            assert!(EngineProxy::parse(bad).is_err(), "{bad}");
        }
    }
}
