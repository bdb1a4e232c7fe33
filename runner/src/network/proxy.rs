//! The egress proxy an allow-list step reaches on `127.0.0.1:<port>` in its namespace:
//! `CONNECT host:port` tunnels and plain `http://` requests in absolute form, one target
//! and one plain request per connection, each matched against the step's [`AllowList`]
//! before the runner resolves the name itself (in its own namespace) and connects.
//!
//! Invariants:
//! - nothing leaves for a target the list does not allow: the request line is read
//!   whole (bounded, with a deadline) before any outbound connection is made, and a
//!   refused one is answered `403`, counted, and said in the step's log as
//!   `network: refused <host>:<port> (not in this step's allow-list)`;
//! - a tunnel whose first bytes are a TLS ClientHello must name (SNI) an allowed host too,
//!   or carry no name; one the reader cannot follow is refused (`sni`);
//! - a tunnel that is not TLS but starts with what a server would read as an HTTP request
//!   line is held to the plain-request rules below, with the tunnel's host and port
//!   ([`http::sniff`]); anything else (SSH, a binary protocol) is carried as it is;
//! - an allowed name reaches no address inside the runner host — loopback, link-local
//!   (the cloud metadata service), unspecified — wherever its DNS points it ([`may_reach`]);
//!   only an IPv4 address the list names, or `localhost`, does; and nothing, listed or
//!   not, reaches a network of `Shared::denied` (the cluster's, for `gateway.rs`);
//! - with an upstream (a runner in a pod, `upstream.rs`) nothing is resolved or connected
//!   here: every allowed target is a `CONNECT` through the cluster's egress proxy, whose
//!   `403` is a refusal of the step like the list's own;
//! - a plain request is sent to the allowed host only, its request line rewritten to
//!   origin form, its `Host` header (if any, one) naming that same host and port, its
//!   header lines well formed (token names, no control bytes, no folding), and with
//!   `Connection: close`; it is the connection's only request: its body goes exactly as
//!   its one framing gives (a head framed two ways is refused), nothing the client sends
//!   after it is forwarded, and the client is told `Connection: close` and closed after
//!   the response (`http.rs`) — so no second request names another `Host` behind a
//!   shared front, whether the upstream honours `Connection: close` or not;
//! - at most [`MAX_CONNECTIONS`] at a time; every task ends when [`Proxy::finish`] does,
//!   and with them every copy of the log sender they hold.
//!
//! Why one file past ~600 lines: CONNECT tunnels and plain HTTP (in a tunnel too) share
//! the request reading, the allow-list check, the SNI peek and the refusal reporting;
//! split, the one check would be two. What is forwarded once checked is `http.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Sender;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::allow::AllowList;
use super::egress::{note_refused, Cidr, Shared};
use super::http::{self, Body, Sniffed};
use super::sni::{self, Hello};
use super::upstream::Upstream;
use plue_types::protocol::Stream;

/// The most connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 128;
/// The longest request head read before the target is known.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head (or its ClientHello).
const HEAD_DEADLINE: Duration = Duration::from_secs(30);
/// How long resolving and connecting to an allowed target may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// A running proxy. [`Proxy::finish`] stops it and says how many connections it refused.
pub(super) struct Proxy {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The DNS stub's task, when the namespace has one (`dns.rs`).
    dns: Option<tokio::task::JoinHandle<()>>,
    refused: Arc<AtomicU64>,
}

impl Proxy {
    /// Serves `listener` (bound in the step's namespace) until [`Proxy::finish`].
    #[cfg(test)]
    pub(super) fn serve(
        listener: TcpListener,
        dns: Option<tokio::net::UdpSocket>,
        allow: AllowList,
        log: Sender<(Stream, String)>,
    ) -> Proxy {
        Proxy::serve_through(listener, dns, allow, log, None)
    }

    /// Serves `listener` (bound in the step's namespace, or on the pod's loopback) until
    /// [`Proxy::finish`], connecting through `upstream` (the cluster's egress proxy, with the
    /// attempt's credential) instead of by itself when there is one.
    pub(super) fn serve_through(
        listener: TcpListener,
        dns: Option<tokio::net::UdpSocket>,
        allow: AllowList,
        log: Sender<(Stream, String)>,
        upstream: Option<Upstream>,
    ) -> Proxy {
        let stop = CancellationToken::new();
        let refused = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            allow,
            log,
            refused: refused.clone(),
            denied: Arc::new(Vec::new()),
            upstream,
        });
        let dns =
            dns.map(|socket| tokio::spawn(super::dns::serve(socket, shared.clone(), stop.clone())));
        let task = tokio::spawn(accept_loop(listener, shared, stop.clone()));
        Proxy {
            stop,
            task,
            dns,
            refused,
        }
    }

    /// Stops accepting, ends every connection, and returns how many were refused.
    pub(super) async fn finish(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        if let Some(dns) = self.dns {
            let _ = dns.await;
        }
        self.refused.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    accept_bounded(listener, MAX_CONNECTIONS, stop, |client, _| {
        let shared = shared.clone();
        Some(async move { serve(client, &shared).await })
    })
    .await;
}

/// Accepts on `listener` until `stop`, serving at most `max` connections at once, each by
/// the future `connection` makes of it (`None`: closed at once, its slot given back): the
/// accept loop of a runner's proxy and of the cluster's. Every connection's task ends
/// when this does.
pub(super) async fn accept_bounded<F, Served>(
    listener: TcpListener,
    max: usize,
    stop: CancellationToken,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Option<Served>,
    Served: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the finished ones so the set stays as large as what runs.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((client, address)) => {
                let Some(served) = connection(client, address) else {
                    continue;
                };
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(err) = served.await {
                        tracing::debug!(%err, "egress proxy connection");
                    }
                });
            }
            Err(err) => tracing::debug!(%err, "egress proxy accept"),
        }
    }
    connections.shutdown().await;
}

/// One client connection: read its target, check it, then tunnel or forward.
async fn serve(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    match request_head(&mut client).await? {
        Some((buffer, head_end)) => serve_head(client, shared, buffer, head_end).await,
        None => Ok(()),
    }
}

/// Reads a connection's request head: the bytes read and where the head ends, or `None`
/// when the client was answered already (too long, cut off, too slow).
pub(super) async fn request_head(
    client: &mut TcpStream,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut buffer = Vec::with_capacity(4096);
    let head_end = match tokio::time::timeout(HEAD_DEADLINE, read_head(client, &mut buffer)).await {
        Ok(Ok(Some(end))) => end,
        Ok(Ok(None)) => {
            answer(
                client,
                "400 Bad Request",
                "the request head is too long or cut off",
            )
            .await?;
            return Ok(None);
        }
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            answer(client, "408 Request Timeout", "no request head in time").await?;
            return Ok(None);
        }
    };
    Ok(Some((buffer, head_end)))
}

/// The values of the `Proxy-Authorization` headers of a request head (which is never
/// forwarded: [`forwarded_headers`] drops it).
pub(super) fn proxy_authorization(head: &[u8]) -> Vec<String> {
    match request_line(head) {
        Some((_, _, _, line_end)) => header_values(&head[line_end..], "proxy-authorization"),
        None => Vec::new(),
    }
}

/// The rest of [`serve`] once the head (`buffer[..head_end]`) is read: parse and check
/// its target, then tunnel or forward.
pub(super) async fn serve_head(
    mut client: TcpStream,
    shared: &Shared,
    mut buffer: Vec<u8>,
    head_end: usize,
) -> std::io::Result<()> {
    let Some(request) = Request::parse(&buffer[..head_end]) else {
        return answer(
            &mut client,
            "400 Bad Request",
            "plue's egress proxy takes CONNECT host:port or an absolute http:// URL with \
             well-formed header lines",
        )
        .await;
    };
    if let Some(refused) = check(&mut client, shared, &request).await {
        return refused;
    }
    if !shared.allow.allows(&request.host, request.port) {
        return refuse(
            &mut client,
            shared,
            &format!("{}:{}", request.host, request.port),
            "not in this step's allow-list",
        )
        .await;
    }
    let connect = async {
        match &shared.upstream {
            Some(through) => through.connect(&request.host, request.port).await,
            None => connect(&request.host, request.port, &shared.denied).await,
        }
    };
    let mut upstream = match tokio::time::timeout(CONNECT_DEADLINE, connect).await {
        Ok(Ok(Some(upstream))) => upstream,
        Ok(Ok(None)) => {
            let why = match shared.upstream {
                Some(_) => {
                    "refused by the cluster's egress proxy: the name leads into the \
                            cluster, to loopback or to link-local addresses"
                }
                None => {
                    "the name resolves only to the runner host's loopback, link-local or \
                         unspecified addresses, or to networks denied"
                }
            };
            let target = format!("{}:{}", request.host, request.port);
            return refuse(&mut client, shared, &target, why).await;
        }
        Ok(Err(err)) => {
            let why = format!("cannot reach {}:{}: {err}", request.host, request.port);
            return answer(&mut client, "502 Bad Gateway", &why).await;
        }
        Err(_) => {
            let why = format!("{}:{} did not answer in time", request.host, request.port);
            return answer(&mut client, "504 Gateway Timeout", &why).await;
        }
    };
    let rest = buffer.split_off(head_end);
    if let (Some(head), Ok(body)) = (request.forwarded_head(), request.framing) {
        return http::exchange(&mut client, &mut upstream, &head, rest, body).await;
    }
    // A tunnel.
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    let first = match tokio::time::timeout(HEAD_DEADLINE, first_bytes(&mut client, rest)).await {
        Ok(first) => first?,
        Err(_) => return Ok(()),
    };
    let target = format!("{}:{}", request.host, request.port);
    let name = match sni::read(&first) {
        Hello::NotTls => return tunnel_plain(client, upstream, shared, &request, first).await,
        Hello::Name(None) | Hello::Incomplete => None,
        Hello::Name(Some(name)) => Some(name),
        Hello::Unreadable => {
            note_refused(shared, &target, "a TLS ClientHello the proxy cannot read").await;
            return Ok(());
        }
    };
    if let Some(name) = name {
        if !shared.allow.allows(&name, request.port) {
            let target = format!("{name}:{}", request.port);
            note_refused(
                shared,
                &target,
                "TLS server name not in this step's allow-list",
            )
            .await;
            return Ok(());
        }
    }
    upstream.write_all(&first).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The checks of a plain request's head besides its target (one `Host`, naming it; one
/// body framing): `Some` with what answering the client returned when it is refused.
async fn check(
    client: &mut TcpStream,
    shared: &Shared,
    request: &Request,
) -> Option<std::io::Result<()>> {
    if let Some(other) = request.other_host() {
        let why = "a Host header naming another host than the request's";
        return Some(refuse(client, shared, &other, why).await);
    }
    if let Err(why) = request.framing {
        return Some(answer(client, "400 Bad Request", why).await);
    }
    None
}

/// A tunnel to `tunnel`'s target whose first bytes are not TLS: plain HTTP in it is held
/// to a plain request's rules — its `Host` (or absolute target) the tunnel's, one request,
/// framed one way — and is the tunnel's only request; anything else is carried as is.
async fn tunnel_plain(
    mut client: TcpStream,
    mut upstream: TcpStream,
    shared: &Shared,
    tunnel: &Request,
    mut buffer: Vec<u8>,
) -> std::io::Result<()> {
    let target = format!("{}:{}", tunnel.host, tunnel.port);
    let sniffed = async {
        loop {
            match http::sniff(&buffer, MAX_HEAD) {
                Sniffed::More => {}
                other => return Ok(other),
            }
            let mut chunk = [0u8; 4096];
            let read = client.read(&mut chunk).await?;
            if read == 0 {
                return Ok(Sniffed::Other);
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
    };
    let skip = match tokio::time::timeout(HEAD_DEADLINE, sniffed).await {
        Err(_) => return Ok(()),
        Ok(Err(err)) => return Err(err),
        Ok(Ok(Sniffed::Http { skip })) => skip,
        Ok(Ok(_)) => {
            upstream.write_all(&buffer).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            return Ok(());
        }
    };
    buffer.drain(..skip);
    let head_end =
        match tokio::time::timeout(HEAD_DEADLINE, read_head(&mut client, &mut buffer)).await {
            Ok(Ok(Some(end))) => Some(end),
            Ok(Ok(None)) => None,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Ok(()),
        };
    let request = head_end.and_then(|end| {
        Request::parse_in_tunnel(&buffer[..end], &tunnel.host, tunnel.port).map(|r| (r, end))
    });
    let Some((request, head_end)) = request else {
        let why = "plain HTTP in a tunnel that the proxy cannot read";
        return refuse(&mut client, shared, &target, why).await;
    };
    if (request.host.as_str(), request.port) != (tunnel.host.as_str(), tunnel.port) {
        let other = format!("{}:{}", request.host, request.port);
        let why = "a request in a tunnel naming another host than the tunnel's";
        return refuse(&mut client, shared, &other, why).await;
    }
    if let Some(refused) = check(&mut client, shared, &request).await {
        return refused;
    }
    let (Some(head), Ok(body)) = (request.forwarded_head(), request.framing) else {
        return Ok(());
    };
    let rest = buffer.split_off(head_end);
    http::exchange(&mut client, &mut upstream, &head, rest, body).await
}

/// Resolves the allowed `host` (in the runner's namespace) and connects to the first of
/// its addresses that answers among those [`may_reach`] lets through and no `denied`
/// network holds (not even an address the list names); `None` when it has addresses but
/// none of them may be reached.
async fn connect(host: &str, port: u16, denied: &[Cidr]) -> std::io::Result<Option<TcpStream>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last = None;
    let mut any = false;
    let reachable =
        |a: &SocketAddr| may_reach(host, a.ip()) && !denied.iter().any(|net| net.contains(a.ip()));
    for address in found.into_iter().filter(reachable) {
        any = true;
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(Some(stream)),
            Err(err) => last = Some(err),
        }
    }
    match last {
        Some(err) => Err(err),
        None if any => Err(std::io::Error::other("no address answered")),
        None => Ok(None),
    }
}

/// Whether the proxy may connect to `ip` for the allowed `host`. An IPv4 address the list
/// names itself, or the name `localhost`, goes where it says. Any other name never leads
/// to the runner host's loopback, a link-local address (the cloud metadata service at
/// 169.254.169.254), an unspecified (`0.0.0.0` reaches loopback) or a multicast one (an
/// IPv4-mapped or NAT64 address held to the IPv4 one it reaches): what
/// a listed name resolves to is not the list's word — its owner's DNS may rebind it, and a
/// `*.` pattern's subdomains are anyone's who controls that zone.
pub(crate) fn may_reach(host: &str, ip: IpAddr) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.parse::<Ipv4Addr>().is_ok() || host == "localhost" {
        return true;
    }
    match super::egress::canonical(ip) {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.segments()[0] & 0xffc0 == 0xfe80)
        }
    }
}

/// Reads into `buffer` until it holds a whole request head; its length, or `None` when the
/// client stopped or passed [`MAX_HEAD`] first.
async fn read_head(client: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        if buffer.len() >= MAX_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The tunnel's first bytes: enough to know whether they are a ClientHello and what it
/// names (at most one TLS record), starting with what came after the `CONNECT` head.
async fn first_bytes(client: &mut TcpStream, mut first: Vec<u8>) -> std::io::Result<Vec<u8>> {
    while sni::read(&first) == Hello::Incomplete && first.len() < sni::MAX_RECORD {
        let mut chunk = [0u8; 4096];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        first.extend_from_slice(&chunk[..read]);
    }
    Ok(first)
}

async fn refuse(
    client: &mut TcpStream,
    shared: &Shared,
    target: &str,
    why: &str,
) -> std::io::Result<()> {
    note_refused(shared, target, why).await;
    let body = format!("plue: {target} is not in this step's allow-list");
    answer(client, "403 Forbidden", &body).await
}

pub(super) async fn answer(
    client: &mut TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// A request's target, read from its first line.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: String,
    port: u16,
    /// For a plain request: its first line rewritten to origin form (`GET /path HTTP/1.1`).
    origin_form: Option<String>,
    /// For a plain request: its header lines as forwarded, through the blank line —
    /// without hop-by-hop ones, with `Connection: close` ([`forwarded_headers`]).
    headers: Vec<u8>,
    /// For a plain request: the values of its `Host` headers.
    host_headers: Vec<String>,
    /// The port a `Host` header without one means: 80, or in a tunnel the tunnel's.
    default_port: u16,
    /// How its body is framed, or why that is refused ([`http::framing`]); a `CONNECT`'s
    /// is empty.
    framing: Result<Body, &'static str>,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let (method, target, version, line_end) = request_line(head)?;
        if method == "CONNECT" {
            let (host, port) = authority(target, None)?;
            return Some(Request {
                host,
                port,
                origin_form: None,
                headers: Vec::new(),
                host_headers: Vec::new(),
                default_port: port,
                framing: Ok(Body::Empty),
            });
        }
        let (host, port, path) = absolute(target)?;
        Request::plain(head, line_end, (method, &path, version), host, port, 80)
    }

    /// A plain request read inside a tunnel to `host:port`: its target in origin form
    /// (or `*`), or in absolute form (which may name another host: the caller compares).
    fn parse_in_tunnel(head: &[u8], host: &str, port: u16) -> Option<Request> {
        let (method, target, version, line_end) = request_line(head)?;
        if method == "CONNECT" {
            return None;
        }
        let (host, port, path) = if target.starts_with('/') || target == "*" {
            (host.to_owned(), port, target.to_owned())
        } else {
            absolute(target)?
        };
        Request::plain(head, line_end, (method, &path, version), host, port, port)
    }

    fn plain(
        head: &[u8],
        line_end: usize,
        (method, path, version): (&str, &str, &str),
        host: String,
        port: u16,
        default_port: u16,
    ) -> Option<Request> {
        let block = &head[line_end..];
        Some(Request {
            host,
            port,
            origin_form: Some(format!("{method} {path} {version}\r\n")),
            headers: forwarded_headers(block)?,
            host_headers: header_values(block, "host"),
            default_port,
            framing: http::framing(block, version == "HTTP/1.0"),
        })
    }

    /// For a plain request, what goes upstream before its body: the request line in
    /// origin form and the forwarded header lines.
    fn forwarded_head(&self) -> Option<Vec<u8>> {
        let line = self.origin_form.as_ref()?;
        Some([line.as_bytes(), &self.headers].concat())
    }

    /// For a plain request, the authority a `Host` header names when it is not the request
    /// line's — or when there are several: the upstream would route by it (a shared front
    /// serves many names), so it must name the host the list allowed.
    fn other_host(&self) -> Option<String> {
        let same = |value: &str| {
            authority(value.trim(), Some(self.default_port)).is_some_and(|(host, port)| {
                port == self.port
                    && host.strip_suffix('.').unwrap_or(&host)
                        == self.host.strip_suffix('.').unwrap_or(&self.host)
            })
        };
        match self.host_headers.as_slice() {
            [] => None,
            [one] if same(one) => None,
            [one] => Some(one.trim().to_owned()),
            several => Some(
                several
                    .iter()
                    .map(|v| v.trim())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }
}

/// A request line's method, target and version, and where the header lines start: `None`
/// unless it is `METHOD SP target SP HTTP/1.x CRLF` with no control byte in it.
fn request_line(head: &[u8]) -> Option<(&str, &str, &str, usize)> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = std::str::from_utf8(&head[..line_end - 2]).ok()?;
    if line.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return None; // a CR, LF or tab in the line could start a header upstream
    }
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(http::is_tchar)
        || target.is_empty()
    {
        return None;
    }
    Some((method, target, version, line_end))
}

/// An absolute `http://` target's host, port (80 by default) and origin-form path.
fn absolute(target: &str) -> Option<(String, u16, String)> {
    let rest = target.strip_prefix("http://").or_else(|| {
        target
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &target[7..])
    })?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, port) = authority(&rest[..split], Some(80))?;
    let path = match &rest[split..] {
        "" => "/".to_owned(),
        path if path.starts_with('/') => path.to_owned(),
        query => format!("/{query}"),
    };
    Some((host, port, path))
}

/// The values of every header called `name` in `block` (the lines after the first,
/// through the blank line; [`forwarded_headers`] has checked their form).
fn header_values(block: &[u8], name: &str) -> Vec<String> {
    block
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| {
            let (key, value) = std::str::from_utf8(line).ok()?.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.to_owned())
        })
        .collect()
}

/// A plain request's header lines as they are forwarded: every one the client sent but
/// the hop-by-hop ones (`Connection`, `Proxy-Connection`, `Keep-Alive`,
/// `Proxy-Authorization`, `Upgrade`: the connection never becomes another protocol), then
/// `Connection: close`, so the upstream serves this request only (RFC 9112 §9.6: it must
/// not process any further one on the connection; the proxy sends none either). `None`
/// for a head an upstream might read otherwise than the proxy: a bare CR or LF, a folded
/// line, a line without a colon, a name that is not a token, a control byte.
fn forwarded_headers(block: &[u8]) -> Option<Vec<u8>> {
    let lines = block.strip_suffix(b"\r\n")?; // the blank line
    let mut forwarded = Vec::with_capacity(block.len() + 19);
    for line in lines.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r\n")?;
        if line.contains(&b'\r') || line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        let name = &line[..line.iter().position(|b| *b == b':')?];
        // A name with a space or other byte in it ("Host : x") is one an upstream might
        // read otherwise than the proxy; a control byte in a value (NUL) may cut it.
        if name.is_empty()
            || !name.iter().all(|b| http::is_tchar(*b))
            || line
                .iter()
                .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return None;
        }
        let hop = [
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
            "upgrade",
        ]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()));
        if !hop {
            forwarded.extend_from_slice(line);
            forwarded.extend_from_slice(b"\r\n");
        }
    }
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(forwarded)
}

/// `host[:port]` (no user information, no IPv6 literal); `default` when no port is given
/// (a `CONNECT` must give one).
fn authority(text: &str, default: Option<u16>) -> Option<(String, u16)> {
    if text.contains('@') || text.starts_with('[') {
        return None;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (text, default?),
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::{may_reach, Request};

    #[test]
    fn a_listed_name_never_leads_inside_the_runner_host() {
        for inside in [
            "127.0.0.1",
            "127.0.0.2",
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip = inside.parse().unwrap();
            assert!(!may_reach("pypi.org", ip), "pypi.org -> {inside}");
            assert!(!may_reach("a.github.com.", ip), "a.github.com. -> {inside}");
        }
        for outside in ["151.101.0.223", "10.0.0.5", "192.168.1.2", "2a04:4e42::223"] {
            assert!(may_reach("pypi.org", outside.parse().unwrap()), "{outside}");
        }
        let loopback = "127.0.0.1".parse().unwrap();
        assert!(may_reach("127.0.0.1", loopback));
        assert!(may_reach("localhost", loopback));
        assert!(may_reach(
            "169.254.169.254",
            "169.254.169.254".parse().unwrap()
        ));
    }

    #[test]
    fn a_plain_request_names_one_host_and_is_its_connections_only_request() {
        let plain = Request::parse(
            b"GET http://pypi.org/simple HTTP/1.1\r\nHost: PyPI.org.\r\nConnection: keep-alive\r\n\
              Accept: */*\r\nProxy-Authorization: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(plain.other_host(), None);
        assert_eq!(
            String::from_utf8(plain.headers).unwrap(),
            "Host: PyPI.org.\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let bare = Request::parse(b"GET http://pypi.org/ HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(bare.headers, b"Connection: close\r\n\r\n");
        let upgrade = Request::parse(
            b"GET http://pypi.org/ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .unwrap();
        assert_eq!(upgrade.headers, b"Connection: close\r\n\r\n");
        // In a tunnel to pypi.org:8080: a Host without a port means the tunnel's.
        let inside = Request::parse_in_tunnel(
            b"GET /simple HTTP/1.1\r\nHost: pypi.org\r\n\r\n",
            "pypi.org",
            8080,
        )
        .unwrap();
        assert_eq!(
            (inside.host.as_str(), inside.port, inside.other_host()),
            ("pypi.org", 8080, None)
        );
        assert_eq!(
            inside.forwarded_head().unwrap(),
            b"GET /simple HTTP/1.1\r\nHost: pypi.org\r\nConnection: close\r\n\r\n"
        );
        let elsewhere =
            Request::parse_in_tunnel(b"GET http://evil.example/ HTTP/1.1\r\n\r\n", "pypi.org", 80)
                .unwrap();
        assert_eq!(elsewhere.host, "evil.example");
        assert!(Request::parse_in_tunnel(b"CONNECT a:1 HTTP/1.1\r\n\r\n", "a", 1).is_none());
        for (head, other) in [
            (
                &b"GET http://pypi.org/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"[..],
                "evil.example",
            ),
            (
                b"GET http://pypi.org/ HTTP/1.1\r\nhost: pypi.org:8080\r\n\r\n",
                "pypi.org:8080",
            ),
            (
                b"GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\nHOST: evil.example\r\n\r\n",
                "pypi.org, evil.example",
            ),
        ] {
            let request = Request::parse(head).unwrap();
            assert_eq!(request.other_host().as_deref(), Some(other));
        }
        for smuggling in [
            &b"GET http://pypi.org/ HTTP/1.1\r\nX: a\nHost: evil.example\r\n\r\n"[..],
            b"GET http://pypi.org/ HTTP/1.1\r\nX: a\rHost: evil.example\r\n\r\n",
            b"GET http://pypi.org/ HTTP/1.1\r\nX: a\r\n Host: evil.example\r\n\r\n",
            b"GET http://pypi.org/ HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET http://pypi.org/ HTTP/1.1\r\nHost : evil.example\r\n\r\n",
            b"GET http://pypi.org/ HTTP/1.1\r\nHost: pypi.org\x00evil\r\n\r\n",
            b"GET http://pypi.org/ HTTP/1.1\r\n: x\r\n\r\n",
            b"G(T http://pypi.org/ HTTP/1.1\r\n\r\n",
            b"GET http://pypi.org/\nHost:evil.example HTTP/1.1\r\n\r\n",
            b"GET http://pypi.org/\tx HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                Request::parse(smuggling).is_none(),
                "{:?}",
                String::from_utf8_lossy(smuggling)
            );
        }
    }

    #[test]
    fn reads_connect_and_absolute_form_targets() {
        let connect = Request::parse(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (connect.host.as_str(), connect.port, connect.origin_form),
            ("pypi.org", 443, None)
        );
        let plain = Request::parse(b"GET http://Example.com:8080/a?b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(plain.host, "example.com");
        assert_eq!(plain.port, 8080);
        assert_eq!(plain.origin_form.as_deref(), Some("GET /a?b HTTP/1.1\r\n"));
        let bare = Request::parse(b"GET http://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(
            (bare.port, bare.origin_form.as_deref()),
            (80, Some("GET / HTTP/1.0\r\n"))
        );
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
            b"GET http://user@evil.example/ HTTP/1.1\r\n\r\n",
            b"GET http://[::1]:80/ HTTP/1.1\r\n\r\n",
            b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
            b"GET http://a.com/ HTTP/1.1 extra\r\n\r\n",
        ] {
            assert!(
                Request::parse(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
