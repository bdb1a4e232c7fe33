//! The fake forge's GitHub App mode ([`FakeForge::enable_app`]): the forge then knows one
//! GitHub App, by its public key, and speaks to nothing else — as a GitHub where the
//! engine has no personal token.
//!
//! - The App's own endpoints (module `gate`), authenticated with its RS256 JWT (signature,
//!   `iss` = the App's id, `iat` not in the future, `exp` in the future and at most ten
//!   minutes after `iat`): `GET /app`, `GET /repos/{o}/{r}/installation` (404 where the
//!   App is not installed) and `POST /app/installations/{id}/access_tokens` (201; 422 for
//!   a repository or permission the installation does not have; a scripted refusal).
//! - Every other API request and every git request needs an installation token that has
//!   not expired ([`AppConfig::token_lifetime`]), whose repositories hold the one asked
//!   about and whose permissions cover the request (module `gate`'s table: a token without
//!   `issues: write` cannot comment, one without `contents: write` cannot push). A personal
//!   token is refused everywhere (401), and `GET /user` answers an installation token 403,
//!   as GitHub does.
//! - Every token handed out is kept ([`FakeForge::installation_tokens`]) so tests can look
//!   for it where it must not be.
//! - Tokens can be revoked before they expire, now or at their next use (module `revoke`),
//!   and every refusal of a revoked one is recorded ([`FakeForge::token_refusals`]).
//!
//! Shapes follow GitHub's REST docs (`integration`, `installation`,
//! `installation-token`); module `json` builds them.
//!
//! The keys are fixed 2048-bit RSA keys made for these tests only (`openssl genrsa
//! -traditional`, PKCS#1 like the keys GitHub hands out), and an EC key that is not an
//! App's key; generating RSA keys in a debug-built test would take seconds.

mod gate;
mod json;
mod revoke;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

pub(crate) use gate::{api_gate, git_gate};
pub use revoke::{Presented, RevocationMark, TokenRefusal};

use super::{lock, FakeForge};

/// The test App's private key (PKCS#1 PEM).
pub const APP_KEY_PEM: &str = include_str!("test_app_key.pem");
/// Its public key (SPKI PEM): what the fake forge verifies JWTs with.
pub const APP_PUBLIC_PEM: &str = include_str!("test_app_key.pub.pem");
/// Another RSA key: its JWTs do not verify with [`APP_PUBLIC_PEM`].
pub const OTHER_KEY_PEM: &str = include_str!("test_other_key.pem");
/// An EC private key: not an App's key.
pub const EC_KEY_PEM: &str = include_str!("test_ec_key.pem");

/// The App the forge knows.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: u64,
    pub slug: String,
    /// The App's public key (PEM) its JWTs are verified with.
    pub public_key_pem: String,
    /// How long an installation token is valid (GitHub: an hour).
    pub token_lifetime: Duration,
    /// What the App may be granted on its installations: `permission -> read|write`.
    pub permissions: BTreeMap<String, String>,
    /// What every installation token starts with (GitHub's `ghs_`, then a part made at
    /// run time, so that no file holds it unless something wrote a token there).
    pub token_prefix: String,
}

impl AppConfig {
    /// The test App (id 4242, `plue-test-app`, [`APP_PUBLIC_PEM`]), tokens valid
    /// `token_lifetime`, granted contents, issues, pull requests, statuses and checks
    /// (write) and metadata (read).
    pub fn test(token_lifetime: Duration) -> AppConfig {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        AppConfig {
            token_prefix: format!("ghs_{nanos:x}{:x}", std::process::id()),
            id: 4242,
            slug: "plue-test-app".into(),
            public_key_pem: APP_PUBLIC_PEM.into(),
            token_lifetime,
            permissions: [
                ("checks", "write"),
                ("contents", "write"),
                ("issues", "write"),
                ("metadata", "read"),
                ("pull_requests", "write"),
                ("statuses", "write"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// The App's bot login.
    pub fn bot(&self) -> String {
        format!("{}[bot]", self.slug)
    }
}

/// An installation token the forge handed out.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    pub token: String,
    /// Repository names (`name`, not `owner/name`) it is for.
    pub repositories: BTreeSet<String>,
    pub permissions: BTreeMap<String, String>,
    pub expires: Instant,
    /// `expires_at` as answered.
    pub expires_at: SystemTime,
    /// Revoked before it expired ([`FakeForge::revoke_tokens_at_next_use`]): refused
    /// everywhere.
    pub revoked: bool,
    /// A revocation scripted for its next use.
    pub(crate) revoke_at_next_use: Option<revoke::Pending>,
}

/// The App mode's state, in the forge's shared state.
#[derive(Debug)]
pub(crate) struct AppMode {
    pub(crate) config: AppConfig,
    pub(crate) installation_id: u64,
    /// Repositories (`owner/name`) the App is not installed on.
    pub(crate) uninstalled: BTreeSet<String>,
    /// Token requests answered this status instead (scripted).
    pub(crate) refuse_tokens: Option<u16>,
    pub(crate) tokens: Vec<InstallationToken>,
    /// Every refusal of a revoked token.
    pub(crate) refusals: Vec<TokenRefusal>,
}

impl FakeForge {
    /// Turns on the GitHub App mode (see the module doc): from now on only `config`'s App
    /// and its installation tokens are accepted; what the API creates is authored by the
    /// App's bot. The App is installed on every repository of the forge (one installation).
    pub fn enable_app(&self, config: AppConfig) {
        let mut shared = lock(&self.shared);
        shared.bot = config.bot();
        shared.app = Some(AppMode {
            config,
            installation_id: 77_001,
            uninstalled: BTreeSet::new(),
            refuse_tokens: None,
            tokens: Vec::new(),
            refusals: Vec::new(),
        });
    }

    /// The App is not installed on `repo` (`owner/name`): its installation is a 404.
    pub fn uninstall_app(&self, repo: &str) {
        if let Some(app) = lock(&self.shared).app.as_mut() {
            app.uninstalled.insert(repo.to_string());
        }
    }

    /// Token requests are answered `status` from now on (as GitHub refuses a suspended
    /// installation: 403).
    pub fn refuse_installation_tokens(&self, status: u16) {
        if let Some(app) = lock(&self.shared).app.as_mut() {
            app.refuse_tokens = Some(status);
        }
    }

    /// An installation token for `repo` (`owner/name`) with `permissions`, handed out as
    /// if the App had asked (for tests of a token's user, not of the App's asking).
    pub fn mint_installation_token(&self, repo: &str, permissions: &[(&str, &str)]) -> String {
        let mut shared = lock(&self.shared);
        let url = shared.url.clone();
        let repos: Vec<(String, u64)> = shared
            .repos
            .keys()
            .map(|r| (r.clone(), shared.repo_id(r)))
            .collect();
        let app = shared.app.as_mut().expect("the App mode is on");
        let name = repo.split_once('/').map_or(repo, |(_, name)| name);
        let permissions: serde_json::Map<String, serde_json::Value> = permissions
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let body = serde_json::json!({"repositories": [name], "permissions": permissions});
        let answer = gate::mint(app, &url, &repos, &body);
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body["token"].as_str().expect("a token").to_string()
    }

    /// Every installation token handed out so far.
    pub fn installation_tokens(&self) -> Vec<InstallationToken> {
        lock(&self.shared)
            .app
            .as_ref()
            .map(|app| app.tokens.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
