//! An HTTP (streamable) MCP server: reached by the runner itself, only where the step's
//! network policy lets the step reach it, as the step's egress proxy would connect.
//!
//! Before any connection: the URL is `http`/`https` without credentials; its host and port
//! are allowed by the step's policy (`open`: any; `none`: never; an allow-list: as the
//! proxy matches it, `crate::network::policy_allows`); the name is resolved here and only
//! addresses the proxy would connect to are kept (never the runner host's loopback or a
//! link-local address for a name: `crate::network::may_reach`), and the client is pinned to
//! them, so a DNS answer that changes later cannot move it. No redirect is followed. The
//! bearer token is the step's declared secret, never the engine's or the runner's.

use std::sync::Arc;
use std::time::Duration;

use plue_types::protocol::NetworkPolicy;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport to `url`, checked against `policy`; `bearer` is sent as
/// `Authorization: Bearer`.
pub(super) async fn transport(
    url: &str,
    bearer: Option<&str>,
    policy: &NetworkPolicy,
    max_message: usize,
) -> Result<StreamableHttpClientTransport<reqwest_mcp::Client>, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("url '{url}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(format!("url '{url}' must be http(s) without credentials"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("url '{url}' names no host"))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    crate::network::policy_allows(policy, &host, port)?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    let addrs: Vec<_> = found
        .iter()
        .copied()
        .filter(|addr| crate::network::may_reach(&bare, addr.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{host} resolves to no address a step may reach (found: {found:?})"
        ));
    }
    install_crypto_provider();
    let client = reqwest_mcp::Client::builder()
        .redirect(reqwest_mcp::redirect::Policy::none())
        .resolve_to_addrs(&bare, &addrs)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(Arc::<str>::from(url));
    if let Some(token) = bearer {
        config = config.auth_header(token);
    }
    config.max_sse_event_size = max_message;
    config.max_json_response_size = max_message;
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

/// TLS through rustls with `ring`, as the rest of the runner's clients (reqwest 0.12) use;
/// installed once as the process's default (kept when something installed one first).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
