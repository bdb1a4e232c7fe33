//! Signing people in with their forge account (GitHub, Gitea) or an OpenID Connect
//! provider, in the browser and for `plue login`. [`SignIn`] is the one entry point: made at
//! start from the [`Settings`] of `plue serve` (an OpenID Connect provider is discovered
//! then, so a misconfigured one stops the engine naming its flag), it names the providers
//! the sign-in page links to and serves `/sign-in/...` inside the dashboard's router.
//!
//! The flow (`flow`): `GET /sign-in/{provider}` remembers a sign-in in the store (random
//! id, `state`, PKCE verifier, nonce; ten minutes), gives the browser the id in a cookie and
//! sends it to the provider's authorization endpoint with the S256 challenge;
//! `GET /sign-in/{provider}/callback` takes the sign-in back by the cookie's id (deleting
//! it), checks `state`, exchanges the code with the verifier, learns who it is (a forge's
//! `GET /user`, an OpenID Connect ID token checked with the provider's keys: module
//! `oidc`), finds or creates the user (module `people`), makes an OpenID Connect groups
//! claim's memberships follow, and opens a dashboard session. `plue login` starts the same
//! flow with its loopback redirect and PKCE challenge; the callback then hands a one-time
//! code to that redirect, which `POST /sign-in/token` exchanges, with the verifier, for an
//! API token.
//!
//! Sessions: a dashboard session is tied to a token (`access::Resolver::open_session`), so
//! a sign-in mints a token of the user (named `sign-in with <provider>`, expiring with the
//! session, 12 h) whose value is never shown to anyone and opens the session with it.
//! Signing out, the session's expiry, disabling the user or revoking that token ends it as
//! for a session opened with a pasted token.
//!
//! Invariants:
//! - A sign-in is bound to the browser that started it: the `plue_sign_in` cookie
//!   (`HttpOnly; SameSite=Lax`: Strict would not be sent on the provider's redirect back;
//!   `Path=/sign-in/`, ten minutes, `Secure` on an https engine) holds its random id and the
//!   store only that id's hash. It is checked exactly once: the store deletes the sign-in as
//!   the callback reads it, whatever comes next, and the callback clears the cookie.
//! - `state` is compared in constant time with the one sent; the code is exchanged only
//!   with this sign-in's verifier; an ID token must pass every check of module `oidc`
//!   (signature by the provider's published keys, `iss`, `aud`, `exp`, this sign-in's
//!   `nonce`) before anything of it is read.
//! - The provider's access, refresh and ID tokens are never stored or logged: the access
//!   token asks a forge who it is and is dropped.
//! - A forge account is the forge-login link (`github`/`gitea` + login) `plue user link`
//!   makes; an OpenID Connect account is its `(iss, sub)`, exactly. A disabled user is
//!   refused, never replaced by a new one.
//! - A groups claim touches only groups that exist: it adds the user to those it names
//!   and removes only memberships an earlier claim gave (`plue_store::sign_in`).
//! - Anyone may start a sign-in, so at most 10 000 are under way at once (each lives ten
//!   minutes); past that a start is refused (503) and stores nothing.
//! - Each provider has its own callback URL and a sign-in is finished only at the one of
//!   the provider it was started with (no mix-up between providers).
//! - Where a sign-in returns is a local path (`web::local_path`), and `plue login`'s
//!   redirect is `http://127.0.0.1:<port>/callback` or `http://[::1]:<port>/callback`, nothing
//!   else.

mod cli_token;
mod config;
mod flow;
mod oauth;
mod oidc;
mod people;
mod pkce;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use url::Url;

pub use config::{base_url, client_id, ClientSecret, ForgeSettings, OidcSettings, Settings};

/// PKCE's S256 challenge of a verifier (`plue login` makes its own pair).
pub use pkce::challenge as pkce_challenge;

use plue_store::Store;

use crate::access::Resolver;

/// The sign-in providers of a running engine (cheap to clone).
#[derive(Clone)]
pub struct SignIn(Arc<Inner>);

struct Inner {
    providers: Vec<Provider>,
    store: Store,
    resolver: Resolver,
    /// The engine's URL as browsers reach it, without a trailing `/`.
    base: String,
    http: reqwest::Client,
    secure_cookies: bool,
    /// Learns a forge sign-in's roles at once (`plue_core::forge_roles`), when roles follow
    /// the forge.
    forge_roles: Option<ForgeRoles>,
}

/// What a forge sign-in refreshes its person's roles with.
struct ForgeRoles {
    executor: Arc<plue_core::executor::Executor>,
    every: std::time::Duration,
}

/// One provider.
struct Provider {
    /// In URLs: `oidc`, `github`, `gitea`.
    name: &'static str,
    label: String,
    client_id: String,
    client_secret: ClientSecret,
    kind: Kind,
}

enum Kind {
    Oidc {
        discovered: oidc::Discovered,
        scopes: String,
        groups_claim: Option<String>,
    },
    Forge {
        /// `github` or `gitea`: the forge of the login links.
        forge: &'static str,
        authorize: Url,
        token: Url,
        api: Url,
        /// Scopes asked for (none: GitHub's public profile is enough).
        scopes: Option<&'static str>,
    },
}

/// A provider as the sign-in page links to it (the dashboard's type).
pub use crate::web::SignInLink as Link;

impl SignIn {
    /// Refreshes the roles of a person who signs in through a forge from that forge at
    /// once (with `executor`'s credentials), as the periodic refresh every `every` does.
    pub fn with_forge_roles(
        mut self,
        executor: Arc<plue_core::executor::Executor>,
        every: std::time::Duration,
    ) -> SignIn {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.forge_roles = Some(ForgeRoles { executor, every });
        }
        self
    }

    /// An engine without providers: only API tokens sign in.
    pub fn none(store: Store, resolver: Resolver) -> SignIn {
        SignIn(Arc::new(Inner {
            providers: Vec::new(),
            store,
            resolver,
            base: String::new(),
            http: reqwest::Client::new(),
            secure_cookies: false,
            forge_roles: None,
        }))
    }

    /// The providers of `settings` for an engine browsers reach at `base`; an OpenID
    /// Connect provider is discovered now. Errors name the flag at fault.
    pub async fn start(
        settings: &Settings,
        store: Store,
        resolver: Resolver,
        base: &str,
    ) -> anyhow::Result<SignIn> {
        if !settings.is_empty() && !resolver.enforced() {
            anyhow::bail!("sign-in providers need users: set --admin-token");
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15))
            .user_agent("plue")
            .build()?;
        let mut providers = Vec::new();
        if let Some(oidc) = &settings.oidc {
            let discovered = oidc::discover(&http, oidc).await?;
            let mut scopes = vec!["openid".to_string()];
            scopes.extend(oidc.scopes.iter().filter(|s| *s != "openid").cloned());
            providers.push(Provider {
                name: "oidc",
                label: oidc.label.clone(),
                client_id: oidc.client_id.clone(),
                client_secret: oidc.client_secret.clone(),
                kind: Kind::Oidc {
                    discovered,
                    scopes: scopes.join(" "),
                    groups_claim: oidc.groups_claim.clone(),
                },
            });
        }
        for (forge, forge_settings) in [("github", &settings.github), ("gitea", &settings.gitea)] {
            let Some(f) = forge_settings else { continue };
            let join =
                |path: &str| Url::parse(&format!("{}{path}", f.url.as_str().trim_end_matches('/')));
            providers.push(Provider {
                name: forge,
                label: if forge == "github" { "GitHub" } else { "Gitea" }.to_string(),
                client_id: f.client_id.clone(),
                client_secret: f.client_secret.clone(),
                kind: Kind::Forge {
                    forge,
                    authorize: join("/login/oauth/authorize")?,
                    token: join("/login/oauth/access_token")?,
                    api: f.api_url.clone(),
                    scopes: (forge == "gitea").then_some("read:user"),
                },
            });
        }
        Ok(SignIn(Arc::new(Inner {
            providers,
            store,
            resolver,
            base: base.trim_end_matches('/').to_string(),
            http,
            secure_cookies: base.starts_with("https://"),
            forge_roles: None,
        })))
    }

    /// The providers, as the sign-in page links to them.
    pub fn links(&self) -> Vec<Link> {
        self.0
            .providers
            .iter()
            .map(|p| Link {
                name: p.name.to_string(),
                label: p.label.clone(),
                href: format!("/sign-in/{}", p.name),
            })
            .collect()
    }

    /// `/sign-in/{provider}`, its callback, `GET /sign-in/providers` (for `plue login`) and
    /// `POST /sign-in/token`; merged into the
    /// dashboard's router (its security headers apply).
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/sign-in/providers", get(flow::providers))
            .route("/sign-in/token", post(cli_token::cli_token))
            .route("/sign-in/{provider}", get(flow::start))
            .route("/sign-in/{provider}/callback", get(flow::callback))
            .with_state(self.clone())
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        self.0.providers.iter().find(|p| p.name == name)
    }

    /// Where `provider` sends the browser back.
    fn redirect_uri(&self, provider: &Provider) -> String {
        format!("{}/sign-in/{}/callback", self.0.base, provider.name)
    }
}
