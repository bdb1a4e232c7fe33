//! `/internal/egress/...`: the engine's side of the cluster's egress proxy (protocol in
//! [`plue_types::protocol::egress`]), and the grants it checks, minted here at claim time.
//!
//! An allow-list step's assignment carries a grant (minted by `plue_core::attempts` with
//! [`EgressAuth::grant_key`]) when the engine has an
//! egress proxy configured (`plue serve --egress-proxy-token-file`): a credential naming
//! the attempt and its allow-list, signed with a key derived from the proxy's token
//! ([`plue_vault::grants`]), so every replica opens what any replica minted and nothing is
//! stored. A runner of a class with `egress_proxy` holds it (never its step) and connects
//! through the proxy with it; the proxy asks here on every connection.
//!
//! Invariants:
//! - Only the proxy asks: every request carries the proxy's token (compared in constant
//!   time); without one configured the routes answer 404, with a wrong one 401.
//! - A grant is answered only while its attempt is claimed or running: it dies with the
//!   attempt, at once, on every replica (the attempt's row is read on every check).
//! - A grant is bound to its pod: it is answered only when the connection's peer address
//!   (the proxy's `peer`) is an address of the pod whose runner claimed the attempt — the
//!   runner's one-time token names its pod, whose address the pool's watch knows
//!   ([`PodAddresses`]). A credential that leaked and is replayed from any other pod, or an
//!   attempt of a runner with no pod (not started by the Kubernetes pool), is 403.
//! - What is answered is what was signed: the attempt and the list of the step's own
//!   dispatch; a forged, altered or truncated credential is 403, the same as an ended one.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use plue_pool::kubernetes::PodAddresses;
use plue_types::protocol::egress::{EgressCheck, EgressGrant, CHECK, MAX_CREDENTIAL_BYTES};
use plue_vault::grants::GrantKey;
use plue_vault::tokens;
use std::net::IpAddr;

use super::InternalState;
use crate::http_error::{ApiError, ApiResult};

/// The user name in a step's proxy credential (`attempt:<grant>`).
const USER: &str = "attempt";

/// The egress proxy's token (as its hash), the key grants are signed with, and where the
/// runner pods the grants are bound to are.
#[derive(Debug, Clone)]
pub struct EgressAuth {
    proxy_token_hash: String,
    key: GrantKey,
    pods: PodAddresses,
}

impl EgressAuth {
    /// From the proxy's token (`--egress-proxy-token-file`), which every replica is given,
    /// and the Kubernetes pool's pod addresses.
    pub fn new(proxy_token: &str, pods: PodAddresses) -> EgressAuth {
        EgressAuth {
            proxy_token_hash: tokens::hash_token(proxy_token),
            key: GrantKey::derive(proxy_token),
            pods,
        }
    }

    /// The key an attempt's grant is signed with (`plue_core::attempts` mints it at
    /// claim time).
    pub fn grant_key(&self) -> GrantKey {
        self.key.clone()
    }
}

pub(super) fn routes() -> Router<InternalState> {
    Router::new().route(CHECK, post(check))
}

/// The configured proxy auth, when the request carries the proxy's token.
fn proxy<'a>(state: &'a InternalState, headers: &HeaderMap) -> ApiResult<&'a EgressAuth> {
    let Some(auth) = state.config.egress.as_ref() else {
        return Err(ApiError::not_found("no egress proxy is configured"));
    };
    let given = super::bearer(headers)?;
    if !tokens::tokens_match(&tokens::hash_token(given), &auth.proxy_token_hash) {
        return Err(ApiError::unauthorized("not the egress proxy's token"));
    }
    Ok(auth)
}

/// The attempt and hosts of a `Basic` credential (base64 of `attempt:<grant>`), if it is a
/// grant this engine signed; whether its attempt still runs is the caller's to ask.
fn open(auth: &EgressAuth, credential: &str) -> Option<(i64, Vec<String>)> {
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, grant) = decoded.split_once(':')?;
    (user == USER).then_some(())?;
    auth.key.open(grant)
}

/// The live grant behind `credential` used from `peer`, or 403: the attempt must be
/// claimed or running and `peer` an address of the pod its runner runs in.
async fn live(
    state: &InternalState,
    auth: &EgressAuth,
    credential: &str,
    peer: IpAddr,
) -> ApiResult<(i64, Vec<String>)> {
    let refused = || ApiError::forbidden("not a grant of a claimed or running attempt");
    let (attempt_id, hosts) = open(auth, credential).ok_or_else(refused)?;
    let Some(pod) = state.executor.store().attempt_pod(attempt_id).await? else {
        return Err(refused());
    };
    let addresses = auth.pods.of(&pod.name, pod.token_id);
    if !addresses.contains(&peer.to_canonical()) {
        // A live attempt's credential from elsewhere: it leaked (or the pod is not known
        // yet, which the proxy's client retries as any refusal).
        tracing::warn!(
            attempt_id,
            %peer,
            pod = %pod.name,
            "egress proxy: an attempt's credential used from outside its pod; refused"
        );
        return Err(ApiError::forbidden(
            "the grant is not used from the pod it was issued to",
        ));
    }
    Ok((attempt_id, hosts))
}

/// `POST /internal/egress/check`.
async fn check(
    State(state): State<InternalState>,
    headers: HeaderMap,
    body: Result<Json<EgressCheck>, JsonRejection>,
) -> ApiResult<Json<EgressGrant>> {
    let auth = proxy(&state, &headers)?;
    let Json(request) = body?;
    let (attempt_id, hosts) = live(&state, auth, &request.credential, request.peer).await?;
    Ok(Json(EgressGrant { attempt_id, hosts }))
}

#[cfg(test)]
mod tests {
    use plue_types::protocol::NetworkPolicy;

    use super::*;

    fn credential(grant: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("attempt:{grant}"))
    }

    #[test]
    fn a_credential_opens_only_as_the_attempt_and_list_it_was_minted_for() {
        let auth = EgressAuth::new("proxy token", PodAddresses::default());
        let allow = NetworkPolicy::Allow(vec!["pypi.org".into()]);
        let NetworkPolicy::Allow(hosts) = &allow else {
            unreachable!()
        };
        let grant = auth.grant_key().mint(9, hosts).unwrap();
        assert_eq!(
            open(&auth, &credential(&grant)),
            Some((9, vec!["pypi.org".to_owned()]))
        );
        // Another engine's key, another user name, the grant unencoded, rubbish: nothing.
        let other = EgressAuth::new("another proxy token", PodAddresses::default());
        assert_eq!(open(&other, &credential(&grant)), None);
        let encode = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
        for forged in [
            encode(format!("root:{grant}")),
            encode(grant.clone()),
            grant.clone(),
            "%%%".to_owned(),
            String::new(),
            "A".repeat(MAX_CREDENTIAL_BYTES + 1),
        ] {
            assert_eq!(open(&auth, &forged), None, "{forged}");
        }
    }
}
