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
//! The one exception is the runner's, never a step's: a runner started with
//! `--network-confined-by-pod` (a Kubernetes class whose pods a NetworkPolicy confines)
//! runs a `none` step without calling [`confine`], and says so in the step's log
//! ([`CONFINED_BY_POD`]); an allow-list there still goes through [`confine`].
//!
//! What it does not cover: Unix sockets bound to a path outside those directories (a home
//! directory's: the step's user and file permissions decide there), and the runner's own
//! traffic (the engine, the model's API), which never passes through the step's namespace.

mod allow;
pub mod capability;
mod dns;
mod egress;
mod http;
mod namespace;
mod proxy;
mod sni;
mod sockets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use plue_types::protocol::{NetworkPolicy, Stream};
pub(crate) use sockets::Hidden;

/// The `system` line of a `none` step a pod-confined runner runs without a namespace of its
/// own (`--network-confined-by-pod`, which only the Kubernetes pool gives, to a class with
/// `step_network: pod`): what confines it is the pod's NetworkPolicy, shared by the runner
/// and every step of the class.
pub const CONFINED_BY_POD: &str = "network: 'none' is enforced per pod by this runner class's \
     NetworkPolicy (the engine, DNS and the class's egress), not per step: this step shares \
     the pod's egress with the runner and the model's API";

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

/// A confined step's network: its namespace and, for an allow-list, the proxy.
pub struct StepNetwork {
    namespace: Namespace,
    proxy: Option<(proxy::Proxy, u16)>,
    /// The step's `NO_PROXY`: loopback (its own), but for loopback names the list allows.
    no_proxy: String,
}

/// Sets up `policy` for one step; `None` for [`NetworkPolicy::Open`]. The error is the
/// step's failure reason. `log` receives the proxy's `network: refused ...` lines.
pub async fn confine(
    policy: &NetworkPolicy,
    log: &Sender<(Stream, String)>,
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
                proxy::Proxy::serve(listener, Some(dns), allow, log.clone()),
                port,
            ))
        }
        _ => None,
    };
    let resolv_conf = if proxy.is_some() { resolv_conf() } else { None };
    Ok(Some(StepNetwork {
        namespace: Namespace {
            fd: Arc::new(ns),
            resolv_conf,
        },
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
    /// The namespace every process of the step joins.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
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
