//! [`GitHubApp`]: the engine's GitHub App — its id and RSA private key — and the JWTs it
//! signs to speak as the App (`GET /app`, an installation's access tokens).
//!
//! Invariants: a key is accepted only if it is an RSA private key that signs (checked when
//! it is loaded, so `plue serve` refuses a bad key at start-up, not at the first event);
//! a JWT is RS256 with `iat` 60 s in the past (GitHub's advice against clock drift),
//! `exp` [`JWT_LIFETIME`] ahead (GitHub refuses more than 10 minutes) and `iss` the App's
//! id. Neither the key nor a JWT is ever printed (`Debug` names the id only) nor put into
//! an error.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// How far ahead a JWT expires: under GitHub's 10 minutes, leaving room for clock drift.
pub const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
/// How far back `iat` is set.
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);
/// The App's API unless `--github-app-api-url` names another: github.com's.
pub const DEFAULT_APP_API: &str = "https://api.github.com";

/// A JWT's claims as GitHub reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// The engine's GitHub App.
#[derive(Clone)]
pub struct GitHubApp {
    id: u64,
    key: EncodingKey,
    /// The PEM as read: a secret of every run of an App repository (the outbound wall
    /// redacts it).
    pem: std::sync::Arc<Zeroizing<String>>,
    /// Where the App lives (`/app`, `/app/installations/…`, and the only API its JWT is
    /// ever sent to): [`DEFAULT_APP_API`] unless configured. Only repositories on this API
    /// are served through the App.
    api_url: String,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp")
            .field("id", &self.id)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl GitHubApp {
    /// The App `id` with the PEM private key `pem` (PKCS#1 `RSA PRIVATE KEY`, as GitHub
    /// hands it out, or PKCS#8); refused unless it is an RSA key that signs.
    pub fn new(id: u64, pem: &str) -> anyhow::Result<GitHubApp> {
        if id == 0 {
            anyhow::bail!(
                "the GitHub App id must be a positive number (the App's settings page names it)"
            );
        }
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
            anyhow::anyhow!("the GitHub App's private key is not an RSA private key in PEM ({e}); GitHub's App settings generate one (\"Generate a private key\")")
        })?;
        let app = GitHubApp {
            id,
            key,
            pem: std::sync::Arc::new(Zeroizing::new(pem.to_string())),
            api_url: DEFAULT_APP_API.to_string(),
        };
        // Parsing checks the PEM's label only: signing once checks the key itself.
        app.jwt_at(SystemTime::now()).map_err(|e| {
            anyhow::anyhow!("the GitHub App's private key is not an RSA private key that signs RS256 JWTs ({e})")
        })?;
        Ok(app)
    }

    /// [`GitHubApp::new`] with the key read from `path`.
    pub fn from_key_file(id: u64, path: &Path) -> anyhow::Result<GitHubApp> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the GitHub App's private key file {}: {e}",
                path.display()
            )
        })?);
        GitHubApp::new(id, &pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The App at `api_url` (a GitHub Enterprise Server's `https://HOST/api/v3`, a test's
    /// fake) instead of [`DEFAULT_APP_API`] (`None` or blank: that default).
    pub fn with_api_url(mut self, api_url: Option<String>) -> GitHubApp {
        self.api_url = api_url
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_APP_API.to_string());
        self
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The App's API (no trailing `/`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Whether `api_url` is the App's API: the one place its JWT and installation tokens
    /// are used (a trailing `/` and the letters' case aside).
    pub fn serves_api(&self, api_url: &str) -> bool {
        api_url
            .trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(&self.api_url)
    }

    /// The private key's PEM text (for the outbound wall's secrets only).
    pub fn key_pem(&self) -> &str {
        self.pem.as_str()
    }

    /// The claims of a JWT signed at `now`.
    pub fn claims_at(&self, now: SystemTime) -> Claims {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Claims {
            iat: now.saturating_sub(JWT_BACKDATE.as_secs()),
            exp: now + JWT_LIFETIME.as_secs(),
            iss: self.id.to_string(),
        }
    }

    /// A JWT signed at `now`, to authenticate as the App.
    pub fn jwt_at(
        &self,
        now: SystemTime,
    ) -> Result<Zeroizing<String>, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &self.claims_at(now),
            &self.key,
        )
        .map(Zeroizing::new)
    }
}
