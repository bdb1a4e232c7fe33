//! Set-up shared by the sign-in tests (`tests/sign_in.rs`): a browser that follows
//! redirects and keeps cookies per origin, and a hostile OpenID Connect issuer whose ID
//! tokens the test chooses (good, or signed by another key, for another audience, from
//! another issuer, with another nonce, expired).
//!
//! Invariant: the issuer checks PKCE (S256) and hands back `state` as given, as a real one
//! does, so only the ID token differs from a real provider's answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A browser: no automatic redirects, cookies kept per `host:port` (paths ignored: every
/// cookie goes back to its origin).
pub(crate) struct Browser {
    http: reqwest::Client,
    pub(crate) cookies: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a navigation ended.
pub(crate) struct Page {
    pub(crate) url: reqwest::Url,
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Every URL passed through, the first included.
    pub(crate) trail: Vec<reqwest::Url>,
}

impl Browser {
    pub(crate) fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            cookies: BTreeMap::new(),
        }
    }

    fn origin(url: &reqwest::Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        )
    }

    /// The `Cookie` header this browser sends to `url`'s origin.
    pub(crate) fn cookie_header(&self, url: &str) -> String {
        let url = reqwest::Url::parse(url).expect("a URL");
        self.cookies
            .get(&Self::origin(&url))
            .map(|jar| {
                jar.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    pub(crate) fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).expect("a URL");
        self.cookies.get(&Self::origin(&url))?.get(name).cloned()
    }

    /// One request: sends the origin's cookies, keeps the ones set (`Max-Age=0` removes).
    pub(crate) async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let built = request.build().expect("a request");
        let url = built.url().clone();
        let mut built = built;
        let cookie = self.cookie_header(url.as_str());
        if !cookie.is_empty() {
            built
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().expect("a cookie header"));
        }
        let response = self.http.execute(built).await.expect("a response");
        let jar = self.cookies.entry(Self::origin(&url)).or_default();
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap_or("");
            let Some((pair, attributes)) = set.split_once(';').or(Some((set, ""))) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if attributes.contains("Max-Age=0") || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.to_string());
            }
        }
        response
    }

    /// GETs `url` and follows redirects (at most 10).
    pub(crate) async fn visit(&mut self, url: &str) -> Page {
        let mut url = reqwest::Url::parse(url).expect("a URL");
        let mut trail = vec![url.clone()];
        for _ in 0..10 {
            let response = self.send(self.http.get(url.clone())).await;
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                let location = response.headers()[header::LOCATION]
                    .to_str()
                    .expect("a location")
                    .to_string();
                url = url.join(&location).expect("a location URL");
                trail.push(url.clone());
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            return Page {
                url,
                status,
                body,
                trail,
            };
        }
        panic!("more than 10 redirects: {trail:?}");
    }

    /// GETs `url` without following: the status and the `Location`.
    pub(crate) async fn step(&mut self, url: &str) -> (u16, Option<String>, String) {
        let response = self.send(self.http.get(url)).await;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        (status, location, response.text().await.unwrap_or_default())
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// What the hostile issuer's next ID token gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forgery {
    None,
    /// Signed by a key the issuer does not publish (same `kid`).
    OtherKey,
    OtherIssuer,
    OtherAudience,
    OtherNonce,
    Expired,
    /// `alg: HS256` keyed with the client secret instead of the issuer's key.
    Symmetric,
}

struct Shared {
    base: String,
    client_id: String,
    client_secret: String,
    forgery: Forgery,
    subject: String,
    username: String,
    groups: Vec<String>,
    codes: HashMap<String, (String, String)>,
    next: u64,
}

/// A stand-in OpenID Connect provider whose ID tokens the test chooses.
pub(crate) struct HostileIssuer {
    pub(crate) url: String,
    shared: Arc<Mutex<Shared>>,
    _task: tokio::task::JoinHandle<()>,
}

const PROVIDER_KEY: &str = include_str!("../fixtures/sign_in/provider.pem");
const PROVIDER_JWKS: &str = include_str!("../fixtures/sign_in/provider.jwks.json");
const ATTACKER_KEY: &str = include_str!("../fixtures/sign_in/attacker.pem");

impl HostileIssuer {
    pub(crate) async fn start(client_id: &str, client_secret: &str) -> HostileIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared {
            base: url.clone(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            forgery: Forgery::None,
            subject: "subject-1".into(),
            username: "jane".into(),
            groups: Vec::new(),
            codes: HashMap::new(),
            next: 1,
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route(
                "/jwks",
                get(|| async { ([(header::CONTENT_TYPE, "application/json")], PROVIDER_JWKS) }),
            )
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HostileIssuer {
            url,
            shared,
            _task: task,
        }
    }

    pub(crate) fn forge(&self, forgery: Forgery) {
        self.shared.lock().unwrap().forgery = forgery;
    }

    /// Who the next sign-in is: `sub`, `preferred_username` and the groups claim.
    pub(crate) fn person(&self, subject: &str, username: &str, groups: &[&str]) {
        let mut shared = self.shared.lock().unwrap();
        shared.subject = subject.into();
        shared.username = username.into();
        shared.groups = groups.iter().map(|g| g.to_string()).collect();
    }
}

async fn discovery(State(shared): State<Arc<Mutex<Shared>>>) -> Json<Value> {
    let base = shared.lock().unwrap().base.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn authorize(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut shared = shared.lock().unwrap();
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    if get("client_id") != shared.client_id || get("code_challenge_method") != "S256" {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = format!("oidc-code-{}", shared.next);
    shared.next += 1;
    shared
        .codes
        .insert(code.clone(), (get("code_challenge"), get("nonce")));
    let mut back = reqwest::Url::parse(&get("redirect_uri")).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &get("state"));
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

async fn token(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut shared = shared.lock().unwrap();
    let expected = format!("{}:{}", shared.client_id, shared.client_secret);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok()?.strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if basic.as_deref() != Some(expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let Some((challenge, nonce)) = shared
        .codes
        .remove(form.get("code").map(String::as_str).unwrap_or(""))
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if computed != challenge {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "invalid_grant", "error_description": "PKCE verification failed"}),
            ),
        )
            .into_response();
    }
    let now = super::now_ms() / 1000;
    let forgery = shared.forgery;
    let claims = json!({
        "iss": if forgery == Forgery::OtherIssuer { "https://evil.example".to_string() } else { shared.base.clone() },
        "aud": if forgery == Forgery::OtherAudience { "another-client".to_string() } else { shared.client_id.clone() },
        "sub": shared.subject,
        "preferred_username": shared.username,
        "groups": shared.groups,
        "nonce": if forgery == Forgery::OtherNonce { "a-nonce-of-another-sign-in".to_string() } else { nonce },
        "iat": now,
        "exp": if forgery == Forgery::Expired { now - 3600 } else { now + 300 },
    });
    let id_token = match forgery {
        Forgery::Symmetric => {
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(shared.client_secret.as_bytes()),
            )
        }
        _ => {
            let pem = if forgery == Forgery::OtherKey {
                ATTACKER_KEY
            } else {
                PROVIDER_KEY
            };
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some("provider-key".into());
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            )
        }
    }
    .unwrap();
    Json(json!({
        "access_token": "opaque-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

/// `PLUE_REQUIRE_OIDC=1` turns "npm's oidc-provider cannot be installed" from a skip into
/// a failure (CI sets it).
pub(crate) const REQUIRE_OIDC: &str = "PLUE_REQUIRE_OIDC";

/// npm's `oidc-provider`, started by `scripts/oidc/server.mjs`; killed when dropped.
pub(crate) struct RealOidcProvider {
    pub(crate) issuer: String,
    child: std::process::Child,
    _config: tempfile::TempDir,
}

impl Drop for RealOidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scripts/oidc/server.mjs` as installed: `$PLUE_OIDC_SERVER` (what sourcing the
/// install script's output sets), else the install script run now into the target
/// directory. `None` (after saying why) when it cannot be had and it is not required.
fn oidc_server() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("PLUE_OIDC_SERVER").filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new(root.join("scripts/oidc/install.sh"))
        .env(
            "PLUE_OIDC_DIR",
            root.join("target/plue-oidc")
                .canonicalize()
                .unwrap_or_else(|_| {
                    let dir = root.join("target/plue-oidc");
                    let _ = std::fs::create_dir_all(&dir);
                    dir.canonicalize().unwrap_or(dir)
                }),
        )
        .output();
    let why = match output {
        Ok(out) if out.status.success() => {
            let env_file = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let text = std::fs::read_to_string(&env_file).unwrap_or_default();
            match text
                .lines()
                .find_map(|l| l.strip_prefix("export PLUE_OIDC_SERVER="))
            {
                Some(path) => return Some(path.trim_matches('\'').into()),
                None => format!("{env_file} names no PLUE_OIDC_SERVER"),
            }
        }
        Ok(out) => format!(
            "scripts/oidc/install.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("scripts/oidc/install.sh did not run: {e}"),
    };
    assert!(
        std::env::var(REQUIRE_OIDC).as_deref() != Ok("1"),
        "{REQUIRE_OIDC}=1 but npm's oidc-provider cannot be had: {why}"
    );
    eprintln!("skipping: npm's oidc-provider cannot be had ({REQUIRE_OIDC}=1 makes this a failure): {why}");
    None
}

impl RealOidcProvider {
    /// Starts the provider with one client and `users` (JSON objects as server.mjs takes
    /// them); `None` when it cannot be installed and is not required.
    pub(crate) fn start(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        users: Value,
    ) -> Option<RealOidcProvider> {
        use std::io::BufRead as _;
        let server = oidc_server()?;
        let config = tempfile::tempdir().unwrap();
        let file = config.path().join("config.json");
        std::fs::write(
            &file,
            json!({
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uris": [redirect_uri],
                "users": users,
            })
            .to_string(),
        )
        .unwrap();
        let mut child = std::process::Command::new("node")
            .arg(&server)
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            // Its warnings (development keys and storage) are for people, not tests.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting node");
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Drained on: a provider writing to a closed pipe would die of it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("oidc-provider did not start ({e}): {line:?}"));
        Some(RealOidcProvider {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            child,
            _config: config,
        })
    }
}

/// The fields of the first `<form>` in `html` whose `action` contains `action`: its
/// action (entities decoded) and its `<input>`s' names and values, hidden ones included.
pub(crate) fn form_fields(html: &str, action: &str) -> Option<(String, Vec<(String, String)>)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let end = tag[start..].find('"')? + start;
        Some(unescape(&tag[start..end]))
    };
    for form in html.split("<form").skip(1) {
        let head = &form[..form.find('>')?];
        let Some(target) = attribute(head, "action") else {
            continue;
        };
        if !target.contains(action) {
            continue;
        }
        let body = &form[..form.find("</form>").unwrap_or(form.len())];
        let fields = body
            .split("<input")
            .skip(1)
            .filter_map(|input| {
                let tag = &input[..input.find('>')?];
                Some((
                    attribute(tag, "name")?,
                    attribute(tag, "value").unwrap_or_default(),
                ))
            })
            .collect();
        return Some((target, fields));
    }
    None
}

/// HTML's character references in an attribute (`&amp;`, `&#34;`, `&#x2f;`, ...).
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
