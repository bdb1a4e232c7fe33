//! A generic OpenID Connect provider: discovery at start, and the ID token checked with
//! the provider's published keys (JWKS) by `jsonwebtoken`: the signature with a key of the
//! set (asymmetric algorithms only: never `none`, never an HMAC keyed by a public value),
//! `iss` exactly the discovered issuer, `aud` holding our client id (and `azp` it when
//! there are several audiences), `exp` in the future (a minute of leeway), and the `nonce`
//! this sign-in sent.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::config::OidcSettings;

/// The provider as its discovery document describes it.
#[derive(Debug, Clone)]
pub(super) struct Discovered {
    /// Exactly as the document says it (what `iss` must be).
    pub(super) issuer: String,
    pub(super) authorization_endpoint: Url,
    pub(super) token_endpoint: Url,
    jwks_uri: Url,
    /// Whether the token endpoint takes `client_secret_basic` (else `client_secret_post`).
    pub(super) basic_auth: bool,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// Reads `{issuer}/.well-known/openid-configuration`; every problem names `--oidc-issuer`.
pub(super) async fn discover(
    http: &reqwest::Client,
    settings: &OidcSettings,
) -> anyhow::Result<Discovered> {
    let issuer = settings.issuer.as_str().trim_end_matches('/');
    let url = format!("{issuer}/.well-known/openid-configuration");
    let fail = |why: String| anyhow::anyhow!("--oidc-issuer {issuer}: {why}");
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(format!("cannot read {url}: {}", e.without_url())))?;
    if !response.status().is_success() {
        return Err(fail(format!("{url} answered {}", response.status())));
    }
    let document: Document = response
        .json()
        .await
        .map_err(|e| fail(format!("{url} is not a discovery document: {e}")))?;
    // OpenID Connect Discovery 4.3: the document's issuer is the URL it was asked of.
    if document.issuer.trim_end_matches('/') != issuer {
        return Err(fail(format!(
            "the discovery document names another issuer, {:?}",
            document.issuer
        )));
    }
    if let Some(methods) = &document.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err(fail("the provider does not support PKCE with S256".into()));
        }
    }
    let basic_auth = match &document.token_endpoint_auth_methods_supported {
        None => true,
        Some(methods) if methods.iter().any(|m| m == "client_secret_basic") => true,
        Some(methods) if methods.iter().any(|m| m == "client_secret_post") => false,
        Some(methods) => {
            return Err(fail(format!(
                "the token endpoint takes neither client_secret_basic nor client_secret_post \
                 ({methods:?})"
            )))
        }
    };
    let endpoint = |name: &str, text: &str| -> anyhow::Result<Url> {
        let url = Url::parse(text).map_err(|e| fail(format!("its {name} {text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail(format!("its {name} {text:?} is not an http(s) URL")));
        }
        Ok(url)
    };
    Ok(Discovered {
        authorization_endpoint: endpoint(
            "authorization_endpoint",
            &document.authorization_endpoint,
        )?,
        token_endpoint: endpoint("token_endpoint", &document.token_endpoint)?,
        jwks_uri: endpoint("jwks_uri", &document.jwks_uri)?,
        issuer: document.issuer,
        basic_auth,
    })
}

/// What an ID token says about who signed in.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub(super) subject: String,
    pub(super) preferred_username: Option<String>,
    /// The groups claim's names, when a claim is configured (absent: none).
    pub(super) groups: Option<Vec<String>>,
}

impl Discovered {
    /// Checks `id_token` (module docs) and reads who it names.
    pub(super) async fn verify(
        &self,
        http: &reqwest::Client,
        id_token: &str,
        client_id: &str,
        nonce: &str,
        groups_claim: Option<&str>,
    ) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| format!("the ID token is not a JWT: {e}"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(format!(
                "the ID token is signed with {:?}, not with one of the provider's keys",
                header.alg
            ));
        }
        let keys: JwkSet = http
            .get(self.jwks_uri.clone())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the provider's keys could not be read ({})",
                    e.without_url()
                )
            })?
            .json()
            .await
            .map_err(|e| format!("the provider's keys are not a JWK set: {e}"))?;
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or("the ID token names no key the provider publishes")?;
        if let Some(alg) = jwk.common.key_algorithm {
            if alg.to_string() != format!("{:?}", header.alg) {
                return Err("the ID token's algorithm is not its key's".into());
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("the provider's key: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
            .map_err(|e| format!("the ID token was refused: {e}"))?
            .claims;
        let several_audiences = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
        if several_audiences && claims["azp"].as_str() != Some(client_id) {
            return Err("the ID token was made for another client (azp)".into());
        }
        match claims["nonce"].as_str() {
            Some(given) if plue_vault::tokens::tokens_match(given, nonce) => {}
            _ => return Err("the ID token's nonce is not this sign-in's".into()),
        }
        let subject = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or("the ID token has no subject")?
            .to_string();
        let groups = groups_claim.map(|name| names(&claims[name]));
        Ok(Identity {
            subject,
            preferred_username: claims["preferred_username"].as_str().map(str::to_string),
            groups,
        })
    }
}

/// A groups claim's names: an array of strings (other entries ignored) or one string; at
/// most 1000.
fn names(claim: &Value) -> Vec<String> {
    match claim {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .take(1000)
            .map(str::to_string)
            .collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}
