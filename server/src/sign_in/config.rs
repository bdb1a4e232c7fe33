//! What `plue serve` configures: the sign-in providers, checked before the engine starts
//! (every problem names the flag that set it).

use url::Url;

/// The providers people may sign in with (none by default: only API tokens).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--oidc-issuer` and its companions.
    pub oidc: Option<OidcSettings>,
    /// `--github-sign-in-client-id` and its companions.
    pub github: Option<ForgeSettings>,
    /// `--gitea-sign-in-url` and its companions.
    pub gitea: Option<ForgeSettings>,
}

impl Settings {
    pub fn is_empty(&self) -> bool {
        self.oidc.is_none() && self.github.is_none() && self.gitea.is_none()
    }
}

/// A generic OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer (`--oidc-issuer`): its discovery document is
    /// `{issuer}/.well-known/openid-configuration`, and ID tokens must name it as `iss`.
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Scopes asked for (`openid` always among them).
    pub scopes: Vec<String>,
    /// The ID token claim naming the user's groups (`--oidc-groups-claim`).
    pub groups_claim: Option<String>,
    /// How the sign-in page names it (`--oidc-name`).
    pub label: String,
}

/// A forge's OAuth2 application (GitHub: an OAuth app or the GitHub App's user
/// authorization; Gitea: an OAuth2 application).
#[derive(Debug, Clone)]
pub struct ForgeSettings {
    /// Where people sign in: `https://github.com`, a Gitea's root URL.
    pub url: Url,
    /// The REST API (GitHub: `https://api.github.com`, a GitHub Enterprise Server's
    /// `https://HOST/api/v3`; Gitea: `{url}/api/v1`).
    pub api_url: Url,
    pub client_id: String,
    pub client_secret: ClientSecret,
}

/// A client secret: never printed.
#[derive(Clone)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

/// Parses a base URL given with `flag`: http or https, no query or fragment, no
/// credentials; a trailing `/` is dropped.
pub fn base_url(flag: &str, text: &str) -> anyhow::Result<Url> {
    let url = Url::parse(text.trim()).map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host().is_some(),
        "{flag} {text:?}: an http or https URL is needed"
    );
    anyhow::ensure!(
        url.query().is_none() && url.fragment().is_none(),
        "{flag} {text:?}: a base URL has no query or fragment"
    );
    anyhow::ensure!(
        url.username().is_empty() && url.password().is_none(),
        "{flag} {text:?}: a base URL carries no credentials"
    );
    let trimmed = url.as_str().trim_end_matches('/').to_string();
    Ok(Url::parse(&trimmed)?)
}

/// A client id given with `flag`: visible ASCII, at most 256 characters.
pub fn client_id(flag: &str, text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    anyhow::ensure!(
        !text.is_empty() && text.len() <= 256 && text.chars().all(|c| c.is_ascii_graphic()),
        "{flag} {text:?}: a client id is 1 to 256 visible ASCII characters"
    );
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            base_url("--x", "https://id.example/realms/a/")
                .unwrap()
                .as_str(),
            "https://id.example/realms/a"
        );
        for bad in [
            "id.example",
            "ftp://id.example",
            "https://id.example/?q=1",
            "https://u:p@id.example",
        ] {
            let error = base_url("--oidc-issuer", bad).unwrap_err().to_string();
            assert!(error.starts_with("--oidc-issuer"), "{error}");
        }
        assert!(client_id("--c", "a b").is_err());
        assert_eq!(client_id("--c", " abc ").unwrap(), "abc");
    }

    #[test]
    fn a_secret_is_never_printed() {
        let secret = ClientSecret("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
