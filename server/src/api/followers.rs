//! Who is following live streams (the API's log SSE and the dashboard's `/live` hints): a
//! count of open followers per step run, per client and in all, with caps; who a client
//! is (its user, or its address as seen through trusted proxies); the leash that ends a
//! stream; and the pacing of an idle follower.
//!
//! Invariants:
//! - A follower is counted from [`Followers::enter`] until its [`FollowerGuard`] is
//!   dropped. The guard is held by the task of the stream's [`leash`], which lets go of it
//!   when the stream is dropped (hyper drops it as soon as the connection is gone), at an
//!   anonymous stream's `anonymous_lifetime`, and when the client took nothing for
//!   `idle_send_timeout` — by a timer of its own, since hyper stops polling the stream of a
//!   client that stopped reading. So [`Followers::live`] counts live, reading followers
//!   and returns to 0 when every client has left. Entering past a cap changes nothing and
//!   says which cap was hit. The counts sit behind one short `std` mutex never held across
//!   an `.await`.
//! - A signed-in client ([`Who::User`]: a valid bearer token or dashboard session) is
//!   counted by its user id ([`Who::of_caller`]), wherever it connects from and whichever
//!   of its tokens it uses: a user's tokens are one client, so making more buys no places.
//!   An anonymous client is counted by its address (an IPv6 address by its /64, which one
//!   host usually holds whole).
//! - Of each step's places and of the engine's, a share is reserved for signed-in clients:
//!   anonymous clients together never hold more than `per_step - reserved_per_step` of a
//!   step or `total - reserved_total` in all, so however many addresses they come from, a
//!   signed-in user can follow a log; and one user holds at most half of a reserved share
//!   (besides `per_client_step` and `per_client`), so no one user locks the others
//!   out. An anonymous stream lives at most `anonymous_lifetime` (then ends; the client
//!   resumes with `Last-Event-ID` and competes for a place again).
//! - `X-Forwarded-For` is read only when the direct peer is a trusted proxy
//!   ([`TrustedProxies`]), and then only from the right up to the first address that is
//!   not a trusted proxy: whatever a client writes into the header itself sits left of
//!   that and is never read.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use futures::{Future, Stream};
use ipnet::IpNet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::Caller;

/// Most live followers of one step run (a whole team watching one step fits easily).
pub const MAX_FOLLOWERS_PER_STEP: usize = 64;
/// Of each step's places, those only signed-in clients may take.
pub const RESERVED_PER_STEP: usize = 16;
/// Most live followers of one client — token or address — in all (a browser with many tabs
/// fits; a script opening thousands does not).
pub const MAX_FOLLOWERS_PER_CLIENT: usize = 32;
/// Most live followers of one client on one step.
pub const MAX_FOLLOWERS_PER_CLIENT_STEP: usize = 8;
/// Most live followers in all, whatever their steps and clients.
pub const MAX_FOLLOWERS: usize = 1024;
/// Of all places, those only signed-in clients may take.
pub const RESERVED_TOTAL: usize = 256;
/// The longest an anonymous stream lives before it ends (its client reconnects).
pub const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The longest a stream waits for its client to take what it sends (the server cannot
/// write: the client stopped reading): then the stream ends and frees its place, whoever
/// holds it. A reading client takes a heartbeat every [`HEARTBEAT`] (the timeout is at least
/// three heartbeats).
pub const IDLE_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an idle stream sends a comment: a write is what tells the server a client that
/// vanished without closing its connection is gone.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The first re-check of an idle step's logs without a notification, doubled each time
/// nothing came, up to [`MAX_IDLE_BACKOFF`].
pub const MIN_IDLE_BACKOFF: Duration = Duration::from_millis(250);
/// The longest an idle follower goes without re-reading the store by itself (a line stored
/// by another engine replica, whose notification this engine never sees, waits this long).
pub const MAX_IDLE_BACKOFF: Duration = Duration::from_secs(4);

/// The caps and pacing; [`Default`] gives the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLimits {
    pub per_step: usize,
    /// Places of each step anonymous clients never take (0: none reserved).
    pub reserved_per_step: usize,
    pub per_client: usize,
    pub per_client_step: usize,
    pub total: usize,
    /// Places in all anonymous clients never take.
    pub reserved_total: usize,
    pub anonymous_lifetime: Duration,
    /// See [`IDLE_SEND_TIMEOUT`].
    pub idle_send_timeout: Duration,
    pub heartbeat: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for FollowerLimits {
    fn default() -> Self {
        FollowerLimits {
            per_step: MAX_FOLLOWERS_PER_STEP,
            reserved_per_step: RESERVED_PER_STEP,
            per_client: MAX_FOLLOWERS_PER_CLIENT,
            per_client_step: MAX_FOLLOWERS_PER_CLIENT_STEP,
            total: MAX_FOLLOWERS,
            reserved_total: RESERVED_TOTAL,
            anonymous_lifetime: ANONYMOUS_LIFETIME,
            idle_send_timeout: IDLE_SEND_TIMEOUT,
            heartbeat: HEARTBEAT,
            min_backoff: MIN_IDLE_BACKOFF,
            max_backoff: MAX_IDLE_BACKOFF,
        }
    }
}

impl FollowerLimits {
    /// The limits of an engine with no signed-in users (no admin token, so no tokens):
    /// nothing is reserved for them.
    pub fn without_sign_in() -> FollowerLimits {
        FollowerLimits {
            reserved_per_step: 0,
            reserved_total: 0,
            ..FollowerLimits::default()
        }
    }

    /// The most places one client holds of one step: `per_client_step`, and a signed-in
    /// owner at most half of the reserved share, so that no one owner takes it all.
    fn per_client_step_of(&self, signed_in: bool) -> usize {
        if signed_in && self.reserved_per_step > 0 {
            self.per_client_step
                .min((self.reserved_per_step / 2).max(1))
        } else {
            self.per_client_step
        }
    }

    /// The most places one client holds in all: as [`Self::per_client_step_of`], of the
    /// engine's places.
    fn per_client_of(&self, signed_in: bool) -> usize {
        if signed_in && self.reserved_total > 0 {
            self.per_client.min((self.reserved_total / 2).max(1))
        } else {
            self.per_client
        }
    }

    /// The wait after `current` passed with nothing new.
    pub fn next_backoff(&self, current: Duration) -> Duration {
        (current * 2).clamp(self.min_backoff, self.max_backoff.max(self.min_backoff))
    }
}

/// Which cap refused a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The step run already has `per_step` followers.
    #[error("this step already has {0} live followers; try again later")]
    Step(usize),
    /// Anonymous clients already hold every place of the step open to them.
    #[error(
        "the {0} places of this step open to anonymous clients are taken; sign in (an API \
         token) to follow it, or try again later"
    )]
    AnonymousStep(usize),
    /// The client already has `per_client` followers.
    #[error("this client already follows {0} streams; close one first")]
    Client(usize),
    /// The client already follows this step `per_client_step` times.
    #[error("this client already follows this step {0} times; close one first")]
    ClientStep(usize),
    /// The engine already serves `total` followers.
    #[error("this engine already serves {0} live followers; try again later")]
    Total(usize),
    /// Anonymous clients already hold every place of the engine open to them.
    #[error(
        "the {0} live-follower places open to anonymous clients are taken; sign in (an API \
         token) to follow, or try again later"
    )]
    AnonymousTotal(usize),
}

/// Who a follower is, as the caps count it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// A signed-in user, by id: all of its tokens and sessions are one client.
    User(i64),
    /// An anonymous client: its address (an IPv6 one cut to its /64), unknown when the
    /// server records none.
    Anonymous(Option<IpAddr>),
}

impl Who {
    /// An anonymous client at `address`.
    pub fn anonymous(address: Option<IpAddr>) -> Who {
        Who::Anonymous(address.map(|address| match address.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        }))
    }

    pub fn signed_in(&self) -> bool {
        matches!(self, Who::User(_))
    }

    /// Who `caller` is, as the caps count it: its user, else anonymous at `address` (on an
    /// engine with no admin token nobody signs in, and everyone is anonymous).
    pub fn of_caller(caller: &Caller, address: Option<IpAddr>) -> Who {
        match caller.user_id() {
            Some(id) => Who::User(id),
            None => Who::anonymous(address),
        }
    }
}

/// The live followers of one engine.
#[derive(Debug, Default)]
pub struct Followers {
    limits: FollowerLimits,
    proxies: TrustedProxies,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    anonymous: usize,
    by_step: HashMap<i64, Places>,
    by_client: HashMap<Who, usize>,
    by_client_step: HashMap<(Who, i64), usize>,
}

/// The followers of one step: all, and the anonymous among them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Places {
    all: usize,
    anonymous: usize,
}

impl Followers {
    pub fn new(limits: FollowerLimits) -> Followers {
        Followers {
            limits,
            proxies: TrustedProxies::default(),
            counts: Mutex::default(),
        }
    }

    /// Reads `X-Forwarded-For` from these proxies (see [`TrustedProxies`]).
    pub fn trusting(mut self, proxies: TrustedProxies) -> Followers {
        self.proxies = proxies;
        self
    }

    pub fn limits(&self) -> &FollowerLimits {
        &self.limits
    }

    /// The address of the client behind a request from `peer` (see [`TrustedProxies`]).
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        peer.map(|peer| self.proxies.client(peer.ip(), headers))
    }

    /// Live followers in all (a gauge for tests and operators).
    pub fn live(&self) -> usize {
        self.lock().total
    }

    /// Counts a new follower of `step_run_id` by `who`, or says which cap it would pass.
    pub fn enter(self: &Arc<Self>, step_run_id: i64, who: Who) -> Result<FollowerGuard, Refused> {
        let limits = self.limits;
        let anonymous = !who.signed_in();
        let mut counts = self.lock();
        let step = counts
            .by_step
            .get(&step_run_id)
            .copied()
            .unwrap_or_default();
        let open_step = limits.per_step.saturating_sub(limits.reserved_per_step);
        let open_total = limits.total.saturating_sub(limits.reserved_total);
        if counts.total >= limits.total {
            return Err(Refused::Total(limits.total));
        }
        if anonymous && counts.anonymous >= open_total {
            return Err(Refused::AnonymousTotal(open_total));
        }
        if step.all >= limits.per_step {
            return Err(Refused::Step(limits.per_step));
        }
        if anonymous && step.anonymous >= open_step {
            return Err(Refused::AnonymousStep(open_step));
        }
        // An anonymous client with no known address is counted by the caps above only.
        let counted = !matches!(who, Who::Anonymous(None));
        if counted {
            let per_client = limits.per_client_of(!anonymous);
            if counts.by_client.get(&who).copied().unwrap_or(0) >= per_client {
                return Err(Refused::Client(per_client));
            }
            let key = (who.clone(), step_run_id);
            let per_client_step = limits.per_client_step_of(!anonymous);
            if counts.by_client_step.get(&key).copied().unwrap_or(0) >= per_client_step {
                return Err(Refused::ClientStep(per_client_step));
            }
            *counts.by_client.entry(who.clone()).or_default() += 1;
            *counts.by_client_step.entry(key).or_default() += 1;
        }
        let step = counts.by_step.entry(step_run_id).or_default();
        step.all += 1;
        step.anonymous += usize::from(anonymous);
        counts.total += 1;
        counts.anonymous += usize::from(anonymous);
        Ok(FollowerGuard {
            followers: self.clone(),
            step_run_id,
            who,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is complete
        // before the lock is released.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One counted follower; dropping it un-counts it.
#[derive(Debug)]
pub struct FollowerGuard {
    followers: Arc<Followers>,
    step_run_id: i64,
    who: Who,
}

impl FollowerGuard {
    /// How long this follower's stream may live: anonymous ones end after
    /// [`FollowerLimits::anonymous_lifetime`], signed-in ones never.
    pub fn lifetime(&self) -> Option<Duration> {
        (!self.who.signed_in()).then_some(self.followers.limits.anonymous_lifetime)
    }
}

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        let anonymous = usize::from(!self.who.signed_in());
        let mut counts = self.followers.lock();
        counts.total = counts.total.saturating_sub(1);
        counts.anonymous = counts.anonymous.saturating_sub(anonymous);
        if let Some(step) = counts.by_step.get_mut(&self.step_run_id) {
            step.all = step.all.saturating_sub(1);
            step.anonymous = step.anonymous.saturating_sub(anonymous);
            if step.all == 0 {
                counts.by_step.remove(&self.step_run_id);
            }
        }
        if !matches!(self.who, Who::Anonymous(None)) {
            decrement(&mut counts.by_client, self.who.clone());
            decrement(
                &mut counts.by_client_step,
                (self.who.clone(), self.step_run_id),
            );
        }
    }
}

/// A follower's stream on a leash: the stream ends, and its [`FollowerGuard`] frees the
/// place, at the follower's lifetime or once the client took nothing for
/// [`FollowerLimits::idle_send_timeout`] — enforced by a task of its own, since hyper stops
/// polling the body of a client that stopped reading (its socket is full) and a deadline
/// inside the stream would then never be looked at.
pub fn leash<S: Stream + Send + 'static>(
    stream: S,
    guard: FollowerGuard,
) -> impl Stream<Item = S::Item> + Send + 'static {
    let limits = guard.followers.limits;
    // A reading client is polled at least every heartbeat (whose timer wakes the body):
    // the idle timeout leaves room for three.
    let idle = limits
        .idle_send_timeout
        .max(limits.heartbeat.saturating_mul(3));
    let later = |from: Instant, by: Duration| {
        from.checked_add(by)
            .unwrap_or_else(|| from + Duration::from_secs(100 * 365 * 24 * 3600))
    };
    let ends_at = guard
        .lifetime()
        .map(|lifetime| later(Instant::now(), lifetime));
    let polled = Arc::new(Mutex::new(Instant::now()));
    let released = CancellationToken::new();
    let keeper = tokio::spawn({
        let polled = polled.clone();
        let released = released.clone();
        async move {
            loop {
                let last = *polled.lock().unwrap_or_else(|e| e.into_inner());
                let idle_until = later(last, idle);
                let until = ends_at.map_or(idle_until, |ends_at| ends_at.min(idle_until));
                if Instant::now() >= until {
                    break;
                }
                tokio::time::sleep_until(until).await;
            }
            drop(guard);
            released.cancel();
        }
    });
    Leashed {
        stream: Box::pin(stream),
        released: Box::pin(released.cancelled_owned()),
        polled,
        _keeper: keeper.abort_handle().into(),
    }
}

/// The stream [`leash`] returns.
struct Leashed<S> {
    stream: std::pin::Pin<Box<S>>,
    /// Done when the keeper let go of the guard: the stream ends.
    released: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// When hyper last asked for more (it asks only when it can write).
    polled: Arc<Mutex<Instant>>,
    /// The task holding the guard, aborted (the guard dropped) with the stream.
    _keeper: AbortOnDrop,
}

impl<S: Stream> Stream for Leashed<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        *self.polled.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if self.released.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        self.stream.as_mut().poll_next(cx)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl From<tokio::task::AbortHandle> for AbortOnDrop {
    fn from(handle: tokio::task::AbortHandle) -> Self {
        AbortOnDrop(handle)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lowers `key`'s count, removing it at 0 so the maps hold only live keys.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&key);
        }
    }
}

/// The proxies whose `X-Forwarded-For` the engine believes (`plue serve --trusted-proxy`),
/// as networks. None by default: the client is the direct peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client behind a request from `peer`: `peer` itself unless it is a trusted
    /// proxy; then, reading `X-Forwarded-For` (every such header, in order, as one list)
    /// from the right, the first address that is not a trusted proxy. An entry that is not
    /// an address stops the walk at the trusted hop right of it (the proxies wrote
    /// something unexpected: the client is the last one believed).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for hop in value.rsplit(',') {
                let Some(address) = parse_hop(hop) else {
                    return client;
                };
                client = address;
                if !self.trusts(address) {
                    return client;
                }
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5`,
/// `[::1]:5`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    IpAddr::from_str(hop)
        .or_else(|_| SocketAddr::from_str(hop).map(|s| s.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// A `--trusted-proxy` value that is neither a network nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a network (like 10.0.0.0/8 or fd00::/8) or an address")]
pub struct NotANetwork(pub String);

/// A `--trusted-proxy` value: a network (`10.0.0.0/8`, `fd00::/8`) or one address.
pub fn parse_trusted_proxy(text: &str) -> Result<IpNet, NotANetwork> {
    IpNet::from_str(text.trim())
        .or_else(|_| IpAddr::from_str(text.trim()).map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| NotANetwork(text.to_owned()))
}

#[cfg(test)]
#[path = "followers_tests.rs"]
mod tests;
