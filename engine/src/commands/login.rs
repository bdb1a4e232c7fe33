//! Signing in with a provider: `plue serve`'s sign-in flags turned into the engine's
//! [`Settings`] (every problem names its flag), and `plue login`.

use anyhow::Context;

use crate::cli::SignInArgs;
use engine::sign_in::{base_url, client_id, ClientSecret, ForgeSettings, OidcSettings, Settings};

/// Most bytes of a client secret file.
const MAX_SECRET_BYTES: u64 = 4096;

/// The providers `plue serve`'s flags configure; a flag without its companions, a URL that
/// is not one, an unreadable or empty secret file is an error naming the flag.
pub(crate) fn serve_settings(args: &SignInArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    match (
        &args.oidc_issuer,
        &args.oidc_client_id,
        &args.oidc_client_secret_file,
    ) {
        (None, None, None) => {
            if args.oidc_groups_claim.is_some() {
                anyhow::bail!("--oidc-groups-claim needs --oidc-issuer");
            }
        }
        (Some(issuer), Some(id), Some(secret)) => {
            let scopes = args
                .oidc_scopes
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>();
            for scope in &scopes {
                anyhow::ensure!(
                    scope
                        .chars()
                        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'),
                    "--oidc-scopes {scope:?}: not a scope"
                );
            }
            let groups_claim = match args.oidc_groups_claim.as_deref().map(str::trim) {
                Some("") => anyhow::bail!("--oidc-groups-claim is empty"),
                other => other.map(str::to_string),
            };
            anyhow::ensure!(!args.oidc_name.trim().is_empty(), "--oidc-name is empty");
            settings.oidc = Some(OidcSettings {
                issuer: base_url("--oidc-issuer", issuer)?,
                client_id: client_id("--oidc-client-id", id)?,
                client_secret: secret_file("--oidc-client-secret-file", secret)?,
                scopes,
                groups_claim,
                label: args.oidc_name.trim().to_string(),
            });
        }
        (issuer, id, secret) => anyhow::bail!(
            "an OpenID Connect provider needs --oidc-issuer, --oidc-client-id and \
             --oidc-client-secret-file together (missing: {})",
            missing(&[
                ("--oidc-issuer", issuer.is_some()),
                ("--oidc-client-id", id.is_some()),
                ("--oidc-client-secret-file", secret.is_some()),
            ])
        ),
    }
    match (
        &args.github_sign_in_client_id,
        &args.github_sign_in_client_secret_file,
    ) {
        (None, None) => {}
        (Some(id), Some(secret)) => {
            settings.github = Some(ForgeSettings {
                url: base_url("--github-sign-in-url", &args.github_sign_in_url)?,
                api_url: base_url("--github-sign-in-api-url", &args.github_sign_in_api_url)?,
                client_id: client_id("--github-sign-in-client-id", id)?,
                client_secret: secret_file("--github-sign-in-client-secret-file", secret)?,
            })
        }
        (id, _) => anyhow::bail!(
            "GitHub sign-in needs --github-sign-in-client-id and \
             --github-sign-in-client-secret-file together (missing: {})",
            if id.is_some() {
                "--github-sign-in-client-secret-file"
            } else {
                "--github-sign-in-client-id"
            }
        ),
    }
    match (
        &args.gitea_sign_in_url,
        &args.gitea_sign_in_client_id,
        &args.gitea_sign_in_client_secret_file,
    ) {
        (None, None, None) => {}
        (Some(url), Some(id), Some(secret)) => {
            let url = base_url("--gitea-sign-in-url", url)?;
            let api_url = base_url("--gitea-sign-in-url", &format!("{url}/api/v1"))?;
            settings.gitea = Some(ForgeSettings {
                url,
                api_url,
                client_id: client_id("--gitea-sign-in-client-id", id)?,
                client_secret: secret_file("--gitea-sign-in-client-secret-file", secret)?,
            })
        }
        (url, id, secret) => anyhow::bail!(
            "Gitea sign-in needs --gitea-sign-in-url, --gitea-sign-in-client-id and \
             --gitea-sign-in-client-secret-file together (missing: {})",
            missing(&[
                ("--gitea-sign-in-url", url.is_some()),
                ("--gitea-sign-in-client-id", id.is_some()),
                ("--gitea-sign-in-client-secret-file", secret.is_some()),
            ])
        ),
    }
    Ok(settings)
}

fn missing(flags: &[(&str, bool)]) -> String {
    flags
        .iter()
        .filter(|(_, given)| !given)
        .map(|(flag, _)| *flag)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A client secret file, read as every secret file of the engine is (refused when others
/// may read it).
fn secret_file(flag: &str, path: &std::path::Path) -> anyhow::Result<ClientSecret> {
    let text = super::private_file::read_private(path, flag, MAX_SECRET_BYTES)
        .with_context(|| format!("{flag} {}", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(
        !text.is_empty(),
        "{flag} {}: the file is empty",
        path.display()
    );
    Ok(ClientSecret(text.to_string()))
}
