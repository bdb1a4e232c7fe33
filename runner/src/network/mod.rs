//! A step's network policy, enforced: what its processes — a `bash` or `python` step, an
//! `llm` step's tools — can reach.
//!
//! [`confine`] is the one entry point. For [`NetworkPolicy::Open`] it does nothing at all
//! (no namespace, no thread: today's behaviour at no cost). Otherwise it makes the step a
//! network namespace of its own with only loopback up (`namespace.rs`), whose descriptor
//! every process of the step joins before it drops its privileges (`launch`); for an
//! allow-list it also serves an egress proxy into that namespace (`proxy.rs`, `allow.rs`,
//! `sni.rs`) and names it in the step's `HTTPS_PROXY`/`HTTP_PROXY`.
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
//!   refused (each also a `system` line of the step).
//!
//! What it does not cover: Unix sockets bound to a path (reached through the file system,
//! where the step's user and its private `/tmp` decide), and the runner's own traffic (the
//! engine, the model's API), which never passes through the step's namespace.

mod allow;
mod namespace;
mod proxy;
mod sni;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use crate::protocol::{NetworkPolicy, Stream};

/// A step's network namespace, shared by every process the step starts.
#[derive(Debug, Clone)]
pub struct Namespace(Arc<OwnedFd>);

impl Namespace {
    /// The descriptor a child `setns`es into.
    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
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
            format!(
                "network: cannot give the step its own network namespace ({err}); a step whose \
                 network is '{}' needs a runner that is root (or has CAP_SYS_ADMIN) and never \
                 runs with the host's network instead",
                policy_name(policy)
            )
        })?;
    let proxy = match (allow, listener) {
        (Some(allow), Some(listener)) => {
            let port = listener
                .local_addr()
                .map_err(|e| format!("network: the proxy's address: {e}"))?
                .port();
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("network: the proxy's listener: {e}"))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("network: the proxy's listener: {e}"))?;
            Some((proxy::Proxy::serve(listener, allow, log.clone()), port))
        }
        _ => None,
    };
    Ok(Some(StepNetwork {
        namespace: Namespace(Arc::new(ns)),
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
