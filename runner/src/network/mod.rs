//! A step's network policy, enforced: what its processes — a `bash` or `python` step, an
//! `llm` step's tools — can reach.
//!
//! [`confine`] is the one entry point. For [`NetworkPolicy::Open`] it does nothing at all
//! (no namespace, no thread: today's behaviour at no cost). Otherwise it makes the step a
//! network namespace of its own with only loopback up (`namespace.rs`), whose descriptor
//! every process of the step joins before it drops its privileges (`launch`); for an
//! allow-list it also serves an egress proxy into that namespace (`proxy.rs`, `allow.rs`,
//! `sni.rs`, `http.rs`: one plain request per connection) and names it in the step's
//! `HTTPS_PROXY`/`HTTP_PROXY`, and a DNS stub on its `127.0.0.1:53` answering only listed
//! names (`dns.rs`), which the step's `/etc/resolv.conf` names (bound over it in the
//! step's private mount namespace).
//!
//! Invariants:
//! - fail closed: a policy other than `open` that cannot be set up (a runner that is not
//!   root, a host that refuses network namespaces) fails the step with the reason; the
//!   step never runs with the host's network instead;
//! - in the namespace there is no route anywhere but loopback, so DNS, UDP, raw sockets
//!   and a proxy the step names itself reach nothing outside; the only way out is the
//!   runner's proxy, which connects only to what the allow-list names;
//! - the namespace lives as long as the [`StepNetwork`]: [`StepNetwork::finish`] runs
//!   after every process of the step is gone and returns how many connections the proxy
//!   refused (each also a `system` line of the step);
//! - the host's Unix sockets are out of reach through the file system too: `/run` (the
//!   resolvers', the system bus's, a database's, Docker's) and a few well-known socket
//!   directories elsewhere are an empty, read-only tmpfs in the step's mount namespace,
//!   and its `/tmp`, `/var/tmp`, `/dev/shm` are its own (`sockets.rs`, `rooms`).
//!
//! Which policies a runner can enforce is announced as reserved labels claims route by
//! (`capability.rs`), so a step goes only to a runner that enforces its policy.
//!
//! A runner started with `--network-confined-by-pod` (a Kubernetes class whose pods a
//! NetworkPolicy confines) still gives each step a namespace of its own whenever it can
//! make one ([`confine_on_pod`]); with `--egress-proxy URL` (a class with `egress_proxy`,
//! whose pods the chart's NetworkPolicy lets reach only the engine and that proxy, with no
//! DNS: the names the runner needs are in the pod's `/etc/hosts`, resolved by the engine) an
//! allow-list's proxy goes out through the cluster's shared egress proxy (`gateway.rs`,
//! `upstream.rs`) with the credential the engine minted for the attempt, or the step fails
//! when there is none. Only where the runner cannot make a namespace (a pod without
//! `CAP_SYS_ADMIN`) is the pod's NetworkPolicy the whole confinement: a `none` step then
//! runs with the pod's network ([`CONFINED_BY_POD`]), an allow-list step with its runner's
//! proxy on the pod's loopback ([`through_gateway`], [`THROUGH_GATEWAY`]), each said in
//! the step's log.
//!
//! What it does not cover: Unix sockets bound to a path outside those directories (a home
//! directory's: the step's user and file permissions decide there), and the runner's own
//! traffic (the engine, the model's API), which never passes through the step's namespace.

mod allow;
pub mod capability;
mod dns;
mod egress;
pub mod gateway;
mod http;
mod namespace;
mod proxy;
mod sni;
mod sockets;
#[cfg(test)]
mod tests;
mod upstream;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

pub use egress::Cidr;
use plue_types::protocol::{NetworkPolicy, Stream};
pub(crate) use proxy::may_reach;
pub(crate) use sockets::Hidden;

/// Whether a step under `policy` may reach `host:port` — what the runner asks before it
/// connects for the step itself (an `llm` step's HTTP MCP server, `crate::llm::mcp`), with
/// the proxy's own matching; the error says why not.
pub(crate) fn policy_allows(policy: &NetworkPolicy, host: &str, port: u16) -> Result<(), String> {
    match policy {
        NetworkPolicy::Open => Ok(()),
        NetworkPolicy::None => Err(format!(
            "the step's network is 'none': {host}:{port} is out of reach (list it in network=[...])"
        )),
        NetworkPolicy::Allow(hosts) => {
            let list = allow::AllowList::parse(hosts)?;
            if list.allows(host, port) {
                Ok(())
            } else {
                Err(format!(
                    "{host}:{port} is not in the step's network allow-list"
                ))
            }
        }
    }
}

/// The `system` line of a `none` step a pod-confined runner runs without a namespace of its
/// own (`--network-confined-by-pod`, which only the Kubernetes pool gives, to a class with
/// `step_network: pod`): what confines it is the pod's NetworkPolicy, shared by the runner
/// and every step of the class.
pub const CONFINED_BY_POD: &str = "network: 'none' is enforced per pod by this runner class's \
     NetworkPolicy (the engine, the class's egress proxy and egress; no DNS), not per step: \
     this step shares the pod's egress with the runner and the model's API";

/// The `system` line of an allow-list step run through the cluster's egress proxy
/// ([`through_gateway`]): what holds it to its list, and what does not.
pub const THROUGH_GATEWAY: &str = "network: this step's allow-list is enforced by the \
     runner's proxy and the cluster's egress proxy, with a credential only this attempt's \
     runner holds; the step shares its pod's network, which the class's NetworkPolicy lets \
     reach only the engine and that proxy (and the class's egress), with no DNS: names \
     resolve through the proxy";

/// A step's network namespace, shared by every process the step starts.
#[derive(Debug, Clone)]
pub struct Namespace {
    fd: Arc<OwnedFd>,
    /// A `resolv.conf` naming the DNS stub, bound over the step's `/etc/resolv.conf` in its
    /// private mount namespace (allow-lists only).
    resolv_conf: Option<&'static CStr>,
}

impl Namespace {
    /// The descriptor a child `setns`es into.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The file a confined child binds over its `/etc/resolv.conf`, if any.
    pub(crate) fn resolv_conf(&self) -> Option<&'static CStr> {
        self.resolv_conf
    }
}

/// This runner's `resolv.conf` for allow-list steps (`nameserver 127.0.0.1`): made once, in
/// a fresh directory of a random name only the runner can enter, so no step can replace
/// it. `None` when it cannot be made: the step's resolver then has no route, which is safe.
fn resolv_conf() -> Option<&'static CStr> {
    static MADE: std::sync::OnceLock<Option<std::ffi::CString>> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).ok()?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("plue-net-{}-{suffix}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).ok()?;
        let file = dir.join("resolv.conf");
        std::fs::write(&file, "nameserver 127.0.0.1\n").ok()?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).ok()?;
        std::ffi::CString::new(file.into_os_string().into_encoded_bytes()).ok()
    })
    .as_deref()
}

/// A confined step's network: its namespace and, for an allow-list, the proxy — or, on a
/// runner of a class with `egress_proxy`, no namespace and the runner's proxy on the
/// pod's loopback, connecting through the cluster's egress proxy ([`through_gateway`]).
pub struct StepNetwork {
    namespace: Option<Namespace>,
    proxy: Option<(proxy::Proxy, u16)>,
    /// The step's `NO_PROXY`: loopback (its own), but for loopback names the list allows.
    no_proxy: String,
}

/// An allow-list step's network on a runner of a class with `egress_proxy` (`proxy`, an
/// `http://host:port` URL checked by [`egress_proxy_url`]): the step shares the pod's
/// network, which the class's NetworkPolicy confines to the engine and that proxy (no DNS:
/// the step's names are resolved by the cluster's proxy).
/// The runner serves the step its own proxy on the pod's loopback — its list checked and
/// its refusals logged and counted as in a namespace — which reaches each allowed target
/// through the cluster's proxy with the attempt's `grant` (`upstream.rs`), never given to
/// the step. No `NO_PROXY`: every name goes to the runner's proxy. The error is the step's
/// failure reason (no credential, an allow-list the runner does not accept).
pub async fn through_gateway(
    proxy: &str,
    policy: &NetworkPolicy,
    grant: Option<&str>,
    log: &Sender<(Stream, String)>,
) -> Result<StepNetwork, String> {
    let NetworkPolicy::Allow(hosts) = policy else {
        return Err(format!(
            "network: the cluster's egress proxy serves allow-lists only, not '{}'",
            policy_name(policy)
        ));
    };
    let allow = allow::AllowList::parse(hosts)?;
    let upstream = upstream_of(proxy, grant)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("network: the step's proxy on the pod's loopback: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("network: the proxy's address: {e}"))?
        .port();
    let served = proxy::Proxy::serve_through(listener, None, allow, log.clone(), Some(upstream));
    Ok(StepNetwork {
        namespace: None,
        proxy: Some((served, port)),
        no_proxy: String::new(),
    })
}

/// How a step on a Kubernetes class whose pods the class's NetworkPolicy confines gets its
/// network: in a namespace of its own whenever the runner can make one (root, or
/// `CAP_SYS_ADMIN`, in the pod), exactly as on a local runner — an allow-list's proxy then
/// connecting through the cluster's egress proxy (`gateway`, with the attempt's `grant`) —
/// so the step cannot go around the proxies even where no NetworkPolicy is enforced; else
/// the pod's own network, which the class's NetworkPolicy confines ([`through_gateway`]
/// for an allow-list; nothing more for `none`). The second value is the `system` line
/// that says which (`None` in a namespace of its own, as locally).
pub async fn confine_on_pod(
    policy: &NetworkPolicy,
    gateway: Option<&str>,
    grant: Option<&str>,
    log: &Sender<(Stream, String)>,
) -> Result<(Option<StepNetwork>, Option<&'static str>), String> {
    let upstream = match (policy, gateway) {
        (NetworkPolicy::Allow(_), Some(gateway)) => Some(upstream_of(gateway, grant)?),
        _ => None,
    };
    // Where no namespace can be made the pod's NetworkPolicy is the confinement: an
    // allow-list on a class without the egress proxy has none, and fails as locally.
    let falls_back_to_pod = match policy {
        NetworkPolicy::Open => return Ok((None, None)),
        NetworkPolicy::None => true,
        NetworkPolicy::Allow(_) => upstream.is_some(),
    };
    match confine_with(policy, log, upstream).await {
        Ok(network) => Ok((network, None)),
        Err(_) if falls_back_to_pod => match policy {
            NetworkPolicy::Allow(_) => {
                let gateway = gateway.expect("an upstream comes from a gateway");
                let network = through_gateway(gateway, policy, grant, log).await?;
                Ok((Some(network), Some(THROUGH_GATEWAY)))
            }
            _ => Ok((None, Some(CONFINED_BY_POD))),
        },
        Err(e) => Err(e),
    }
}

/// The cluster's egress proxy at `gateway` (checked by [`egress_proxy_url`]), reached with
/// the attempt's `grant`; the step's failure reason when either is not usable.
fn upstream_of(gateway: &str, grant: Option<&str>) -> Result<upstream::Upstream, String> {
    let grant = grant.filter(|g| is_grant(g)).ok_or_else(no_grant)?;
    let address = egress_proxy_url(gateway)
        .map_err(|e| format!("network: the egress proxy {e}"))?
        .trim_start_matches("http://")
        .to_owned();
    Ok(upstream::Upstream::new(&address, grant))
}

fn no_grant() -> String {
    "network: the engine gave this attempt no credential for the cluster's egress proxy \
     (is `plue serve` given --egress-proxy-token-file?); the step never runs with the pod's \
     network instead"
        .to_owned()
}

/// Whether `grant` has the characters of the engine's grants (hex and `.`; base64url and
/// `-`/`_` allowed): anything else is refused rather than passed on.
fn is_grant(grant: &str) -> bool {
    !grant.is_empty()
        && grant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a runner's `--egress-proxy`: `http://host:port` and nothing more (no user
/// information, path or query: the attempt's credential is added per connection).
pub fn egress_proxy_url(url: &str) -> Result<String, String> {
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
        .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("'{url}' names no port"))?;
    let fine = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !fine {
        return Err(format!(
            "'{url}' is not http://host:port (a name or IPv4 address and a port, nothing else)"
        ));
    }
    Ok(format!("http://{authority}"))
}

/// Sets up `policy` for one step; `None` for [`NetworkPolicy::Open`]. The error is the
/// step's failure reason. `log` receives the proxy's `network: refused ...` lines.
pub async fn confine(
    policy: &NetworkPolicy,
    log: &Sender<(Stream, String)>,
) -> Result<Option<StepNetwork>, String> {
    confine_with(policy, log, None).await
}

/// [`confine`], the proxy connecting through `upstream` (the cluster's egress proxy) when
/// there is one.
async fn confine_with(
    policy: &NetworkPolicy,
    log: &Sender<(Stream, String)>,
    upstream: Option<upstream::Upstream>,
) -> Result<Option<StepNetwork>, String> {
    let allow = match policy {
        NetworkPolicy::Open => return Ok(None),
        NetworkPolicy::None => None,
        NetworkPolicy::Allow(hosts) => Some(allow::AllowList::parse(hosts)?),
    };
    let with_proxy = allow.is_some();
    let no_proxy = ["localhost", "127.0.0.1"]
        .into_iter()
        .filter(|name| !allow.as_ref().is_some_and(|allow| allow.names(name)))
        .collect::<Vec<_>>()
        .join(",");
    let (ns, listener) = tokio::task::spawn_blocking(move || namespace::create(with_proxy))
        .await
        .map_err(|e| format!("network: the namespace task failed: {e}"))?
        .map_err(|err| {
            // Where else it could run: a `none` step also runs on a Kubernetes class whose
            // pods a NetworkPolicy confines; an allow-list has no such place.
            let elsewhere = match policy {
                NetworkPolicy::None => {
                    " (on the Kubernetes pool: a runner class with `step_network: pod`)"
                }
                _ => "",
            };
            format!(
                "network: cannot give the step its own network namespace ({err}); a step whose \
                 network is '{}' needs a runner that is root (or has CAP_SYS_ADMIN){elsewhere} \
                 and never runs with the host's network instead",
                policy_name(policy)
            )
        })?;
    let proxy = match (allow, listener) {
        (Some(allow), Some((listener, dns))) => {
            let port = listener
                .local_addr()
                .map_err(|e| format!("network: the proxy's address: {e}"))?
                .port();
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("network: the proxy's listener: {e}"))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("network: the proxy's listener: {e}"))?;
            let dns = dns
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UdpSocket::from_std(dns))
                .map_err(|e| format!("network: the DNS stub's socket: {e}"))?;
            Some((
                proxy::Proxy::serve_through(listener, Some(dns), allow, log.clone(), upstream),
                port,
            ))
        }
        _ => None,
    };
    let resolv_conf = if proxy.is_some() { resolv_conf() } else { None };
    Ok(Some(StepNetwork {
        namespace: Some(Namespace {
            fd: Arc::new(ns),
            resolv_conf,
        }),
        proxy,
        no_proxy,
    }))
}

fn policy_name(policy: &NetworkPolicy) -> &'static str {
    match policy {
        NetworkPolicy::Open => "open",
        NetworkPolicy::None => "none",
        NetworkPolicy::Allow(_) => "an allow-list",
    }
}

impl StepNetwork {
    /// The namespace every process of the step joins (none through the cluster's egress
    /// proxy: the step shares the pod's network).
    pub fn namespace(&self) -> Option<&Namespace> {
        self.namespace.as_ref()
    }

    /// Points the step's HTTP clients at the proxy (allow-lists only), over whatever the
    /// step set: `HTTPS_PROXY`, `HTTP_PROXY`, their lowercase forms, and `NO_PROXY` for
    /// loopback — the step's own, in its namespace — except a loopback name the list
    /// allows (`localhost:8080` in a list is the runner host's, reached through the proxy).
    pub fn set_env(&self, env: &mut BTreeMap<String, String>) {
        let Some((_, port)) = &self.proxy else {
            return;
        };
        let url = format!("http://127.0.0.1:{port}");
        for key in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            env.insert(key.into(), url.clone());
        }
        for key in ["NO_PROXY", "no_proxy"] {
            env.insert(key.into(), self.no_proxy.clone());
        }
    }

    /// Stops the proxy; the namespace goes with the last descriptor. Call once every
    /// process of the step is gone. Returns how many connections were refused.
    pub async fn finish(self) -> u64 {
        match self.proxy {
            Some((proxy, _)) => proxy.finish().await,
            None => 0,
        }
    }
}

#[cfg(test)]
mod gateway_env_tests {
    use super::*;

    #[tokio::test]
    async fn a_gateway_step_is_pointed_at_the_runners_proxy_and_never_given_the_credential() {
        let (log, _lines) = tokio::sync::mpsc::channel(4);
        let allow = NetworkPolicy::Allow(vec!["pypi.org".into()]);
        let net = through_gateway("http://plue-egress:3128", &allow, Some("ab.cd"), &log)
            .await
            .unwrap();
        assert!(net.namespace().is_none());
        let mut env = BTreeMap::from([("NO_PROXY".to_string(), "*".to_string())]);
        net.set_env(&mut env);
        let url = env["HTTPS_PROXY"].clone();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        for key in ["HTTP_PROXY", "https_proxy", "http_proxy"] {
            assert_eq!(env[key], url, "{key}");
        }
        assert_eq!(env["NO_PROXY"], "", "nothing bypasses the proxy");
        assert!(!format!("{env:?}").contains("ab.cd"), "{env:?}");
        net.finish().await;
        for grant in [None, Some(""), Some("a@b"), Some("a:b"), Some("a/b")] {
            let refused = through_gateway("http://p:1", &allow, grant, &log).await;
            assert!(refused.is_err(), "{grant:?}");
        }
        let none = through_gateway("http://p:1", &NetworkPolicy::None, Some("g"), &log).await;
        assert!(none.is_err());
        let bad = NetworkPolicy::Allow(vec!["a.*.com".into()]);
        assert!(through_gateway("http://p:1", &bad, Some("g"), &log)
            .await
            .is_err());
    }

    #[test]
    fn an_egress_proxy_is_http_host_port_and_nothing_more() {
        assert_eq!(
            egress_proxy_url("http://plue-egress.ci.svc:3128/").unwrap(),
            "http://plue-egress.ci.svc:3128"
        );
        for bad in [
            "https://p:1",
            "http://p",
            "http://u:p@p:1",
            "http://p:1/x",
            "http://p:0",
            "socks5://p:1",
        ] {
            assert!(egress_proxy_url(bad).is_err(), "{bad}");
        }
    }
}
