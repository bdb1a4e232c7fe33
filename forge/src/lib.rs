//! Forges (GitHub, Gitea): what their webhooks say and how to report back to them.
//!
//! - [`signature`] checks a delivery's HMAC-SHA256 signature in constant time.
//! - [`payload`] turns a delivery's JSON into a [`payload::ForgeEvent`] (pure, no IO).
//! - [`status`] posts commit statuses to the forge's API; [`checks`] writes check runs on
//!   GitHub for a repository served through the engine's GitHub App.
//! - [`writer`] writes an agent's accepted work (pull requests, comments, labels, issues),
//!   each with the lookup that makes a retry safe; [`answers`] answers on the issue that
//!   started a run.
//! - [`auth`] chooses the credential for each use of a repository's forge: its personal
//!   token, or the engine's GitHub App's installation token narrowed to the use.
//! - [`lookup`] reads a pull request's refs from the forge's API; [`permission`] learns who
//!   may summon a workflow from an issue or a comment; [`repo_identity`] confirms a
//!   registered repository's name still names the repository (its forge id) registered.

pub mod answers;
pub mod auth;
pub mod checks;
pub mod git_names;
pub mod lookup;
pub mod payload;
pub mod permission;
pub mod post_error;
pub mod repo_identity;
pub mod signature;
pub mod status;
pub mod token;
mod url_path;
pub mod writer;

use serde::{Deserialize, Serialize};

/// `url` without its credentials, for anything readers see (repository views, a refused
/// status's error): the rule the runner shows git sources by.
pub use plue_types::workspace::without_credentials;

/// The forges Plue accepts webhooks from and reports statuses to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    #[serde(rename = "github")]
    GitHub,
    Gitea,
}

impl Forge {
    pub const NAMES: [&'static str; 2] = ["github", "gitea"];

    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
        }
    }

    pub fn parse(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitea" => Some(Forge::Gitea),
            _ => None,
        }
    }

    /// The REST API base when the repository names none: GitHub's public API, or
    /// `<scheme>://<host>/api/v1` of a Gitea clone URL. `None` for local clone URLs.
    pub fn default_api_url(self, clone_url: &str) -> Option<String> {
        match self {
            Forge::GitHub => Some("https://api.github.com".into()),
            Forge::Gitea => {
                let (scheme, rest) = clone_url.split_once("://")?;
                if scheme != "https" && scheme != "http" {
                    return None;
                }
                // Never the clone URL's credentials (`https://user:token@host/…`).
                let authority = rest.split('/').next()?;
                let host = authority.rsplit('@').next().filter(|h| !h.is_empty())?;
                Some(format!("{scheme}://{host}/api/v1"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_default_per_forge() {
        assert_eq!(
            Forge::Gitea
                .default_api_url("https://git.example.com/a/b.git")
                .as_deref(),
            Some("https://git.example.com/api/v1")
        );
        assert_eq!(Forge::Gitea.default_api_url("/srv/git/b"), None);
        assert_eq!(
            Forge::GitHub.default_api_url("x").as_deref(),
            Some("https://api.github.com")
        );
        assert_eq!(Forge::parse("gitlab"), None);
    }
}
