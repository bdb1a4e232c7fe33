//! Signing in with a provider: `plue serve`'s sign-in flags turned into the engine's
//! [`Settings`] (every problem names its flag), and `plue login`.

use anyhow::Context;
use plue_server::sign_in::{
    base_url, client_id, ClientSecret, ForgeSettings, OidcSettings, Settings,
};

use crate::cli::SignInArgs;

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

/// `plue login`: signs in through the browser with a loopback redirect and keeps the API
/// token the server gives ([`stored_token`] reads it back for every other command).
///
/// The sign-in is the server's own (`/sign-in/{provider}`) with three more parameters: the
/// loopback redirect `http://127.0.0.1:<random port>/callback` this command listens on, a
/// random `state` it checks when the browser arrives there, and the S256 challenge of a
/// random PKCE verifier. The server hands the loopback a one-time code, which only this
/// verifier exchanges (`POST /sign-in/token`) for the token.
pub(crate) async fn run(args: crate::cli::LoginArgs) -> anyhow::Result<std::process::ExitCode> {
    let server = args.server.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let providers: Vec<serde_json::Value> = http
        .get(format!("{server}/sign-in/providers"))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?
        .error_for_status()
        .with_context(|| format!("{server} does not offer sign-in (is it a Plue server?)"))?
        .json()
        .await
        .context("reading the server's sign-in providers")?;
    let names: Vec<&str> = providers
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let provider = match (&args.provider, names.as_slice()) {
        (Some(wanted), _) if names.contains(&wanted.as_str()) => wanted.clone(),
        (Some(wanted), []) => anyhow::bail!("{server} has no sign-in provider ('{wanted}' asked)"),
        (Some(wanted), _) => anyhow::bail!(
            "{server} has no sign-in provider '{wanted}' (it has: {})",
            names.join(", ")
        ),
        (None, []) => anyhow::bail!(
            "{server} has no sign-in provider: make a token with `plue token create` instead"
        ),
        (None, [one]) => one.to_string(),
        (None, _) => anyhow::bail!(
            "{server} has several sign-in providers: choose one with --provider ({})",
            names.join(", ")
        ),
    };

    let verifier = plue_vault::tokens::new_token()?;
    let challenge = plue_server::sign_in::pkce_challenge(&verifier);
    let state = plue_vault::tokens::new_token()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening on 127.0.0.1 for the sign-in's redirect")?;
    let redirect = format!("http://{}/callback", listener.local_addr()?);
    let mut url = reqwest::Url::parse(&format!("{server}/sign-in/{provider}"))?;
    url.query_pairs_mut()
        .append_pair("cli_redirect", &redirect)
        .append_pair("cli_state", &state)
        .append_pair("cli_challenge", &challenge);

    let (sender, receiver) = tokio::sync::mpsc::channel::<(String, String)>(1);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(query): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let sender = sender.clone();
                async move {
                    let code = query.get("code").cloned().unwrap_or_default();
                    let state = query.get("state").cloned().unwrap_or_default();
                    let _ = sender.send((code, state)).await;
                    axum::response::Html(
                        "<!doctype html><title>plue login</title><p>Signed in: you can close \
                         this tab and go back to the terminal.</p>",
                    )
                }
            },
        ),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });

    eprintln!("Sign in to {server} with {provider} in your browser:\n\n  {url}\n");
    if !args.no_browser {
        open_browser(url.as_str());
    }
    let mut receiver = receiver;
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(args.timeout.max(1)),
        receiver.recv(),
    )
    .await;
    stop.cancel();
    let _ = serving.await;
    let (code, given_state) = match waited {
        Ok(Some(answer)) => answer,
        _ => anyhow::bail!("the sign-in did not finish within {} s", args.timeout),
    };
    if !plue_vault::tokens::tokens_match(&given_state, &state) {
        anyhow::bail!("the browser came back with another sign-in's state: refused");
    }
    if code.is_empty() {
        anyhow::bail!("the browser came back without a code");
    }
    let answer = http
        .post(format!("{server}/sign-in/token"))
        .json(&serde_json::json!({ "code": code, "code_verifier": verifier }))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{server} refused the sign-in's code ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    let token = body["token"]
        .as_str()
        .context("the server's answer has no token")?;
    let file = store_token(&server, token)?;
    let user = body["user"].as_str().unwrap_or("?");
    let expires = body["expires_at"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "Signed in to {server} as {user}; the token (until {expires}) is in {}",
        file.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Opens `url` in the desktop's browser, if there is one (`xdg-open`, `open`); it is
/// printed anyway.
fn open_browser(url: &str) {
    for opener in ["xdg-open", "open"] {
        let started = std::process::Command::new(opener)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if started.is_ok() {
            return;
        }
    }
}

/// Where `plue login` keeps its tokens: `$PLUE_CONFIG_DIR/tokens.json`, else
/// `$XDG_CONFIG_HOME/plue/tokens.json`, else `~/.config/plue/tokens.json`.
fn tokens_file() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = match (var("PLUE_CONFIG_DIR"), var("XDG_CONFIG_HOME"), var("HOME")) {
        (Some(dir), _, _) => std::path::PathBuf::from(dir),
        (None, Some(config), _) => std::path::PathBuf::from(config).join("plue"),
        (None, None, Some(home)) => std::path::PathBuf::from(home).join(".config/plue"),
        (None, None, None) => return None,
    };
    Some(dir.join("tokens.json"))
}

/// The token `plue login` kept for `server` (`None`: none kept). A file other users may
/// read is refused, as every secret file of Plue is.
pub(crate) fn stored_token(server: &str) -> anyhow::Result<Option<String>> {
    let Some(file) = tokens_file() else {
        return Ok(None);
    };
    if !file.exists() {
        return Ok(None);
    }
    let text = super::private_file::read_private(&file, "plue login's tokens file", 1 << 20)?;
    let tokens: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not plue login's JSON", file.display()))?;
    Ok(tokens.get(server.trim_end_matches('/')).cloned())
}

/// Keeps `token` for `server` in the tokens file (created 0600 in a 0700 directory,
/// replaced whole): where it is.
fn store_token(server: &str, token: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let file = tokens_file()
        .context("no HOME, XDG_CONFIG_HOME or PLUE_CONFIG_DIR to keep the token in")?;
    let dir = file.parent().context("the tokens file's directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut tokens: std::collections::BTreeMap<String, String> = match file.exists() {
        true => serde_json::from_str(&super::private_file::read_private(
            &file,
            "plue login's tokens file",
            1 << 20,
        )?)
        .unwrap_or_default(),
        false => Default::default(),
    };
    tokens.insert(server.trim_end_matches('/').to_string(), token.to_string());
    let temporary = dir.join(format!(".tokens.json.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    out.write_all(serde_json::to_string_pretty(&tokens)?.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&temporary, &file).with_context(|| format!("replacing {}", file.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn args() -> SignInArgs {
        SignInArgs {
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret_file: None,
            oidc_scopes: vec!["profile".into()],
            oidc_groups_claim: None,
            oidc_name: "OpenID Connect".into(),
            github_sign_in_client_id: None,
            github_sign_in_client_secret_file: None,
            github_sign_in_url: "https://github.com".into(),
            github_sign_in_api_url: "https://api.github.com".into(),
            gitea_sign_in_url: None,
            gitea_sign_in_client_id: None,
            gitea_sign_in_client_secret_file: None,
        }
    }

    fn error(args: &SignInArgs) -> String {
        format!("{:#}", serve_settings(args).unwrap_err())
    }

    #[test]
    fn a_misconfigured_provider_is_an_error_naming_the_flag() {
        assert!(serve_settings(&args()).unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

        let mut oidc = args();
        oidc.oidc_issuer = Some("https://id.example/realms/a/".into());
        assert!(error(&oidc).contains("missing: --oidc-client-id, --oidc-client-secret-file"));
        oidc.oidc_client_id = Some("plue".into());
        oidc.oidc_client_secret_file = Some(secret.clone());
        oidc.oidc_groups_claim = Some("groups".into());
        let settings = serve_settings(&oidc).unwrap();
        let configured = settings.oidc.unwrap();
        assert_eq!(configured.issuer.as_str(), "https://id.example/realms/a");
        assert_eq!(configured.client_secret.0, "s3cret");
        assert_eq!(configured.groups_claim.as_deref(), Some("groups"));

        oidc.oidc_issuer = Some("id.example".into());
        assert!(
            error(&oidc).starts_with("--oidc-issuer"),
            "{}",
            error(&oidc)
        );

        // A secret others may read is refused, naming the flag.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut github = args();
        github.github_sign_in_client_id = Some("Iv1.abc".into());
        github.github_sign_in_client_secret_file = Some(secret.clone());
        assert!(
            error(&github).contains("--github-sign-in-client-secret-file"),
            "{}",
            error(&github)
        );
        std::fs::write(&secret, "").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(error(&github).contains("empty"), "{}", error(&github));
        github.github_sign_in_client_secret_file = None;
        assert!(error(&github).contains("missing: --github-sign-in-client-secret-file"));

        let mut gitea = args();
        gitea.gitea_sign_in_client_id = Some("id".into());
        assert!(
            error(&gitea).contains("--gitea-sign-in-url"),
            "{}",
            error(&gitea)
        );

        let mut claim = args();
        claim.oidc_groups_claim = Some("groups".into());
        assert_eq!(error(&claim), "--oidc-groups-claim needs --oidc-issuer");
    }
}
