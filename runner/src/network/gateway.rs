//! The shared egress proxy (`plue egress-proxy`): the way out of allow-list steps on
//! runners that cannot give a step a network namespace of its own — a Kubernetes class
//! with `egress_proxy` set, whose pods a NetworkPolicy lets reach only the engine and
//! this proxy (no DNS: the names a step's list allows are resolved here, never in the pod).
//!
//! Such a runner serves the step its own proxy on the pod's loopback (the same code as in
//! a namespace: the step's list checked, refusals in its log and counted), which connects
//! to each allowed target through this proxy with the credential the engine minted for the
//! attempt (`Assignment::egress_grant`, `upstream.rs`); the step never holds it. Each
//! connection here must carry it as `Proxy-Authorization: Basic ...`; the proxy asks the
//! engine ([`Grants::check`]) which attempt holds it and what its allow-list is, giving the
//! connection's peer address, on every connection (nothing is cached, so an attempt that
//! ended is refused at once, and so is a credential replayed from any address but that of
//! the pod whose runner holds the attempt: the engine knows each pod's address from its
//! watch), then serves
//! the connection with the very code of a runner's own proxy (`proxy.rs`, `sni.rs`,
//! `http.rs`, `allow.rs`): CONNECT and plain HTTP, every request on the connection checked
//! (one plain request per connection), the TLS server name checked against the host, and
//! no listed name leading to loopback, link-local or — here — the cluster's own networks
//! (`denied`: the pod and service ranges, which not even an address the list names
//! reaches; nor a link-local one, the cloud metadata service's, nor the unspecified
//! `0.0.0.0`/`::`, which lead to this host's loopback, whatever is denied).
//!
//! Invariants:
//! - nothing leaves before the connection's credential was checked by the engine: no
//!   credential, one the engine does not know, another scheme or several are answered
//!   `407` and nothing is connected to; an engine that does not answer is `503`;
//! - a credential is bound to its pod: the engine is asked with the connection's peer
//!   address (IPv4-mapped addresses as IPv4) and answers only for the pod of the runner
//!   that claimed the attempt, so a leaked credential used from another pod is `407`;
//! - a credential grants exactly its attempt's list: another attempt's grant is checked
//!   against that attempt's own list;
//! - the credential is never forwarded (`Proxy-Authorization` is hop-by-hop in
//!   `proxy.rs`);
//! - one client address (a pod) holds at most as many connections as a runner's proxy
//!   makes at once (`MAX_PER_PEER`): past that they are closed, so a step going around
//!   its runner's proxy cannot take every slot from the cluster's other steps;
//! - what it refuses is answered `403` (the runner's proxy then refuses the step's request,
//!   in the step's log) and logged here with the attempt's id.
//!
//! What it does not do: confine the step — on a pod the step shares the pod's network,
//! and only the NetworkPolicy (the chart's) keeps it from going around the runner's proxy
//! and this one (where, without the credential, it gets `407`).

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::allow::AllowList;
use super::egress::{Cidr, Shared};
use super::proxy;
use plue_types::protocol::Stream;

/// The most connections served at once (all the cluster's allow-list steps share it).
const MAX_CONNECTIONS: usize = 1024;
/// The most of them one client address holds: a runner's own proxy (`proxy.rs`'s
/// `MAX_CONNECTIONS`) never has more connections at once than this, so one pod (a step
/// going around its runner's proxy, with no credential at all) cannot hold every slot and
/// starve the cluster's other steps.
const MAX_PER_PEER: usize = 128;

/// Networks no connection reaches whatever the operator denies besides: link-local (the
/// cloud metadata service at 169.254.169.254), the metadata services elsewhere (AWS's
/// IPv6 one, Alibaba Cloud's), and the unspecified addresses, which Linux connects to the
/// proxy's own loopback (`0.0.0.0` in a list would otherwise go around a denied
/// `127.0.0.0/8`).
const NEVER: [&str; 6] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
    "0.0.0.0/8",
    "::/128",
];

/// What the engine answers for a credential it knows and whose attempt still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub attempt_id: i64,
    /// The attempt's allow-list, as its plan gave it.
    pub hosts: Vec<String>,
}

/// The engine's side of the proxy: which attempt a credential is.
/// `credential` is the `Basic` credential as the client sent it (base64 of
/// `attempt:<grant>`); the engine decodes and checks it.
pub trait Grants: Send + Sync + 'static {
    /// The attempt holding `credential` when `peer`, the connection's address, is its
    /// runner's pod; `Ok(None)` when there is none (unknown, forged, its attempt ended, or
    /// used from another address); `Err` when the engine could not be asked.
    fn check(
        &self,
        credential: &str,
        peer: IpAddr,
    ) -> impl Future<Output = Result<Option<Grant>, String>> + Send;
}

/// Serves `listener` until `stop`, every connection as the module says.
pub async fn serve<G: Grants>(
    listener: TcpListener,
    grants: Arc<G>,
    denied: Vec<Cidr>,
    stop: CancellationToken,
) {
    let denied = Arc::new(never(denied));
    let peers = Peers::default();
    proxy::accept_bounded(listener, MAX_CONNECTIONS, stop, |client, address| {
        // Past its share the connection is closed at once, its slot given back.
        let Some(held) = peers.hold(address.ip()) else {
            tracing::debug!(peer = %address.ip(), "egress proxy: too many connections");
            return None;
        };
        let (grants, denied) = (grants.clone(), denied.clone());
        let peer = address.ip().to_canonical();
        Some(async move {
            let _held = held;
            connection(client, peer, grants, denied).await
        })
    })
    .await;
}

/// How many connections each client address holds.
#[derive(Default, Clone)]
struct Peers(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection of a client address, given back when dropped.
struct Held(Peers, std::net::IpAddr);

impl Peers {
    /// One more connection of `peer`, unless it holds [`MAX_PER_PEER`] already.
    fn hold(&self, peer: std::net::IpAddr) -> Option<Held> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer).or_insert(0);
        if *count >= MAX_PER_PEER {
            return None;
        }
        *count += 1;
        Some(Held(self.clone(), peer))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// [`NEVER`] and the operator's `denied`: the cloud metadata services, the rest of
/// link-local and the unspecified addresses (this host's loopback) are never reached, even
/// for an address a list names (a runner's own proxy lets a listed address through; here
/// the node's credentials would be behind it).
fn never(denied: Vec<Cidr>) -> Vec<Cidr> {
    let mut never: Vec<Cidr> = NEVER
        .iter()
        .filter_map(|net| Cidr::parse(net).ok())
        .collect();
    never.extend(denied);
    never
}

/// The `Basic` credential of a head's one `Proxy-Authorization` header.
fn credential(head: &[u8]) -> Option<String> {
    let [value] = proxy::proxy_authorization(head).try_into().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("basic") && !credential.is_empty()).then(|| credential.to_owned())
}

async fn connection<G: Grants>(
    mut client: TcpStream,
    peer: IpAddr,
    grants: Arc<G>,
    denied: Arc<Vec<Cidr>>,
) -> std::io::Result<()> {
    let Some((buffer, head_end)) = proxy::request_head(&mut client).await? else {
        return Ok(());
    };
    let Some(credential) = credential(&buffer[..head_end]) else {
        return ask_for_credential(&mut client, "this proxy needs the step's own credential").await;
    };
    let grant = match grants.check(&credential, peer).await {
        Ok(Some(grant)) => grant,
        Ok(None) => {
            tracing::info!(%peer, "egress proxy: a credential refused by the engine");
            let why = "the credential is unknown, its attempt has ended, or it is not this \
                       pod's";
            return ask_for_credential(&mut client, why).await;
        }
        Err(err) => {
            tracing::warn!(%err, "egress proxy: the engine did not answer");
            let why = "the engine could not be asked who this is";
            return proxy::answer(&mut client, "503 Service Unavailable", why).await;
        }
    };
    let allow = match AllowList::parse(&grant.hosts) {
        Ok(allow) => allow,
        Err(err) => {
            let why = format!("the attempt's allow-list: {err}");
            return proxy::answer(&mut client, "403 Forbidden", &why).await;
        }
    };
    let (log, mut lines) = mpsc::channel::<(Stream, String)>(16);
    let attempt_id = grant.attempt_id;
    let logger = tokio::spawn(async move {
        while let Some((_, line)) = lines.recv().await {
            tracing::info!(attempt_id, "egress proxy: {line}");
        }
    });
    let shared = Shared {
        allow,
        log,
        refused: Arc::new(AtomicU64::new(0)),
        denied,
        upstream: None,
    };
    let served = proxy::serve_head(client, &shared, buffer, head_end).await;
    drop(shared);
    let _ = logger.await;
    served
}

async fn ask_for_credential(client: &mut TcpStream, why: &str) -> std::io::Result<()> {
    let body = format!("plue: {why}\n");
    let response = format!(
        "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic \
         realm=\"plue\"\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: \
         close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests;
